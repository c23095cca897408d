"""`edgeladder sim board`: one virtual board on a pty, until Ctrl-C."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click


@click.group("sim")
def sim() -> None:
    """Virtual boards: the real MicroPython unix port behind a serial port."""


@sim.command("board")
@click.option("--board", "board_name", default="esp32", show_default=True, help="Board file name.")
@click.option(
    "--flash",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Flash image to use and keep (made if missing); default: a temporary one.",
)
def board(board_name: str, flash: Path | None) -> None:
    """Start one virtual board. Prints its serial port on the first line and its RFC2217 URL
    on the second, then runs until Ctrl-C."""
    from edgeladder_sim.bridge import VirtualBoard

    with tempfile.TemporaryDirectory(prefix="edgeladder-sim-") as workdir:
        vboard = VirtualBoard(board_name, workdir, flash=flash, rfc2217=True)
        try:
            vboard.board.power_on()
            click.echo(vboard.port)
            click.echo(vboard.rfc2217_url)
            click.echo(f"board {vboard.board.spec.name}: running; Ctrl-C stops it", err=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            click.echo("board stopped", err=True)
        finally:
            vboard.close()
