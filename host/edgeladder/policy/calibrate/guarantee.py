"""Learn-then-Test: thresholds whose loss against the reference holds at a stated confidence.

The risk of a threshold setting is R = P(the ladder's answer is wrong and the last stage's
alone is right). Per input that is a 0/1 loss, so the inputs of a calibration split of n that
have it (``Sweep.losses``) number Binomial(n, R). The ladder's accuracy is at least the last
stage's minus R, so R <= delta promises accuracy >= reference - delta.

Each setting's null hypothesis H0: R > delta has the exact binomial p-value
P(X <= losses | n, delta): how likely that few losses are if the risk were delta. Fixed-sequence
testing: for each setting of the middle stages' thresholds (a chain), walk the board threshold
from the highest down and reject while p <= alpha; the first p > alpha ends the chain.
alpha = (1 - confidence) / G, Bonferroni over the G chains. The certified set is the union of
the rejected prefixes. With probability at least ``confidence`` over the draw of the split,
every certified setting has R <= delta (family-wise error control), so any choice among them
keeps the guarantee. The orderings use the split's confidences, never its labels.
(Angelopoulos, Bates, Candes, Jordan, Lei: "Learn then Test", 2021.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeladder.policy.calibrate import bounds, sweep
from edgeladder.policy.calibrate.errors import TargetNotMetError

METHOD = "learn-then-test (fixed sequence, binomial)"
NEEDED_LIMIT = 10_000_000  # needed_inputs searches no further (None past it)


def p_values(losses: np.ndarray, n: int, delta: float) -> np.ndarray:
    """P(X <= losses | n, delta) per point: the p-value of H0 "the risk exceeds delta".

    delta <= 0 gives 1 everywhere: no count of losses can show a risk of at most 0.
    """
    losses = np.asarray(losses, np.int64)
    if delta <= 0:
        return np.ones(losses.shape)
    ks, inverse = np.unique(losses, return_inverse=True)  # one sum per distinct count
    table = np.array([bounds.binomial_cdf(int(k), n, delta) for k in ks])
    return table[inverse].reshape(losses.shape)


def risk_upper(losses: np.ndarray, n: int, confidence: float) -> np.ndarray:
    """The one-sided Clopper-Pearson bound on each point's risk (a per-point bound, no
    correction for choosing among points)."""
    losses = np.asarray(losses, np.int64)
    ks, inverse = np.unique(losses, return_inverse=True)
    table = np.array([bounds.error_rate_upper(int(k), n, confidence) for k in ks])
    return table[inverse].reshape(losses.shape)


def chains(sw: sweep.Sweep) -> list[np.ndarray]:
    """The sweep's rows per setting of the middle thresholds, board threshold high to low."""
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(sw.thresholds[:, 1:].tolist()):
        groups.setdefault(tuple(row), []).append(i)
    out = []
    for rows in groups.values():
        idx = np.asarray(rows)
        out.append(idx[np.argsort(-sw.thresholds[idx, 0], kind="stable")])
    return out


@dataclass
class Certification:
    delta: float
    confidence: float
    alpha: float  # per chain: (1 - confidence) / chains
    chains: int
    p_value: np.ndarray  # (P,)
    certified: np.ndarray  # (P,) bool

    @property
    def count(self) -> int:
        return int(self.certified.sum())


def certify(sw: sweep.Sweep, delta: float, confidence: float) -> Certification:
    """Fixed-sequence testing of H0: R > delta along every chain, Bonferroni over chains."""
    if sw.losses is None:
        raise ValueError("the sweep has no losses column: make it with sweep.sweep")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must be strictly between 0 and 1")
    groups = chains(sw)
    alpha = (1.0 - confidence) / len(groups)
    p = p_values(sw.losses, sw.n, delta)
    certified = np.zeros(len(sw), dtype=bool)
    for rows in groups:
        # rejected while every p so far is <= alpha; the first failure ends the chain
        certified[rows] = np.logical_and.accumulate(p[rows] <= alpha)
    return Certification(delta, confidence, alpha, len(groups), p, certified)


