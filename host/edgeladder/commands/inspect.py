"""`edgeladder inspect MODEL.tflite`: ops, MACs, tensors and quantization of a model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeladder.commands.options import json_option


@click.command("inspect")
@click.argument("model", type=click.Path(dir_okay=True, path_type=Path))
@json_option("the summary")
def inspect(model: Path, as_json: bool) -> None:
    """Show the ops (with MACs), tensors and quantization of MODEL (.tflite), and whether
    every op runs on the board (checked by compiling it for the board engine)."""
    from edgeladder.model.compiler import board_support
    from edgeladder.model.tflite.reader import read_model
    from edgeladder.model.tflite.summary import render, summarize

    tflite = read_model(model)
    summary = summarize(tflite)
    board = board_support(tflite)
    summary["board"] = board
    for op in summary["ops"]:
        op["board"] = board["ops"][op["index"]]
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    render(summary)
    if board["runs_on_board"]:
        click.echo(
            f"board: runs on the board engine ({board['compiled_bytes']:,} bytes compiled,"
            f" arena {board['arena_bytes']:,} bytes)"
        )
    else:
        bad = [f"op {i}" for i, v in board["ops"].items() if v == "unsupported"]
        click.echo(
            f"board: does NOT run on the board: {board['error']}"
            + (f" ({', '.join(bad)})" if bad else "")
        )
