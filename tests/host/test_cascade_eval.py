"""The offline ladder (edgeladder.policy.replay) on hand-made logits; the fixed-threshold config."""

from __future__ import annotations

import numpy as np
import pytest

from edgeladder.policy import replay as cascade_eval
from edgeladder.policy.calibrate import sweep
from edgeladder.policy.config import LadderConfig, Stage, exp_lut
from ladder import gate

SCALE = 0.25  # logit scale of every hand-made stage: a logit step of 4 is e^1


def _ladder(thresholds=(0.9, 0.8), measures=("max", "max", "max"), classes=4) -> LadderConfig:
    lut = exp_lut(SCALE, 1.0)
    where = ("edge", "gateway", "cloud")
    stages = [
        Stage(
            name=name,
            where=w,
            measure=m,
            threshold=cascade_eval.q16(t),
            temperature=1.0,
            exp_lut=lut,
            budget_ms=(20, 80, 150)[i],
            model="tiny.ldr" if w == "edge" else None,
            tflite=None if w == "edge" else f"{name}/{name}.tflite",
            expected_rtt_ms=(0, 15, 40)[i],
        )
        for i, (name, w, m, t) in enumerate(
            zip(("tiny", "medium", "large"), where, measures, (*thresholds, 0.0), strict=True)
        )
    ]
    return LadderConfig("toy", 1, classes, 200, 1 / 255, -128, stages)


SURE = [100, 0, 0, 0]  # p(top) = 1 / (1 + 3 e^-25): about 1
UNSURE = [10, 9, 0, 0]  # d = 1: p(top) = 1 / (1 + e^-0.25 + 2 e^-2.5) = 0.51


def _answer(label: int, sure: bool) -> list[int]:
    row = SURE if sure else UNSURE
    out = [0] * 4
    # the class `label` gets the largest logit, the next one (mod 4) the second largest
    for k, v in enumerate(row):
        out[(label + k) % 4] = v
    return out


def test_hand_made_ladder_sources_and_accuracy():
    # input 0: tiny sure (right) -> edge
    # input 1: tiny unsure, medium sure (right) -> gateway
    # input 2: tiny unsure, medium unsure, large (wrong) -> cloud
    # input 3: tiny sure but wrong -> edge, wrong
    truth = np.array([0, 1, 2, 3])
    tiny = [_answer(0, True), _answer(3, False), _answer(1, False), _answer(0, True)]
    medium = [_answer(0, True), _answer(1, True), _answer(2, False), _answer(3, True)]
    large = [_answer(0, True), _answer(1, True), _answer(0, True), _answer(3, True)]
    logits = [np.array(a, dtype=np.int8) for a in (tiny, medium, large)]
    r = cascade_eval.evaluate(_ladder(), logits, truth=truth)
    assert r.source == ["edge", "gateway", "cloud", "edge"]
    assert r.stage.tolist() == [0, 1, 2, 0]
    assert r.escalated.tolist() == [False, True, True, False]
    assert r.labels.tolist() == [0, 1, 0, 0]
    assert r.accuracy == pytest.approx(2 / 4)  # inputs 0 and 1
    assert r.escalation_rate == pytest.approx(2 / 4)
    assert r.reach_rate(2) == pytest.approx(1 / 4)
    # gateway 1 unit, cloud 5 more (it passed the gateway first): (0 + 1 + 6 + 0) / 4
    assert r.expected_cost == pytest.approx(7 / 4)
    # stages an input never reached have no confidence
    assert (r.confidence[0, 1:] == -1).all() and (r.confidence[2] >= 0).all()
    assert r.rows()[1] == {
        "label": 1,
        "source": "gateway",
        "stage": 1,
        "escalated": True,
        "truth": 1,
    }
    assert r.source_counts() == {"edge": 2, "gateway": 1, "cloud": 1}


def test_thresholds_decide_exactly_at_the_confidence():
    """A stage answers when its confidence is >= its threshold (the board's Gate.confident)."""
    row = np.array([_answer(2, False)], dtype=np.int8)
    c = gate.confidence(gate.MAX, row[0].tolist(), 4, exp_lut(SCALE, 1.0))
    for threshold, where in ((c, "edge"), (c + 1, "cloud")):
        cfg = _ladder(thresholds=(threshold / 65536, 1.0))
        cfg.stages[0].threshold = threshold
        cfg.stages[1].threshold = gate.ONE + 1  # never sure
        assert cascade_eval.evaluate(cfg, [row, row, row]).source == [where]


