"""`edgeladder inspect MODEL.tflite`: ops, MACs, tensors and quantization of a model."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def inspect(model: Path, as_json: bool) -> None:
    """Show the ops (with MACs), tensors and quantization of MODEL (.tflite)."""
    from edgeladder.tflite.reader import read_model
    from edgeladder.tflite.summary import render, summarize

    summary = summarize(read_model(model))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        render(summary)
