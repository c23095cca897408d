"""`edgeladder select-hardware` and `edgeladder fit`: which board, and does the model fit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from edgeladder.boards.fit import FitReport

_POSITIVE = click.FloatRange(min=0, min_open=True)


@click.command("select-hardware")
@click.option("--latency-ms", type=_POSITIVE, required=True, help="Latency budget per inference.")
@click.option("--model-size-mb", type=_POSITIVE, required=True, help="Size of the model, in MB.")
@click.option("--offline", is_flag=True, help="The tier must run without a network.")
@click.option("--power-w", type=_POSITIVE, help="Power budget, in watts.")
@click.option("--streams", type=click.IntRange(min=1), default=1, show_default=True,
              help="Concurrent input streams.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help='Print {"board": ..., "reasons": [...]}.')
def select_hardware(
    latency_ms: float,
    model_size_mb: float,
    offline: bool,
    power_w: float | None,
    streams: int,
    as_json: bool,
) -> None:
    """Recommend the board for a tier, and say why."""
    from edgeladder.boards.select import select_hardware as select

    selection = select(latency_ms, model_size_mb, offline=offline, power_w=power_w,
                       streams=streams)  # fmt: skip
    if as_json:
        click.echo(json.dumps(selection.to_dict(), indent=2))
        return
    click.echo(selection.board)
    for reason in selection.reasons:
        click.echo(f"  - {reason}")


def _table(report: FitReport) -> list[str]:
    m, b = report.model, report.board
    source = "compiled from .tflite" if m.compiled else "compiled model (.ldr)"
    lines = [
        f"{m.path.name} on {b.name} ({b.title})",
        f"model: {source}: {m.file_bytes:,} bytes, arena {m.arena_bytes:,} bytes, {m.ops} ops,"
        f" {m.macs:,} MACs",
        "",
    ]
    for budget in report.budgets:
        lines.append(f"{budget.name:<36}{'bytes':>12}")
        lines += [f"  {part:<34}{n:>12,}" for part, n in budget.parts if n]
        verdict = (
            f"ok, {budget.spare:,} spare" if budget.fits else f"OVER by {budget.over_by:,} bytes"
        )
        lines.append(f"  {'needed':<34}{budget.needed:>12,}  of {budget.available:,}  {verdict}")
    if report.fits:
        verdict = f"fits: yes ({report.budget('heap').spare:,} bytes of heap to spare)"
    else:
        over = [f"{x.name} over by {x.over_by:,} bytes" for x in report.budgets if not x.fits]
        verdict = f"fits: NO ({', '.join(over)})"
    lines += [
        "",
        f"latency (estimate): {m.macs:,} MACs x {b.per_mac_ns:g} ns = {report.latency_ms:.2f} ms",
        verdict,
    ]
    return lines


@click.command("fit")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--board", "board_name", required=True, help="A device board, e.g. esp32.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON on stdout.")
def fit(model: Path, board_name: str, as_json: bool) -> None:
    """Check that MODEL (.tflite or compiled .ldr) fits a device board: heap, flash and the
    filesystem, with an estimated latency. Exit status 0 when it fits; when it does not, the
    figures still print, then one error line says by how much, and the exit status is 1."""
    from edgeladder.boards.fit import fit as check
    from edgeladder.boards.select import HardwareError

    report = check(model, board_name)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in _table(report):
            click.echo(line)
    if not report.fits:  # the CLI prints it as one `error:` line and exits with status 1
        raise HardwareError(report.message)
