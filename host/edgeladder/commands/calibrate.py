"""``edgeladder calibrate BUILD_OR_TASK``: thresholds for the ladder, written into ladder.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgeladder.commands.options import FILE, json_option, target_options


def _pairs(kind: type):
    """A click callback parsing ``a=1,b=2`` into ``{"a": kind(1), "b": kind(2)}``."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> dict:
        out: dict[str, Any] = {}
        for item in (value or "").split(","):
            if not item.strip():
                continue
            key, sep, num = item.partition("=")
            try:
                if not sep or not key.strip():
                    raise ValueError
                out[key.strip()] = kind(num)
            except ValueError:
                raise click.BadParameter(
                    f"{item!r}: expected NAME={kind.__name__} pairs, e.g. gateway=1,cloud=5"
                ) from None
        return out

    return parse


def _pairs_option(name: str, kind: type, default: str, help: str):
    """``--NAME a=1,b=2`` into the parameter ``NAMEs`` (Options' field): ``{"a": kind(1), ...}``."""
    return click.option(
        name,
        name[2:] + "s",
        callback=_pairs(kind),
        default=default,
        show_default=bool(default),
        help=help,
    )


@click.command("calibrate")
@click.argument("build", metavar="BUILD_DIR_OR_TASK", type=click.Path(path_type=Path))
@target_options(
    "Cheapest ladder with accuracy >= the largest tier's + DELTA on the split"
    " [default: -0.003, i.e. 0.3 points below].",
    "Instead: the most accurate ladder that sends at most RATE of the inputs off the board.",
    None,
)
@click.option(
    "--measure",
    type=click.Choice(["auto", "max", "margin", "entropy"]),
    default="auto",
    show_default=True,
    help="Gate confidence; auto: the highest AUROC per stage.",
)
@click.option("--deadline-ms", type=int, default=200, show_default=True)
@_pairs_option(
    "--cost",
    float,
    "gateway=1,cloud=5",
    "Cost units of an input reaching a stage (by stage name or where).",
)
@_pairs_option(
    "--budget", int, "", "budget_ms per stage or where [defaults: edge=20,gateway=80,cloud=150]."
)
@_pairs_option(
    "--rtt", int, "", "expected_rtt_ms per remote stage or where [defaults: gateway=15,cloud=40]."
)
@click.option(
    "--split",
    default="auto",
    show_default=True,
    help="auto (oof for a cross-fitted build, else val), val, oof (out-of-fold), or train+val"
    " (biased: the tiers were fitted on train). Never test.",
)
@click.option(
    "--confidence",
    type=float,
    default=0.9,
    show_default=True,
    help="Of the guarantee (Learn-then-Test) and of the bound on each gated stage's error rate"
    " (docs/calibration.md).",
)
@click.option(
    "--require-guarantee",
    is_flag=True,
    help="Fail when no point is certified, instead of falling back to the robust rule.",
)
@click.option("--best-effort", is_flag=True, help="Take the most accurate point if none meets.")
@click.option(
    "--no-robust",
    is_flag=True,
    help="Take the cheapest point that meets the target on the split: no guarantee, plateau,"
    " calibrated or bound checks (docs/calibration.md).",
)
@click.option(
    "--out",
    "-o",
    type=FILE,
    help="ladder.json to write (default: BUILD/ladder.json); calibration.json/.png go beside it.",
)
@click.option("--no-plot", is_flag=True, help="Skip calibration.png.")
@click.option(
    "--no-test-report",
    is_flag=True,
    help="Skip the test split's figures printed (and stored) after choosing.",
)
@json_option("calibration.json")
def calibrate(
    build: Path,
    target_accuracy: float | None,
    no_robust: bool,
    no_plot: bool,
    no_test_report: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Choose the ladder's gates and thresholds on BUILD's calibration split; write ladder.json.

    Per stage: temperature scaling (ECE before and after), the AUROC of each confidence
    measure, then a threshold sweep (accuracy vs escalation vs cost), a Learn-then-Test
    certification of the points, and a choice for the target. `edgeladder deploy` ships the
    ladder.json to the board.
    """
    from edgeladder.policy.calibrate import Options
    from edgeladder.policy.calibrate import calibrate as run

    if target_accuracy is not None and options["max_escalation"] is not None:
        raise click.UsageError("give --target-accuracy or --max-escalation, not both")
    # the other options are named as Options' fields (--cost is `costs`, ...)
    target = -0.003 if target_accuracy is None else target_accuracy
    opts = Options(
        target_accuracy=target,
        robust=not no_robust,
        plot=not no_plot,
        test_report=not no_test_report,
        **options,
    )
    result = run(build, opts)
    if as_json:
        click.echo(json.dumps(result.report, indent=2))
        return
    print_summary(result.report)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def print_summary(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(
        title=f"{r['task']}: gates on the {r['split']} split ({r['inputs']} inputs)",
        title_justify="left",
    )
    for col in ("stage", "where", "alone", "err", "T", "ECE T=1 → T", "AUROC max/margin/entr."):
        t.add_column(col, justify="left" if col in ("stage", "where") else "right")
    t.add_column("gate ≥ threshold", justify="left")
    for s in r["stages"]:
        au = s["auroc"]
        t.add_row(
            s["name"],
            s["where"],
            _pct(s["accuracy"]),
            str(s["errors"]),
            f"{s['temperature']:.3f}",
            f"{s['ece_before']:.4f} → {s['ece_after']:.4f}",
            "/".join(
                "-" if au[m] is None else f"{au[m]:.3f}" for m in ("max", "margin", "entropy")
            ),
            f"{s['measure']} ≥ {s['threshold'] / 65536:.4f}",
        )
    console.print(t)
    for s in r["stages"]:
        if s["temperature_note"]:
            console.print(f"{s['name']}: {s['temperature_note']}")

    goal = r["target"]
    if goal["mode"] == "accuracy":
        what = (
            f"accuracy >= {goal['accuracy']:.2%} ({goal['reference']} alone"
            f" {goal['reference_accuracy']:.2%} {goal['delta'] * 100:+.2f} points)"
        )
    else:
        what = f"escalation <= {goal['max_escalation']:.1%}, most accurate"
    ladder = Table(title=f"ladder on {r['split']}: target {what}", title_justify="left")
    for col in ("config", "accuracy", "escalated", "to the last", "cost/input"):
        ladder.add_column(col, justify="left" if col == "config" else "right")
    ch, fx = r["chosen"]["ladder"], r["fixed_threshold"]["ladder"]
    last = list(ch["reach_rate"])[-1]
    for name, row in (("chosen", ch), ("fixed 0.95 / 0.90", fx)):
        ladder.add_row(
            name,
            _pct(row["accuracy"]),
            _pct(row["escalation_rate"]),
            _pct(row["reach_rate"][last]),
            f"{row['expected_cost']:.3f}",
        )
    for name, acc in r["tiers_alone"].items():
        ladder.add_row(f"{name} alone", _pct(acc), "", "", "")
    console.print(ladder)
    _print_evidence(console, r)
    held = (r["chosen"].get("guarantee") or {}).get("held")
    console.print(guarantee_line(r), style="green" if held else "yellow", highlight=False)
    rules = r["chosen"]["rules"]
    if "note" in rules:
        console.print(f"[yellow]note:[/] {rules['note']}")
    if r.get("test"):
        from edgeladder.policy.evaluate import print_evaluation

        print_evaluation(r["test"], console)
    written = [r["ladder_json"], str(Path(r["ladder_json"]).with_name("calibration.json"))]
    console.print("wrote " + ", ".join(written + ([r["plot"]] if r["plot"] else [])))


def _print_evidence(console, r: dict[str, Any]) -> None:
    """How much the split can promise: the board stage's error bound and the kept inputs."""
    board, ch = r["stages"][0], r["chosen"]
    b, ev = board["bound"], ch["evidence"]
    console.print(
        f"evidence: {board['name']} made {b['errors']} errors in {b['inputs']} inputs; at"
        f" {b['confidence']:.0%} confidence its error rate is <= {b['error_rate_upper']:.2%}"
        f" (T {board['temperature']:.3f} -> {b['temperature']:.3f} for the bound). The board"
        f" keeps {ev['kept']} inputs: {ev['kept_errors']} errors there,"
        f" {ev['kept_expected_errors']:.2f} expected, {ev['kept_bound_errors']:.2f} at the bound;"
        f" ladder accuracy at the bound {_pct(ch['bound_accuracy'])}"
    )


def guarantee_line(r: dict[str, Any]) -> str:
    """One line: what calibration.json's ``chosen.guarantee`` promises, or why it does not."""
    g, ch = r["chosen"]["guarantee"], r["chosen"]
    ref = r["stages"][-1]["name"]
    n, k = g["inputs"], g["losses"]
    losses = f"{k} loss{'es' if k != 1 else ''}"
    if g["delta"] is None:  # --max-escalation: a bound, no test
        return (
            f"risk: accuracy loss vs {ref} ≤ {100 * g['risk_upper']:.2f} pt at"
            f" {g['confidence']:.0%} confidence at this point (n={n}, {losses}; a per-point"
            " bound, not a certification)"
        )
    head = (
        f"guarantee: accuracy loss vs {ref} ≤ {100 * g['delta']:.2f} pt with"
        f" {g['confidence']:.0%} confidence"
    )
    if g["held"]:
        line = f"{head} — held (n={n}, {losses}, bound {g['risk_upper']:.2%})"
        return line + ("; it escalates everything" if ch["escalation"] >= 1 else "")
    need = g.get("needed_inputs")
    if g["delta"] <= 0:
        why = f"cannot be certified for a target at or above {ref} alone"
    elif need is None:
        why = (
            f"NOT supported by {n} inputs: {losses} at the chosen point, a rate not below"
            f" {100 * g['delta']:.2f} pt"
        )
    elif need <= n:
        why = f"NOT held: the point passes its own test but its chain stopped above it (n={n})"
    else:
        why = f"NOT supported by {n} inputs: would need ≥ {need}"
    tail = {
        "point estimate": "not sought (--no-robust: the point estimate)",
        "best effort": "--best-effort took the most accurate point",
    }.get(g.get("chosen_by"), "fell back to the robust rule (escalates more)")
    return f"{head} — {why}; {tail}"
