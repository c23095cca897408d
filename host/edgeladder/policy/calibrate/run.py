"""``edgeladder calibrate``: from a build to a ladder.json with thresholds chosen for a target.

Per stage on the calibration split (out-of-fold or validation by default, never test): fit the
temperature, measure ECE before and after, compute every gate measure's confidence with
``ladder.gate`` (the board's own integer code) and its AUROC, pick a measure; then sweep the
thresholds, certify them (guarantee.py, Learn-then-Test), choose a point for the target, and
write ``ladder.json``, ``calibration.json`` and ``calibration.png``. docs/calibration.md explains
the choices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeladder.boards import registry as boards
from edgeladder.policy import config as ladderconfig
from edgeladder.policy import replay as cascade_eval
from edgeladder.policy.calibrate import bounds, guarantee, metrics, scores, sweep, temperature
from edgeladder.policy.calibrate.errors import CalibrationError, TargetNotMetError
from edgeladder.util.atomic import write_text
from ladder import gate

DEFAULT_TARGET = -0.003  # large alone minus 0.3 points
DEADLINE_MS = 200
# Per stage where: (budget_ms, expected_rtt_ms). The board's stage must answer in 20 ms; a
# gateway on the LAN answers in about 15 ms plus its compute; the cloud in about 40 ms.
DEFAULT_TIMING: dict[str, tuple[int, int]] = {
    "edge": (20, 0),
    "gateway": (80, 15),
    "cloud": (150, 40),
}
CALIBRATION_JSON = "calibration.json"
CALIBRATION_PNG = "calibration.png"
LADDER_JSON = "ladder.json"


@dataclass
class Options:
    target_accuracy: float | None = DEFAULT_TARGET  # relative to the last stage alone
    max_escalation: float | None = None  # instead of a target accuracy
    measure: str = "auto"  # auto | max | margin | entropy
    deadline_ms: int = DEADLINE_MS
    costs: dict[str, float] = field(default_factory=dict)  # by stage name or where
    budgets: dict[str, int] = field(default_factory=dict)  # budget_ms by stage name or where
    rtts: dict[str, int] = field(default_factory=dict)  # expected_rtt_ms, same keys
    split: str = "auto"  # auto (scores.default_split) | val | train+val | oof
    best_effort: bool = False
    robust: bool = True
    # of the guarantee and of the error-rate bounds (docs/calibration.md)
    confidence: float = bounds.DEFAULT_CONFIDENCE
    require_guarantee: bool = False  # fail rather than fall back when nothing is certified
    out: Path | None = None  # ladder.json; calibration.json/png go beside it
    plot: bool = True
    test_report: bool = True  # after choosing: the test split's figures (policy/evaluate.py)


@dataclass
class StagePlan:
    name: str
    where: str
    tflite: str  # relative to the build folder
    model: str | None  # the board's model file name (edge stages)
    board: str


@dataclass
class Result:
    config: ladderconfig.LadderConfig
    report: dict[str, Any]
    ladder_path: Path
    report_path: Path
    plot_path: Path | None


def plan_stages(info: scores.BuildInfo) -> list[StagePlan]:
    """The first tier on a device board runs on the board; the tiers after it that run on a
    gateway or cloud board climb the ladder: the last is the cloud, the others gateways."""
    tiers = list(info.task.get("tiers", {}).items())
    edge_at = None
    for i, (_, t) in enumerate(tiers):
        if boards.get(t.get("board", "")).is_device:
            edge_at = i
            break
    if edge_at is None:
        raise CalibrationError(
            "no tier runs on a device board: a ladder starts on the board", info.build_dir
        )
    name, t = tiers[edge_at]
    ldr = (info.build_dir / t["tflite"]).with_suffix(".ldr")
    if not ldr.is_file():
        raise CalibrationError(f"tier {name!r} has no compiled model {ldr}: rebuild the task")
    plan = [StagePlan(name, "edge", t["tflite"], ldr.name, t["board"])]
    remote = [(n, r) for n, r in tiers[edge_at + 1 :] if not boards.get(r["board"]).is_device]
    if not remote:
        raise CalibrationError(
            f"no gateway or cloud tier after {name!r}: nothing to escalate to", info.build_dir
        )
    for i, (n, r) in enumerate(remote):
        where = "cloud" if i == len(remote) - 1 else "gateway"
        plan.append(StagePlan(n, where, r["tflite"], None, r["board"]))
    for p in plan:
        if not (info.build_dir / p.tflite).is_file():
            raise CalibrationError(
                f"tier {p.name!r}: missing {info.build_dir / p.tflite}: rebuild the task"
            )
    return plan


def _lookup(table: dict, stage: StagePlan, default):
    return table.get(stage.name, table.get(stage.where, default))


def _stage_report(
    st: scores.StageScores, y: np.ndarray, measure_opt: str, confidence: float
) -> dict[str, Any]:
    """Temperature, ECE, per-measure confidence and AUROC, the error-rate bound, for one stage."""
    correct = st.predictions == y
    z = temperature.dequantized(st.logits, st.logit_scale, st.logit_zero_point)
    errors = int((~correct).sum())
    if errors and errors < len(y):
        t = temperature.fit_temperature(z, y)
        note = None
    else:
        # With no errors the NLL keeps falling as T -> 0: there is nothing to fit.
        t, note = 1.0, "no errors on the split: temperature kept at 1"
    t = round(t, 6)  # as ladder.json stores it: the exp table below is made from this value
    p0, p1 = metrics.softmax(z), metrics.softmax(z / t)
    lut = ladderconfig.exp_lut(st.logit_scale, t)
    conf = {m: cascade_eval.stage_confidence(st.logits, m, lut) for m in gate.MEASURES}
    auroc = {m: metrics.auroc(c, correct) for m, c in conf.items()}
    if measure_opt == "auto":
        known = {m: a for m, a in auroc.items() if a is not None}
        # the highest AUROC; on a tie the earlier (simpler) measure; none known: max
        measure = max(known, key=lambda m: (known[m], -gate.MEASURES.index(m))) if known else "max"
    else:
        measure = measure_opt
    pred = st.predictions
    # How many errors the split allows at `confidence`, and the temperature that expects them.
    rate_hi = bounds.error_rate_upper(errors, len(y), confidence)
    t_hi = bounds.pessimistic_temperature(z, pred, rate_hi, t)
    return {
        "name": st.name,
        "inputs": len(y),
        "errors": errors,
        "accuracy": float(correct.mean()),
        "logit_scale": st.logit_scale,
        "logit_zero_point": st.logit_zero_point,
        "temperature": t,
        "temperature_note": note,
        "ece_before": metrics.ece(p0.max(axis=1), correct),
        "ece_after": metrics.ece(p1.max(axis=1), correct),
        "reliability_before": metrics.reliability(p0.max(axis=1), correct),
        "reliability_after": metrics.reliability(p1.max(axis=1), correct),
        "auroc": auroc,
        "measure": measure,
        "bound": {
            "confidence": confidence,
            "errors": errors,
            "inputs": len(y),
            "error_rate_upper": rate_hi,
            "temperature": t_hi,
            "expected_error_rate": bounds.mean_error(z, pred, t),
        },
        # not serialized: the sweep's inputs
        "_lut": lut,
        "_conf": conf[measure],
        "_correct": correct,
        "_p_answer": p1[np.arange(len(y)), pred],  # calibrated P(right) of its answer
        "_p_bound": bounds.answer_probability(z, pred, t_hi),  # the same, pessimistic
    }


def _splits() -> tuple[str, ...]:
    """What --split accepts: auto and the calibration splits (oof even before scores has it:
    a build that cannot give it says so when scored)."""
    return tuple(dict.fromkeys(("auto", *scores.CALIBRATION_SPLITS, "oof")))


def resolve_split(info: scores.BuildInfo, split: str) -> str:
    """``auto``: the build's own default (out-of-fold for cross-fitted builds, else val)."""
    if split != "auto":
        return split
    default = getattr(scores, "default_split", None)
    return default(info) if default is not None else "val"


