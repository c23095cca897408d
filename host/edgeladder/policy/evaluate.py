"""The calibrated ladder on the held-out test split, with confidence intervals.

``edgeladder calibrate`` chooses thresholds on the validation split (or a cross-fitted build's
out-of-fold scores), so its figures are in-sample. This module scores every tier on the test
split exactly as ``calibrate`` scores its split (``scores.score_split``: the board tier by the
board engine, the host tiers by LiteRT), walks the ladder with ``replay.evaluate``, and says how
much the split can tell:

- a proportion (accuracy, escalation rate, the rate reaching a stage): the two-sided
  Clopper–Pearson interval at ``confidence`` (exact: it never covers less than asked);
- the gap "ladder − reference tier" (the last stage alone): a difference of two accuracies on
  the same inputs, so paired. Only the discordant inputs carry information: ``b`` where only the
  ladder is right, ``c`` where only the reference is. Tango's score interval (Tango 1998, Stat
  Med 17:891) inverts the score test of Δ = (b − c) / n with the restricted maximum-likelihood
  variance; it stays sound with no discordant input at all, which is the usual case for a
  ladder (an escalated input gets the reference's own answer). An exact conditional interval
  (binomial on b of b + c) collapses to a point when b + c = 0, and a bootstrap of 359 inputs
  with one or two discordant ones resamples those few: both would claim precision the split
  lacks. The exact McNemar p-value (b of b + c at 1/2) is reported beside it;
- the calibrated target on test: met (the point estimate), and the verdict of the interval:
  "met" when the whole interval clears the target, "missed" when it lies wholly on the wrong
  side, otherwise "undecided". Each side of a two-sided C interval is a one-sided statement at
  (1 + C) / 2.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeladder.errors import EdgeladderError
from edgeladder.policy import config as ladderconfig
from edgeladder.policy import replay
from edgeladder.policy.config import LadderConfig
from edgeladder.util.atomic import write_text

if TYPE_CHECKING:
    # imported where used: calibrate's package imports this module (calibrate.run reports the
    # test split), so importing it here would be a cycle
    from edgeladder.policy.calibrate import scores

DEFAULT_CONFIDENCE = 0.9
EVALUATE_JSON = "evaluate.json"
CALIBRATION_JSON = "calibration.json"
METHODS = {
    "proportion": "Clopper-Pearson exact, two-sided",
    "difference": "Tango score interval for paired proportions, two-sided",
    "p_value": "McNemar exact (b of b + c at 1/2), two-sided",
}


class EvaluationError(EdgeladderError):
    """The ladder cannot be evaluated: no ladder.json, another build's ladder, a bad option."""


# -- the statistics, as pure functions


def _binomtest(k: int, n: int):
    try:
        from scipy.stats import binomtest
    except ImportError as e:
        raise EvaluationError("the confidence intervals need scipy: pip install scipy") from e
    return binomtest(k, n)


