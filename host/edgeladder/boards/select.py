"""Hardware selection and fit: which board runs a tier, and whether a model fits a device.

``select_hardware`` applies the selection rules we design from, in the issue's order (the
first rule that applies decides; latency comes first because it is the one requirement a
slower board cannot make up for):

1. latency < 10 ms: Coral USB if the model is < 5 MB, else Jetson Orin Nano;
2. offline: Raspberry Pi 5 under a 10 W power budget, else Jetson Orin Nano;
3. several streams (2 or more): Jetson AGX Orin;
4. otherwise: Raspberry Pi 5.

Each rule names its board first and then, in order, the boards to fall back on. Every
candidate then passes fit checks from its board file: its power (with its host's, for an
accessory) within ``power_w``, and the model within its ``max_model_mb``. The first candidate
that passes wins; each exclusion is a reason. When none passes, :class:`HardwareError`.

``fit`` compiles a model for the board (or reads a compiled ``.ldr``) and counts, from the
board file, what it costs on the device: heap (engine + model file + arena + load overhead +
application reserve), flash (image + engine files + model) and the filesystem partition; and
an estimated latency, MACs x ``per_mac_ns``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeladder.boards import registry as boards
from edgeladder.boards.registry import Board, BoardError
from edgeladder.errors import EdgeladderError, ModelFileError

__all__ = [
    "Budget",
    "FitReport",
    "HardwareError",
    "ModelFigures",
    "Selection",
    "fit",
    "model_figures",
    "select_hardware",
]


class HardwareError(EdgeladderError):
    """No board meets the needs, or the needs themselves are invalid."""


# --- selection ----------------------------------------------------------------------------

LATENCY_MS = 10.0  # a budget under this needs an accelerator
SMALL_MODEL_MB = 5.0  # under this the Coral's Edge TPU keeps the model on chip
OFFLINE_POWER_W = 10.0  # an offline site with a budget under this gets the Pi 5


@dataclass(frozen=True)
class Needs:
    latency_ms: float
    model_size_mb: float
    offline: bool
    power_w: float | None
    streams: int


@dataclass(frozen=True)
class Selection:
    board: str
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"board": self.board, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Rule:
    condition: str  # as the rule table says it
    applies: Callable[[Needs], bool]
    # -> candidates (first choice first), and why the rule picks the first one
    choose: Callable[[Needs], tuple[tuple[str, ...], str]]
    # why the rule does not apply, for the rules before the deciding one
    skip: Callable[[Needs], str]


def _title(name: str) -> str:
    return boards.get(name).title


def _latency(n: Needs) -> tuple[tuple[str, ...], str]:
    if n.model_size_mb < SMALL_MODEL_MB:
        why = (
            f"{n.latency_ms:g} ms needs an accelerator, and the model ({n.model_size_mb:g} MB)"
            f" is under {SMALL_MODEL_MB:g} MB, small enough for the Edge TPU's on-chip memory:"
            f" {_title('coral-usb')}"
        )
        return ("coral-usb", "jetson-orin-nano", "jetson-agx-orin"), why
    why = (
        f"{n.latency_ms:g} ms needs an accelerator, and the model ({n.model_size_mb:g} MB) is"
        f" not under {SMALL_MODEL_MB:g} MB, too large for the Edge TPU's on-chip memory:"
        f" {_title('jetson-orin-nano')}"
    )
    return ("jetson-orin-nano", "jetson-agx-orin"), why


def _offline(n: Needs) -> tuple[tuple[str, ...], str]:
    if n.power_w is not None and n.power_w < OFFLINE_POWER_W:
        why = f"the power budget ({n.power_w:g} W) is under {OFFLINE_POWER_W:g} W: {_title('rpi5')}"
        return ("rpi5",), why
    budget = "no power budget" if n.power_w is None else f"a {n.power_w:g} W power budget"
    why = f"{budget} (not under {OFFLINE_POWER_W:g} W) allows more: {_title('jetson-orin-nano')}"
    return ("jetson-orin-nano", "jetson-agx-orin", "rpi5"), why


def _streams(n: Needs) -> tuple[tuple[str, ...], str]:
    why = f"{n.streams} concurrent streams need the most compute: {_title('jetson-agx-orin')}"
    return ("jetson-agx-orin", "jetson-orin-nano"), why


def _default(n: Needs) -> tuple[tuple[str, ...], str]:
    why = f"nothing demanding, so the general gateway: {_title('rpi5')}"
    return ("rpi5", "jetson-orin-nano", "jetson-agx-orin"), why


RULES: tuple[Rule, ...] = (
    Rule(
        f"latency < {LATENCY_MS:g} ms",
        lambda n: n.latency_ms < LATENCY_MS,
        _latency,
        lambda n: f"latency {n.latency_ms:g} ms is not under {LATENCY_MS:g} ms",
    ),
    Rule("offline", lambda n: n.offline, _offline, lambda n: "the tier is online"),
    Rule(
        "several streams",
        lambda n: n.streams > 1,
        _streams,
        lambda n: "one stream",
    ),
    Rule("default", lambda n: True, _default, lambda n: ""),
)


def _power(board: Board) -> tuple[float, str]:
    """The power a board draws in use, with its host's for an accessory, and how it adds up."""
    if board.host is None:
        return board.power_w, f"{board.power_w:g} W"
    host = boards.get(board.host)
    total = board.power_w + host.power_w
    return (
        total,
        f"{board.power_w:g} W + {host.power_w:g} W for its host {host.title} = {total:g} W",
    )


