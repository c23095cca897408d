"""The board tier of every build fits its board, before a minute is spent training it.

The check is the one ``edgeladder fit`` runs (:func:`edgeladder.boards.fit.fit`: heap, flash and
filesystem from the engine's own sizes) plus the board stage's time budget (MACs x the board's
``per_mac_ns`` against :data:`BOARD_BUDGET_MS`). Sizes do not depend on the weights, so an
untrained model, quantized on a few inputs and compiled, answers it in about a second.

A tier of a default recipe (``build --dataset``) is reshaped until it fits: a convolution tier
first averages its input down further, then halves its widths; a dense tier halves its units.
A tier the user wrote in a recipe is never changed behind their back: it is refused, with what
is over and by how much.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeladder.boards import registry as boards
from edgeladder.build.recipe import TierSpec
from edgeladder.errors import BuildError, EdgeladderError

BOARD_BUDGET_MS = 20.0  # the board stage's default budget_ms (policy/calibrate DEFAULT_TIMING)
MAX_RESHAPES = 10
_MIN_WIDTH = 4


def measure(tier: TierSpec, x: np.ndarray, classes: int, task: str) -> Any:
    """The fit report (edgeladder.boards.fit.FitReport) of ``tier``'s int8 model, untrained;
    a model the board's compiler refuses (a tensor too large for it) is a :class:`Refused`."""
    import keras

    from edgeladder.boards.fit import fit
    from edgeladder.build.architectures import build_model
    from edgeladder.build.quantize import to_int8_tflite
    from edgeladder.model.compiler import compile_model

    keras.utils.set_random_seed(0)
    model = build_model(tier.arch, x.shape[1:], classes, tier.arch_params)
    tfl = to_int8_tflite(model, x, samples=32)
    try:
        compiled = compile_model(tfl)
    except EdgeladderError as e:
        return Refused(str(e))
    with tempfile.TemporaryDirectory(prefix="edgeladder-fit-") as tmp:
        path = Path(tmp) / f"{task}_{tier.name}.ldr"
        path.write_bytes(compiled.data)
        return fit(path, tier.board)


@dataclass(frozen=True)
class Refused:
    """A model the board's compiler cannot take at all."""

    reason: str


def _problems(report: Any) -> list[str]:
    if isinstance(report, Refused):
        return [f"the board engine cannot take it ({report.reason})"]
    out = [
        f"{b.name} needs {b.needed:,} B of {b.available:,} (over by {b.over_by:,})"
        for b in report.budgets
        if not b.fits
    ]
    if report.latency_ms > BOARD_BUDGET_MS:
        out.append(
            f"{report.model.macs:,} MACs take about {report.latency_ms:.0f} ms, over the board"
            f" stage's {BOARD_BUDGET_MS:.0f} ms budget"
        )
    return out


def _smaller(tier: TierSpec, side: int) -> str | None:
    """Shrink ``tier`` one step in place; what was done, or None when it cannot shrink."""
    p = tier.arch_params
    if tier.arch.startswith("conv"):
        ds = int(p.get("downsample", 1))
        if side // (ds * 2) >= 4:
            p["downsample"] = ds * 2
            return f"downsample {ds} -> {ds * 2}"
        keys = ("filters", "dense")
    else:
        keys = ("units",)
    changed = []
    for key in keys:
        widths = [int(w) for w in p.get(key, ())]
        halved = [max(_MIN_WIDTH, w // 2) for w in widths]
        if halved != widths:
            p[key] = halved
            changed.append(f"{key} {widths} -> {halved}")
    return "; ".join(changed) or None


def fit_board_tier(
    tier: TierSpec, x: np.ndarray, classes: int, *, reshape: bool, task: str
) -> dict[str, Any] | None:
    """Make sure ``tier`` (on a device board) fits; returns what was reshaped, or None.

    Raises BuildError when the tier does not fit and may not (``reshape=False``) or cannot be
    made to.
    """
    board = boards.get(tier.board)
    original = copy.deepcopy(tier.arch_params)
    side = max(int(v) for v in x.shape[1:-1]) if x.ndim > 2 else int(x.shape[1])
    steps: list[str] = []
    report = measure(tier, x, classes, task)
    while problems := _problems(report):
        what = "; ".join(problems)
        if not reshape:
            raise BuildError(
                f"tier {tier.name!r} ({tier.arch} {original}) does not fit {board.name}: {what}."
                " Make it smaller in the recipe (fewer filters or units, a `downsample`"
                " factor) or put it on a bigger board"
            )
        step = _smaller(tier, side) if len(steps) < MAX_RESHAPES else None
        if step is None:
            raise BuildError(
                f"tier {tier.name!r} cannot be made to fit {board.name} ({what}, after"
                f" {len(steps)} reshapes): the input is too large for the board; write a"
                " recipe with a smaller board tier or a bigger board"
            )
        steps.append(step)
        report = measure(tier, x, classes, task)
    if not steps:
        return None
    return {
        "board": board.name,
        "reshaped": steps,
        "from": original,
        "to": copy.deepcopy(tier.arch_params),
        "heap_spare": report.budget("heap").spare,
        "latency_ms_estimate": round(report.latency_ms, 3),
    }