def _check_options(opts: Options) -> None:
    if opts.split not in _splits():
        hint = " (the test split is for reporting; calibrating on it would flatter the ladder)"
        raise CalibrationError(
            f"cannot calibrate on split {opts.split!r}{hint if opts.split == 'test' else ''};"
            f" use {', '.join(_splits())}"
        )
    if opts.require_guarantee and not opts.robust:
        raise CalibrationError("give --require-guarantee or --no-robust, not both")
    if opts.require_guarantee and opts.max_escalation is not None:
        raise CalibrationError("--require-guarantee needs --target-accuracy, not --max-escalation")
    if opts.measure != "auto" and opts.measure not in gate.MEASURES:
        raise CalibrationError(
            f"unknown measure {opts.measure!r}; use auto, {', '.join(gate.MEASURES)}"
        )
    if opts.max_escalation is not None and not 0 <= opts.max_escalation <= 1:
        raise CalibrationError(f"--max-escalation {opts.max_escalation} must be within 0..1")
    if opts.max_escalation is None and opts.target_accuracy is None:
        raise CalibrationError("give --target-accuracy or --max-escalation")
    if opts.target_accuracy is not None and not -1 < opts.target_accuracy < 1:
        raise CalibrationError(
            f"--target-accuracy {opts.target_accuracy} is a difference of accuracies, e.g."
            " -0.003 for 0.3 points below the largest tier"
        )
    if not 0 < opts.confidence < 1:
        raise CalibrationError(f"--confidence {opts.confidence} must be strictly between 0 and 1")
    if not 0 < opts.deadline_ms < 65536:
        raise CalibrationError(f"--deadline-ms {opts.deadline_ms} must be 1..65535")


