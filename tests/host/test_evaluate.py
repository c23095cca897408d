"""`edgeladder evaluate`: the intervals by hand, a hand-made ladder, digits' test split."""

from __future__ import annotations

import io
import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest

from edgeladder import cli
from edgeladder.policy import config as ladderconfig
from edgeladder.policy import evaluate as ev
from edgeladder.policy import replay
from edgeladder.policy.calibrate import Options, calibrate, scores
from edgeladder.policy.config import LadderConfig, Stage, exp_lut

# -- the intervals, with numbers a person can check


def _binom_tail(k: int, n: int, p: float, upper: bool) -> float:
    """P(X >= k) if upper else P(X <= k), X ~ Binomial(n, p)."""
    ks = range(k, n + 1) if upper else range(0, k + 1)
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in ks)


def test_clopper_pearson_closed_forms_and_its_defining_equations():
    # no success in 10 at 90%: (1 - p)^10 = 0.05; all 10: p^10 = 0.05
    assert ev.clopper_pearson(0, 10, 0.9) == pytest.approx((0.0, 1 - 0.05**0.1))
    assert ev.clopper_pearson(10, 10, 0.9) == pytest.approx((0.05**0.1, 1.0))
    # 1 in 2: P(X >= 1) = 1 - (1 - p)^2 = 0.05 and P(X <= 1) = 1 - p^2 = 0.05
    assert ev.clopper_pearson(1, 2, 0.9) == pytest.approx((1 - 0.95**0.5, 0.95**0.5))
    # 8 in 10: each end leaves (1 - C) / 2 in its tail
    lo, hi = ev.clopper_pearson(8, 10, 0.9)
    assert _binom_tail(8, 10, lo, upper=True) == pytest.approx(0.05, abs=1e-9)
    assert _binom_tail(8, 10, hi, upper=False) == pytest.approx(0.05, abs=1e-9)
    assert lo < 0.8 < hi
    assert ev.clopper_pearson(0, 0) == (0.0, 1.0)  # nothing measured: anything


def test_mcnemar_exact_p_by_hand():
    assert ev.mcnemar_exact_p(0, 0) == 1.0  # no discordant pair: no evidence
    assert ev.mcnemar_exact_p(0, 1) == 1.0
    assert ev.mcnemar_exact_p(0, 5) == pytest.approx(2 * 0.5**5)  # both tails of 5 coins
    assert ev.mcnemar_exact_p(5, 0) == pytest.approx(0.0625)


def test_tango_interval_matches_the_published_implementation():
    # R contingencytables (Fagerland, Lydersen & Laake), its own tests: cavo_2012 has
    # n12 = 6, n21 = 16 of 161 pairs; estimate -0.0621, 95% CI -0.1240 to -0.0054
    lo, hi = ev.tango_interval(6, 16, 161, 0.95)
    assert (lo, hi) == pytest.approx((-0.1240, -0.0054), abs=5e-5)
    # all 3 pairs discordant one way: estimate 1, 95% CI -0.1230 to 1 (and mirrored)
    assert ev.tango_interval(3, 0, 3, 0.95) == pytest.approx((-0.1230, 1.0), abs=5e-5)
    assert ev.tango_interval(0, 3, 3, 0.95) == pytest.approx((-1.0, 0.1230), abs=5e-5)
    # at the limits the score statistic is +-z
    z = 1.959963984540054
    assert ev.tango_statistic(lo, 6, 16, 161) == pytest.approx(z, abs=1e-6)
    assert ev.tango_statistic(hi, 6, 16, 161) == pytest.approx(-z, abs=1e-6)


