"""`edgeladder flash --board esp32 --port PORT --firmware FILE [--erase]`: write firmware."""

from __future__ import annotations

from pathlib import Path

import click

from edgeladder.commands.options import FILE, board_option, port_option

_STAGES = {
    "connect": "Connecting",
    "erase": "Erasing flash",
    "write": "Writing",
    "verify": "Verifying",
}


@click.command("flash")
@board_option
@port_option
@click.option(
    "--firmware",
    "-f",
    required=True,
    type=FILE,
    help="Firmware image (.bin), e.g. MicroPython for the board's chip.",
)
@click.option("--erase", is_flag=True, help="Erase the whole flash first (wipes the filesystem).")
@click.option(
    "--baud", type=int, default=460_800, show_default=True, help="Baud rate for the transfer."
)
@click.option(
    "--no-reset",
    is_flag=True,
    help="Do not toggle DTR/RTS: the board is already in its bootloader and stays there.",
)
@click.option("--verbose", "-v", is_flag=True, help="Print what esptool said.")
def flash(
    board: str, port: str, firmware: Path, erase: bool, baud: int, no_reset: bool, verbose: bool
) -> None:
    """Write FIRMWARE to the board on PORT at the board's flash offset, verify it, reset it.

    Works the same on a real ESP32 and on a virtual board (`edgeladder sim board`).
    """
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from edgeladder.device.flash import flash_firmware

    console = Console(stderr=True)
    tasks: dict[str, int] = {}
    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,  # the summary line replaces it; an error leaves only the error
    ) as bar:

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(_STAGES.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        mode = "no-reset" if no_reset else None
        result = flash_firmware(
            port,
            firmware,
            board,
            erase=erase,
            progress=progress,
            baud=baud,
            **({"before": mode, "after": mode} if mode else {}),
        )
    if verbose:
        for line in result.log:
            click.echo(line, err=True)
    click.echo(
        f"Flashed {firmware.name} ({result.size:,} bytes) to {result.board} at "
        f"{result.offset:#x} on {port} in {result.seconds:.1f} s"
        f"{' after a full erase' if result.erased else ''}; MD5 {result.md5} verified."
    )
    click.echo(f"Chip: {result.chip}, MAC {result.mac}")
