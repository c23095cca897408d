"""Learn-then-Test (policy/calibrate/guarantee.py): the test by hand, and its validity by
simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeladder.policy.calibrate import guarantee, sweep
from edgeladder.policy.calibrate.errors import TargetNotMetError


def _chains(losses_per_chain, n: int) -> sweep.Sweep:
    """A hand-made sweep: one chain per list, its points at board thresholds 100, 90, ...
    (highest first, as the test walks them), escalation falling as the threshold falls."""
    rows, acc, esc, losses = [], [], [], []
    for mid, chain in enumerate(losses_per_chain):
        for j, k in enumerate(chain):
            rows.append([100 - 10 * j, 1000 * mid, 0])
            esc.append(1.0 - 0.1 * j)
            losses.append(k)
            acc.append(1.0 - k / n)
    p = len(rows)
    esc_a = np.asarray(esc, float)
    return sweep.Sweep(
        thresholds=np.asarray(rows, np.int64),
        accuracy=np.asarray(acc, float),
        escalation=esc_a,
        reach=np.column_stack([np.ones(p), esc_a, esc_a]),
        cost=esc_a.copy(),
        errors=np.asarray(losses, np.int64),
        n=n,
        losses=np.asarray(losses, np.int64),
    )


def test_p_values_are_the_binomial_cdf_by_hand():
    p = guarantee.p_values(np.array([0, 1, 0]), 10, 0.1)
    assert p[0] == pytest.approx(0.9**10) and p[2] == p[0]
    assert p[1] == pytest.approx(0.9**10 + 10 * 0.1 * 0.9**9)
    # a risk of at most 0 cannot be shown by any count
    assert (guarantee.p_values(np.array([0, 3]), 10_000, 0.0) == 1.0).all()


def test_sweep_counts_losses_against_the_last_stage():
    # board confidences 10, 20, 30, 40; the board is wrong on inputs 0 and 2, the last stage
    # on inputs 2 and 3. A loss is the ladder wrong where the last stage alone is right: input
    # 0 kept on the board. Input 2 kept is an error but no loss (the last stage errs too);
    # input 3 escalated is an error the ladder inherits, again no loss.
    conf = np.array([[10, 0], [20, 0], [30, 0], [40, 0]])
    correct = np.array([[0, 1], [1, 1], [0, 0], [1, 0]], bool)
    sw = sweep.sweep(conf, correct, [0.0, 1.0])
    at = {int(t): k for k, t in enumerate(sw.thresholds[:, 0])}
    assert sw.losses[at[0]] == 1 and sw.errors[at[0]] == 2  # all kept
    assert sw.losses[at[20]] == 0 and sw.errors[at[20]] == 1  # input 0 escalated
    assert sw.losses[at[65536]] == 0 and sw.errors[at[65536]] == 2  # the last stage alone
    assert sw.columns()["losses"] == sw.losses.tolist()
    # the ladder's accuracy is at least the last stage's minus the loss rate
    assert (sw.accuracy >= correct[:, 1].mean() - sw.losses / 4 - 1e-12).all()
    assert sw.point(at[0])["losses"] == 1 and sw.point(at[0])["risk_upper"] is None


def test_a_chain_stops_at_the_first_failure():
    # 2000 inputs, delta 0.3%, 90%: alpha 0.1. 0 losses: p = 0.997^2000 = 0.0025; 2 losses:
    # p = 0.062 (passes); 5 losses: p = 0.45 (fails). The chain stops there: the 0 losses
    # after it are not tested, so the cheapest certified point is the last one before it.
    sw = _chains([[0, 0, 2, 5, 0, 0]], n=2000)
    cert = guarantee.certify(sw, 0.003, 0.9)
    assert cert.alpha == pytest.approx(0.1) and cert.chains == 1
    assert cert.certified.tolist() == [True, True, True, False, False, False]
    assert cert.p_value[2] <= 0.1 < cert.p_value[3]
    choice, g = guarantee.choose_for_accuracy(sw, 1 - 0.003, 0.003, 0.9, robust=True)
    assert choice.index == 2 and g["held"] and g["certified_points"] == 3
    assert g["losses"] == 2 and g["p_value"] == pytest.approx(cert.p_value[2])
    assert "needed_inputs" not in g


def test_bonferroni_divides_alpha_by_the_chains():
    # 886 inputs without a loss: p = 0.997^886 = 0.0697, under 0.1 but over 0.1 / 2
    assert 0.05 < 0.997**886 < 0.1
    one = guarantee.certify(_chains([[0, 0]], n=886), 0.003, 0.9)
    assert one.certified.all() and one.alpha == pytest.approx(0.1)
    two = guarantee.certify(_chains([[0, 0], [0, 0]], n=886), 0.003, 0.9)
    assert two.chains == 2 and two.alpha == pytest.approx(0.05)
    assert not two.certified.any()


def test_ten_inputs_cannot_certify_three_tenths_of_a_point():
    sw = _chains([[0, 0, 0, 0]], n=10)
    cert = guarantee.certify(sw, 0.003, 0.9)
    assert cert.count == 0 and cert.p_value[0] == pytest.approx(0.997**10)
    # at the same rate (no loss) the test passes from ceil(ln 0.1 / ln 0.997) = 767 inputs
    assert guarantee.needed_inputs(0, 10, 0.003, 0.1) == 767
    assert 0.997**767 <= 0.1 < 0.997**766
    assert math.ceil(math.log(0.1) / math.log(0.997)) == 767
    choice, g = guarantee.choose_for_accuracy(sw, 1 - 0.003, 0.003, 0.9)
    # the fallback: the robust rule's point among those that escalate something
    rule = sweep.choose_for_accuracy(sw, 1 - 0.003, escalate=True)
    assert choice.index == rule.index and not choice.rules["guarantee"]
    assert sw.escalation[choice.index] > 0
    assert not g["held"] and g["needed_inputs"] == 767 and g["inputs"] == 10
    assert "fell back to the robust rule" in g["note"] and "767 inputs" in g["note"]
    with pytest.raises(TargetNotMetError, match="767 inputs"):
        guarantee.choose_for_accuracy(sw, 1 - 0.003, 0.003, 0.9, require=True)


def test_needed_inputs_at_a_loss_rate():
    # 2 losses in 1000 at 0.3%: at 2 per 1000, P(X <= floor(2m / 1000) | m, 0.003) <= 0.1
    m = guarantee.needed_inputs(2, 1000, 0.003, 0.1)
    from edgeladder.policy.calibrate import bounds

    assert bounds.binomial_cdf(2 * m // 1000, m, 0.003) <= 0.1
    assert m > 1000
    # a rate at or above delta: no size suffices
    assert guarantee.needed_inputs(3, 1000, 0.003, 0.1) is None
    assert guarantee.needed_inputs(0, 1000, 0.0, 0.1) is None
    # already enough: the split itself
    assert guarantee.needed_inputs(0, 1000, 0.003, 0.1) == 1000


def test_a_big_split_without_losses_certifies_a_low_escalation_point():
    # 3000 inputs; the board is wrong on its 20 least sure (the last stage right on all). By
    # the outcomes the cheapest point on target keeps ~9 errors (0.3% of 3000); the test keeps
    # fewer (p <= 0.1 allows at most 5 losses), and escalates well under 1%.
    rng = np.random.default_rng(7)
    n = 3000
    conf = np.column_stack([rng.permutation(np.arange(1000, 1000 + 20 * n, 20)), np.zeros(n)])
    board_ok = conf[:, 0] >= np.sort(conf[:, 0])[20]
    correct = np.column_stack([board_ok, np.ones(n, bool)])
    sw = sweep.sweep(conf, correct, [0.0, 1.0])
    assert (sw.losses == sw.errors).all()  # the last stage is never wrong: every error a loss
    choice, g = guarantee.choose_for_accuracy(sw, 1 - 0.003, 0.003, 0.9)
    assert g["held"] and choice.rules["guarantee"]
    assert 0 < sw.escalation[choice.index] < 0.01
    k = g["losses"]
    from edgeladder.policy.calibrate import bounds

    assert bounds.binomial_cdf(k, n, 0.003) <= 0.1 < bounds.binomial_cdf(k + 1, n, 0.003)
    assert sw.accuracy[choice.index] >= 1 - 0.003
    # cheaper than the test allows, by the outcomes alone
    assert (
        sw.escalation[sweep.choose_for_accuracy(sw, 1 - 0.003, robust=False).index]
        < (sw.escalation[choice.index])
    )


def test_a_target_at_or_above_the_reference_cannot_be_certified():
    sw = _chains([[0, 0, 0]], n=100_000)
    # 100,000 inputs without a loss, and still: a risk of at most 0 cannot be shown
    choice, g = guarantee.choose_for_accuracy(sw, 1.0, 0.0, 0.9)
    assert g["certified_points"] == 0 and not g["held"] and g["needed_inputs"] is None
    assert "DELTA >= 0" in g["note"] and not choice.rules["guarantee"]
    with pytest.raises(TargetNotMetError, match="DELTA >= 0"):
        guarantee.choose_for_accuracy(sw, 1.0, 0.0, 0.9, require=True)


# -- validity, by simulation


def _true_risk(q: np.ndarray, ref_right: float) -> np.ndarray:
    """R(t) for every Q16 board threshold t = 0..65536: the board keeps confidence >= t (c
    uniform on 0..65535), wrong with probability q[c], the last stage right with ref_right."""
    tail = np.concatenate([np.cumsum((q * ref_right)[::-1])[::-1], [0.0]])
    return tail / len(q)


def test_the_guarantee_holds_over_many_calibration_draws():
    # A synthetic two-stage ladder with a known risk along the board threshold. Draw 2000
    # calibration splits of 500 inputs, certify on each, and look up the TRUE risk of every
    # certified point: the share of draws where some certified point exceeds delta must stay
    # under 1 - confidence (plus binomial slack). The point estimate must fail far more often,
    # or the simulation could not tell a broken test from a working one.
    rng = np.random.default_rng(2021)
    c = np.arange(65536)
    q = 0.3 * (1 - c / 65536) ** 3  # the board errs on what it is unsure of
    ref_right = 0.99
    risk = _true_risk(q, ref_right)
    delta, confidence, draws, n = 0.01, 0.9, 2000, 500
    lam_star = int(np.flatnonzero(risk <= delta)[0])
    assert 0 < lam_star < 65536 and risk[0] > delta  # the target sits inside the range
    bad = naive_bad = certified_any = 0
    for _ in range(draws):
        conf = rng.integers(0, 65536, n)
        board_ok = rng.random(n) >= q[conf]
        ref_ok = rng.random(n) < ref_right
        sw = sweep.sweep(
            np.column_stack([conf, np.zeros(n)]), np.column_stack([board_ok, ref_ok]), [0, 1]
        )
        cert = guarantee.certify(sw, delta, confidence)
        t = sw.thresholds[:, 0]
        if cert.count:
            certified_any += 1
            bad += bool((risk[t[cert.certified]] > delta).any())
        # the point estimate: the lowest threshold whose observed loss rate is within delta
        naive = t[sw.losses <= delta * n].min()
        naive_bad += bool(risk[naive] > delta)
    slack = 3 * math.sqrt((1 - confidence) * confidence / draws)
    assert certified_any > draws / 2  # the test certifies something on most draws
    assert bad / draws <= (1 - confidence) + slack
    assert naive_bad / draws > 0.3


def test_an_unsupported_target_never_falls_back_to_never_escalate():
    # no loss anywhere on 10 inputs; the last point (board threshold 0) escalates nothing
    sw = _chains([[0] * 11], n=10)
    assert sw.escalation[-1] == pytest.approx(0.0)
    plain = sweep.choose_for_accuracy(sw, 1 - 0.003)
    assert sw.escalation[plain.index] == pytest.approx(0.0)  # the split alone would allow it
    choice, g = guarantee.choose_for_accuracy(sw, 1 - 0.003, 0.003, 0.9)
    assert not g["held"] and sw.escalation[choice.index] > 0
    # certified, the cheapest certified point may escalate nothing: the guarantee covers it
    big = _chains([[0] * 11], n=5000)
    choice, g = guarantee.choose_for_accuracy(big, 1 - 0.003, 0.003, 0.9)
    assert g["held"] and big.escalation[choice.index] == pytest.approx(0.0)


def test_an_unsupported_target_says_what_the_split_does_support():
    sw = _chains([[0, 0, 0, 0]], n=10)
    _, g = guarantee.choose_for_accuracy(sw, 1 - 0.003, 0.003, 0.9)
    # no loss in 10 at alpha 0.1: 1 - 0.1 ** (1 / 10) = 20.6 %
    assert g["supported_delta"] == pytest.approx(1 - 0.1**0.1)
    assert "supports a loss of at most 20.57%" in g["note"]
    # asked for that, the same split certifies it
    _, again = guarantee.choose_for_accuracy(sw, 1 - 0.21, 0.21, 0.9)
    assert again["held"]