def test_tango_interval_without_discordant_pairs_is_not_a_point():
    # b = c = 0: the restricted p21 is max(0, -delta), so T = -sqrt(n d / (1 - d)) for d > 0:
    # the limits are +-z^2 / (n + z^2), a Wilson-like interval around 0
    z = 1.6448536269514722  # 90% two-sided
    for n in (10, 359):
        lo, hi = ev.tango_interval(0, 0, n, 0.9)
        assert hi == pytest.approx(z**2 / (n + z**2), rel=1e-9)
        assert lo == pytest.approx(-hi, rel=1e-9)
    # wider at higher confidence, narrower with more inputs
    assert ev.tango_interval(0, 1, 359, 0.95)[0] < ev.tango_interval(0, 1, 359, 0.9)[0]
    assert ev.tango_interval(0, 1, 3590, 0.9)[0] > ev.tango_interval(0, 1, 359, 0.9)[0]


# -- a hand-made ladder: board and cloud, two classes, ten inputs

SCALE = 0.25
SURE, UNSURE = [100, 0], [1, 0]  # p(top) about 1, and 1 / (1 + e^-0.25) = 0.56


def _toy() -> LadderConfig:
    lut = exp_lut(SCALE, 1.0)
    stages = [
        Stage("tiny", "edge", "max", replay.q16(0.9), 1.0, lut, 20, model="tiny.ldr"),
        Stage("large", "cloud", "max", 0, 1.0, lut, 150, tflite="l.tflite", expected_rtt_ms=40),
    ]
    return LadderConfig("toy", 7, 2, 200, 1 / 255, -128, stages)


def _stage(name: str, rows: list[list[int]]) -> scores.StageScores:
    a = np.array(rows, np.int8)
    return scores.StageScores(name, f"{name}.tflite", a, a, SCALE, 0, 1 / 255, -128)


def _toy_scores() -> tuple[dict[str, scores.StageScores], np.ndarray]:
    y = np.zeros(10, np.int64)
    right, wrong = (lambda r: r), (lambda r: r[::-1])
    # tiny: sure on 0..5 (right on 0..4, wrong on 5), unsure on 6..9 (they climb)
    tiny = [right(SURE)] * 5 + [wrong(SURE)] + [right(UNSURE)] * 4
    # large: right on all but 9
    large = [right(SURE)] * 9 + [wrong(SURE)]
    return {"tiny": _stage("tiny", tiny), "large": _stage("large", large)}, y


def test_a_hand_made_ladder_by_hand():
    got, y = _toy_scores()
    r = ev.evaluate_scores(_toy(), got, y, confidence=0.9)
    lad = r["ladder"]
    # right: 0..4 on the board, 6..8 in the cloud; wrong: 5 (board), 9 (cloud)
    assert (lad["correct"], lad["accuracy"]) == (8, 0.8)
    assert lad["accuracy_ci"] == list(ev.clopper_pearson(8, 10, 0.9))
    assert (lad["escalated"], lad["escalation_rate"]) == (4, 0.4)
    assert lad["escalation_ci"] == list(ev.clopper_pearson(4, 10, 0.9))
    assert lad["reached"] == {"tiny": 10, "large": 4}
    assert lad["answered"] == {"tiny": 6, "large": 4}
    assert lad["expected_cost"] == pytest.approx(4 * 5.0 / 10)  # the cloud costs 5
    # tiny alone: wrong only on 5 (its unsure answers are right)
    assert r["tiers_alone"]["large"]["correct"] == 9 and r["tiers_alone"]["tiny"]["correct"] == 9
    # the gap to large: only input 5 is discordant (large right, the ladder wrong)
    gap = lad["gap"]
    assert gap["reference"] == "large" and gap["difference"] == pytest.approx(-0.1)
    assert (gap["only_ladder_right"], gap["only_reference_right"]) == (0, 1)
    assert gap["ci"] == list(ev.tango_interval(0, 1, 10, 0.9))
    assert gap["ci"][0] < -0.1 < gap["ci"][1] and gap["mcnemar_p"] == 1.0
    # the fixed 0.95 thresholds keep the same six inputs on the board here
    assert r["fixed_threshold"]["thresholds"] == [62259, 0]
    assert r["fixed_threshold"]["accuracy"] == 0.8
    assert r["target"] is None
    json.dumps(r)  # JSON-able as it is


