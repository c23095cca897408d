"""Threshold sweep: the ladder's accuracy, escalation and cost for many threshold settings.

Inputs are per-stage Q16 gate confidences (ladder.gate.confidence, computed once) and per-stage
right/wrong flags on the calibration split. A setting gives each stage a threshold; the last
stage always answers (threshold 0). The board's threshold is swept over every distinct
confidence it produced (every distinct outcome), plus 0 (never escalate) and 65536 (everything
but what it is saturated on: a saturated softmax gives exactly 65536);
the middle stages over a coarse grid of quantiles. Everything is vectorized over the board's
thresholds: a few thousand settings on a few hundred inputs take milliseconds.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ladder import gate

GRID = 20  # quantiles per middle stage
# The middle stages only see what the board sends up: their grid is drawn from the inputs the
# board is least sure of (this share of them), where their threshold matters.
GRID_POPULATION = 0.5


@dataclass
class Sweep:
    """One row per threshold setting (P rows); arrays, so that filters are one expression."""

    thresholds: np.ndarray  # (P, S) Q16 per stage, last column 0
    accuracy: np.ndarray  # (P,)
    escalation: np.ndarray  # (P,) fraction of inputs that left the board
    reach: np.ndarray  # (P, S) fraction of inputs that reached each stage
    cost: np.ndarray  # (P,) expected cost units per input
    errors: np.ndarray  # (P,) wrong answers (integer, for the robustness rules)
    n: int
    # (P,) inputs the ladder gets wrong and the last stage alone gets right (integer): the
    # 0/1 loss whose rate Learn-then-Test bounds (guarantee.py); None on hand-made sweeps
    losses: np.ndarray | None = None
    # (P,) the accuracy the stages' calibrated probabilities predict (see `sweep`), or None
    expected_accuracy: np.ndarray | None = None
    # (P,) the same with the pessimistic probabilities (bounds.py): the accuracy the split can
    # promise at the stated confidence, or None
    bound_accuracy: np.ndarray | None = None
    # (P,) the one-sided Clopper-Pearson bound on that loss rate (guarantee.risk_upper), or None
    risk_upper: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.accuracy)

    def point(self, i: int) -> dict:
        return {
            "thresholds": [int(v) for v in self.thresholds[i]],
            "accuracy": float(self.accuracy[i]),
            "escalation": float(self.escalation[i]),
            "reach": [float(v) for v in self.reach[i]],
            "cost": float(self.cost[i]),
            "errors": int(self.errors[i]),
            "expected_accuracy": _at(self.expected_accuracy, i),
            "bound_accuracy": _at(self.bound_accuracy, i),
            "losses": None if self.losses is None else int(self.losses[i]),
            "risk_upper": _at(self.risk_upper, i),
        }

    def columns(self) -> dict:
        """Column lists for calibration.json (compact: one list per field)."""
        out = {
            "thresholds": self.thresholds.astype(int).tolist(),
            "accuracy": np.round(self.accuracy, 6).tolist(),
            "escalation": np.round(self.escalation, 6).tolist(),
            "reach_last": np.round(self.reach[:, -1], 6).tolist(),
            "cost": np.round(self.cost, 6).tolist(),
        }
        if self.losses is not None:
            out["losses"] = self.losses.astype(int).tolist()
        if self.risk_upper is not None:
            out["risk_upper"] = np.round(self.risk_upper, 6).tolist()
        return out


def _at(column: np.ndarray | None, i: int) -> float | None:
    return None if column is None else float(column[i])


def edge_thresholds(conf: np.ndarray) -> np.ndarray:
    """Every distinct confidence of the board's stage, plus 0 and 65536."""
    return np.unique(np.concatenate([np.asarray(conf, np.int64), [0, gate.ONE]]))


def middle_grid(conf: np.ndarray, edge_conf: np.ndarray, levels: int = GRID) -> np.ndarray:
    """Quantiles of a middle stage's confidence over the inputs the board is least sure of."""
    conf = np.asarray(conf, np.int64)
    cut = np.quantile(edge_conf, GRID_POPULATION, method="higher")
    pop = conf[np.asarray(edge_conf) <= cut]
    q = np.quantile(pop, np.linspace(0, 1, levels + 1), method="lower") if len(pop) else []
    return np.unique(np.concatenate([np.asarray(q, np.int64), [0, gate.ONE]]))