def _exclusion(board: Board, n: Needs) -> str | None:
    """Why ``board`` cannot take the tier, or None if it can."""
    power, how = _power(board)
    if n.power_w is not None and power > n.power_w:
        return f"{board.title} excluded: it draws {how}, over the {n.power_w:g} W power budget"
    if board.max_model_mb is not None and n.model_size_mb > board.max_model_mb:
        return (
            f"{board.title} excluded: the model ({n.model_size_mb:g} MB) is over the"
            f" {board.max_model_mb:g} MB it takes"
        )
    return None


def _check_needs(n: Needs) -> None:
    for name, value in (("latency_ms", n.latency_ms), ("model_size_mb", n.model_size_mb)):
        if not value > 0:
            raise HardwareError(f"{name} must be a number above 0, got {value!r}")
    if n.power_w is not None and not n.power_w > 0:
        raise HardwareError(f"power_w must be a number above 0, got {n.power_w!r}")
    if isinstance(n.streams, bool) or not isinstance(n.streams, int) or n.streams < 1:
        raise HardwareError(f"streams must be a whole number >= 1, got {n.streams!r}")


def select_hardware(
    latency_ms: float,
    model_size_mb: float,
    offline: bool = False,
    power_w: float | None = None,
    streams: int = 1,
) -> Selection:
    """The board for a tier with these needs, and the reasons, one per step of the decision."""
    needs = Needs(latency_ms, model_size_mb, offline, power_w, streams)
    _check_needs(needs)
    reasons: list[str] = []
    for number, rule in enumerate(RULES, 1):
        if not rule.applies(needs):
            reasons.append(f"rule {number} ({rule.condition}) does not apply: {rule.skip(needs)}")
            continue
        candidates, why = rule.choose(needs)
        reasons.append(f"rule {number} ({rule.condition}): {why}")
        break
    excluded: list[str] = []
    for name in candidates:
        board = boards.get(name)
        reason = _exclusion(board, needs)
        if reason is not None:
            excluded.append(reason)
            continue
        reasons += excluded
        if excluded:
            reasons.append(f"falls back to {board.title}, the rule's next choice that fits")
        _, how = _power(board)
        budget = "" if power_w is None else f", within the {power_w:g} W budget"
        reasons.append(
            f"{board.title} ({board.role}): {how}{budget}; {board.tops:g} TOPS; ${board.cost_usd:g}"
        )
        return Selection(board.name, reasons)
    raise HardwareError(
        "no board meets these needs: " + "; ".join(excluded) + ". Raise the power budget,"
        " or make the model smaller"
    )


# --- fit ----------------------------------------------------------------------------------

