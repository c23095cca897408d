"""`edgeladder compile MODEL.tflite [-o FILE] [--json]`: the board's model file."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeladder.commands.options import FILE, json_option


@click.command("compile")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=FILE,
    help="Where to write the model file (default: MODEL.ldr next to MODEL).",
)
@json_option("the summary")
def compile(model: Path, output: Path | None, as_json: bool) -> None:
    """Compile an int8 MODEL (.tflite) into the board's model file."""
    from edgeladder.model.compiler import compile_model, default_output, write_compiled

    compiled = compile_model(model)
    path = write_compiled(compiled, output or default_output(model))
    summary = {
        "output": str(path),
        "ops": [{"op": name, "tflite_index": index} for name, index in compiled.ops],
        "arena_bytes": compiled.arena_size,
        "file_bytes": len(compiled.data),
        "sha256": compiled.sha256,
        "input": {"shape": list(compiled.input.shape), "scale": compiled.input.scale,
                  "zero_point": compiled.input.zero_point},
        "output_tensor": {"shape": list(compiled.output.shape), "scale": compiled.output.scale,
                          "zero_point": compiled.output.zero_point},
    }  # fmt: skip
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for name, index in compiled.ops:
        click.echo(f"  {name:<18} (tflite op {index})")
    click.echo(f"arena {compiled.arena_size} bytes, file {len(compiled.data)} bytes")
    click.echo(f"sha256 {compiled.sha256}")
    click.echo(f"wrote {path}")