def needed_inputs(losses: int, n: int, delta: float, alpha: float, limit: int = NEEDED_LIMIT):
    """The smallest split size m >= n at which the same loss rate (floor(losses m / n) losses)
    would pass: P(X <= that | m, delta) <= alpha. None when no size does (the rate is not below
    delta) or none up to ``limit`` does. With no losses: ceil(ln alpha / ln(1 - delta)).
    """
    if delta <= 0 or n <= 0 or losses >= delta * n:
        return None

    def passes(m: int) -> bool:
        return bounds.binomial_cdf(losses * m // n, m, delta) <= alpha

    if passes(n):
        return n  # it passes as it is (held back by the fixed sequence, if at all)
    lo, hi = n, 2 * n
    while not passes(hi):  # the p-value falls (in trend) as the split grows at a fixed rate
        lo, hi = hi, 2 * hi
        if lo > limit:
            return None
    while hi - lo > 1:  # lo fails, hi passes
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    return hi if hi <= limit else None


# -- the choice


def choose_for_accuracy(
    sw: sweep.Sweep,
    target: float,
    delta: float,
    confidence: float,
    *,
    robust: bool = True,
    require: bool = False,
) -> tuple[sweep.Choice | None, dict]:
    """The cheapest certified point; if none is certified, the robust rule's point (the safe
    side) and the figures that say why, or TargetNotMetError when ``require``.

    ``robust=False`` takes the cheapest point that meets ``target`` on the split (the point
    estimate) and only reports the guarantee. The choice is None when nothing meets the target.
    Returns the choice and calibration.json's ``guarantee`` object for it.
    """
    cert = certify(sw, delta, confidence)
    best = None if not cert.count else sweep.cheapest(sw, np.flatnonzero(cert.certified))
    # Uncertified, the robust rule falls back to a point that escalates something.
    rule = sweep.choose_for_accuracy(sw, target, robust=robust, escalate=robust and best is None)
    if robust and best is not None:
        rules = sweep.rules_at(sw, target, best)
        choice = sweep.Choice(
            best, all(rules.values()), {**rules, "robust_requested": True, "guarantee": True}
        )
    elif rule is None:
        return None, describe(sw, None, cert, require=require)
    else:
        choice = sweep.Choice(rule.index, rule.robust, {**rule.rules, "guarantee": False})
    by = "point estimate" if not robust else "robust rule" if best is None else "certified"
    g = describe(sw, choice.index, cert, require=require, chosen_by=by)
    if require and not g["held"]:
        raise TargetNotMetError(f"--require-guarantee: {g['note']}")
    if rule is not None and rule.index != choice.index:
        g["robust_rule"] = _brief(sw, rule.index, cert)
    return choice, g


def _brief(sw: sweep.Sweep, i: int, cert: Certification) -> dict:
    return {
        "thresholds": [int(v) for v in sw.thresholds[i]],
        "escalation": float(sw.escalation[i]),
        "accuracy": float(sw.accuracy[i]),
        "losses": int(sw.losses[i]),
        "p_value": float(cert.p_value[i]),
    }


def describe(
    sw: sweep.Sweep,
    i: int | None,
    cert: Certification,
    *,
    require: bool = False,
    chosen_by: str = "robust rule",
) -> dict:
    """calibration.json's ``chosen.guarantee`` for point ``i`` (None: no point chosen).

    ``chosen_by``: "certified" (the cheapest certified point), or what else picked it (a key
    of _CHOSEN_BY).
    """
    g: dict = {
        "method": METHOD,
        "delta": max(cert.delta, 0.0),
        "confidence": cert.confidence,
        "alpha": cert.alpha,
        "chains": cert.chains,
        "inputs": sw.n,
        "losses": None if i is None else int(sw.losses[i]),
        "risk_upper": None if i is None else _risk_upper_at(sw, i, cert.confidence),
        "p_value": None if i is None else float(cert.p_value[i]),
        "held": i is not None and bool(cert.certified[i]),
        "certified_points": cert.count,
        "required": require,
        "chosen_by": chosen_by,
        # the smallest loss this split could vouch for at the chosen point, tested alone at
        # the same alpha: what to ask for instead when the target is not supported
        "supported_delta": None
        if i is None
        else bounds.error_rate_upper(int(sw.losses[i]), sw.n, 1.0 - cert.alpha),
    }
    pct = f"{cert.delta:.2%}"
    if g["held"]:
        g["note"] = (
            f"with probability >= {cert.confidence:.0%} over the calibration draw, the chosen"
            f" point loses at most {pct} of inputs that the reference alone gets right"
        )
        if chosen_by in _CHOSEN_BY:
            g["note"] += f" ({_CHOSEN_BY[chosen_by][0]}; it happens to be certified)"
        return g
    if i is None:
        g["note"] = "no threshold setting meets the target on the split"
        return g
    g["needed_inputs"] = needed_inputs(g["losses"], sw.n, cert.delta, cert.alpha)
    what, fallback = _CHOSEN_BY[chosen_by]
    g["note"] = _why_not(sw, g, cert, what) + ("" if require else f"; {fallback}")
    g["note"] += (
        f"; at this point the split supports a loss of at most {g['supported_delta']:.2%}"
        f" (--target-accuracy {-g['supported_delta']:.4f})"
    )
    return g


def _risk_upper_at(sw: sweep.Sweep, i: int, confidence: float) -> float:
    if sw.risk_upper is not None:
        return float(sw.risk_upper[i])
    return bounds.error_rate_upper(int(sw.losses[i]), sw.n, confidence)


# what chose a point the test did not certify: (its name, what the note says of it)
_CHOSEN_BY = {
    "robust rule": (
        "the robust rule's point",
        "fell back to the robust rule (plateau, calibrated estimate, pessimistic bound), which"
        " escalates at least as much as the point estimate",
    ),
    "point estimate": ("the point estimate", "--no-robust: chosen by the outcomes alone"),
    "best effort": ("the most accurate point", "--best-effort: the most accurate point"),
}


def _why_not(sw: sweep.Sweep, g: dict, cert: Certification, what: str) -> str:
    n, k, need = sw.n, g["losses"], g["needed_inputs"]
    if cert.delta <= 0:
        return (
            "a target at or above the reference alone (DELTA >= 0) cannot be certified: it"
            " allows no loss against the reference, and every setting the gates can express"
            " may lose some"
        )
    if cert.count:
        head = f"the point is not certified ({cert.count} others are)"
    else:
        head = f"no threshold setting is certified on {n} inputs"
    at = f"{head}: {what} has {k} loss{'es' if k != 1 else ''} in {n}"
    if need is None:
        return f"{at}, a rate not below {cert.delta:.2%}: more inputs at that rate would not pass"
    if need <= n:
        return (
            f"{at} and passes its own test (p {g['p_value']:.3g} <= alpha {cert.alpha:.3g}),"
            " but a higher board threshold of its chain failed first (fixed sequence)"
        )
    return (
        f"{at} (p {g['p_value']:.3g} > alpha {cert.alpha:.3g}); at that loss rate the test"
        f" would pass from {need} inputs"
    )


def describe_bound(sw: sweep.Sweep, i: int, confidence: float) -> dict:
    """--max-escalation: the chosen point's risk bound, reported, not tested."""
    return {
        "method": "clopper-pearson bound at the chosen point (no certification)",
        "delta": None,
        "confidence": confidence,
        "alpha": None,
        "chains": len(chains(sw)),
        "inputs": sw.n,
        "losses": int(sw.losses[i]),
        "risk_upper": _risk_upper_at(sw, i, confidence),
        "p_value": None,
        "held": False,
        "certified_points": None,
        "required": False,
        "chosen_by": "max escalation",
        "note": (
            "--max-escalation chooses by the outcomes; the bound is for a point fixed in"
            " advance, and this one was chosen on the same split"
        ),
    }