def sweep(
    conf: np.ndarray,
    correct: np.ndarray,
    costs: list[float],
    *,
    grids: list[np.ndarray] | None = None,
    expected: np.ndarray | None = None,
    bound: np.ndarray | None = None,
) -> Sweep:
    """All settings: the board stage's thresholds x the middle stages' grids; last stage 0.

    conf: (N, S) Q16 confidences; correct: (N, S) bool; costs: per stage, paid on reaching it.
    Stage 0 runs on the board and every later stage is remote (what calibrate builds).
    expected: (N, S) the probability that each stage's answer is right (its temperature-scaled
    softmax at the class it answers); swept like ``correct`` into ``expected_accuracy``.
    bound: (N, S) the same with the pessimistic temperatures; swept into ``bound_accuracy``.
    ``losses`` counts the inputs a setting gets wrong that the last stage alone gets right.
    """
    conf = np.asarray(conf, np.int64)
    correct = np.asarray(correct, bool)
    n, s = conf.shape
    if s < 2:
        raise ValueError("a ladder to sweep needs a board stage and at least one remote stage")
    edge_t = edge_thresholds(conf[:, 0])
    if grids is None:
        grids = [middle_grid(conf[:, j], conf[:, 0]) for j in range(1, s - 1)]
    cost = np.asarray(costs, np.float64)
    # per-input probabilities of being right, swept like the 0/1 outcomes
    soft = {
        k: np.asarray(v, np.float64)
        for k, v in (("expected", expected), ("bound", bound))
        if v is not None
    }
    rows_soft: dict[str, list[np.ndarray]] = {k: [] for k in soft}
    rows_t, rows_ok, rows_loss, rows_esc, rows_reach, rows_cost = [], [], [], [], [], []
    for mids in itertools.product(*grids) if s > 2 else [()]:
        # What happens to each input once it leaves the board, for these middle thresholds:
        # right or wrong, which stage it ends at, what it costs.
        ends = np.full(n, s - 1)
        for j in range(s - 2, 0, -1):
            ends = np.where(conf[:, j] >= mids[j - 1], j, ends)
        down_ok = correct[np.arange(n), ends]
        down_cost = np.array([cost[1 : e + 1].sum() for e in range(s)])[ends]
        esc = conf[None, :, 0] < edge_t[:, None]  # (T, N): left the board
        ok = np.where(esc, down_ok[None, :], correct[None, :, 0])
        for k, v in soft.items():
            down_v = v[np.arange(n), ends]
            rows_soft[k].append(np.where(esc, down_v[None, :], v[None, :, 0]).mean(axis=1))
        reach = np.empty((len(edge_t), s))
        reach[:, 0] = 1.0
        for j in range(1, s):
            reach[:, j] = (esc & (ends[None, :] >= j)).mean(axis=1)
        rows_t.append(
            np.column_stack(
                [
                    edge_t,
                    np.tile(np.asarray(mids, np.int64), (len(edge_t), 1)),
                    np.zeros_like(edge_t),
                ]
            )
        )
        rows_ok.append(ok.sum(axis=1))
        rows_loss.append((~ok & correct[None, :, -1]).sum(axis=1))
        rows_esc.append(esc.mean(axis=1))
        rows_reach.append(reach)
        rows_cost.append((esc * down_cost[None, :]).mean(axis=1) + cost[0])
    n_ok = np.concatenate(rows_ok)
    return Sweep(
        thresholds=np.concatenate(rows_t).astype(np.int64),
        accuracy=n_ok / n,
        escalation=np.concatenate(rows_esc),
        reach=np.concatenate(rows_reach),
        cost=np.concatenate(rows_cost),
        errors=n - n_ok,
        n=n,
        losses=np.concatenate(rows_loss).astype(np.int64),
        expected_accuracy=np.concatenate(rows_soft["expected"]) if "expected" in soft else None,
        bound_accuracy=np.concatenate(rows_soft["bound"]) if "bound" in soft else None,
    )


# -- choosing a point

PLATEAU = 2  # the next this many higher board thresholds must meet the target too
_EPS = 1e-12  # accuracies are ratios of integers: compare with a hair of slack


@dataclass
class Choice:
    index: int  # row of the sweep
    robust: bool  # every robustness rule held (accuracy mode); True in escalation mode
    rules: dict  # which rules held at the chosen point, and notes


def cheapest(sw: Sweep, rows: np.ndarray) -> int:
    """Lowest escalation off the board, then lowest cost, then highest accuracy."""
    order = np.lexsort(
        (sw.thresholds[rows, 0], -sw.accuracy[rows], sw.cost[rows], sw.escalation[rows])
    )
    return int(rows[order[0]])