# Multiply-accumulates per op of the board format, as products of named parameters (the
# same counts as edgeladder.model.tflite.summary: output elements x kernel taps [x input channels]).
_MAC_FIELDS: dict[str, tuple[str, ...]] = {
    "FULLY_CONNECTED": ("batches", "n_in", "n_out"),
    "CONV_2D": ("out_h", "out_w", "out_c", "k_h", "k_w", "in_c"),
    "DEPTHWISE_CONV_2D": ("out_h", "out_w", "out_c", "k_h", "k_w"),
}
# Accumulators an op needs in the engine's shared requant block: mirrors scratch() of
# firmware/ladder/kernels/*.py (those import micropython, so CPython cannot call them).
_SCRATCH: dict[str, Callable[[dict[str, int]], int]] = {
    "FULLY_CONNECTED": lambda p: p["n_out"],
    "CONV_2D": lambda p: p["out_w"] * p["out_c"],
    "DEPTHWISE_CONV_2D": lambda p: p["out_w"] * p["out_c"],
    "MEAN": lambda p: p["c"],
    "ADD": lambda p: 64,  # 2 x the 32-element chunk of kernels/elementwise.py
    "MUL": lambda p: 64,
}
_ACC = 9  # ladder.fixedpoint.ACC: control words before the accumulators
# Model.load's own objects on a 32-bit port, in 16-byte GC blocks: the Model and its
# attributes, two Tensors, memoryviews, the arena and requant arrays' headers. 64-bit
# measurements (tests/device/test_engine_memory.py) put all load overhead at 1.3-2.8 KB for
# the digits tiers; this estimate comes to about 1 KB-2 KB on 32 bits.
_LOAD_FIXED = 512
_BLOCK = 16


