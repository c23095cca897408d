"""The ladder offline: which stage answers each input, and what the whole ladder scores.

Given a :class:`~edgeladder.policy.config.LadderConfig` and each stage's int8 logits (and
outputs) for the same inputs, walk every input up the ladder exactly as the board and the host
tiers do: a stage answers when ``ladder.gate.confidence`` -- the very integer code the board
runs -- is at least its threshold; otherwise the input goes to the next stage; the last stage
always answers. No links fail and no deadline runs out here: this is the ladder's accuracy and
cost, not its latency (the simulator and ``edgeladder demo`` measure that).

Used by ``edgeladder calibrate`` (the sweep and the chosen point) and by the demo (the test-split
figures of the ladder, each tier alone and the fixed 0.95 / 0.90 thresholds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from edgeladder.errors import EdgeladderError
from edgeladder.policy.config import LadderConfig, exp_lut
from ladder import gate

# Cost of one input reaching a stage, by stage name or by where it runs. An input that climbs
# to the cloud passes the gateway first (chained escalation), so it pays both.
DEFAULT_COSTS: dict[str, float] = {"edge": 0.0, "gateway": 1.0, "cloud": 5.0}
FIXED_THRESHOLDS = (0.95, 0.90)  # the thresholds the project started from (max probability)

Arrays = Sequence[np.ndarray] | Mapping[str, np.ndarray]


class CascadeError(EdgeladderError):
    """The arrays given do not match the ladder (stages, inputs, classes)."""


@dataclass
class CascadeResult:
    labels: np.ndarray  # (N,) the ladder's answer per input
    stage: np.ndarray  # (N,) index into cfg.stages of the stage that answered
    source: list[str]  # (N,) where that stage runs: edge | gateway | cloud
    escalated: np.ndarray  # (N,) bool: the input left the board (reached a remote stage)
    confidence: np.ndarray  # (N, S) Q16 gate confidence per stage, -1 where not reached
    cost: np.ndarray  # (N,) cost units spent on the input
    stage_names: list[str] = field(default_factory=list)
    truth: np.ndarray | None = None  # (N,) true labels, if given

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def correct(self) -> np.ndarray | None:
        return None if self.truth is None else self.labels == self.truth

    @property
    def accuracy(self) -> float | None:
        return None if self.truth is None or not self.n else float(np.mean(self.correct))

    @property
    def escalation_rate(self) -> float:
        """Fraction of the inputs that left the board."""
        return float(np.mean(self.escalated)) if self.n else 0.0

    @property
    def expected_cost(self) -> float:
        """Mean cost units per input."""
        return float(np.mean(self.cost)) if self.n else 0.0

    def reach_rate(self, index: int) -> float:
        """Fraction of the inputs that reached stage ``index`` (0 = all of them)."""
        return float(np.mean(self.stage >= index)) if self.n else 0.0

    def source_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.source:
            out[s] = out.get(s, 0) + 1
        return out

    def rows(self) -> list[dict]:
        """Per input: label, source, stage index, escalated flag (and the truth if known)."""
        rows = []
        for i in range(self.n):
            r = {
                "label": int(self.labels[i]),
                "source": self.source[i],
                "stage": int(self.stage[i]),
                "escalated": bool(self.escalated[i]),
            }
            if self.truth is not None:
                r["truth"] = int(self.truth[i])
            rows.append(r)
        return rows

    def summary(self) -> dict:
        return {
            "inputs": self.n,
            "accuracy": self.accuracy,
            "escalation_rate": self.escalation_rate,
            "reach_rate": {n: self.reach_rate(i) for i, n in enumerate(self.stage_names)},
            "expected_cost": self.expected_cost,
            "sources": self.source_counts(),
        }


def stage_costs(cfg: LadderConfig, costs: Mapping[str, float] | None = None) -> list[float]:
    """Cost units of one input reaching each stage: by stage name, else by where it runs."""
    table = {**DEFAULT_COSTS, **(costs or {})}
    return [float(table.get(s.name, table.get(s.where, 0.0))) for s in cfg.stages]


def _per_stage(cfg: LadderConfig, arrays: Arrays | None, what: str) -> list[np.ndarray] | None:
    if arrays is None:
        return None
    if isinstance(arrays, Mapping):
        missing = [s.name for s in cfg.stages if s.name not in arrays]
        if missing:
            raise CascadeError(f"no {what} for stage(s) {', '.join(missing)}")
        arrays = [arrays[s.name] for s in cfg.stages]
    if len(arrays) != len(cfg.stages):
        raise CascadeError(f"{len(arrays)} {what} arrays for {len(cfg.stages)} stages")
    out = [np.asarray(a) for a in arrays]
    for s, a in zip(cfg.stages, out, strict=True):
        if a.ndim != 2 or a.shape[1] != cfg.classes or a.shape[0] != out[0].shape[0]:
            raise CascadeError(
                f"stage {s.name!r}: {what} of shape {a.shape}, expected "
                f"({out[0].shape[0]}, {cfg.classes})"
            )
    return out


def stage_confidence(logits: np.ndarray, measure: str, lut: Sequence[int]) -> np.ndarray:
    """(N,) Q16 confidence of one stage's gate on int8 logits (N, C): ladder.gate.confidence."""
    m = gate.measure_id(measure)
    rows = np.asarray(logits).astype(np.int64).tolist()  # plain ints: the gate is integer code
    n = len(rows[0]) if rows else 0
    return np.array([gate.confidence(m, r, n, lut) for r in rows], dtype=np.int64)


