"""`edgeladder convert MODEL.tflite`: export C arrays and/or a frozen MicroPython module."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeladder.commands.options import FOLDER, json_option


@click.command("convert")
@click.argument("model", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--c-array", "c_array", type=FOLDER, help="Write <name>.h and <name>.c here.")
@click.option(
    "--micropython", type=FOLDER, help="Write <name>.py and a manifest.py for freezing here."
)
@click.option("--name", help="C identifier / module name (default: <file stem>_model).")
@click.option("--allow-float", is_flag=True, help="Export a model that is not int8 as well.")
@json_option("what was written")
def convert(
    model: Path,
    c_array: Path | None,
    micropython: Path | None,
    name: str | None,
    allow_float: bool,
    as_json: bool,
) -> None:
    """Export MODEL (.tflite) as a C array and/or a MicroPython module."""
    from edgeladder.model.carray import export_model

    if c_array is None and micropython is None:
        raise click.UsageError("give --c-array OUTDIR and/or --micropython OUTDIR")
    report = export_model(
        model, c_array=c_array, micropython=micropython, name=name, allow_float=allow_float
    )
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{report['model']}: {report['bytes']} bytes, sha256 {report['sha256']}")
    for item in report["written"]:
        click.echo(f"wrote {item['path']} ({item['bytes']} bytes)")
