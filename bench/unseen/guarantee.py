"""Is calibrate's guarantee honest? Re-calibrate finished builds at several targets and check,
on each build's held-out test split, whether the certified ladders kept their promise.

    python bench/unseen/guarantee.py OUT [--deltas 0.003,0.02,0.05] [--confidence 0.9]

OUT holds builds made by run.py (one folder per dataset). For every build and DELTA it runs
``edgeladder calibrate BUILD --target-accuracy -DELTA --confidence C -o BUILD/guarantee/dDELTA/
ladder.json --json --no-plot`` (the build's own ladder.json is untouched) and reads:

- ``chosen.guarantee``: whether the split certified the point (held) or the inputs it would
  need;
- ``test``: the ladder and the last stage alone on the test split. The promise is about the
  risk R = P(ladder wrong and the last stage right); on test that is ``only_reference_right / n``.

It prints a table and a summary: of the certified ladders, on how many the test split's loss
rate stayed within DELTA (with confidence C one expects at least about C of them to; a finite
test split also fluctuates around the true risk), and where a ladder missed the target on test,
whether calibrate had said beforehand that the target was not supported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

EDGELADDER = Path(sys.executable).with_name("edgeladder")


def calibrate(build: Path, delta: float, confidence: float) -> dict:
    out = build / "guarantee" / f"d{delta:g}" / "ladder.json"
    cmd = [
        str(EDGELADDER),
        "calibrate",
        str(build),
        "--target-accuracy",
        f"{-delta}",
        "--confidence",
        f"{confidence}",
        "-o",
        str(out),
        "--json",
        "--no-plot",
        "--best-effort",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout)


def row(name: str, delta: float, cal: dict) -> dict:
    if "error" in cal:
        return {"dataset": name, "delta": delta, "error": cal["error"]}
    g = cal["chosen"]["guarantee"]
    test = cal["test"]
    gap = test["ladder"]["gap"]
    n = test["inputs"]
    loss = gap["only_reference_right"] / n
    ladder, ref = test["ladder"]["accuracy"], gap["reference"]
    ref_acc = test["tiers_alone"][ref]["accuracy"]
    return {
        "dataset": name,
        "delta": delta,
        "split": cal["split"],
        "inputs": cal["inputs"],
        "held": bool(g["held"]),
        "needed": g.get("needed_inputs"),
        "risk_upper": g.get("risk_upper"),
        "escalation": test["ladder"]["escalation_rate"],
        "test_n": n,
        "test_loss": loss,
        "loss_within": loss <= delta + 1e-12,
        "met": ladder >= ref_acc - delta - 1e-12,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--deltas", default="0.003,0.02,0.05")
    ap.add_argument("--confidence", type=float, default=0.9)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    deltas = [float(d) for d in a.deltas.split(",")]
    only = {s for s in a.only.split(",") if s}
    builds = sorted(p for p in a.out.iterdir() if (p / "task.json").is_file())
    rows = []
    for b in builds:
        if only and b.name not in only:
            continue
        for d in deltas:
            r = row(b.name, d, calibrate(b, d, a.confidence))
            rows.append(r)
            print(json.dumps(r), file=sys.stderr)
    lines = [
        "| dataset | δ | split | n | certified | needs | test n | test loss | loss ≤ δ |"
        " met on test | esc. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['delta']:g} | error: {r['error']} |")
            continue
        lines.append(
            f"| {r['dataset']} | {r['delta']:g} | {r['split']} | {r['inputs']} |"
            f" {'yes' if r['held'] else 'no'} | {r['needed'] or '—'} | {r['test_n']} |"
            f" {r['test_loss']:.2%} | {'yes' if r['loss_within'] else 'NO'} |"
            f" {'yes' if r['met'] else 'NO'} | {r['escalation']:.1%} |"
        )
    ok = [r for r in rows if "error" not in r]
    held = [r for r in ok if r["held"]]
    misses = [r for r in ok if not r["met"]]
    lines += [
        "",
        f"- certified: {len(held)} of {len(ok)} (dataset, δ) pairs; on test the loss stayed"
        f" within δ on {sum(r['loss_within'] for r in held)} of {len(held)} of them"
        f" (confidence {a.confidence:.0%})",
        f"- missed the target on test: {len(misses)}; of those, calibrate had said beforehand"
        f" that the target was not supported on {sum(not r['held'] for r in misses)}",
    ]
    text = "\n".join(lines) + "\n"
    (a.out / "guarantee.md").write_text(text)
    (a.out / "guarantee.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