def calibrate(build: str | Path, opts: Options | None = None) -> Result:
    """Calibrate the build in (or of) ``build``; write ladder.json and the reports."""
    opts = opts or Options()
    _check_options(opts)
    info = scores.load_build(scores.find_build(build))
    plan = plan_stages(info)
    split = resolve_split(info, opts.split)
    if split not in scores.CALIBRATION_SPLITS:
        raise CalibrationError(
            f"split {split!r} is not available here; use {' or '.join(scores.CALIBRATION_SPLITS)}",
            info.build_dir,
        )
    stage_scores, y = scores.score_split(info, [p.name for p in plan], split)
    reports = [_stage_report(st, y, opts.measure, opts.confidence) for st in stage_scores]
    cost_table = {**cascade_eval.DEFAULT_COSTS, **opts.costs}
    costs = {p.name: float(_lookup(cost_table, p, 0.0)) for p in plan}
    cost_list = [costs[p.name] for p in plan]
    conf = np.stack([r["_conf"] for r in reports], axis=1)
    correct = np.stack([r["_correct"] for r in reports], axis=1)
    # The gated stages by their probabilities; the last stage (the reference) by its outcomes.
    expected = np.stack([r["_p_answer"] for r in reports[:-1]] + [correct[:, -1]], axis=1)
    bound = np.stack([r["_p_bound"] for r in reports[:-1]] + [correct[:, -1]], axis=1)
    sw = sweep.sweep(conf, correct, cost_list, expected=expected, bound=bound)
    sw.risk_upper = guarantee.risk_upper(sw.losses, sw.n, opts.confidence)
    reference = reports[-1]["accuracy"]

    if opts.max_escalation is not None:
        target = {"mode": "max_escalation", "max_escalation": opts.max_escalation}
        choice = sweep.choose_for_escalation(sw, opts.max_escalation)
        promise = guarantee.describe_bound(sw, choice.index, opts.confidence)
    else:
        goal = reference + opts.target_accuracy
        target = {
            "mode": "accuracy",
            "delta": opts.target_accuracy,
            "reference": plan[-1].name,
            "reference_accuracy": reference,
            "accuracy": goal,
        }
        delta = -opts.target_accuracy
        choice, promise = guarantee.choose_for_accuracy(
            sw,
            goal,
            delta,
            opts.confidence,
            robust=opts.robust,
            require=opts.require_guarantee,
        )
        if choice is None:
            best = sweep.most_accurate(sw)
            if not opts.best_effort:
                raise TargetNotMetError(
                    f"no threshold setting reaches accuracy {goal:.2%} on the {split} split"
                    f" ({plan[-1].name} alone {reference:.2%} {opts.target_accuracy:+.2%}); the"
                    f" best reachable is {sw.accuracy[best]:.2%} at"
                    f" {sw.escalation[best]:.1%} escalation: lower --target-accuracy, or pass"
                    " --best-effort to take that point"
                )
            choice = sweep.Choice(best, False, {"note": "target not met; best effort"})
            cert = guarantee.certify(sw, delta, opts.confidence)
            promise = guarantee.describe(
                sw, best, cert, require=opts.require_guarantee, chosen_by="best effort"
            )

    thresholds = sw.thresholds[choice.index]
    cfg = _ladder_config(info, plan, reports, thresholds, opts, stage_scores[0])
    logit_scales = [r["logit_scale"] for r in reports]
    fixed = cascade_eval.fixed_threshold_ladder(cfg, logit_scales)
    logits = [s.logits for s in stage_scores]
    outputs = [s.outputs for s in stage_scores]
    chosen_eval = cascade_eval.evaluate(cfg, logits, outputs, y, costs=costs)
    fixed_eval = cascade_eval.evaluate(fixed, logits, outputs, y, costs=costs)

    out = Path(opts.out) if opts.out else info.build_dir / LADDER_JSON
    report_path = out.with_name(CALIBRATION_JSON)
    plot_path = out.with_name(CALIBRATION_PNG) if opts.plot else None
    report = {
        "task": info.name,
        "build": str(info.build_dir),
        "split": split,  # the split used (--split auto resolves to one)
        "split_requested": opts.split,
        "inputs": len(y),
        "model_version": cfg.model_version,
        "target": target,
        "costs": costs,
        "stages": [
            {
                **{k: v for k, v in r.items() if not k.startswith("_")},
                "where": p.where,
                "threshold": int(thresholds[i]),
            }
            for i, (r, p) in enumerate(zip(reports, plan, strict=True))
        ],
        "tiers_alone": {r["name"]: r["accuracy"] for r in reports},
        "sweep": {"count": len(sw), **sw.columns()},
        "chosen": {
            **sw.point(choice.index),
            "robust": choice.robust,
            "rules": choice.rules,
            "evidence": _evidence(
                sw, choice.index, conf, correct, {"expected": expected, "bound": bound}
            ),
            "guarantee": promise,
            "ladder": chosen_eval.summary(),
        },
        "fixed_threshold": {
            "thresholds": [s.threshold for s in fixed.stages],
            "measure": "max",
            "temperature": 1.0,
            "ladder": fixed_eval.summary(),
        },
        "ladder_json": str(out),
        "plot": str(plot_path) if plot_path else None,
    }
    # The sweep and the gate-by-gate walk must agree: they are two codes for one ladder.
    if abs(chosen_eval.accuracy - float(sw.accuracy[choice.index])) > 1e-9:
        raise CalibrationError("internal: the sweep and cascade_eval disagree; please report")
    ladderconfig.parse(cfg.to_json(), out)  # what the board and tiers will accept
    ladderconfig.save(out, cfg)
    if opts.test_report:
        # After choosing, never before: the held-out test split, reported as it falls.
        from edgeladder.policy.evaluate import evaluate_ladder

        report["test"] = evaluate_ladder(
            info,
            cfg,
            "test",
            opts.confidence,
            opts.target_accuracy if opts.max_escalation is None else None,
            max_escalation=opts.max_escalation,
            costs=costs,
        )
    if plot_path is not None:
        from edgeladder.policy.calibrate.plot import plot_calibration

        plot_calibration(plot_path, report)
    write_text(report_path, json.dumps(report, indent=2) + "\n")
    return Result(cfg, report, out, report_path, plot_path)


