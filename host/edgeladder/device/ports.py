"""The serial port of a board, real or virtual: one check and one set of errors for every tool.

A port is whatever pyserial opens: ``/dev/ttyUSB0``, a virtual board's pty (``edgeladder sim
board`` prints it), ``rfc2217://HOST:PORT`` or ``socket://HOST:PORT``. ``flash`` (esptool),
``deploy`` (mpremote) and ``console`` (pyserial) all check a port here before they use it and
translate a failure to open it here, so that a port that does not exist, one that another
program holds and an address where nothing listens each get the same one-line message whichever
command met them.
"""

from __future__ import annotations

import os
import re

from edgeladder.errors import EdgeladderError

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_LIST_PORTS = "ls /dev/ttyUSB* /dev/ttyACM*"
# What the OS says (inside pyserial's, esptool's or mpremote's wording) for each case.
_NOTHING_LISTENS = (
    "connection refused",
    "connection timed out",
    "no route to host",
    "network is unreachable",
)
_BUSY = ("exclusively lock", "resource temporarily unavailable", "device or resource busy")


class DeviceError(EdgeladderError):
    """Talking to a board failed (the device layer's error type)."""


class PortError(DeviceError):
    """The port does not exist, another program holds it, or nothing listens at its address."""


class BoardNotAnsweringError(DeviceError):
    """The port opens, but the board on it does not answer (or stopped answering)."""


def is_url(port: str) -> bool:
    """Whether ``port`` is a pyserial URL (``rfc2217://``, ``socket://``) rather than a path."""
    return bool(_URL.match(port))


def has_reset_lines(port: str) -> bool:
    """Whether DTR/RTS can reset the board: not on a pty (a virtual board's port)."""
    return is_url(port) or not os.path.realpath(port).startswith("/dev/pts/")


def check_port(port: str) -> None:
    """Refuse, before any tool opens it, a port that cannot be a board's."""
    if not port.strip():
        raise PortError("no serial port given: pass --port (e.g. /dev/ttyUSB0)")
    if is_url(port):
        return  # rfc2217://, socket://: only opening it tells
    if not os.path.exists(port):
        raise PortError(
            f"serial port {port} does not exist: plug the board in and check the port name "
            f"({_LIST_PORTS}), or start a virtual board with `edgeladder sim board`"
        )
    if os.path.isdir(port):
        raise PortError(f"{port} is a folder, not a serial port: check the port name")


def open_error(port: str, e: BaseException) -> PortError | None:
    """The :class:`PortError` for an exception met while opening ``port``; None if it is not one.

    Works on the text, so that pyserial's, esptool's and mpremote's wrappings of the same
    ``OSError`` all land here.
    """
    low = str(e).lower()
    if any(s in low for s in _NOTHING_LISTENS):
        return PortError(
            f"nothing answers at {port}: start the virtual board (`edgeladder sim board`) or "
            "the RFC2217 server, and check the host and port"
        )
    if "name or service not known" in low or "nodename nor servname" in low:
        return PortError(f"unknown host in {port}: check the host name")
    if any(s in low for s in _BUSY):
        return PortError(
            f"serial port {port} is busy: close the program that holds it (a serial monitor, "
            "mpremote, another flash or deploy) and retry"
        )
    if "permission denied" in low:
        return PortError(
            f"no permission to open {port}: add yourself to the dialout group "
            "(sudo usermod -aG dialout $USER, then log in again)"
        )
    if "no such file" in low:
        return PortError(
            f"serial port {port} does not exist (any more): plug the board in and check the "
            f"port name ({_LIST_PORTS})"
        )
    if "inappropriate ioctl" in low or "is a directory" in low:
        return PortError(f"{port} is not a serial port: check the port name ({_LIST_PORTS})")
    if "protocol" in low and "not known" in low:
        return PortError(f"{port}: unknown URL scheme; use a device path, rfc2217:// or socket://")
    if "expected a string in the form" in low or "not supported between" in low:
        return PortError(f"{port} is not a valid address: use rfc2217://HOST:PORT")
    if "could not open" in low or "failed to access" in low:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        return PortError(f"cannot open {port} ({first}): check the port name")
    return None


def diagnose(port: str, cause: BaseException) -> PortError:
    """Why ``port`` did not open, when a tool hid the reason (mpremote says "failed to access").

    Opens the port once more with pyserial, only on this failure path, to learn the real error.
    """
    try:
        import serial

        serial.serial_for_url(port, baudrate=115200, exclusive=True).close()
    except (OSError, ValueError) as e:  # SerialException is an OSError
        found = open_error(port, e)
        if found is not None:
            return found
    return open_error(port, cause) or PortError(f"cannot open {port} ({cause}): check the port")


def open_serial(port: str, *, baudrate: int = 115200, timeout: float | None = None):
    """A pyserial port object for ``port``, opened; :class:`PortError` if it cannot be."""
    import serial

    check_port(port)
    try:
        return serial.serial_for_url(port, baudrate=baudrate, timeout=timeout)
    except (OSError, ValueError) as e:
        raise open_error(port, e) or PortError(f"cannot open {port} ({e})") from e