def confidences(cfg: LadderConfig, logits: Arrays) -> np.ndarray:
    """(N, S) Q16 confidence of every stage's gate on every input (ladder.gate.confidence)."""
    per = _per_stage(cfg, logits, "logits")
    return np.stack(
        [stage_confidence(a, s.measure, s.exp_lut) for s, a in zip(cfg.stages, per, strict=True)],
        axis=1,
    ).reshape(per[0].shape[0], len(cfg.stages))


def evaluate(
    cfg: LadderConfig,
    logits: Arrays,
    outputs: Arrays | None = None,
    truth: np.ndarray | None = None,
    *,
    costs: Mapping[str, float] | None = None,
    conf: np.ndarray | None = None,
) -> CascadeResult:
    """Walk every input up the ladder ``cfg``; the answer is the top-1 of the answering stage.

    ``logits``/``outputs``: per stage (in cfg.stages order, or a mapping by stage name) the
    int8 logits and outputs, each (N, classes). Without ``outputs`` the answer is the top-1 of
    the logits (the same class but for exact ties). ``conf``: precomputed :func:`confidences`.
    """
    lg = _per_stage(cfg, logits, "logits")
    out = _per_stage(cfg, outputs, "outputs") or lg
    c = confidences(cfg, lg) if conf is None else np.asarray(conf)
    n, s_count = c.shape
    thresholds = np.array([s.threshold for s in cfg.stages], dtype=np.int64)
    sure = c >= thresholds[None, :]
    sure[:, -1] = True  # the last stage always answers
    stage = np.argmax(sure, axis=1)  # the first confident stage
    preds = np.stack([np.argmax(o, axis=1) for o in out], axis=1)  # ties to the lower index
    labels = preds[np.arange(n), stage]
    reached = np.arange(s_count)[None, :] <= stage[:, None]
    per_stage = np.asarray(stage_costs(cfg, costs))
    first_remote = next((j for j, s in enumerate(cfg.stages) if s.remote), s_count)
    where = [s.where for s in cfg.stages]
    return CascadeResult(
        labels=labels,
        stage=stage,
        source=[where[j] for j in stage],
        escalated=stage >= first_remote,
        confidence=np.where(reached, c, -1),
        cost=(reached * per_stage[None, :]).sum(axis=1),
        stage_names=[s.name for s in cfg.stages],
        truth=None if truth is None else np.asarray(truth),
    )


def q16(p: float) -> int:
    """A probability as the gate's Q16 integer."""
    return round(p * gate.ONE)


def fixed_threshold_ladder(
    cfg: LadderConfig,
    logit_scales: Sequence[float] | Mapping[str, float],
    thresholds: Sequence[float] = FIXED_THRESHOLDS,
) -> LadderConfig:
    """``cfg`` with the gates the project started from: max probability, temperature 1,
    ``thresholds`` (0.95 for the first stage, 0.90 for the second, ...) as Q16; the last stage
    answers everything (threshold 0). Budgets, models and the rest are kept."""
    if isinstance(logit_scales, Mapping):
        scales = [float(logit_scales[s.name]) for s in cfg.stages]
    else:
        scales = [float(v) for v in logit_scales]
    if len(scales) != len(cfg.stages):
        raise CascadeError(f"{len(scales)} logit scales for {len(cfg.stages)} stages")
    if len(thresholds) < len(cfg.stages) - 1:
        raise CascadeError(f"{len(thresholds)} thresholds for {len(cfg.stages) - 1} gated stages")
    stages = []
    for i, (s, scale) in enumerate(zip(cfg.stages, scales, strict=True)):
        last = i == len(cfg.stages) - 1
        stages.append(
            replace(
                s,
                measure="max",
                temperature=1.0,
                exp_lut=exp_lut(scale, 1.0),
                threshold=0 if last else q16(thresholds[i]),
            )
        )
    return replace(cfg, stages=stages)