def _blocks(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


@dataclass(frozen=True)
class ModelFigures:
    """What a model costs on any device: from its compiled form."""

    path: Path
    compiled: bool  # True when compiled here from a .tflite, False for a .ldr
    file_bytes: int
    arena_bytes: int
    ops: int
    macs: int
    load_bytes: int  # estimated heap Model.load takes beyond the file and the arena


def _mformat():
    from edgeladder.model.compiler.fmt import mformat

    return mformat


# An op of a compiled model: its name, its named parameters, and how many int32 it has.
_Op = tuple[str, dict[str, int], int]


def _read_ldr(data: bytes, path: Path) -> tuple[int, list[_Op]]:
    """The arena size and the ops of a compiled model; checks it whole, as the board does."""
    F = _mformat()
    try:
        h = F.unpack_header(data)
    except (ValueError, struct.error) as e:
        raise ModelFileError(str(e), path) from None
    nbody, narena, nt, nops = h[5], h[6], h[7], h[8]
    body = data[F.HEADER_SIZE : F.HEADER_SIZE + nbody]
    if hashlib.sha256(body).digest() != h[15]:
        raise ModelFileError("body sha256 mismatch: the file is corrupt or truncated", path)
    ops = []
    for k in range(nops):
        pos = nt * F.TENSOR_SIZE + k * F.OP_SIZE
        if pos + F.OP_SIZE > nbody:
            raise ModelFileError(f"op table runs past the body at op {k}", path)
        code, n, off = struct.unpack_from(F.OP_FMT, body, pos)
        if code not in F.FIELDS:
            raise ModelFileError(f"op {k} has opcode {code}, unknown to this version", path)
        fields = F.FIELDS[code]
        if n < len(fields) or off + 4 * n > nbody:
            raise ModelFileError(f"op {k} ({F.NAMES[code]}) params run past the body", path)
        values = struct.unpack_from(f"<{n}i", body, off)
        ops.append((F.NAMES[code], dict(zip(fields, values, strict=False)), n))
    return narena, ops


def _macs(ops: list[_Op]) -> int:
    total = 0
    for name, p, _ in ops:
        if name in _MAC_FIELDS:
            product = 1
            for f in _MAC_FIELDS[name]:
                product *= p[f]
            total += product
    return total


def _load_bytes(ops: list[_Op], arena: int) -> int:
    """Heap Model.load allocates beyond the file and the arena (32-bit estimate)."""
    per_op = sum(2 * _BLOCK + _blocks(4 * n) for _, _, n in ops)  # params array, pair tuple
    need = max((_SCRATCH[name](p) for name, p, _ in ops if name in _SCRATCH), default=0)
    requant = _BLOCK + _blocks(4 * (_ACC + need))
    op_tuple = _blocks(8 + 4 * len(ops))
    # array("b", bytearray(n)) holds a second copy of the arena while it is made.
    return _LOAD_FIXED + per_op + requant + op_tuple + _blocks(arena)


def model_figures(model_path: str | Path) -> ModelFigures:
    """Compile ``model_path`` (.tflite) for the board, or read it (.ldr), and count its cost."""
    path = Path(model_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError("not found", path) from None
    except OSError as e:
        raise ModelFileError(f"cannot read: {e.strerror or e}", path) from None
    compiled = data[:4] != _mformat().MAGIC
    if compiled:  # anything else must be an int8 .tflite; the compiler says what is wrong
        from edgeladder.model.compiler import compile_model

        data = bytes(compile_model(path).data)
    arena, ops = _read_ldr(data, path)
    return ModelFigures(
        path=path,
        compiled=compiled,
        file_bytes=len(data),
        arena_bytes=arena,
        ops=len(ops),
        macs=_macs(ops),
        load_bytes=_load_bytes(ops, arena),
    )


@dataclass(frozen=True)
class Budget:
    """One resource of the board: what the model needs, part by part, against what there is."""

    name: str
    parts: tuple[tuple[str, int], ...]
    available: int

    @property
    def needed(self) -> int:
        return sum(n for _, n in self.parts)

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    @property
    def over_by(self) -> int:
        return max(0, self.needed - self.available)

    @property
    def spare(self) -> int:
        return max(0, self.available - self.needed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parts": dict(self.parts),
            "needed": self.needed,
            "available": self.available,
            "fits": self.fits,
            "over_by": self.over_by,
            "spare": self.spare,
        }


@dataclass(frozen=True)
class FitReport:
    model: ModelFigures
    board: Board
    budgets: tuple[Budget, ...]
    latency_ms: float  # an estimate: MACs x the board's per_mac_ns
    fits_on: tuple[str, ...]  # the device boards this model fits

    @property
    def fits(self) -> bool:
        return all(b.fits for b in self.budgets)

    def budget(self, name: str) -> Budget:
        return next(b for b in self.budgets if b.name == name)

    @property
    def message(self) -> str:
        head = f"{self.model.path.name} on {self.board.name}"
        if self.fits:
            heap = self.budget("heap")
            return (
                f"{head}: fits, {heap.spare:,} bytes of heap to spare; estimated latency"
                f" {self.latency_ms:.2f} ms"
            )
        over = "; ".join(
            f"{b.name} needs {b.needed:,} bytes of {b.available:,}: over by {b.over_by:,} bytes"
            for b in self.budgets
            if not b.fits
        )
        others = [n for n in self.fits_on if n != self.board.name]
        hint = f"choose a board it fits ({', '.join(others)})" if others else "choose a board"
        return (
            f"{head}: does NOT fit: {over}. Make the model smaller (fewer units, pruning, a"
            f" distilled student) or {hint}"
        )

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        return {
            "model": str(m.path),
            "board": self.board.name,
            "fits": self.fits,
            "compiled": m.compiled,
            "model_bytes": m.file_bytes,
            "arena_bytes": m.arena_bytes,
            "ops": m.ops,
            "macs": m.macs,
            "per_mac_ns": self.board.per_mac_ns,
            "latency_ms_estimate": round(self.latency_ms, 3),
            "budgets": {b.name: b.to_dict() for b in self.budgets},
            "over_by": {b.name: b.over_by for b in self.budgets if not b.fits},
            "fits_on": list(self.fits_on),
            "message": self.message,
        }


def _device(board: Board | str) -> Board:
    board = boards.get(board) if isinstance(board, str) else board
    if not board.is_device:
        names = ", ".join(b.name for b in boards.devices())
        raise BoardError(
            f"{board.name} is a {board.role} board, which runs the .tflite with LiteRT; fit"
            f" checks a device board: {names}"
        )
    return board


def _budgets(m: ModelFigures, b: Board) -> tuple[Budget, ...]:
    heap = Budget(
        "heap",
        (
            ("engine (ladder, imported)", b.engine_heap_bytes or 0),
            ("model file (read into RAM)", m.file_bytes),
            ("arena", m.arena_bytes),
            ("load overhead (estimate)", m.load_bytes),
            ("application reserve", b.app_reserve_bytes or 0),
        ),
        b.heap_bytes or 0,
    )
    files = (("engine .mpy files", b.engine_flash_bytes or 0), ("model file", m.file_bytes))
    flash = Budget(
        "flash",
        (
            ("before the image", b.flash_offset or 0),
            ("MicroPython image", b.firmware_bytes or 0),
            *files,
        ),
        b.flash_bytes or 0,
    )
    filesystem = Budget("filesystem", files, b.vfs_bytes or 0)
    return heap, flash, filesystem


def fit(model_path: str | Path, board: Board | str) -> FitReport:
    """Whether the model at ``model_path`` (.tflite or .ldr) fits the device ``board``."""
    board = _device(board)
    m = model_figures(model_path)
    fits_on = tuple(d.name for d in boards.devices() if all(x.fits for x in _budgets(m, d)))
    return FitReport(
        model=m,
        board=board,
        budgets=_budgets(m, board),
        latency_ms=m.macs * (board.per_mac_ns or 0) / 1e6,
        fits_on=fits_on,
    )