def clopper_pearson(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Two-sided exact interval for a proportion from ``k`` successes in ``n`` trials."""
    if n <= 0:
        return 0.0, 1.0
    ci = _binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` of the ``b + c`` discordant pairs, at 1/2."""
    return 1.0 if b + c == 0 else float(_binomtest(b, b + c).pvalue)


def tango_statistic(delta: float, b: int, c: int, n: int) -> float:
    """Tango's score statistic for Δ = p12 − p21 on ``n`` pairs, ``b`` = n12, ``c`` = n21."""
    # p21 that maximizes the likelihood under p12 = p21 + Δ: the positive root of
    # 2n q^2 + (−b − c + (2n − b + c) Δ) q − c Δ (1 − Δ) = 0
    qa = 2.0 * n
    qb = -b - c + (2.0 * n - b + c) * delta
    qc = -c * delta * (1.0 - delta)
    q21 = (math.sqrt(max(qb * qb - 4.0 * qa * qc, 0.0)) - qb) / (2.0 * qa)
    var = n * (2.0 * q21 + delta * (1.0 - delta))  # n Var(p12 − p21 estimate) at the root
    num = b - c - n * delta
    if var <= 0.0:  # at Δ = ±1: only the observed extreme has no variance
        return math.copysign(math.inf, num) if num else 0.0
    return num / math.sqrt(var)


def tango_interval(
    b: int, c: int, n: int, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """Two-sided score interval for the paired difference (b − c) / n (see the module doc)."""
    if n <= 0:
        return -1.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    est = (b - c) / n
    lower = _boundary(est, -1.0, lambda d: tango_statistic(d, b, c, n) <= z)
    upper = _boundary(est, 1.0, lambda d: tango_statistic(d, b, c, n) >= -z)
    return lower, upper


def _boundary(inside: float, outside: float, ok: Callable[[float], bool]) -> float:
    """The edge of {d : ok(d)} between ``inside`` (ok) and ``outside``: the statistic is
    monotone in Δ, so bisection; ``outside`` itself if it is ok."""
    if ok(outside):
        return outside
    for _ in range(80):  # 2^-80 of the width: far below anything printed
        mid = (inside + outside) / 2.0
        if ok(mid):
            inside = mid
        else:
            outside = mid
    return inside


# -- the report


def _rate(k: int, n: int, confidence: float) -> dict[str, Any]:
    lo, hi = clopper_pearson(k, n, confidence)
    return {"count": int(k), "rate": k / n if n else 0.0, "ci": [lo, hi]}


def _gap(
    ladder_ok: np.ndarray, ref_ok: np.ndarray, reference: str, confidence: float
) -> dict[str, Any]:
    n = len(ladder_ok)
    b = int(np.sum(ladder_ok & ~ref_ok))
    c = int(np.sum(~ladder_ok & ref_ok))
    lo, hi = tango_interval(b, c, n, confidence)
    return {
        "reference": reference,
        "difference": (b - c) / n if n else 0.0,
        "ci": [lo, hi],
        "only_ladder_right": b,
        "only_reference_right": c,
        "mcnemar_p": mcnemar_exact_p(b, c),
    }


def _ladder_block(
    cfg: LadderConfig, res: replay.CascadeResult, ref_ok: np.ndarray, reference: str, conf: float
) -> dict[str, Any]:
    n = res.n
    ok = np.asarray(res.correct, bool)
    acc, esc = _rate(int(ok.sum()), n, conf), _rate(int(res.escalated.sum()), n, conf)
    reach = {s.name: _rate(int(np.sum(res.stage >= i)), n, conf) for i, s in enumerate(cfg.stages)}
    return {
        "thresholds": [s.threshold for s in cfg.stages],
        "measures": [s.measure for s in cfg.stages],
        "accuracy": acc["rate"],
        "correct": acc["count"],
        "accuracy_ci": acc["ci"],
        "escalation_rate": esc["rate"],
        "escalated": esc["count"],
        "escalation_ci": esc["ci"],
        "reach_rate": {k: v["rate"] for k, v in reach.items()},
        "reached": {k: v["count"] for k, v in reach.items()},
        "reach_ci": {k: v["ci"] for k, v in reach.items()},
        "answered": {s.name: int(np.sum(res.stage == i)) for i, s in enumerate(cfg.stages)},
        "expected_cost": res.expected_cost,
        "sources": res.source_counts(),
        "gap": _gap(ok, ref_ok, reference, conf),
    }


def _target(
    report: dict[str, Any], target_delta: float | None, max_escalation: float | None
) -> dict[str, Any] | None:
    lad = report["ladder"]
    if target_delta is not None:
        gap = lad["gap"]
        ref = report["tiers_alone"][gap["reference"]]["accuracy"]
        lo, hi = gap["ci"]
        verdict = "met" if lo >= target_delta else "missed" if hi < target_delta else "undecided"
        return {
            "mode": "accuracy",
            "delta": target_delta,
            "reference": gap["reference"],
            "reference_accuracy": ref,
            "accuracy": ref + target_delta,
            "ladder_accuracy": lad["accuracy"],
            "met": gap["difference"] >= target_delta - 1e-12,
            "margin": gap["difference"] - target_delta,
            "verdict": verdict,
        }
    if max_escalation is not None:
        lo, hi = lad["escalation_ci"]
        verdict = (
            "met" if hi <= max_escalation else "missed" if lo > max_escalation else "undecided"
        )
        return {
            "mode": "max_escalation",
            "max_escalation": max_escalation,
            "escalation_rate": lad["escalation_rate"],
            "met": lad["escalation_rate"] <= max_escalation + 1e-12,
            "margin": max_escalation - lad["escalation_rate"],
            "verdict": verdict,
        }
    return None


def evaluate_scores(
    cfg: LadderConfig,
    tier_scores: Mapping[str, scores.StageScores],
    y: np.ndarray,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    target_delta: float | None = None,
    max_escalation: float | None = None,
    costs: Mapping[str, float] | None = None,
    reference: str | None = None,
) -> dict[str, Any]:
    """The report from scores already computed: ``tier_scores`` by tier name (every stage of
    ``cfg``, and any other tier to report alone), ``y`` the true labels. ``reference``: the tier
    the gap and an accuracy target are measured from (default: the last stage)."""
    if not 0 < confidence < 1:
        raise EvaluationError(f"--confidence {confidence} must be strictly between 0 and 1")
    missing = [s.name for s in cfg.stages if s.name not in tier_scores]
    if missing:
        raise EvaluationError(f"no scores for stage(s) {', '.join(missing)}")
    reference = reference or cfg.stages[-1].name
    if reference not in tier_scores:
        raise EvaluationError(f"the reference {reference!r} is not a tier of the build")
    y = np.asarray(y)
    n = len(y)
    ok = {t: np.asarray(s.predictions == y, bool) for t, s in tier_scores.items()}
    names = [s.name for s in cfg.stages]
    logits = [tier_scores[t].logits for t in names]
    outputs = [tier_scores[t].outputs for t in names]
    chosen = replay.evaluate(cfg, logits, outputs, y, costs=costs)
    fixed_cfg = replay.fixed_threshold_ladder(cfg, [tier_scores[t].logit_scale for t in names])
    fixed = replay.evaluate(fixed_cfg, logits, outputs, y, costs=costs)
    report: dict[str, Any] = {
        "task": cfg.task,
        "inputs": n,
        "confidence": confidence,
        "methods": METHODS,
        "model_version": cfg.model_version,
        "costs": dict(zip(names, replay.stage_costs(cfg, costs), strict=True)),
        "runtimes": {t: s.runtime for t, s in tier_scores.items()},
        "reference": reference,
        "ladder": _ladder_block(cfg, chosen, ok[reference], reference, confidence),
        "fixed_threshold": {
            "measure": "max",
            "temperature": 1.0,
            **_ladder_block(fixed_cfg, fixed, ok[reference], reference, confidence),
        },
        "tiers_alone": {},
    }
    for t, good in ok.items():
        r = _rate(int(good.sum()), n, confidence)
        report["tiers_alone"][t] = {
            "accuracy": r["rate"],
            "correct": r["count"],
            "accuracy_ci": r["ci"],
            "runtime": tier_scores[t].runtime,
        }
    report["target"] = _target(report, target_delta, max_escalation)
    return report


def evaluate_ladder(
    info: scores.BuildInfo,
    cfg: LadderConfig,
    split: str = "test",
    confidence: float = DEFAULT_CONFIDENCE,
    target_delta: float | None = None,
    *,
    max_escalation: float | None = None,
    costs: Mapping[str, float] | None = None,
    reference: str | None = None,
) -> dict[str, Any]:
    """Score every tier of the build on ``split`` and report the ladder ``cfg`` on it (a
    JSON-able dict; ``print_evaluation`` shows it). ``cfg`` may come from a file or from memory
    (``calibrate`` passes the one it has just chosen). ``target_delta``: the accuracy target,
    relative to ``reference`` alone (default: the last stage); ``max_escalation``: an
    escalation target instead; ``costs``: by stage name or where (``replay.stage_costs``)."""
    from edgeladder.policy.calibrate import scores

    if not 0 < confidence < 1:
        raise EvaluationError(f"--confidence {confidence} must be strictly between 0 and 1")
    scores.check_split(info, split)
    _check_ladder(info, cfg)
    tiers = list(info.task.get("tiers", {}))
    got, y = scores.score_split(info, tiers, split)
    report = evaluate_scores(
        cfg,
        {s.name: s for s in got},
        y,
        confidence=confidence,
        target_delta=target_delta,
        max_escalation=max_escalation,
        costs=costs,
        reference=reference,
    )
    return {"build": str(info.build_dir), "split": split, "held_out": split == "test", **report}


def _check_ladder(info: scores.BuildInfo, cfg: LadderConfig) -> None:
    tiers = info.task.get("tiers", {})
    unknown = [s.name for s in cfg.stages if s.name not in tiers]
    if unknown:
        raise EvaluationError(
            f"the ladder's stage(s) {', '.join(unknown)} are no tiers of this build: calibrate"
            " it again",
            info.build_dir,
        )
    built = ladderconfig.model_version(info.build_dir)
    if cfg.model_version != built:
        raise EvaluationError(
            f"the ladder was calibrated for another build (model_version {cfg.model_version},"
            f" this build's {built}): run `edgeladder calibrate {info.build_dir}` again"
        )


def evaluate_build(
    build: str | Path,
    ladder: str | Path | None = None,
    split: str = "test",
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[dict[str, Any], Path]:
    """``edgeladder evaluate``: the build's ladder.json (or ``ladder``) on ``split``, with the
    target and costs of the calibration.json beside it; writes evaluate.json beside the ladder.
    Returns the report and the path written."""
    from edgeladder.policy.calibrate import scores

    info = scores.load_build(scores.find_build(build))
    path = Path(ladder) if ladder else info.build_dir / "ladder.json"
    if not path.is_file():
        raise EvaluationError(
            f"no ladder to evaluate: run `edgeladder calibrate {info.build_dir}` first", path
        )
    cfg = ladderconfig.load(path)
    calibration = _calibration(path.with_name(CALIBRATION_JSON), cfg)
    target = calibration.get("target") or {}
    delta = target.get("delta") if target.get("mode") == "accuracy" else None
    cap = target.get("max_escalation") if target.get("mode") == "max_escalation" else None
    report = evaluate_ladder(
        info,
        cfg,
        split,
        confidence,
        delta,
        max_escalation=cap,
        costs=calibration.get("costs") or None,
        reference=target.get("reference"),
    )
    if report["target"] is not None:
        report["target"]["source"] = str(path.with_name(CALIBRATION_JSON))
        report["target"]["calibrated_on"] = calibration.get("split")
    report["ladder_json"] = str(path)
    return report, write_evaluation(report, path)


def _calibration(path: Path, cfg: LadderConfig) -> dict[str, Any]:
    """calibration.json beside the ladder, if it belongs to it; else nothing (no target)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("model_version", cfg.model_version) != (
        cfg.model_version
    ):
        return {}
    return doc


def write_evaluation(report: Mapping[str, Any], ladder_path: str | Path) -> Path:
    """evaluate.json beside ``ladder_path``, atomically."""
    out = Path(ladder_path).with_name(EVALUATE_JSON)
    write_text(out, json.dumps(report, indent=2) + "\n")
    return out


# -- the console


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _ci(ci: Sequence[float]) -> str:
    return f"{ci[0] * 100:.1f}–{ci[1] * 100:.1f}"


def _points(v: float) -> str:
    return f"{v * 100:+.2f}"


def print_evaluation(report: Mapping[str, Any], console=None) -> None:
    """The report as a Rich table and a few lines: the ladder, fixed thresholds, each tier."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    r = report
    conf = r["confidence"]
    split = r.get("split", "test")
    stages = list(r["ladder"]["reach_rate"])
    t = Table(
        title=f"{r['task']}: the ladder on the {split} split ({r['inputs']} inputs,"
        f" {conf:.0%} intervals). esc.: left the board; {', '.join(stages[1:])}: reached it",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    cols = ["config", "acc.", "CI %", "err", "esc.", "CI %", *stages[1:], "cost"]
    t.add_column(cols[0], no_wrap=True)
    for col in cols[1:]:
        t.add_column(col, justify="right", no_wrap=True)
    for name, row in (("chosen", r["ladder"]), ("fixed .95/.90", r["fixed_threshold"])):
        t.add_row(
            name,
            _pct(row["accuracy"]),
            _ci(row["accuracy_ci"]),
            str(r["inputs"] - row["correct"]),
            _pct(row["escalation_rate"]),
            _ci(row["escalation_ci"]),
            *[_pct(row["reach_rate"][s]) for s in stages[1:]],
            f"{row['expected_cost']:.3f}",
        )
    for name, row in r["tiers_alone"].items():
        t.add_row(
            f"{name} alone",
            _pct(row["accuracy"]),
            _ci(row["accuracy_ci"]),
            str(r["inputs"] - row["correct"]),
            *[""] * (len(stages) + 2),
        )
    console.print(t)
    for name, row in (("ladder", r["ladder"]), ("fixed 0.95/0.90", r["fixed_threshold"])):
        g = row["gap"]
        console.print(
            f"{name} − {g['reference']} alone: {_points(g['difference'])} points,"
            f" {conf:.0%} CI {_points(g['ci'][0])} to {_points(g['ci'][1])} (paired: only"
            f" the ladder right on {g['only_ladder_right']}, only {g['reference']} on"
            f" {g['only_reference_right']}; McNemar exact p = {g['mcnemar_p']:.3f})"
        )
    _print_target(console, r)
    console.print(
        "scored by: " + ", ".join(f"{k} {v}" for k, v in r["runtimes"].items()),
        highlight=False,
    )
    if not r.get("held_out", split == "test"):
        console.print(
            f"[yellow]note:[/] the {split} split is not held out: if the thresholds were"
            " chosen on it, these figures flatter the ladder"
        )


def _print_target(console, r: Mapping[str, Any]) -> None:
    goal = r.get("target")
    if not goal:
        console.print("target: none recorded (no calibration.json beside the ladder)")
        return
    verdict = {
        "met": "the whole interval clears it",
        "missed": "the whole interval misses it",
        "undecided": "the interval straddles it: the split cannot tell",
    }[goal["verdict"]]
    if goal["mode"] == "accuracy":
        what = (
            f"accuracy >= {goal['reference']} alone {goal['reference_accuracy']:.2%}"
            f" {_points(goal['delta'])} points = {goal['accuracy']:.2%}"
        )
        by = f"{_points(goal['margin'])} points"
    else:
        what = f"escalation <= {goal['max_escalation']:.1%}"
        by = f"{goal['margin'] * 100:+.1f} points of escalation to spare"
    met = "met" if goal["met"] else "missed"
    console.print(f"target on {r.get('split', 'test')}: {what}: {met} ({by}); {verdict}")
