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