def _evidence(
    sw: sweep.Sweep, i: int, conf: np.ndarray, correct: np.ndarray, soft: dict[str, np.ndarray]
) -> dict[str, Any]:
    """What the chosen point rests on: how many inputs the board keeps, the errors it made on
    them, and how many it is expected to make by its calibrated and pessimistic probabilities."""
    kept = conf[:, 0] >= sw.thresholds[i, 0]
    return {
        "inputs": sw.n,
        "kept": int(kept.sum()),
        "kept_errors": int((~correct[kept, 0]).sum()),
        **{f"kept_{k}_errors": float((1.0 - v[kept, 0]).sum()) for k, v in soft.items()},
    }


def _ladder_config(
    info: scores.BuildInfo,
    plan: list[StagePlan],
    reports: list[dict],
    thresholds: np.ndarray,
    opts: Options,
    edge: scores.StageScores,
) -> ladderconfig.LadderConfig:
    stages = []
    for p, r, t in zip(plan, reports, thresholds, strict=True):
        budget, rtt = DEFAULT_TIMING[p.where]
        stages.append(
            ladderconfig.Stage(
                name=p.name,
                where=p.where,
                measure=r["measure"],
                threshold=int(t),
                temperature=r["temperature"],
                exp_lut=r["_lut"],
                budget_ms=int(_lookup(opts.budgets, p, budget)),
                model=p.model,
                tflite=None if p.where == "edge" else p.tflite,
                expected_rtt_ms=0 if p.where == "edge" else int(_lookup(opts.rtts, p, rtt)),
            )
        )
    return ladderconfig.LadderConfig(
        task=info.name,
        model_version=ladderconfig.model_version(info.build_dir),
        classes=int(edge.logits.shape[1]),
        deadline_ms=opts.deadline_ms,
        # what the board quantizes a reading with: its own stage's input parameters
        input_scale=edge.input_scale,
        input_zero_point=edge.input_zero_point,
        stages=stages,
    )
