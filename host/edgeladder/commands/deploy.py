"""`edgeladder deploy --board esp32 --port PORT TASK`: firmware, model and config to a board."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeladder.commands.options import FILE, FOLDER, board_option, json_option, port_option


@click.command("deploy")
@click.argument("task", type=click.Path(path_type=Path))
@board_option
@port_option
@click.option(
    "--build", "build_dir", type=FOLDER, help="Build folder of the task (default: build/<task>/)."
)
@click.option(
    "--device-json",
    type=FILE,
    help="Ship this file as the board's /device.json (its id, fleet, link).",
)
@click.option("--no-reset", is_flag=True, help="Leave the board in the raw REPL, no soft reset.")
@json_option()
def deploy(
    task: Path,
    board: str,
    port: str,
    build_dir: Path | None,
    device_json: Path | None,
    no_reset: bool,
    as_json: bool,
) -> None:
    """Copy what changed of firmware/ (as .mpy), TASK's device model and its config to PORT.

    The config includes the calibrated ladder when build/<task>/ladder.json exists
    (`edgeladder calibrate`).

    Works the same on a real ESP32 and on a virtual board (`edgeladder sim board`).
    """
    from edgeladder.device.deploy import DeployError
    from edgeladder.device.deploy import deploy as run

    device = None
    if device_json is not None:
        try:
            device = device_json.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise DeployError(f"cannot read it ({e})", device_json) from e

    def progress(event: str, path: str, size: int) -> None:
        if not as_json:
            click.echo(f"  {event} {path}" + (f" ({size:,} bytes)" if size else ""))

    result = run(
        port,
        task,
        board,
        build_dir=build_dir,
        progress=progress,
        reset=not no_reset,
        device_json=device,
    )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(
        f"Deployed {', '.join(result.tiers)} to {result.board} on {port} "
        f"(arch {result.arch}) in {result.seconds:.1f} s: {len(result.copied)} copied "
        f"({result.bytes_copied:,} bytes), {len(result.unchanged)} unchanged, "
        f"{len(result.removed)} removed."
    )
    if no_reset:
        return
    # what boot.py and main.py printed, without MicroPython's own REPL banner
    lines = [
        ln.strip()
        for ln in result.boot_log.splitlines()
        if ln.strip(" >\r") and not ln.startswith(("MicroPython ", 'Type "help()"'))
    ]
    click.echo("Board after reset: " + (" | ".join(lines[-3:]) if lines else "(nothing printed)"))
