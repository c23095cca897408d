"""`edgeladder console PORT`: stream what a board prints, real or simulated."""

from __future__ import annotations

import contextlib
import sys
import time

import click

from edgeladder.device.ports import BoardNotAnsweringError, open_serial


def stream(port: str, out, *, baudrate: int = 115200, seconds: float | None = None) -> None:
    """Copy bytes from ``port`` to the binary stream ``out`` until Ctrl-C or ``seconds``."""
    import serial

    # Same as mpremote: pyserial may assert DTR/RTS on open (no reset on ESP32 devkits).
    link = open_serial(port, baudrate=baudrate, timeout=0.1)
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            data = link.read(4096)
            if data:
                out.write(data)
                out.flush()
    except serial.SerialException as e:
        raise BoardNotAnsweringError(
            f"serial port {port} failed while reading ({e}): was the board unplugged?"
        ) from e
    finally:
        link.close()


@click.command("console")
@click.argument("port")
@click.option("--baud", default=115200, show_default=True, help="Baud rate (real boards).")
@click.option("--seconds", type=float, help="Stop after this many seconds (default: Ctrl-C).")
def console(port: str, baud: int, seconds: float | None) -> None:
    """Stream what the board on PORT prints (a device path, or an rfc2217:// URL)."""
    with contextlib.suppress(KeyboardInterrupt):
        stream(port, sys.stdout.buffer, baudrate=baud, seconds=seconds)
