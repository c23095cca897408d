"""``edgeladder evaluate BUILD_OR_TASK``: the calibrated ladder on the test split, honestly."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeladder.commands.options import FILE, json_option


@click.command("evaluate")
@click.argument("build", metavar="BUILD_DIR_OR_TASK", type=click.Path(path_type=Path))
@click.option(
    "--ladder",
    type=FILE,
    help="ladder.json to evaluate (default: BUILD/ladder.json); evaluate.json goes beside it.",
)
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="The held-out test split; any other split is reported as not held out.",
)
@click.option(
    "--confidence",
    type=float,
    default=0.9,
    show_default=True,
    help="Of the two-sided intervals (Clopper-Pearson; Tango's for the paired gap).",
)
@json_option("evaluate.json")
def evaluate(
    build: Path, ladder: Path | None, split: str, confidence: float, as_json: bool
) -> None:
    """Report BUILD's calibrated ladder on its test split: accuracy and escalation with
    confidence intervals, each tier alone, the fixed 0.95 / 0.90 thresholds, the gap to the
    largest tier and whether the calibrated target holds. Writes evaluate.json."""
    from edgeladder.policy.evaluate import evaluate_build, print_evaluation

    report, path = evaluate_build(build, ladder, split, confidence)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    print_evaluation(report)
    click.echo(f"wrote {path}")
