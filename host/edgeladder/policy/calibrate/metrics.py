"""Calibration and ranking metrics, pure numpy, with numbers a person can check by hand.

ECE (expected calibration error): split the confidences into 15 equal-width bins over [0, 1],
and average |accuracy - mean confidence| per bin, weighted by the bin's share of the inputs.

AUROC of a gate: how well its confidence separates the stage's right answers from its wrong
ones -- the probability that a random right answer got a higher confidence than a random wrong
one, a tie counting half. 1 is a perfect gate, 0.5 a coin, 0 a gate that is exactly backwards.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float logits (N, C), shifted by the row maximum for stability."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of ``confidence`` (0..1) against ``correct`` (bool)."""
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.shape != ok.shape:
        raise ValueError(f"{conf.shape[0]} confidences for {ok.shape[0]} outcomes")
    if conf.size == 0:
        return 0.0
    # Bin k holds (k/bins, (k+1)/bins]; a confidence of exactly 0 goes to the first bin.
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for k in range(bins):
        sel = idx == k
        n = int(sel.sum())
        if n:
            total += n * abs(float(ok[sel].mean()) - float(conf[sel].mean()))
    return total / conf.size


def reliability(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Per non-empty bin: its range, count, mean confidence and accuracy (the diagram's bars)."""
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=np.float64).reshape(-1)
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    out = []
    for k in range(bins):
        sel = idx == k
        if sel.any():
            out.append(
                {
                    "lo": k / bins,
                    "hi": (k + 1) / bins,
                    "count": int(sel.sum()),
                    "confidence": float(conf[sel].mean()),
                    "accuracy": float(ok[sel].mean()),
                }
            )
    return out


def auroc(confidence: np.ndarray, correct: np.ndarray) -> float | None:
    """P(confidence of a right answer > that of a wrong one), ties half; None if one class.

    Computed from mid-ranks (the Mann-Whitney U statistic), so ties are exactly half.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=bool).reshape(-1)
    if conf.shape != ok.shape:
        raise ValueError(f"{conf.shape[0]} confidences for {ok.shape[0]} outcomes")
    n_pos, n_neg = int(ok.sum()), int((~ok).sum())
    if n_pos == 0 or n_neg == 0:
        return None  # no errors (or nothing right): there is nothing to rank
    order = np.argsort(conf, kind="mergesort")
    sorted_conf = conf[order]
    ranks = np.empty(conf.size, dtype=np.float64)
    # mid-rank of each run of equal values: the average of its 1-based positions
    _, first, counts = np.unique(sorted_conf, return_index=True, return_counts=True)
    mid = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mid, counts)
    u = ranks[ok].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
