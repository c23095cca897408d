"""Temperature scaling: one scalar T per stage, fitted on validation data.

The stage's probabilities become softmax(logit_scale * (l - zp) / T) for its int8 logits l.
T is the value that minimizes the negative log-likelihood of the true labels (Guo et al., 2017).
The NLL is convex in 1/T, hence unimodal in log T: a golden-section search over a bounded
range of log T finds it without scipy. On the board T lives only in the gate's exp table
(ladderconfig.exp_lut), so a fitted T costs nothing at run time.
"""

from __future__ import annotations

import math

import numpy as np

T_MIN, T_MAX = 0.05, 20.0
_GOLDEN = (math.sqrt(5) - 1) / 2


def dequantized(logits: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float logits of int8 logits: scale * (l - zp)."""
    return scale * (np.asarray(logits, dtype=np.float64) - zero_point)


def nll(z: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(z / T)."""
    s = np.asarray(z, dtype=np.float64) / temperature
    s = s - s.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(s).sum(axis=1))
    return float(np.mean(log_norm - s[np.arange(len(labels)), labels]))


def fit_temperature(
    z: np.ndarray, labels: np.ndarray, *, lo: float = T_MIN, hi: float = T_MAX, tol: float = 1e-4
) -> float:
    """The T in [lo, hi] minimizing the NLL of softmax(z / T): golden section on log T."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on no samples")
    a, b = math.log(lo), math.log(hi)

    def f(u: float) -> float:
        return nll(z, labels, math.exp(u))

    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    return math.exp((a + b) / 2)
