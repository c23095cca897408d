"""How much a small split can promise: an upper bound on a stage's error rate, and the
pessimistic probabilities that go with it.

A stage that makes e errors on n inputs has an error rate that the split pins down only
loosely: 2 errors in 269 are as consistent with a rate of 2% as with 0.7%. The one-sided
Clopper-Pearson bound is the largest rate p at which seeing e errors or fewer is still at least
as likely as 1 - confidence:

    P(X <= e | n, p) = 1 - confidence,  X ~ Binomial(n, p).

With no errors this is 1 - (1 - confidence)^(1/n): at 90% on 10 inputs, 20.6%; on 269, 0.85%.

The fitted temperature tells where a stage's errors fall (its ranking of inputs); the bound says
how many there may be. The pessimistic temperature is the smallest T, not below the fitted one,
whose softmax expects that many errors: the mean of 1 - p(answer) over the split equals the
bound. Those probabilities count the errors the stage may make on the inputs it keeps.
"""

from __future__ import annotations

import math

import numpy as np

from edgeladder.policy.calibrate import metrics

DEFAULT_CONFIDENCE = 0.9
T_LIMIT = 1e4  # the search's ceiling: softmax(z / 1e4) is uniform to well below 1e-3
_STEPS = 60  # bisection steps: 2^-60 of the range, far below any figure we print


def binomial_cdf(errors: int, n: int, p: float) -> float:
    """P(X <= errors) for X ~ Binomial(n, p), summed in log space (no overflow at large n)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if errors >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp + (n - k) * lq
        for k in range(min(errors, n) + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def error_rate_upper(errors: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound, at ``confidence``, on an error rate seen as
    ``errors`` in ``n``: the p with P(X <= errors | n, p) = 1 - confidence."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must be strictly between 0 and 1")
    if n <= 0:
        return 1.0  # no evidence: any rate is possible
    if not 0 <= errors <= n:
        raise ValueError(f"{errors} errors in {n} inputs")
    if errors == n:
        return 1.0
    if errors == 0:
        return 1.0 - (1.0 - confidence) ** (1.0 / n)  # the closed form
    lo, hi = errors / n, 1.0  # the CDF falls as p rises: bisect for 1 - confidence
    for _ in range(_STEPS):
        mid = (lo + hi) / 2
        if binomial_cdf(errors, n, mid) > 1.0 - confidence:
            lo = mid
        else:
            hi = mid
    return hi


def answer_probability(z: np.ndarray, answers: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / T) at the class each row answers: the probability that the answer is right."""
    p = metrics.softmax(np.asarray(z, np.float64) / temperature)
    return p[np.arange(len(p)), np.asarray(answers, np.int64)]


def mean_error(z: np.ndarray, answers: np.ndarray, temperature: float) -> float:
    """The errors per input that softmax(z / T) expects: mean of 1 - p(answer)."""
    return float(np.mean(1.0 - answer_probability(z, answers, temperature)))


def pessimistic_temperature(
    z: np.ndarray, answers: np.ndarray, error_rate: float, fitted: float
) -> float:
    """The smallest T >= ``fitted`` whose softmax expects ``error_rate`` errors per input.

    Raising T moves probability off the top class, so the expected error rises with T (towards
    1 - 1/classes). If the fitted T already expects that many, it is kept; a rate no T reaches
    (a model no better than chance) gives the search's ceiling.
    """
    if mean_error(z, answers, fitted) >= error_rate:
        return fitted
    lo, hi = math.log(fitted), math.log(T_LIMIT)
    if mean_error(z, answers, T_LIMIT) < error_rate:
        return T_LIMIT
    for _ in range(_STEPS):
        mid = (lo + hi) / 2
        if mean_error(z, answers, math.exp(mid)) < error_rate:
            lo = mid
        else:
            hi = mid
    return math.exp(hi)
