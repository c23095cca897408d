"""Build, calibrate and score edgeladder on public datasets it was never tuned on.

    python bench/unseen/run.py OUT [--data DIR] [--only NAME,NAME,...] [--timeout S]
                               [--edgeladder EXE] [--epochs N] [--force]

Per dataset, as a user would, with the ``edgeladder`` command next to this interpreter (or
``--edgeladder``) and whatever ``PYTHONPATH`` is set to:

1. ``edgeladder build --dataset DIR/NAME.npz --out OUT/NAME --json``
2. ``edgeladder calibrate OUT/NAME --json`` (thresholds on the validation split)
3. ``edgeladder evaluate OUT/NAME --json`` when the command exists (its output is kept in the
   results as it is);

then, in this process, the test-split figures: every tier alone, the calibrated ladder
(``OUT/NAME/ladder.json``) and the fixed 0.95 / 0.90 thresholds, replayed with
``edgeladder.policy.replay`` on the int8 logits that ``edgeladder.policy.calibrate.scores``
computes (the board tier on the board engine when the simulator is installed), and the
classical reference (``edgeladder.build.reference``: k-NN, logistic regression, DTW 1-NN)
fitted on the build's train split and scored on its test split. The figures are computed the
same way whatever the code under test has, so a before and an after table compare.

Missing .npz files are written first by ``datasets.py`` beside this script (``--data``,
default ``OUT/data``). A command that fails or runs past ``--timeout`` (default 420 s) is noted
in the table, and the run goes on. Writes ``OUT/results.json`` and ``OUT/table.md``; the
commands' output goes to ``OUT/logs/``.
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


def reference_figures(build_dir: Path) -> dict[str, Any]:
    """The classical reference fitted on the build's train split, scored on its test split."""
    from edgeladder.policy.calibrate import scores

    module, source = _reference_module()
    info = scores.load_build(build_dir)
    x_fit, y_fit = scores.split_inputs(info, "train+val")  # train first, then validation
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


def run_one(name: str, npz: Path, out: Path, args, exe: str, evaluate: bool) -> dict[str, Any]:
    build_dir = out / name
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"dataset": name, "npz": str(npz), "steps": {}, "notes": []}

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

    cmd = [exe, "build", "--dataset", str(npz), "--out", str(build_dir), "--json"]
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

    cal = step("calibrate", [exe, "calibrate", str(build_dir), "--json"])
    if cal is not None:
        row["calibrate_val"] = {
            "ladder": cal["chosen"]["ladder"],
            "fixed": cal["fixed_threshold"]["ladder"],
            "tiers_alone": cal["tiers_alone"],
            "measures": [s["measure"] for s in cal["stages"]],
            "robust": cal["chosen"].get("robust"),
        }
    if evaluate:
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
    return row


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


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
        "notes",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        t = r.get("test") or {}
        tiers = t.get("tiers", {})
        lad, fx = t.get("ladder") or {}, t.get("fixed") or {}
        large = tiers.get(t.get("largest", "large"))
        verdict = "—"
        if lad and large is not None:
            gap = lad["accuracy"] - large
            verdict = "yes" if gap >= -TOLERANCE - 1e-12 else f"no ({100 * gap:+.1f} pt)"
        ref = r.get("reference") or {}
        best = ref.get("best")
        ref_s = "—" if not best else f"{_pct(best['accuracy'])} ({best['name']})"
        build_s = (r["steps"].get("build") or {}).get("seconds")
        lines.append(
            "| "
            + " | ".join(
                (
                    r["dataset"],
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
                    "; ".join(r["notes"]).replace("|", "/"),
                )
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for the builds, logs, results.json, table.md")
    ap.add_argument("--data", type=Path, help="folder of NAME.npz files (default OUT/data)")
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(datasets.SOURCES)}")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per command")
    ap.add_argument("--edgeladder", help="the edgeladder command (default: beside python)")
    ap.add_argument("--epochs", type=int, help="cap every tier's epochs (quick trials)")
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = ap.parse_args(argv)

    out = args.out.resolve()
    data = (args.data or out / "data").resolve()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(datasets.SOURCES)
    exe = _edgeladder_exe(args.edgeladder)
    code = _code_under_test()
    evaluate = _has_command(exe, "evaluate")
    print(f"edgeladder: {exe} (package {code['path']}, commit {code.get('commit', '?')[:7]})")
    if not evaluate:
        print("no `edgeladder evaluate`: test figures computed here only")

    results: dict[str, Any] = {
        "code": code,
        "edgeladder": exe,
        "evaluate_command": evaluate,
        "timeout_s": args.timeout,
        "datasets": {},
    }
    rows = []
    t_all = time.perf_counter()
    for name in names:
        npz = data / f"{name}.npz"
        if not npz.exists():
            datasets.write(name, data)
        print(f"{name}:", file=sys.stderr)
        t0 = time.perf_counter()
        row = run_one(name, npz, out, args, exe, evaluate)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        results["datasets"][name] = row
        results["seconds"] = round(time.perf_counter() - t_all, 1)
        results["table"] = table(rows)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    md = table(rows)
    (out / "table.md").write_text(md + "\n")
    print(md)
    print(f"wrote {out / 'results.json'} and {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