def test_the_target_verdicts():
    got, y = _toy_scores()
    lo, hi = ev.tango_interval(0, 1, 10, 0.9)

    def target(**kw):
        return ev.evaluate_scores(_toy(), got, y, confidence=0.9, **kw)["target"]

    # 0.3 points below large: missed by the estimate (-10 points), the interval cannot tell
    t = target(target_delta=-0.003)
    assert (t["met"], t["verdict"]) == (False, "undecided") and lo < -0.003 < hi
    assert t["margin"] == pytest.approx(-0.1 + 0.003)
    assert t["accuracy"] == pytest.approx(0.9 - 0.003) and t["reference"] == "large"
    # below the whole interval: met for sure; above it: missed for sure
    assert target(target_delta=lo - 0.01)["verdict"] == "met"
    assert target(target_delta=hi + 0.01)["verdict"] == "missed"
    # an escalation cap: 4 of 10 escalated, 90% CI about 15%..70%
    e_lo, e_hi = ev.clopper_pearson(4, 10, 0.9)
    t = target(max_escalation=0.5)
    assert (t["mode"], t["met"], t["verdict"]) == ("max_escalation", True, "undecided")
    assert target(max_escalation=e_hi + 0.01)["verdict"] == "met"
    assert target(max_escalation=e_lo - 0.01)["verdict"] == "missed"


def test_bad_input_to_evaluate_scores():
    got, y = _toy_scores()
    with pytest.raises(ev.EvaluationError, match="strictly between 0 and 1"):
        ev.evaluate_scores(_toy(), got, y, confidence=1.0)
    with pytest.raises(ev.EvaluationError, match="no scores for stage"):
        ev.evaluate_scores(_toy(), {"tiny": got["tiny"]}, y)


# -- the real digits build


@pytest.fixture(scope="module")
def build(digits_build, tmp_path_factory):
    """A copy of the digits build (evaluate writes evaluate.json beside the ladder)."""
    out = tmp_path_factory.mktemp("evaluate") / "digits"
    shutil.copytree(digits_build.out, out, ignore=shutil.ignore_patterns("*.keras", "c"))
    # its own ladder.json: the shared build has one only once something has calibrated it
    calibrate(out, Options(plot=False, test_report=False))
    return out


