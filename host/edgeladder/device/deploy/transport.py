"""The raw REPL of a board over its serial port: the only part of a deploy that talks to one.

:class:`Board` drives mpremote's ``SerialTransport`` with timeouts: enter the raw REPL, run
MicroPython source and return what it printed, report the files it holds with their sha256,
write a file atomically (``<path>.tmp``, hash checked on the board, renamed), soft-reset.
A port that does not open and a board that does not answer leave as the device layer's
:class:`~edgeladder.device.ports.PortError` and :class:`BoardNotAnsweringError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json

from edgeladder.device.deploy.errors import DeployError
from edgeladder.device.ports import BoardNotAnsweringError, check_port, diagnose

CHUNK_BYTES = 1024  # per raw-REPL exec; raw-paste mode does the flow control
EXEC_TIMEOUT_S = 10.0  # silence on the line for this long: the board stopped answering
BOOT_TIMEOUT_S = 15.0

# -- on the board (sent as source over the raw REPL; MicroPython)

_SCAN = """\
import os, sys, hashlib, binascii, json
def _el_sha(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(1024)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
def _el_walk(d, out):
    try:
        es = list(os.ilistdir(d))
    except OSError:
        return
    for e in es:
        p = (d if d != '/' else '') + '/' + e[0]
        if e[1] & 0x4000:
            out.append(p + '/')
            _el_walk(p, out)
        else:
            out.append(p)
_el_l = []
for _d in %(dirs)r:
    try:
        os.stat(_d)
        _el_l.append(_d + '/')
    except OSError:
        continue
    _el_walk(_d, _el_l)
for _n in os.listdir('/'):
    if _n.endswith('.tmp'):
        _el_l.append('/' + _n)
print(json.dumps({'mpy': getattr(sys.implementation, '_mpy', 0), 'platform': sys.platform,
    'paths': _el_l, 'sha': dict((p, _el_sha(p)) for p in %(wanted)r)}))
"""


class Board:
    """The raw REPL of the board on ``port`` (mpremote's SerialTransport), with timeouts."""

    def __init__(self, port: str) -> None:
        try:
            from mpremote.transport import TransportError
            from mpremote.transport_serial import SerialTransport
        except ImportError as e:
            raise DeployError("mpremote is not installed: pip install mpremote") from e
        self.TransportError = TransportError
        self.port = port
        check_port(port)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.t = SerialTransport(port, baudrate=115200)
        except (TransportError, OSError, ValueError) as e:
            # mpremote says only "failed to access PORT": ask the port why
            raise diagnose(port, e) from e

    def enter(self) -> None:
        try:
            # prints what it read when it fails; the error below says it in one line
            with contextlib.redirect_stdout(io.StringIO()):
                self.t.enter_raw_repl(soft_reset=True, timeout_overall=EXEC_TIMEOUT_S)
        except (self.TransportError, OSError) as e:
            raise BoardNotAnsweringError(
                f"no MicroPython REPL answers on {self.port}: press the board's reset button, or "
                "flash MicroPython with `edgeladder flash`, then retry"
            ) from e

    def exec(self, code: str) -> str:
        try:
            self.t.exec_raw_no_follow(code)
            out, err = self.t.follow(EXEC_TIMEOUT_S)
        except (self.TransportError, OSError) as e:
            raise BoardNotAnsweringError(
                f"the board on {self.port} stopped answering ({e}): was it unplugged or reset? "
                "Run the deploy again; files already copied are kept"
            ) from e
        if err:
            last = err.decode("utf-8", "replace").strip().splitlines()[-1]
            raise DeployError(f"the board on {self.port} failed: {last}")
        return out.decode("utf-8", "replace")

    def scan(self, dirs: tuple[str, ...] = (), wanted: tuple[str, ...] = ()) -> dict:
        """What the board reports: ``mpy`` (sys.implementation._mpy), ``platform``, the
        ``paths`` under ``dirs`` (folders end in ``/``) and leftover ``/*.tmp`` files, and the
        ``sha`` (hex, or None if missing) of each path in ``wanted``."""
        return json.loads(self.exec(_SCAN % {"dirs": tuple(dirs), "wanted": tuple(wanted)}))

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write ``path.tmp``, check its sha256 on the board, rename it over ``path``."""
        tmp = path + ".tmp"
        self.exec(f"_el_f = open({tmp!r}, 'wb')\n_el_w = _el_f.write")
        for at in range(0, len(data), CHUNK_BYTES):
            self.exec(f"_el_w({data[at : at + CHUNK_BYTES]!r})")
        want = hashlib.sha256(data).hexdigest()
        got = self.exec(
            f"_el_f.close()\n_el_s = _el_sha({tmp!r})\n"
            f"if _el_s == {want!r}:\n    os.rename({tmp!r}, {path!r})\nprint(_el_s)"
        ).strip()
        if got != want:
            raise DeployError(f"{path}: the board read back sha256 {got}, expected {want}; retry")

    def soft_reset(self) -> str:
        """Leave the raw REPL and soft-reset from the friendly one: boot.py, then main.py."""
        self.t.exit_raw_repl()
        self.t.read_until(1, b">>> ", timeout=2, timeout_overall=5)  # the friendly banner
        self.t.serial.write(b"\x04")  # ctrl-D at the friendly REPL: soft reset
        self.t.read_until(1, b"soft reboot\r\n", timeout=5, timeout_overall=BOOT_TIMEOUT_S)
        # boot.py and main.py print, then the REPL prompts (or main.py runs on: time out)
        out = self.t.read_until(1, b">>> ", timeout=5, timeout_overall=BOOT_TIMEOUT_S)
        return out.decode("utf-8", "replace")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.t.close()
