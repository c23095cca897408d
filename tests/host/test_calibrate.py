"""`edgeladder calibrate`: metrics and temperature by hand, the choice rules, the digits build."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgeladder import cli
from edgeladder.policy import config as ladderconfig
from edgeladder.policy import replay as cascade_eval
from edgeladder.policy.calibrate import bounds, guarantee, metrics, scores, sweep, temperature

# -- metrics, with numbers a person can check


def test_ece_of_a_calibrated_set_is_zero_and_of_an_overconfident_one_is_the_gap():
    # 10 answers at 0.8 with 8 right, 4 at 0.5 with 2 right: each bin's accuracy = confidence
    conf = [0.8] * 10 + [0.5] * 4
    ok = [1] * 8 + [0] * 2 + [1, 0, 1, 0]
    assert metrics.ece(conf, ok) == pytest.approx(0.0)
    # all at 0.9, all right: off by 0.1 everywhere
    assert metrics.ece([0.9] * 5, [1] * 5) == pytest.approx(0.1)
    # two bins: 0.9 with 1 of 2 right (gap 0.4), 0.3 with 0 of 2 right (gap 0.3): mean 0.35
    assert metrics.ece([0.9, 0.9, 0.3, 0.3], [1, 0, 0, 0]) == pytest.approx(0.35)


def test_auroc_perfect_reversed_ties_and_a_hand_count():
    ok = np.array([1, 1, 0, 0], bool)
    assert metrics.auroc([0.9, 0.8, 0.2, 0.1], ok) == 1.0  # every right answer above
    assert metrics.auroc([0.1, 0.2, 0.8, 0.9], ok) == 0.0  # exactly backwards
    assert metrics.auroc([0.5, 0.5, 0.5, 0.5], ok) == 0.5  # all ties: half each
    # right {0.9, 0.5} vs wrong {0.5, 0.1}: pairs >, >, tie, > = 3.5 of 4
    assert metrics.auroc([0.9, 0.5, 0.5, 0.1], ok) == pytest.approx(0.875)
    assert metrics.auroc([0.9, 0.1], [True, True]) is None  # no errors: nothing to rank


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 4, size=(20000, 10))
    p = metrics.softmax(z / 2.5)  # labels drawn as if the true temperature were 2.5
    labels = np.array([rng.choice(10, p=row) for row in p])
    t = temperature.fit_temperature(z, labels)
    assert t == pytest.approx(2.5, rel=0.05)
    assert temperature.nll(z, labels, t) < temperature.nll(z, labels, 1.0)
    # the scaled probabilities are calibrated: ECE well below the unscaled one
    ok = np.argmax(z, axis=1) == labels
    after = metrics.ece(metrics.softmax(z / t).max(axis=1), ok)
    assert after < 0.02 < metrics.ece(metrics.softmax(z).max(axis=1), ok)


# -- the error-rate bound and the pessimistic temperature, by hand


def test_binomial_cdf_by_hand():
    # 4 fair coins, at most 1 head: (1 + 4) / 16
    assert bounds.binomial_cdf(1, 4, 0.5) == pytest.approx(5 / 16)
    assert bounds.binomial_cdf(0, 3, 0.1) == pytest.approx(0.9**3)
    assert bounds.binomial_cdf(4, 4, 0.3) == pytest.approx(1.0)
    # large n stays finite: the mean is 10, at most 10 is a bit over half
    assert 0.5 < bounds.binomial_cdf(10, 10_000, 0.001) < 0.6


def test_error_rate_upper_bound_closed_forms():
    # no errors: (1 - p)^n = 1 - c, so p = 1 - (1 - c)^(1/n)
    assert bounds.error_rate_upper(0, 10, 0.9) == pytest.approx(1 - 0.1**0.1)  # 0.206
    assert bounds.error_rate_upper(0, 10, 0.9) == pytest.approx(0.2057, abs=1e-4)
    assert bounds.error_rate_upper(0, 269, 0.9) == pytest.approx(0.00852, abs=1e-5)
    # 1 error in 2: P(X <= 1) = 1 - p^2 = 1 - c; at c = 0.81, p = 0.9 (found by bisection)
    assert bounds.error_rate_upper(1, 2, 0.81) == pytest.approx(0.9, abs=1e-9)
    # 1 error in 10 at 90%: the defining equation holds at the bound
    hi = bounds.error_rate_upper(1, 10, 0.9)
    assert (1 - hi) ** 10 + 10 * hi * (1 - hi) ** 9 == pytest.approx(0.1, abs=1e-9)
    assert hi == pytest.approx(0.3368, abs=1e-4)
    # more evidence, tighter; more errors or more confidence, looser; all errors: 1
    assert bounds.error_rate_upper(2, 2690) < bounds.error_rate_upper(2, 269)
    assert bounds.error_rate_upper(2, 269) < bounds.error_rate_upper(3, 269)
    assert bounds.error_rate_upper(2, 269, 0.8) < bounds.error_rate_upper(2, 269, 0.95)
    assert bounds.error_rate_upper(5, 5) == 1.0 and bounds.error_rate_upper(0, 0) == 1.0
    with pytest.raises(ValueError):
        bounds.error_rate_upper(1, 10, 1.0)


def test_pessimistic_temperature_by_hand():
    # two classes, logits (ln 9, 0): p(answer) = 9 / (9 + 1) = 0.9 at T = 1, an error of 0.1.
    # An error of 0.25 needs e^(ln 9 / T) = 3: T = ln 9 / ln 3 = 2.
    z, answers = np.array([[math.log(9), 0.0]]), np.array([0])
    assert bounds.mean_error(z, answers, 1.0) == pytest.approx(0.1)
    t = bounds.pessimistic_temperature(z, answers, 0.25, fitted=1.0)
    assert t == pytest.approx(2.0, rel=1e-9)
    assert bounds.answer_probability(z, answers, t)[0] == pytest.approx(0.75)
    # the fitted T already expects more errors than the bound: kept
    assert bounds.pessimistic_temperature(z, answers, 0.05, fitted=1.0) == 1.0
    # worse than a coin: no temperature expects it, the search's ceiling
    assert bounds.pessimistic_temperature(z, answers, 0.6, fitted=1.0) == bounds.T_LIMIT


def test_sweep_counts_the_pessimistic_probabilities_of_the_kept_inputs():
    # a board stage and a last stage. Board confidences 10, 20, 30, 40 (Q16); the board is
    # always right on the split, the last stage wrong on input 3.
    conf = np.array([[10, 0], [20, 0], [30, 0], [40, 0]])
    correct = np.array([[1, 1], [1, 1], [1, 1], [1, 0]], bool)
    bound = np.array([[0.5, 1], [0.9, 1], [0.99, 1], [1.0, 0]])
    sw = sweep.sweep(conf, correct, [0.0, 1.0], bound=bound)
    at = {int(t): k for k, t in enumerate(sw.thresholds[:, 0])}
    # threshold 30: inputs 0 and 1 climb (the last stage gets both right), 2 and 3 stay:
    # (1 + 1 + 0.99 + 1.0) / 4
    assert sw.bound_accuracy[at[30]] == pytest.approx((1 + 1 + 0.99 + 1) / 4)
    assert sw.accuracy[at[30]] == 1.0 and sw.escalation[at[30]] == 0.5
    # nothing climbs: (0.5 + 0.9 + 0.99 + 1.0) / 4; everything: the last stage's outcomes
    assert sw.bound_accuracy[at[0]] == pytest.approx(3.39 / 4)
    assert sw.bound_accuracy[at[65536]] == pytest.approx(3 / 4)
    assert sw.expected_accuracy is None


def test_a_split_without_errors_is_no_licence_never_to_escalate():
    # 10 inputs, two classes, the board right on all of them with logit margins 1..10 (T = 1),
    # the last stage right on all. By the outcomes "never escalate" meets any target; the bound
    # says that 0 errors in 10 still allow 20.6% at 90% confidence, so the board must escalate.
    margins = np.arange(1, 11, dtype=float)
    z = np.column_stack([margins, np.zeros(10)])
    answers = np.zeros(10, np.int64)
    rate = bounds.error_rate_upper(0, 10, 0.9)
    t_hi = bounds.pessimistic_temperature(z, answers, rate, fitted=1.0)
    assert t_hi > 1.0
    assert bounds.mean_error(z, answers, t_hi) == pytest.approx(rate, abs=1e-9)
    conf = np.column_stack([np.round(65536 / (1 + np.exp(-margins))), np.zeros(10)])
    correct = np.ones((10, 2), bool)
    p_fit = bounds.answer_probability(z, answers, 1.0)
    p_hi = bounds.answer_probability(z, answers, t_hi)
    last = np.ones(10)
    sw = sweep.sweep(
        conf,
        correct,
        [0.0, 1.0],
        expected=np.column_stack([p_fit, last]),
        bound=np.column_stack([p_hi, last]),
    )
    target = 1.0 - 0.003
    assert sw.escalation[sweep.choose_for_accuracy(sw, target, robust=False).index] == 0.0
    # 0.3 points cannot be promised from 10 inputs: everything climbs (the safe side)
    choice = sweep.choose_for_accuracy(sw, target)
    assert choice.rules["bound"] and choice.robust
    assert sw.escalation[choice.index] == 1.0
    # a looser target, 10 points: the 3 least sure climb. Kept: margins 4..10 at T = t_hi,
    # (3 + sum of their p_hi) / 10 >= 0.9, while keeping margin 3 too falls short
    loose = sweep.choose_for_accuracy(sw, 0.9)
    assert sw.escalation[loose.index] == pytest.approx(0.3)
    assert (3 + p_hi[3:].sum()) / 10 >= 0.9 > (2 + p_hi[2:].sum()) / 10
    # without the bound, the plateau and the calibrated estimate keep 7 of 10 at 0.3 points
    sw.bound_accuracy = None
    assert sw.escalation[sweep.choose_for_accuracy(sw, target).index] == pytest.approx(0.3)


# -- the choice rules on hand-made sweeps


def _sweep(acc, esc, expected=None, gateway=None, bound=None) -> sweep.Sweep:
    n = len(acc)
    gw = np.zeros(n, np.int64) if gateway is None else np.asarray(gateway)
    return sweep.Sweep(
        thresholds=np.column_stack([np.arange(n) * 1000, gw, np.zeros(n, np.int64)]),
        accuracy=np.asarray(acc, float),
        escalation=np.asarray(esc, float),
        reach=np.column_stack([np.ones(n), esc, np.zeros(n)]),
        cost=np.asarray(esc, float),
        errors=np.zeros(n, np.int64),
        n=100,
        expected_accuracy=None if expected is None else np.asarray(expected, float),
        bound_accuracy=None if bound is None else np.asarray(bound, float),
    )


def test_choice_needs_a_plateau_not_a_lucky_single_threshold():
    # escalation rises with the board threshold; 0.10 meets the target once, then 0.15 does not
    acc = [0.95, 0.99, 0.97, 0.99, 0.99, 0.99]
    esc = [0.00, 0.10, 0.15, 0.20, 0.25, 0.30]
    sw = _sweep(acc, esc)
    assert sweep.choose_for_accuracy(sw, 0.99, robust=False).index == 1  # the cheapest
    robust = sweep.choose_for_accuracy(sw, 0.99)
    assert robust.index == 3 and robust.robust  # 0.20, 0.25, 0.30 all meet it
    assert sweep.choose_for_accuracy(sw, 0.999) is None


def test_choice_needs_the_calibrated_estimate_to_meet_the_target():
    acc = [0.99, 0.99, 0.99, 0.99]
    esc = [0.05, 0.10, 0.15, 0.20]
    expected = [0.980, 0.986, 0.991, 0.995]  # the probabilities expect errors on kept inputs
    choice = sweep.choose_for_accuracy(_sweep(acc, esc, expected), 0.99)
    assert choice.index == 2 and choice.rules["calibrated"]
    # nothing passes the calibrated rule, and all estimates tie: the cheapest, and it says so
    plain = sweep.choose_for_accuracy(_sweep(acc, esc, [0.9] * 4), 0.99)
    assert plain.index == 0 and not plain.robust and "note" in plain.rules


def test_choice_needs_the_bound_to_meet_the_target_and_falls_back_to_the_safe_side():
    acc = [0.99, 0.99, 0.99, 0.99]
    esc = [0.05, 0.10, 0.15, 0.20]
    expected = [0.992, 0.994, 0.996, 0.998]  # the point estimate is happy everywhere
    bound = [0.980, 0.986, 0.991, 0.995]  # as many errors as the split allows: from 0.15 on
    choice = sweep.choose_for_accuracy(_sweep(acc, esc, expected, bound=bound), 0.99)
    assert choice.index == 2 and choice.robust
    assert choice.rules["bound"] and choice.rules["calibrated"] and choice.rules["plateau"]
    # the bound never reaches the target: not the cheapest point but the one with the highest
    # bound (0.15, not 0.05), and the choice says so
    low = [0.970, 0.985, 0.989, 0.975]
    safe = sweep.choose_for_accuracy(_sweep(acc, esc, expected, bound=low), 0.99)
    assert safe.index == 2 and not safe.robust and not safe.rules["bound"]
    assert "highest bound" in safe.rules["note"]
    # --no-robust: the cheapest that meets, whatever the bound says
    assert (
        sweep.choose_for_accuracy(_sweep(acc, esc, expected, bound=low), 0.99, robust=False).index
        == 0
    )


def test_max_escalation_takes_the_most_accurate_then_the_least_escalation():
    sw = _sweep([0.95, 0.98, 0.98, 0.99], [0.0, 0.05, 0.10, 0.20])
    assert sweep.choose_for_escalation(sw, 0.15).index == 1
    assert sweep.choose_for_escalation(sw, 0.2).index == 3


# -- the real digits build


def _calibrate(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(["calibrate", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_calibrate_the_digits_build(digits_build, tmp_path, capsys):
    out = tmp_path / "ladder.json"
    rc, stdout, err = _calibrate(capsys, str(digits_build.out), "-o", str(out), "--json")
    assert rc == 0, err
    report = json.loads(stdout)
    cfg = ladderconfig.load(out)  # what the board and the tiers accept
    assert [s.where for s in cfg.stages] == ["edge", "gateway", "cloud"]
    assert cfg.stages[0].model == "digits_tiny.ldr"
    assert cfg.stages[1].tflite == "medium/digits_medium.tflite"
    assert cfg.stages[-1].threshold == 0 and cfg.deadline_ms == 200
    assert cfg.model_version == ladderconfig.model_version(digits_build.out)

    # the thresholds meet the target on the validation split, by the gate-by-gate walk
    info = scores.load_build(digits_build.out)
    stages, y = scores.score_split(info, ["tiny", "medium", "large"], "val")
    large = float(np.mean(stages[2].predictions == y))
    logits, outputs = [s.logits for s in stages], [s.outputs for s in stages]
    walk = cascade_eval.evaluate(cfg, logits, outputs, y)
    assert walk.accuracy >= large - 0.003
    assert walk.accuracy == pytest.approx(report["chosen"]["accuracy"])
    assert walk.escalation_rate == pytest.approx(report["chosen"]["escalation"])
    assert report["target"]["accuracy"] == pytest.approx(large - 0.003)

    # the evidence: per stage the bound on its error rate at 90%, and a temperature at least
    # as high as the fitted one that expects that many errors
    for s in report["stages"]:
        b = s["bound"]
        assert (b["errors"], b["inputs"], b["confidence"]) == (s["errors"], len(y), 0.9)
        assert b["error_rate_upper"] == pytest.approx(bounds.error_rate_upper(s["errors"], len(y)))
        assert b["error_rate_upper"] > s["errors"] / len(y) and b["temperature"] >= s["temperature"]
    chosen = report["chosen"]
    assert chosen["robust"] and chosen["rules"]["bound"]
    assert chosen["bound_accuracy"] >= report["target"]["accuracy"] - 1e-12
    assert chosen["bound_accuracy"] <= chosen["expected_accuracy"]
    ev = chosen["evidence"]
    kept = np.asarray(walk.source) == "edge"
    assert ev["inputs"] == len(y) and ev["kept"] == int(kept.sum())
    assert ev["kept_errors"] == int(np.sum((stages[0].predictions != y) & kept))
    assert 0 <= ev["kept_expected_errors"] <= ev["kept_bound_errors"]

    # the guarantee: 269 inputs cannot certify 0.3 points at 90% (Bonferroni over the gateway's
    # chains); it says so, names the inputs it would need, and falls back to the robust rule
    assert report["split"] == "val" and report["split_requested"] == "auto"
    g = chosen["guarantee"]
    assert g["method"] == guarantee.METHOD and g["inputs"] == len(y) == 269
    assert (g["delta"], g["confidence"]) == (pytest.approx(0.003), 0.9)
    chains = len({tuple(t[1:]) for t in report["sweep"]["thresholds"]})
    assert g["chains"] == chains > 1 and g["alpha"] == pytest.approx(0.1 / chains)
    assert not g["held"] and g["certified_points"] == 0 and not chosen["rules"]["guarantee"]
    # the losses: the ladder wrong where large alone is right, by the gate-by-gate walk
    walk_ok = np.asarray(walk.labels) == y
    assert g["losses"] == chosen["losses"] == int(np.sum(~walk_ok & (stages[2].predictions == y)))
    assert g["p_value"] == pytest.approx(bounds.binomial_cdf(g["losses"], 269, 0.003))
    assert g["p_value"] > g["alpha"]
    assert g["risk_upper"] == pytest.approx(bounds.error_rate_upper(g["losses"], 269, 0.9))
    need = guarantee.needed_inputs(g["losses"], 269, 0.003, g["alpha"])
    assert g["needed_inputs"] == need > 269 and f"from {need} inputs" in g["note"]
    if g["losses"] == 0:  # the closed form
        assert need == math.ceil(math.log(g["alpha"]) / math.log(1 - 0.003))
    # the fallback is the safe side: it escalates at least as much as the point estimate
    cols = report["sweep"]
    goal = report["target"]["accuracy"]
    plain = min(
        e for a, e in zip(cols["accuracy"], cols["escalation"], strict=True) if a >= goal - 1e-6
    )
    assert walk.escalation_rate >= plain - 1e-6
    # digits keeps its figures on the held-out test split: within 0.3 points of large alone,
    # at most 15 % of the inputs off the board
    test = report["test"]
    large_test = test["tiers_alone"]["large"]["accuracy"]
    assert test["ladder"]["accuracy"] >= large_test - 0.003 - 1e-12
    assert test["ladder"]["escalation_rate"] <= 0.15
    cols = report["sweep"]
    assert len(cols["losses"]) == len(cols["risk_upper"]) == report["sweep"]["count"]
    assert all(0 <= k <= 269 for k in cols["losses"])
    assert min(cols["risk_upper"]) > 0

    # the figures: a temperature, ECE before and after, an AUROC per measure, per stage
    for s, st in zip(report["stages"], cfg.stages, strict=True):
        assert s["temperature"] > 0 and st.temperature == s["temperature"]
        assert st.exp_lut == ladderconfig.exp_lut(s["logit_scale"], s["temperature"])
        assert 0 <= s["ece_before"] <= 1 and 0 <= s["ece_after"] <= 1
        assert set(s["auroc"]) == {"max", "margin", "entropy"}
    tiny = report["stages"][0]
    assert 0.5 < tiny["auroc"][cfg.stages[0].measure] <= 1  # auto: the measure that ranks best
    assert tiny["auroc"][tiny["measure"]] == max(v for v in tiny["auroc"].values() if v is not None)
    assert report["sweep"]["count"] == len(report["sweep"]["accuracy"]) > 100
    assert set(report["tiers_alone"]) == {"tiny", "medium", "large"}

    # the fixed 0.95 / 0.90 config, evaluated on the same split
    fixed = cascade_eval.fixed_threshold_ladder(cfg, [s.logit_scale for s in stages])
    fixed_walk = cascade_eval.evaluate(fixed, logits, outputs, y)
    assert report["fixed_threshold"]["thresholds"] == [62259, 58982, 0]
    assert report["fixed_threshold"]["ladder"]["accuracy"] == pytest.approx(fixed_walk.accuracy)

    png = (tmp_path / "calibration.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 600 and height > 300
    assert json.loads((tmp_path / "calibration.json").read_text()) == report


def test_calibrate_for_a_maximum_escalation(digits_build, tmp_path, capsys):
    out = tmp_path / "ladder.json"
    argv = [str(digits_build.out), "-o", str(out), "--max-escalation", "0.05", "--no-plot"]
    rc, stdout, err = _calibrate(capsys, *argv, "--measure", "max")
    assert rc == 0, err
    assert "escalation <= 5.0%" in stdout  # the rich summary
    assert "not a certification" in " ".join(stdout.split())
    report = json.loads((tmp_path / "calibration.json").read_text())
    bound = report["stages"][0]["bound"]["error_rate_upper"]
    assert "evidence:" in stdout and f"{bound:.2%}" in stdout  # the board's error bound
    assert report["chosen"]["escalation"] <= 0.05
    g = report["chosen"]["guarantee"]  # a bound at the chosen point, no test
    assert g["delta"] is None and not g["held"] and g["losses"] == report["chosen"]["losses"]
    assert g["risk_upper"] == pytest.approx(bounds.error_rate_upper(g["losses"], 269, 0.9))
    assert {s.measure for s in ladderconfig.load(out).stages} == {"max"}
    # the most accurate point within the budget: no sweep point there does better
    sw = report["sweep"]
    within = [a for a, e in zip(sw["accuracy"], sw["escalation"], strict=True) if e <= 0.05]
    assert report["chosen"]["accuracy"] == pytest.approx(max(within))
    assert not (tmp_path / "calibration.png").exists()


def test_more_confidence_never_escalates_less(digits_build, tmp_path, capsys):
    esc = []
    for c in ("0.5", "0.9", "0.99"):
        out = tmp_path / c / "ladder.json"
        rc, stdout, err = _calibrate(
            capsys, str(digits_build.out), "-o", str(out), "--no-plot", "--confidence", c
        )
        assert rc == 0, err
        report = json.loads(out.with_name("calibration.json").read_text())
        assert report["stages"][0]["bound"]["confidence"] == float(c)
        g = report["chosen"]["guarantee"]
        assert g["confidence"] == float(c)
        # the console's one line on the guarantee
        line = " ".join(stdout.split())
        assert f"accuracy loss vs large ≤ 0.30 pt with {float(c):.0%} confidence" in line
        assert f"NOT supported by 269 inputs: would need ≥ {g['needed_inputs']}" in line
        assert "fell back to the robust rule" in line
        esc.append(report["chosen"]["escalation"])
    assert esc == sorted(esc)


def test_calibrate_bad_input_is_one_line(digits_build, tmp_path, capsys):
    build = str(digits_build.out)
    rc, _, err = _calibrate(capsys, str(tmp_path / "nothing"))  # a path: named as given
    assert rc == 1 and err.startswith(f"error: {tmp_path / 'nothing'}: no such folder")
    assert err.count("\n") == 1
    rc, _, err = _calibrate(capsys, "nothing")  # a task name: looked up as build/nothing
    assert rc == 1 and err.startswith("error: no build of 'nothing'") and err.count("\n") == 1
    rc, _, err = _calibrate(capsys, build, "--split", "test", "-o", str(tmp_path / "l.json"))
    assert rc == 1 and "cannot calibrate on split 'test'" in err and err.count("\n") == 1
    # above the largest tier: nothing reaches it; the error names the best reachable figure
    argv = [build, "--target-accuracy", "0.01", "-o", str(tmp_path / "l.json"), "--no-plot"]
    rc, _, err = _calibrate(capsys, *argv)
    assert rc == 1 and "no threshold setting reaches accuracy" in err and "best reachable" in err
    assert err.count("\n") == 1 and not (tmp_path / "l.json").exists()
    rc, _, err = _calibrate(capsys, build, "--confidence", "1", "-o", str(tmp_path / "l.json"))
    assert rc == 1 and "--confidence 1.0 must be strictly between 0 and 1" in err
    assert err.count("\n") == 1
    rc, _, err = _calibrate(capsys, *argv, "--best-effort")
    assert rc == 0, err
    assert ladderconfig.load(tmp_path / "l.json").stages[0].where == "edge"
    # nothing is certified on 269 inputs: --require-guarantee fails rather than fall back
    out = str(tmp_path / "r.json")
    rc, _, err = _calibrate(capsys, build, "--require-guarantee", "-o", out, "--no-plot")
    assert rc == 1 and err.startswith("error: --require-guarantee: no threshold setting")
    assert "inputs" in err and err.count("\n") == 1 and not (tmp_path / "r.json").exists()
    rc, _, err = _calibrate(capsys, build, "--require-guarantee", "--no-robust", "-o", out)
    assert rc == 1 and "not both" in err and err.count("\n") == 1
    rc, _, err = _calibrate(capsys, build, "--split", "nonsense", "-o", out)
    assert rc == 1 and "cannot calibrate on split 'nonsense'" in err


def test_calibrate_reports_a_missing_tier_file(digits_build, tmp_path, capsys):
    import shutil

    build = tmp_path / "digits"
    shutil.copytree(
        digits_build.out,
        build,
        ignore=shutil.ignore_patterns("*.keras", "c", "ladder.json", "calibration.*"),
    )
    (build / "medium" / "digits_medium.tflite").unlink()
    rc, _, err = _calibrate(capsys, str(build))
    assert rc == 1 and "tier 'medium': missing" in err and "rebuild" in err
    assert not (build / "ladder.json").exists()


def test_exp_lut_uses_the_temperature():
    # ladderconfig.exp_lut is the board's table; a higher T flattens it
    cold, hot = ladderconfig.exp_lut(0.25, 1.0), ladderconfig.exp_lut(0.25, 2.0)
    assert cold[4] == round(16384 * math.exp(-1)) and hot[8] == cold[4]