def _evaluate(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(["evaluate", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_evaluate_the_digits_build(build, capsys):
    rc, out, err = _evaluate(capsys, str(build), "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert json.loads((build / "evaluate.json").read_text()) == report
    assert report["split"] == "test" and report["held_out"] and report["confidence"] == 0.9

    # the same figures, walked here from the test split's scores
    info = scores.load_build(build)
    cfg = ladderconfig.load(build / "ladder.json")
    calibration = json.loads((build / "calibration.json").read_text())
    got, y = scores.score_split(info, ["tiny", "medium", "large"], "test")
    logits, outputs = [s.logits for s in got], [s.outputs for s in got]
    walk = replay.evaluate(cfg, logits, outputs, y, costs=calibration["costs"])
    lad, n = report["ladder"], len(y)
    assert report["inputs"] == n
    assert lad["accuracy"] == pytest.approx(walk.accuracy)
    assert lad["escalation_rate"] == pytest.approx(walk.escalation_rate)
    assert lad["reach_rate"] == pytest.approx(walk.summary()["reach_rate"])
    assert lad["expected_cost"] == pytest.approx(walk.expected_cost)
    assert lad["thresholds"] == [s.threshold for s in cfg.stages]
    assert lad["accuracy_ci"] == list(ev.clopper_pearson(lad["correct"], n, 0.9))
    assert lad["accuracy_ci"][0] < lad["accuracy"] <= lad["accuracy_ci"][1]
    for s in got:
        alone = report["tiers_alone"][s.name]
        assert alone["accuracy"] == pytest.approx(np.mean(s.predictions == y))
        assert alone["runtime"] == s.runtime
    fixed = replay.fixed_threshold_ladder(cfg, [s.logit_scale for s in got])
    assert report["fixed_threshold"]["thresholds"] == [62259, 58982, 0]
    assert report["fixed_threshold"]["accuracy"] == pytest.approx(
        replay.evaluate(fixed, logits, outputs, y).accuracy
    )

    # the gap to large, paired on the same inputs
    large_ok = got[2].predictions == y
    gap = lad["gap"]
    assert gap["difference"] == pytest.approx(walk.accuracy - large_ok.mean())
    assert gap["only_ladder_right"] == int(np.sum(walk.correct & ~large_ok))
    assert gap["only_reference_right"] == int(np.sum(~walk.correct & large_ok))

    # the target, from calibration.json beside the ladder
    t = report["target"]
    assert t["delta"] == calibration["target"]["delta"] and t["reference"] == "large"
    assert t["met"] == (gap["difference"] >= t["delta"] - 1e-12)
    assert t["verdict"] in ("met", "missed", "undecided")
    assert t["source"] == str(build / "calibration.json")


def test_evaluate_prints_a_table(build, capsys):
    rc, out, err = _evaluate(capsys, str(build), "--confidence", "0.95")
    assert rc == 0, err
    for text in ("95% intervals", "chosen", "fixed .95/.90", "tiny alone", "large alone"):
        assert text in out
    assert "ladder − large alone" in out and "target on test" in out
    assert f"wrote {build / 'evaluate.json'}" in out
    assert json.loads((build / "evaluate.json").read_text())["confidence"] == 0.95


def test_evaluate_a_ladder_in_memory(build):
    # what calibrate does after choosing: a LadderConfig that is in no file
    info = scores.load_build(build)
    cfg = ladderconfig.load(build / "ladder.json")
    stages = [replace(cfg.stages[0], threshold=0), *cfg.stages[1:]]  # the board answers all
    report = ev.evaluate_ladder(info, replace(cfg, stages=stages), "test", 0.8, -0.003)
    lad = report["ladder"]
    assert lad["accuracy"] == report["tiers_alone"]["tiny"]["accuracy"]
    assert lad["escalated"] == 0 and lad["escalation_ci"][0] == 0.0
    assert report["confidence"] == 0.8 and report["target"]["delta"] == -0.003
    assert not report["target"]["met"]  # tiny alone is 1.7 points under large
    console_out = io.StringIO()
    from rich.console import Console

    ev.print_evaluation(report, Console(file=console_out, width=100))
    assert "chosen" in console_out.getvalue() and "80% intervals" in console_out.getvalue()
    json.dumps(report)


def test_evaluate_bad_input_is_one_line(build, tmp_path, capsys):
    b = str(build)
    rc, _, err = _evaluate(capsys, b, "--ladder", str(tmp_path / "none.json"))
    assert rc == 1 and f"run `edgeladder calibrate {build}` first" in err
    assert err.count("\n") == 1
    other = json.loads((build / "ladder.json").read_text())
    other["model_version"] += 1
    (tmp_path / "other.json").write_text(json.dumps(other))
    rc, _, err = _evaluate(capsys, b, "--ladder", str(tmp_path / "other.json"))
    assert rc == 1 and "calibrated for another build" in err and err.count("\n") == 1
    rc, _, err = _evaluate(capsys, b, "--confidence", "1.5")
    assert rc == 1 and "strictly between 0 and 1" in err and err.count("\n") == 1
    rc, _, err = _evaluate(capsys, b, "--split", "oof")
    assert rc == 1 and "not cross-fitted: no out-of-fold scores; use --split val" in err
    assert err.count("\n") == 1
    rc, _, err = _evaluate(capsys, b, "--split", "nope")
    assert rc == 1 and "unknown split 'nope'" in err and err.count("\n") == 1
    rc, _, err = _evaluate(capsys, str(tmp_path / "nothing"))
    assert rc == 1 and "no such folder" in err and err.count("\n") == 1
