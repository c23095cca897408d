"""``edgeladder build``: parse, delegate to :mod:`edgeladder.build.pipeline`, print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgeladder.errors import RecipeError


@click.command()
@click.argument("task", required=False, type=click.Path(path_type=Path))
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    help="Build from a .npz dataset (x, y[, x_test, y_test, labels]) without a recipe;"
    " tiers are picked from the input rank.",
)
@click.option(
    "--out", "-o", type=click.Path(path_type=Path), help="Output folder (default: build/<task>/)."
)
@click.option("--seed", type=int, default=None, help="Override the recipe's seed.")
@click.option(
    "--epochs", type=int, default=None, help="Cap every tier's epochs (quick trial runs)."
)
@click.option("--force", is_flag=True, help="Rebuild even if the artifacts are up to date.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
def build(
    task: Path | None,
    dataset: Path | None,
    out: Path | None,
    seed: int | None,
    epochs: int | None,
    force: bool,
    as_json: bool,
) -> None:
    """Build every tier of TASK (a folder with recipe.toml, e.g. models/digits).

    Trains the teacher, distils the students (and trains label-only baselines to show what
    distillation bought), prunes where the recipe asks, quantizes to int8 full-integer,
    evaluates float and int8 (LiteRT), and writes per tier the .keras, the int8 .tflite,
    its C array and golden vectors, plus report.json. An unchanged recipe and dataset reuse
    the previous artifacts.
    """
    from edgeladder.build.recipe import DEFAULT_TEST, default_recipe, load_recipe

    if (task is None) == (dataset is None):
        raise click.UsageError("give a TASK folder or --dataset FILE.npz (one of them)")
    if task is not None:
        recipe = load_recipe(task)
    else:
        from edgeladder.build.dataset import load_dataset

        ds = load_dataset(dataset)
        # the inputs the tiers learn from (train + validation): the split keeps the rest
        test = 0.0 if ds.x_test is not None else DEFAULT_TEST
        pooled = round(len(ds.y) * (1 - test))
        recipe = default_recipe(
            dataset, len(ds.input_shape), input_shape=ds.input_shape, samples=pooled
        )
    if seed is not None:
        recipe.seed = seed
    if epochs is not None:
        if epochs < 1:
            raise RecipeError("--epochs must be at least 1")
        for t in recipe.tiers:
            t.epochs = min(t.epochs, epochs)
            if t.prune:
                t.prune.epochs = min(t.prune.epochs, epochs)
    out = out or Path("build") / recipe.task

    from edgeladder.build.pipeline import build as run_build
    from edgeladder.commands.progress import RichProgress

    with RichProgress(title=f"build {recipe.task}", quiet=as_json) as progress:
        result = run_build(recipe, out, force=force, progress=progress)
    if as_json:
        click.echo(json.dumps(result.report, indent=2))
        return
    if result.reused:
        click.echo(
            f"Up to date: reused the artifacts in {out}/ (recipe and data unchanged,"
            f" key {result.report['cache_key'][:12]}). Use --force to rebuild."
        )
    else:
        click.echo(f"Built {recipe.task} in {result.seconds:.0f} s into {out}/")
    print_report(result.report)


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{report['task']}: int8 accuracy", title_justify="left")
    cols = ("tier", "board", "params", "MACs", "bytes", "val", "test", "float", "form")
    for col in cols:
        t.add_column(col, justify="left" if col in ("tier", "board", "form") else "right")
    forms = {"distilled": "KD", "baseline": "labels", "trained": "teacher"}
    for name, r in report["tiers"].items():
        t.add_row(
            name,
            r["board"],
            f"{r['params']:,}",
            f"{r['macs']:,}",
            f"{r['tflite_bytes']:,}",
            f"{r['val_accuracy_int8']:.1%}",
            f"{r['accuracy_int8']:.1%}",
            f"{r['accuracy_float']:.1%}",
            forms.get(r["selected"], r["selected"])
            + (f" pruned {r['sparsity']:.0%}" if (r.get("pruning") or {}).get("kept") else ""),
        )
    console = Console()
    console.print(t)
    some = next(iter(report["tiers"].values()))
    console.print(
        f"val: {some['validation']}; test: the held-out test split; bytes: int8 .tflite;"
        " form: what ships, chosen on val (KD: distilled from the teacher, labels: the"
        " label-only baseline; pruned: the share of zero weights)"
    )
    ref = report.get("reference") or {}
    rows = [
        f"{row['name']} {row['accuracy']:.1%}"
        if row.get("accuracy") is not None
        else f"{row['name']} -"
        for row in ref.get("rows", [])
    ]
    if rows:
        console.print("classical reference on test: " + ", ".join(rows), highlight=False)
    for name, r in report["tiers"].items():
        console.print(f"[bold]{name}[/]: {r['selection']}")
        if fitted := r.get("board_fit"):
            steps = "; ".join(fitted["reshaped"])
            console.print(f"[bold]{name}[/] reshaped to fit {fitted['board']}: {steps}")
        p = r.get("pruning")
        if p:
            console.print(
                f"[bold]{name}[/] pruned to {p['kernel_sparsity']:.0%}: {p['decision']}; gzip"
                f" {p['unpruned_gzip_bytes']:,} → {r['gzip_bytes']:,} B; MACs skipped:"
                f" {p['macs_skipped']} (dense int8 kernels multiply the zeros)."
            )
    for flag in report.get("flags", []):
        console.print(f"[bold yellow]flag:[/] {flag}")