def test_offline_walk_equals_the_board_gate_class():
    """The vectorized walk gives the stage that ladder.gate.Gate (the board's code) picks."""
    rng = np.random.default_rng(5)
    n, classes = 200, 10
    cfg = _ladder(thresholds=(0.7, 0.5), measures=("margin", "entropy", "max"), classes=classes)
    logits = [rng.integers(-128, 128, size=(n, classes)).astype(np.int8) for _ in range(3)]
    r = cascade_eval.evaluate(cfg, logits)
    gates = [gate.Gate(s.measure, s.threshold, s.exp_lut) for s in cfg.stages]
    for i in range(n):
        want = 2
        for j in range(2):
            if gates[j].confident(gates[j].score(logits[j][i].tolist(), classes)):
                want = j
                break
        assert r.stage[i] == want
        assert r.labels[i] == int(np.argmax(logits[want][i]))


def test_outputs_give_the_label_and_mappings_name_stages():
    logits = {name: np.array([SURE], dtype=np.int8) for name in ("tiny", "medium", "large")}
    outputs = {name: np.array([[-128, 127, -128, -128]], dtype=np.int8) for name in logits}
    r = cascade_eval.evaluate(_ladder(), logits, outputs, truth=np.array([1]))
    assert r.labels.tolist() == [1] and r.accuracy == 1.0  # the output's top-1, not the logits'
    with pytest.raises(cascade_eval.CascadeError, match="no logits for stage"):
        cascade_eval.evaluate(_ladder(), {"tiny": logits["tiny"]})
    with pytest.raises(cascade_eval.CascadeError, match="shape"):
        cascade_eval.evaluate(_ladder(), [np.zeros((1, 3), np.int8)] * 3)


def test_fixed_threshold_ladder():
    cfg = _ladder(thresholds=(0.5, 0.4), measures=("entropy", "margin", "margin"))
    for s in cfg.stages:
        s.temperature, s.exp_lut = 2.0, exp_lut(SCALE, 2.0)
    fixed = cascade_eval.fixed_threshold_ladder(cfg, {"tiny": 0.2, "medium": 0.3, "large": 0.1})
    assert [s.threshold for s in fixed.stages] == [62259, 58982, 0]  # 0.95, 0.90 in Q16
    assert {s.measure for s in fixed.stages} == {"max"}
    assert {s.temperature for s in fixed.stages} == {1.0}
    assert fixed.stages[1].exp_lut == exp_lut(0.3, 1.0)
    assert [s.budget_ms for s in fixed.stages] == [20, 80, 150]  # the rest is kept
    assert fixed.stages[0].model == "tiny.ldr"
    assert cfg.stages[0].threshold == cascade_eval.q16(0.5)  # the original is not changed


def test_sweep_points_match_the_gate_by_gate_walk():
    """Every sweep row equals cascade_eval on a config with that row's thresholds."""
    rng = np.random.default_rng(11)
    n, classes = 150, 10
    cfg = _ladder(classes=classes)
    truth = rng.integers(0, classes, size=n)
    logits = []
    for noise in (60, 30, 10):  # larger stages: the true class is pushed up more reliably
        a = rng.integers(-60, 40, size=(n, classes))
        a[np.arange(n), truth] += rng.integers(0, noise + 60, size=n)
        logits.append(np.clip(a, -128, 127).astype(np.int8))
    conf = cascade_eval.confidences(cfg, logits)
    correct = np.stack([np.argmax(a, axis=1) == truth for a in logits], axis=1)
    costs = cascade_eval.stage_costs(cfg)
    sw = sweep.sweep(conf, correct, costs)
    assert len(sw) > 100
    for i in rng.choice(len(sw), size=25, replace=False):
        for s, t in zip(cfg.stages, sw.thresholds[i], strict=True):
            s.threshold = int(t)
        r = cascade_eval.evaluate(cfg, logits, truth=truth, conf=conf)
        assert r.accuracy == pytest.approx(sw.accuracy[i])
        assert r.escalation_rate == pytest.approx(sw.escalation[i])
        assert r.expected_cost == pytest.approx(sw.cost[i])
        assert r.reach_rate(2) == pytest.approx(sw.reach[i, 2])
