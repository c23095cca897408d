"""Build, calibrate and score edgeladder on public datasets it was never tuned on.

    python bench/unseen/run.py OUT [--data DIR] [--only NAME,NAME,...] [--timeout S]
                               [--edgeladder EXE] [--epochs N] [--force] [--task DIR ...]
    python bench/unseen/run.py --table-from OUT/results.json   # the table and summary again

Per dataset, as a user would, with the ``edgeladder`` command next to this interpreter (or
``--edgeladder``) and whatever ``PYTHONPATH`` is set to:

1. ``edgeladder build --dataset DIR/NAME.npz --out OUT/NAME --json``
2. ``edgeladder calibrate OUT/NAME --json`` (thresholds on the split it picks: validation, or
   out-of-fold for a cross-fitted build)
3. ``edgeladder evaluate OUT/NAME --json`` when the command exists (its output is kept in the
   results as it is).

``--task DIR`` adds a recipe task (``edgeladder build DIR --out OUT/NAME``, e.g.
``models/digits``) as a row of its own, marked as a task and left out of the summary.

The table takes the test-split figures of ``edgeladder evaluate`` when there are some (else
calibrate's ``test`` block, else its own). Its own, computed in this process the same way
whatever the code under test has, so that a before and an after table compare: every tier
alone, the calibrated ladder (``OUT/NAME/ladder.json``) and the fixed 0.95 / 0.90 thresholds,
replayed with ``edgeladder.policy.replay`` on the int8 logits that
``edgeladder.policy.calibrate.scores`` computes (the board tier on the board engine when the
simulator is installed); a disagreement with ``evaluate`` is noted. And the classical reference
(``edgeladder.build.reference``: k-NN, logistic regression, DTW 1-NN) fitted on the build's
train split and scored on its test split (the build's own reference, where it has one, is
fitted on train + validation; the table shows both).

Missing .npz files are written first by ``datasets.py`` beside this script (``--data``,
default ``OUT/data``). A command that fails or runs past ``--timeout`` (default 900 s) is noted
in the table, and the run goes on. Writes ``OUT/results.json`` and ``OUT/table.md`` (the table,
the build flags and a summary); the commands' output goes to ``OUT/logs/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import datasets  # noqa: E402  (beside this script)

TOLERANCE = 0.003  # the calibrate default target: the large tier alone minus 0.3 points


def _edgeladder_exe(arg: str | None) -> str:
    if arg:
        return arg
    beside = Path(sys.executable).with_name("edgeladder")
    found = str(beside) if beside.exists() else shutil.which("edgeladder")
    if not found:
        raise SystemExit("no `edgeladder` command found: pass --edgeladder PATH")
    return found


def _code_under_test() -> dict[str, Any]:
    """Which edgeladder this process imports (the same PYTHONPATH as the commands) and its
    git commit."""
    import edgeladder

    where = Path(edgeladder.__file__).resolve().parent
    out: dict[str, Any] = {"path": str(where), "version": getattr(edgeladder, "__version__", "")}
    try:
        git = ["git", "-C", str(where)]
        out["commit"] = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        out["modified_files"] = len(status.splitlines())
    except (OSError, subprocess.CalledProcessError):
        pass
    return out


def _reference_module():
    """``edgeladder.build.reference`` from the code under test, else this checkout's file (it
    needs nothing of edgeladder's, so a tree from before it existed can still be measured)."""
    try:
        from edgeladder.build import reference

        return reference, "edgeladder.build.reference"
    except ImportError:
        path = REPO / "host" / "edgeladder" / "build" / "reference.py"
        spec = importlib.util.spec_from_file_location("unseen_reference", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module, str(path)


def run_command(cmd: list[str], log: Path, timeout: float, cwd: Path) -> dict[str, Any]:
    """Run ``cmd``; stdout and stderr into ``log``.*; returncode, seconds, and why it failed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends all of it
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        timed_out = True
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): the command's group goes too
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    seconds = round(time.perf_counter() - t0, 1)
    log.with_name(log.name + ".out").write_text(out)
    log.with_name(log.name + ".err").write_text(err)
    res: dict[str, Any] = {"cmd": cmd, "returncode": proc.returncode, "seconds": seconds}
    if timed_out:
        res["error"] = f"timed out after {timeout:.0f} s"
    elif proc.returncode != 0:
        res["error"] = _last_error(err) or f"exit status {proc.returncode}"
    res["stdout"] = out
    return res


def _last_error(stderr: str) -> str:
    """The CLI's ``error: ...`` (and what follows it, e.g. the VM's traceback), else the last
    line (a Python traceback's exception)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
    if starts:
        return _short("\n".join(lines[starts[-1] :]))
    return _short(lines[-1]) if lines else ""


def _has_command(exe: str, name: str) -> bool:
    r = subprocess.run([exe, name, "--help"], capture_output=True, text=True)
    return r.returncode == 0


def figures_on_test(build_dir: Path, ladder: bool) -> dict[str, Any]:
    """Every tier alone, the calibrated ladder and the fixed thresholds on the test split."""
    from edgeladder.policy import config, replay
    from edgeladder.policy.calibrate import scores

    info = scores.load_build(build_dir)
    x, y = scores.split_inputs(info, "test")
    stage_scores, notes = [], []
    for tier in info.task.get("tiers", {}):
        try:
            stage_scores.append(scores.score_tier(info, tier, x))
        except scores.CalibrationError as e:  # e.g. the board engine cannot load the model
            stage_scores.append(_litert_scores(info, tier, x))
            cause = [ln.strip() for ln in str(e).splitlines() if ln.strip()][-1]
            notes.append(f"{tier} scored by LiteRT (the board engine failed: {_short(cause)})")
    by_name = {s.name: s for s in stage_scores}
    out: dict[str, Any] = {
        "n_test": len(y),
        "tiers": {s.name: float((s.predictions == y).mean()) for s in stage_scores},
        "runtime": {s.name: s.runtime for s in stage_scores},
        "notes": notes,
    }
    if not ladder:
        return out
    cfg = config.load(build_dir / "ladder.json")
    names = [s.name for s in cfg.stages]
    logits = {n: by_name[n].logits for n in names}
    outputs = {n: by_name[n].outputs for n in names}
    fixed = replay.fixed_threshold_ladder(cfg, {n: by_name[n].logit_scale for n in names})
    for key, c in (("ladder", cfg), ("fixed", fixed)):
        r = replay.evaluate(c, logits, outputs, y)
        out[key] = {
            "accuracy": r.accuracy,
            "escalation_rate": r.escalation_rate,
            "reach_rate": {n: r.reach_rate(i) for i, n in enumerate(names)},
            "thresholds": [s.threshold for s in c.stages],
            "measures": [s.measure for s in c.stages],
        }
    out["stages"] = names
    out["largest"] = names[-1]
    return out


def _litert_scores(info, tier: str, x):
    """A tier's int8 scores by LiteRT alone (what calibrate does without the simulator)."""
    from edgeladder.model.litert import Int8Runner
    from edgeladder.policy.calibrate import scores

    rel = info.task["tiers"][tier]["tflite"]
    path = info.build_dir / rel
    runner = Int8Runner.from_bytes(path.read_bytes(), str(path))
    outputs, logits = runner.run_int8_logits(runner.quantize_input(x))
    return scores.StageScores(
        name=tier,
        tflite=rel,
        logits=logits.astype("int8"),
        outputs=outputs.astype("int8"),
        logit_scale=runner.logits_scale,
        logit_zero_point=runner.logits_zero_point,
        input_scale=runner.input_scale,
        input_zero_point=runner.input_zero_point,
        runtime="LiteRT (board engine failed)",
    )


def _short(message: str, limit: int = 240) -> str:
    """One line: the first and the last line of a multi-line message (a traceback's cause)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    text = lines[0] if len(lines) < 2 else f"{lines[0]} … {lines[-1]}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _train_val_inputs(info):
    """The build's train then validation inputs, normalized as the build did. A cross-fitted
    build refuses the "train+val" split (its models' scores there are in-sample); the reference
    needs only the inputs, so they are split and normalized here as ``split_inputs`` does."""
    import numpy as np

    from edgeladder.policy.calibrate import scores

    try:
        return scores.split_inputs(info, "train+val")
    except scores.CalibrationError:
        if not getattr(info, "crossfit", None):
            raise
    s = scores._split(info)
    x, y = np.concatenate([s.x_train, s.x_val]), np.concatenate([s.y_train, s.y_val])
    norm = info.task.get("normalize") or {}
    offset = np.asarray(norm.get("offset", [0.0]), dtype=np.float32)
    scale = np.asarray(norm.get("scale", [1.0]), dtype=np.float32)
    return ((x - offset) / scale).astype(np.float32), np.asarray(y, dtype=np.int64)


def reference_figures(build_dir: Path) -> dict[str, Any]:
    """The classical reference fitted on the build's train split, scored on its test split."""
    from edgeladder.policy.calibrate import scores

    module, source = _reference_module()
    info = scores.load_build(build_dir)
    x_fit, y_fit = _train_val_inputs(info)  # train first, then validation
    n_train = int(info.report["split"]["train"])
    x_test, y_test = scores.split_inputs(info, "test")
    res = module.reference_scores(
        x_fit[:n_train],
        y_fit[:n_train],
        x_test,
        y_test,
        time_series=len(info.task.get("input_shape", [])) == 2,
    )
    notes = []
    for r in res["rows"]:
        if "error" in r:
            notes.append(f"reference {r['name']} failed: {_short(r['error'])}")
        elif r["note"] and ("PAA" in r["note"] or "skipped" in r["note"]):
            notes.append(f"{r['name']}: {r['note'].split('; ', 1)[-1]}")
    return {**res, "source": source, "notes": notes}


def _build_summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the table needs of report.json: per tier the shipped form and its candidates, the
    cross-fit, the reference, the flags (absent in builds that predate them)."""
    keep = (
        "accuracy_int8",
        "val_accuracy_int8",
        "baseline_accuracy_int8",
        "distilled",
        "selected",
        "selection",
        "validation",
        "candidates",
        "params",
        "board",
        "board_fit",
    )
    tiers = {}
    for t, r in (report.get("tiers") or {}).items():
        tiers[t] = {k: r[k] for k in keep if k in r}
        if r.get("pruning"):
            tiers[t]["pruning_kept"] = r["pruning"].get("kept")
    out: dict[str, Any] = {"tiers": tiers}
    for k in ("crossfit", "reference", "flags", "ranking"):
        if k in report:
            out[k] = report[k]
    return out


def run_one(
    name: str, source: Path, out: Path, args, exe: str, evaluate: bool, kind: str = "dataset"
) -> dict[str, Any]:
    build_dir = out / name
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"dataset": name, "kind": kind, "steps": {}, "notes": []}
    row["npz" if kind == "dataset" else "task_dir"] = str(source)

    def step(what: str, cmd: list[str]) -> dict[str, Any] | None:
        print(f"  {what} ...", end="", flush=True, file=sys.stderr)
        r = run_command(cmd, logs / f"{name}.{what}", args.timeout, out)
        stdout = r.pop("stdout")
        try:
            r["json"] = json.loads(stdout) if r["returncode"] == 0 else None
        except ValueError:
            r["json"] = None
            r.setdefault("error", "output is not JSON")
        row["steps"][what] = {k: v for k, v in r.items() if k != "json"}
        print(f" {r['seconds']:.0f} s {r.get('error', 'ok')}", file=sys.stderr)
        if "error" in r:
            row["notes"].append(f"{what} failed: {r['error']}")
            return None
        return r["json"]

    if kind == "dataset":
        cmd = [exe, "build", "--dataset", str(source), "--out", str(build_dir), "--json"]
    else:
        cmd = [exe, "build", str(source), "--out", str(build_dir), "--json"]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if args.force:
        cmd.append("--force")
    report = step("build", cmd)
    if report is None:
        return row
    row["split"] = report.get("split")
    row["n_train"] = (report.get("split") or {}).get("train")
    row["build_int8"] = {t: r.get("accuracy_int8") for t, r in report.get("tiers", {}).items()}
    if "reference" in report:
        row["build_reference"] = report["reference"]
    row["build"] = _build_summary(report)

    cal = step("calibrate", [exe, "calibrate", str(build_dir), "--json"])
    if cal is not None:
        row["calibrate_val"] = {
            "ladder": cal["chosen"]["ladder"],
            "fixed": cal["fixed_threshold"]["ladder"],
            "tiers_alone": cal["tiers_alone"],
            "measures": [s["measure"] for s in cal["stages"]],
            "robust": cal["chosen"].get("robust"),
        }
        row["calibrate"] = {
            k: cal.get(k) for k in ("split", "split_requested", "inputs", "target") if k in cal
        }
        if "guarantee" in cal["chosen"]:
            row["calibrate"]["guarantee"] = cal["chosen"]["guarantee"]
        if cal.get("test"):
            row["calibrate"]["test"] = cal["test"]
    if evaluate and cal is not None:
        row["evaluate"] = step("evaluate", [exe, "evaluate", str(build_dir), "--json"])

    for what, fn in (
        ("test", lambda: figures_on_test(build_dir, ladder=cal is not None)),
        ("reference", lambda: reference_figures(build_dir)),
    ):
        t0 = time.perf_counter()
        try:
            row[what] = fn()
            row["notes"] += row[what].get("notes", [])
        except Exception as e:  # noted in the table; the other datasets still run
            row["notes"].append(f"{what} figures failed: {type(e).__name__}: {_short(str(e))}")
        row["steps"][what] = {"seconds": round(time.perf_counter() - t0, 1)}
    row["notes"] += _cross_check(row)
    return row


# -- the test figures the table shows: evaluate's, else calibrate's, else our own


def test_figures(r: dict[str, Any]) -> dict[str, Any]:
    """``{source, n, tiers{name: acc}, largest, ladder{accuracy, escalation_rate},
    fixed{...}, gap{difference, ci, only_reference_right} | None, target | None}``."""
    ev = r.get("evaluate") or (r.get("calibrate") or {}).get("test")
    if ev:
        source = "evaluate" if r.get("evaluate") else "calibrate"
        return {
            "source": source,
            "n": ev["inputs"],
            "tiers": {t: v["accuracy"] for t, v in ev["tiers_alone"].items()},
            "tiers_ci": {t: v.get("accuracy_ci") for t, v in ev["tiers_alone"].items()},
            "largest": ev["reference"],
            "ladder": ev["ladder"],
            "fixed": ev["fixed_threshold"],
            "gap": ev["ladder"].get("gap"),
            "target": ev.get("target"),
        }
    t = r.get("test") or {}
    tiers = t.get("tiers", {})
    largest = t.get("largest", "large")
    lad = t.get("ladder") or {}
    gap = None
    if lad and tiers.get(largest) is not None:
        gap = {"difference": lad["accuracy"] - tiers[largest], "ci": None}
    return {
        "source": "own" if t else None,
        "n": t.get("n_test"),
        "tiers": tiers,
        "tiers_ci": {},
        "largest": largest,
        "ladder": lad,
        "fixed": t.get("fixed") or {},
        "gap": gap,
        "target": None,
    }


def _cross_check(r: dict[str, Any]) -> list[str]:
    """evaluate's figures against our own: the same ladder on the same scores must agree."""
    ev, own = r.get("evaluate"), r.get("test")
    if not ev or not own or "ladder" not in own:
        return []
    diffs = []
    pairs = [("ladder", ev["ladder"]["accuracy"], own["ladder"]["accuracy"])]
    pairs.append(("ladder esc.", ev["ladder"]["escalation_rate"], own["ladder"]["escalation_rate"]))
    pairs.append(("fixed", ev["fixed_threshold"]["accuracy"], own["fixed"]["accuracy"]))
    for t, v in ev["tiers_alone"].items():
        if t in own["tiers"]:
            pairs.append((t, v["accuracy"], own["tiers"][t]))
    for what, a, b in pairs:
        if abs(a - b) > 1e-9:
            diffs.append(f"{what} {_pct(a)} (evaluate) vs {_pct(b)} (own)")
    return [f"own test figures differ from evaluate's: {', '.join(diffs)}"] if diffs else []


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _pts(v: float) -> str:
    return f"{100 * v:+.1f}"


def _met(r: dict[str, Any]) -> bool | None:
    """The ladder within TOLERANCE of the largest tier alone on test (point estimate)."""
    f = test_figures(r)
    if f["target"] and f["target"].get("mode") == "accuracy":
        return bool(f["target"]["met"])
    if f["gap"] is None:
        return None
    return f["gap"]["difference"] >= -TOLERANCE - 1e-12


def _guarantee(r: dict[str, Any]) -> dict[str, Any] | None:
    return (r.get("calibrate") or {}).get("guarantee")


def _test_risk(r: dict[str, Any]) -> tuple[int, int] | None:
    """Inputs of the test split the ladder gets wrong and the largest tier alone right: the
    loss the guarantee bounds."""
    f = test_figures(r)
    gap = f["gap"] or {}
    if "only_reference_right" not in gap:
        return None
    return int(gap["only_reference_right"]), int(f["n"])


def _best_vs_reference(r: dict[str, Any]) -> dict[str, Any] | None:
    """The build's best tier (test int8) against the build's classical reference."""
    b = r.get("build") or {}
    ref = b.get("reference") or {}
    best, bt = ref.get("best"), ref.get("best_tier")
    if not best or not bt:
        return None
    tier = bt["tier"]
    flagged = any(f.startswith("every tier is below") for f in b.get("flags", []))
    return {
        "tier": tier,
        "accuracy": b["tiers"][tier]["accuracy_int8"],
        "reference": best["name"],
        "reference_accuracy": best["accuracy"],
        "reaches": bool(bt["reaches_reference"]),
        "flagged": flagged,
    }


def _shipped(r: dict[str, Any]) -> tuple[str, list[str]]:
    """Per student (a tier with more than one candidate): d(istilled) or b(aseline), +p when the
    pruned model shipped; and the students shipped worse on validation than their baseline."""
    parts, worse = [], []
    for t, e in ((r.get("build") or {}).get("tiers") or {}).items():
        cands = e.get("candidates") or {}
        if len(cands) < 2 or "selected" not in e:
            continue
        sel = e["selected"]
        parts.append(f"{t} {sel[0]}" + ("+p" if e.get("pruning_kept") else ""))
        base = cands.get("baseline", {}).get("val_accuracy_int8")
        shipped = e.get("val_accuracy_int8", cands[sel]["val_accuracy_int8"])
        # the candidates' figures are rounded to 6 places in report.json, the shipped one not
        worst = round(min(shipped, cands[sel]["val_accuracy_int8"]), 6)
        if base is not None and worst < base - 1e-9:
            worse.append(f"{t} ({_pct(shipped)} vs baseline {_pct(base)} on validation)")
    return (", ".join(parts) if parts else "—"), worse


def _short_flag(flag: str) -> str:
    if flag.startswith("every tier is below"):
        return "all tiers < ref."
    words = flag.split()
    if "worse on validation than the smaller" in flag:
        return f"{words[0]} < {words[8]} on val"
    return _short(flag, 60)


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "dataset",
        "n_train",
        "tiny",
        "medium",
        "large",
        "ladder",
        "ladder esc.",
        "fixed 0.95/0.90",
        "fixed esc.",
        "ladder ≥ large − 0.3pt?",
        "classical best",
        "build s",
        "cal. split",
        "cal. inputs",
        "guarantee held",
        "test loss",
        "test verdict",
        "gap ladder − large [90% CI]",
        "best tier vs build ref.",
        "shipped",
        "flags",
        "notes",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        f = test_figures(r)
        tiers = f["tiers"]
        lad, fx = f["ladder"] or {}, f["fixed"] or {}
        large = tiers.get(f["largest"])
        met = _met(r)
        verdict = "—"
        if met is not None:
            verdict = "yes" if met else f"no ({_pts(f['gap']['difference'])} pt)"
        ref = r.get("reference") or {}
        best = ref.get("best")
        ref_s = "—" if not best else f"{_pct(best['accuracy'])} ({best['name']})"
        build_s = (r["steps"].get("build") or {}).get("seconds")
        cal = r.get("calibrate") or {}
        split = cal.get("split", "—")
        cf = (r.get("build") or {}).get("crossfit")
        if cf and split == "oof":
            split = f"oof ({cf['folds']}-fold)"
        inputs = cal.get("inputs") or ((r.get("calibrate_val") or {}).get("ladder") or {}).get(
            "inputs"
        )
        g = _guarantee(r)
        if g is None:
            g_s = "—"
        elif g.get("held"):
            g_s = "yes"
        else:
            need = g.get("needed_inputs")
            g_s = "no (needs " + ("—" if need is None else str(need)) + ")"
        risk = _test_risk(r)
        risk_s = "—" if risk is None else f"{risk[0]}/{risk[1]}"
        tgt = f["target"] or {}
        gap = f["gap"]
        gap_s = "—"
        if gap is not None:
            gap_s = _pts(gap["difference"])
            if gap.get("ci"):
                gap_s += f" [{_pts(gap['ci'][0])}, {_pts(gap['ci'][1])}]"
        bvr = _best_vs_reference(r)
        bvr_s = "—"
        if bvr:
            rel = "≥" if bvr["reaches"] else "<"
            bvr_s = (
                f"{bvr['tier']} {_pct(bvr['accuracy'])} {rel} {_pct(bvr['reference_accuracy'])}"
                f" ({bvr['reference']})"
            )
            if not bvr["reaches"]:
                bvr_s += ", flagged" if bvr["flagged"] else ", NOT flagged"
        shipped, worse = _shipped(r)
        if worse:
            shipped += " (worse than baseline: " + "; ".join(worse) + ")"
        flags = (r.get("build") or {}).get("flags")
        flags_s = "—" if flags is None else ("; ".join(map(_short_flag, flags)) or "none")
        name = r["dataset"] + (" (task, not unseen)" if r.get("kind") == "task" else "")
        lines.append(
            "| "
            + " | ".join(
                (
                    name,
                    str(r.get("n_train", "—")),
                    _pct(tiers.get("tiny")),
                    _pct(tiers.get("medium")),
                    _pct(large),
                    _pct(lad.get("accuracy")),
                    _pct(lad.get("escalation_rate")),
                    _pct(fx.get("accuracy")),
                    _pct(fx.get("escalation_rate")),
                    verdict,
                    ref_s,
                    "—" if build_s is None else f"{build_s:.0f}",
                    str(split),
                    "—" if inputs is None else str(inputs),
                    g_s,
                    risk_s,
                    tgt.get("verdict", "—"),
                    gap_s,
                    bvr_s,
                    shipped,
                    flags_s,
                    "; ".join(r["notes"]).replace("|", "/"),
                )
            )
            + " |"
        )
    return "\n".join(lines)


def flags_list(rows: list[dict[str, Any]]) -> str:
    """The builds' flags in full."""
    out = []
    for r in rows:
        for flag in (r.get("build") or {}).get("flags") or []:
            out.append(f"- {r['dataset']}: {flag}")
    return "\n".join(out)


def summary(rows: list[dict[str, Any]]) -> str:
    """The figures RESULTS.md quotes, over the unseen datasets (tasks left out)."""
    rows = [r for r in rows if r.get("kind", "dataset") == "dataset"]
    lines = []
    with_ladder = [r for r in rows if _met(r) is not None]
    met = [r for r in with_ladder if _met(r)]
    missed = [r for r in with_ladder if not _met(r)]
    no_ladder = [r["dataset"] for r in rows if _met(r) is None]
    lines.append(
        f"- ladder ≥ large − 0.3 pt on test: {len(met)} of {len(with_ladder)} datasets with a"
        f" ladder ({len(rows)} run"
        + (f"; no ladder: {', '.join(no_ladder)}" if no_ladder else "")
        + ")"
    )
    verdicts: dict[str, list[str]] = {}
    for r in with_ladder:
        v = (test_figures(r)["target"] or {}).get("verdict")
        if v:
            verdicts.setdefault(v, []).append(r["dataset"])
    if verdicts:
        lines.append(
            "- the test interval's verdict: "
            + "; ".join(f"{v} {len(n)} ({', '.join(n)})" for v, n in sorted(verdicts.items()))
        )
    for r in missed:
        g = _guarantee(r)
        said = "—" if g is None else ("held=true" if g.get("held") else "held=false")
        gap = test_figures(r)["gap"]
        lines.append(f"  - missed: {r['dataset']} ({_pts(gap['difference'])} pt), guarantee {said}")
    with_g = [r for r in with_ladder if _guarantee(r) is not None]
    if with_g:
        held = [r for r in with_g if _guarantee(r).get("held")]
        kept = []
        for r in held:
            risk = _test_risk(r)
            delta = _guarantee(r).get("delta", TOLERANCE)
            if risk is not None and risk[0] <= delta * risk[1] + 1e-9:
                kept.append(r)
        lines.append(
            f"- guarantee held=true on {len(held)} of {len(with_g)}"
            + (f" ({', '.join(r['dataset'] for r in held)})" if held else "")
            + f"; the bound held on test on {len(kept)} of {len(held)} datasets where it claimed"
            " to hold (test loss ≤ δ·n)"
        )
        missed_g = [r for r in missed if _guarantee(r) is not None]
        warned = [r for r in missed_g if not _guarantee(r).get("held")]
        lines.append(
            f"- of the {len(missed_g)} misses, {len(warned)} had held=false beforehand (the"
            " guarantee had said it was not supported)"
        )
        needs = [
            f"{r['dataset']} {_guarantee(r).get('needed_inputs')}"
            for r in with_g
            if not _guarantee(r).get("held")
        ]
        if needs:
            lines.append("- needed_inputs where it did not hold: " + ", ".join(needs))
    bvr = [(r, _best_vs_reference(r)) for r in rows]
    bvr = [(r, b) for r, b in bvr if b]
    if bvr:
        reach = [r["dataset"] for r, b in bvr if b["reaches"]]
        below = [(r, b) for r, b in bvr if not b["reaches"]]
        flagged = [r for r, b in below if b["flagged"]]
        lines.append(
            f"- best tier ≥ the build's classical reference: {len(reach)} of {len(bvr)};"
            f" {len(flagged)} of the {len(below)} below it flagged"
            + (
                " ("
                + ", ".join(
                    f"{r['dataset']} {_pct(b['accuracy'])} vs {_pct(b['reference_accuracy'])}"
                    for r, b in below
                )
                + ")"
                if below
                else ""
            )
        )
    own = []
    for r in rows:
        tiers, best = test_figures(r)["tiers"], ((r.get("reference") or {}).get("best") or {})
        if tiers and best.get("accuracy") is not None:
            top = max(tiers, key=tiers.get)
            own.append((r["dataset"], top, tiers[top], best["accuracy"]))
    if own:
        below = [o for o in own if o[2] < round(o[3], 6) - 1e-9]
        lines.append(
            f"- best tier ≥ run.py's classical reference (fitted on train only; the same in"
            f" every run): {len(own) - len(below)} of {len(own)}"
            + (
                " (below: " + ", ".join(f"{n} {_pct(a)} vs {_pct(b)}" for n, _, a, b in below) + ")"
                if below
                else ""
            )
        )
    shipped = [(r, _shipped(r)) for r in rows if (r.get("build") or {}).get("tiers")]
    if any(s[0] != "—" for _, s in shipped):
        worse = [f"{r['dataset']}: {w}" for r, (_, ws) in shipped for w in ws]
        forms: dict[str, int] = {}
        for _, (s, _) in shipped:
            for part in s.split(", "):
                if part != "—":
                    key = part.split(" ", 1)[1]
                    forms[key] = forms.get(key, 0) + 1
        lines.append(
            "- shipped students: "
            + ", ".join(f"{k} {v}" for k, v in sorted(forms.items()))
            + f"; worse on validation than their baseline: {len(worse)}"
            + (f" ({'; '.join(worse)})" if worse else "")
        )
    times = [(r["dataset"], (r["steps"].get("build") or {}).get("seconds")) for r in rows]
    times = [(n, s) for n, s in times if s is not None]
    if times:
        secs = sorted(s for _, s in times)
        lines.append(
            f"- build seconds: total {sum(secs):.0f}, median {secs[len(secs) // 2]:.0f}, max"
            f" {max(secs):.0f} ({', '.join(f'{n} {s:.0f}' for n, s in times)})"
        )
    costly = []
    for r in with_ladder:
        f = test_figures(r)
        lad, fx = f["ladder"], f["fixed"]
        if not fx:
            continue
        if (
            lad["accuracy"] <= fx["accuracy"] + 1e-9
            and lad["escalation_rate"] >= fx["escalation_rate"] + 0.10
        ):
            costly.append(
                f"{r['dataset']} (ladder {_pct(lad['accuracy'])} at {_pct(lad['escalation_rate'])}"
                f"% esc. vs fixed {_pct(fx['accuracy'])} at {_pct(fx['escalation_rate'])}%)"
            )
    lines.append(
        f"- ladder escalates ≥ 10 pt more than the fixed thresholds at no better accuracy:"
        f" {len(costly)}" + (f" — {'; '.join(costly)}" if costly else "")
    )
    return "\n".join(lines)


def document(rows: list[dict[str, Any]]) -> str:
    """table.md: the table, the flags in full, the summary."""
    parts = [table(rows)]
    if flags := flags_list(rows):
        parts.append("Build flags:\n\n" + flags)
    parts.append("Summary (unseen datasets only):\n\n" + summary(rows))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "out", type=Path, nargs="?", help="folder for the builds, logs, results.json, table.md"
    )
    ap.add_argument("--data", type=Path, help="folder of NAME.npz files (default OUT/data)")
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(datasets.SOURCES)}")
    ap.add_argument(
        "--task",
        type=Path,
        action="append",
        default=[],
        help="also a recipe task folder (e.g. models/digits), run after the datasets",
    )
    ap.add_argument("--no-datasets", action="store_true", help="only the --task folders")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per command")
    ap.add_argument("--edgeladder", help="the edgeladder command (default: beside python)")
    ap.add_argument("--epochs", type=int, help="cap every tier's epochs (quick trials)")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    ap.add_argument(
        "--table-from",
        type=Path,
        metavar="RESULTS_JSON",
        help="print the table and summary of an earlier run's results.json, and run nothing",
    )
    args = ap.parse_args(argv)
    # a SIGTERM ends the command running in its own session too (run_command)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if args.table_from:
        res = json.loads(args.table_from.read_text())
        print(document(list(res["datasets"].values())))
        return 0
    if args.out is None:
        ap.error("OUT is required (unless --table-from)")

    out = args.out.resolve()
    data = (args.data or out / "data").resolve()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(datasets.SOURCES)
    if args.no_datasets:
        names = []
    exe = _edgeladder_exe(args.edgeladder)
    code = _code_under_test()
    evaluate = _has_command(exe, "evaluate")
    print(f"edgeladder: {exe} (package {code['path']}, commit {code.get('commit', '?')[:7]})")
    if not evaluate:
        print("no `edgeladder evaluate`: test figures computed here only")

    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results: dict[str, Any] = {
        "code": code,
        "edgeladder": exe,
        "evaluate_command": evaluate,
        "timeout_s": args.timeout,
        "argv": sys.argv,
        "datasets": {},
    }
    if path.exists() and (names or args.task):
        # a run of a subset adds its rows to the earlier ones (same code or not: see "code")
        earlier = json.loads(path.read_text())
        if earlier.get("code", {}).get("commit") == code.get("commit"):
            results["datasets"] = earlier.get("datasets", {})
    jobs = [(n, data / f"{n}.npz", "dataset") for n in names]
    jobs += [(t.resolve().name, t.resolve(), "task") for t in args.task]
    t_all = time.perf_counter()
    for name, source, kind in jobs:
        if kind == "dataset" and not source.exists():
            datasets.write(name, data)
        print(f"{name}:", file=sys.stderr)
        t0 = time.perf_counter()
        row = run_one(name, source, out, args, exe, evaluate, kind)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        results["datasets"][name] = row
        results["seconds"] = round(time.perf_counter() - t_all, 1)
        rows = list(results["datasets"].values())
        results["table"] = table(rows)
        path.write_text(json.dumps(results, indent=2) + "\n")
        (out / "table.md").write_text(document(rows) + "\n")
    results["code_at_end"] = _code_under_test()  # the tree may have moved during a long run
    path.write_text(json.dumps(results, indent=2) + "\n")
    md = document(list(results["datasets"].values()))
    (out / "table.md").write_text(md + "\n")
    print(md)
    print(f"wrote {path} and {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
