"""`edgeladder console PORT`: stream what a board prints, real or simulated."""

from __future__ import annotations

import contextlib
import sys
import time

import click

from edgeladder.errors import EdgeladderError


class ConsoleError(EdgeladderError):
    """The serial port cannot be opened or read."""


def stream(port: str, out, *, baudrate: int = 115200, seconds: float | None = None) -> None:
    """Copy bytes from ``port`` to the binary stream ``out`` until Ctrl-C or ``seconds``."""
    try:
        import serial
    except ImportError as e:
        raise ConsoleError("pyserial is missing; install it with `pip install pyserial`") from e
    try:
        # Same as mpremote: pyserial may assert DTR/RTS on open (no reset on ESP32 devkits).
        link = serial.serial_for_url(port, baudrate=baudrate, timeout=0.1)
    except (serial.SerialException, OSError, ValueError) as e:
        raise ConsoleError(
            f"cannot open serial port {port}: {e}; check the path and that no other "
            "program (mpremote, esptool, another console) holds it"
        ) from e
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            data = link.read(4096)
            if data:
                out.write(data)
                out.flush()
    except serial.SerialException as e:
        raise ConsoleError(f"serial port {port} failed: {e}") from e
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