def plateau(sw: Sweep, meets: np.ndarray, k: int = PLATEAU) -> np.ndarray:
    """meets[i] and the k next higher board thresholds (same other thresholds) meet too.

    Past the last board threshold (everything escalated) counts as meeting.
    """
    out = np.zeros(len(sw), dtype=bool)
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(sw.thresholds[:, 1:].tolist()):
        groups.setdefault(tuple(row), []).append(i)
    for rows in groups.values():
        idx = np.asarray(rows)[np.argsort(sw.thresholds[rows, 0], kind="stable")]
        m = np.concatenate([meets[idx], np.ones(k, dtype=bool)])
        ok = m[: len(idx)].copy()
        for j in range(1, k + 1):
            ok &= m[j : j + len(idx)]
        out[idx] = ok
    return out


def _soft_meets(column: np.ndarray | None, target: float, n: int) -> np.ndarray:
    return np.ones(n, dtype=bool) if column is None else column >= target - _EPS


def choose_for_accuracy(
    sw: Sweep, target: float, *, robust: bool = True, escalate: bool = False
) -> Choice | None:
    """The cheapest point whose accuracy is at least ``target``, robustly; None if none is.

    Robust (the default): the point must also (1) sit on a plateau -- the next PLATEAU higher
    board thresholds meet the target too, so one input more or less near the threshold does not
    break it -- (2) meet the target by the stages' calibrated probabilities
    (``expected_accuracy``), which counts the errors the board stage is expected to make on the
    inputs it keeps instead of the two or three a small validation split happens to contain,
    and (3) meet it by the pessimistic probabilities (``bound_accuracy``, bounds.py): as many
    errors as the split allows at the stated confidence, placed where the stage's calibrated
    ranking puts them. When no point passes them all, the point that meets the target with the
    highest bound (then the calibrated estimate) is taken -- the safe side, escalating more --
    and the choice says so.
    """
    meets, flat, calibrated, bounded = _rule_masks(sw, target)
    if escalate and (sw.escalation > 0).any():
        # the fallback of an unsupported target: a point that sends some inputs up, never
        # "never escalate" (whatever the split seems to allow, it could not show it)
        meets = meets & (sw.escalation > 0)
    if not meets.any():
        return None
    good = meets & flat & calibrated & bounded
    if not robust:
        i = cheapest(sw, np.flatnonzero(meets))
    elif good.any():
        i = cheapest(sw, np.flatnonzero(good))
    else:
        i = _safest(sw, np.flatnonzero(meets))
    rules = {
        "meets_target": True,
        "plateau": bool(flat[i]),
        "calibrated": bool(calibrated[i]),
        "bound": bool(bounded[i]),
        "robust_requested": robust,
    }
    if robust and not good.any():
        rules["note"] = (
            "no point passes the robustness rules; took the point that meets the target with"
            " the highest bound"
        )
    return Choice(i, bool(good[i]), rules)


def _rule_masks(sw: Sweep, target: float) -> tuple[np.ndarray, ...]:
    """Per point: meets the target, on a plateau, by the calibrated estimate, by the bound."""
    meets = sw.accuracy >= target - _EPS
    return (
        meets,
        plateau(sw, meets),
        _soft_meets(sw.expected_accuracy, target, len(sw)),
        _soft_meets(sw.bound_accuracy, target, len(sw)),
    )


def rules_at(sw: Sweep, target: float, i: int) -> dict:
    """Which of choose_for_accuracy's rules hold at point ``i`` (for a point chosen otherwise)."""
    masks = [bool(m[i]) for m in _rule_masks(sw, target)]
    return dict(zip(("meets_target", "plateau", "calibrated", "bound"), masks, strict=True))


def _safest(sw: Sweep, rows: np.ndarray) -> int:
    """The highest bound accuracy, then calibrated estimate, then the cheapest of those."""
    for column in (sw.bound_accuracy, sw.expected_accuracy):
        if column is not None:
            rows = rows[column[rows] >= column[rows].max() - _EPS]
    return cheapest(sw, rows)


def choose_for_escalation(sw: Sweep, max_escalation: float) -> Choice | None:
    """The most accurate point escalating at most ``max_escalation`` (ties: lowest escalation,
    then lowest cost); None if none does."""
    rows = np.flatnonzero(sw.escalation <= max_escalation + _EPS)
    if not len(rows):
        return None
    best = sw.accuracy[rows].max()
    i = cheapest(sw, rows[sw.accuracy[rows] >= best - _EPS])
    return Choice(i, True, {"max_escalation": max_escalation})


def most_accurate(sw: Sweep) -> int:
    """The most accurate point (ties: the cheapest): the best reachable figure."""
    best = sw.accuracy.max()
    return cheapest(sw, np.flatnonzero(sw.accuracy >= best - _EPS))
