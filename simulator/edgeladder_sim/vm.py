"""One boot of a virtual board: the real MicroPython unix port as a child process.

:class:`VM` starts ``micropython -i boot/bootstrap.py`` with the board's heap, moves bytes between
the board's serial line and the process's stdin/stdout, and tells the board when the process
ends. The bootstrap prints two markers the VM strips from the output: :data:`_UP` (the VM runs
the bootstrap: Ctrl-C can interrupt) and :data:`_READY` (boot.py/main.py done, the REPL starts);
``boot/machine.py``'s ``machine.reset()`` prints :data:`_RESET` and waits to be cut off (a hard
reset: the board boots again). The process ending by itself is a soft reset (Ctrl-D,
``sys.exit()``), as the unix port exits where a board soft-resets.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

from edgeladder.device.micropython import find_micropython

from .flash import BOOT_DIR

if TYPE_CHECKING:
    from .board import Board

# Written by boot/bootstrap.py and boot/machine.py (MicroPython); test_serial checks they match.
_UP = b"\x00\x1b[edgeladder-sim:up]\x00"
_READY = b"\x00\x1b[edgeladder-sim:ready]\x00"
_RESET = b"\x00\x1b[edgeladder-sim:reset]\x00"
_PROMPT = b">>> "


def _interruptible(pid: int) -> bool:
    """True if ``pid`` has a SIGINT handler: the VM runs code and Ctrl-C is enabled."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except (OSError, ValueError):
        pass
    return False


class VM:
    """One MicroPython process: a boot of the board. Dies at the next reset or power cut."""

    def __init__(self, board: Board, *, raw: bool) -> None:
        self.board = board
        self.raw = raw
        self.up = threading.Event()
        self.ready = threading.Event()
        self._open = threading.Event()  # input may flow to the VM
        self._input: queue.Queue[bytes | None] = queue.Queue()
        code = (
            "import signal, sys\n"
            # Ignored until the VM installs its own handler: a SIGINT that arrives before
            # then must not reach CPython's (this process is the VM's Python wrapper).
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "import micropython_run\n"
            "sys.exit(micropython_run.run_main(sys.argv[1:]))\n"
        )
        argv = [
            _wrapper_python(),
            "-c",
            code,
            "micropython",
            "-X",
            f"heapsize={board.spec.heap_bytes}",
            "-i",
            str(BOOT_DIR / "bootstrap.py"),
            "raw" if raw else "boot",
            *map(str, board.flash.bdev_args()),
        ]
        env = dict(os.environ, MICROPYPATH=".frozen")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=board.workdir,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._writer = threading.Thread(target=self._write_loop, daemon=True)
        self._reader.start()
        self._writer.start()

    def send(self, data: bytes) -> None:
        self._input.put(data)

    def kill(self) -> None:
        self._input.put(None)
        self._open.set()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()  # SIGKILL: a power cut, nothing gets to clean up
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    # -- host -> VM

    def _write_loop(self) -> None:
        fd = self.proc.stdin.fileno()
        while True:
            self._open.wait()
            data = self._input.get()
            if data is None:
                return
            try:
                self._write_input(fd, data)
            except OSError:  # the VM is gone; its reader reports that
                return

    def _write_input(self, fd: int, data: bytes) -> None:
        # ctrl-C: an interrupt while code runs with Ctrl-C enabled, else a byte like any other
        parts = data.split(b"\x03")
        for i, part in enumerate(parts):
            if part:
                os.write(fd, part)
            if i < len(parts) - 1:
                if _interruptible(self.proc.pid):
                    os.kill(self.proc.pid, signal.SIGINT)
                else:
                    os.write(fd, b"\x03")

    # -- VM -> host

    def _read_loop(self) -> None:
        fd = self.proc.stdout.fileno()
        pending = recent = b""
        phase = "starting"
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                break
            pending += data
            # machine.reset(): the board cuts this VM off and boots again. The marker may span
            # two reads; output is not held back for it (mpremote mount's protocol would stall).
            window, recent = recent + data, (recent + data)[1 - len(_RESET) :]
            if phase != "starting" and _RESET in window:
                self.board.emit(pending[: max(0, pending.find(_RESET))])
                self.board._vm_reset(self)
                break
            if phase == "starting":
                at = pending.find(_UP)
                if at < 0:
                    continue
                self.board.emit(pending[:at])
                pending = pending[at + len(_UP) :]
                phase = "booting"
                self.up.set()
                if not self.raw:
                    self._open.set()
            if phase == "booting":
                at = pending.find(_READY)
                if at < 0:
                    keep = _partial_suffix(pending, _READY)
                    self.board.emit(pending[: len(pending) - keep])
                    pending = pending[len(pending) - keep :]
                    continue
                self.board.emit(pending[:at])
                pending = pending[at + len(_READY) :]
                phase = "banner" if self.raw else "running"
                self.ready.set()
            if phase == "banner":
                # back in the raw REPL after a soft reset: no banner, as on a board
                at = pending.find(_PROMPT)
                if at < 0:
                    continue
                pending = pending[at + len(_PROMPT) :]
                os.write(self.proc.stdin.fileno(), b"\x01")  # ctrl-A: enter raw REPL
                phase = "running"
                self._open.set()
            if pending:
                self.board.emit(pending)
                pending = b""
        self._input.put(None)
        self._open.set()
        returncode = self.proc.wait()
        self.board._vm_exited(self, returncode)


def _partial_suffix(data: bytes, marker: bytes) -> int:
    """How many bytes at the end of ``data`` could start ``marker``."""
    for n in range(min(len(marker) - 1, len(data)), 0, -1):
        if marker.startswith(data[-n:]):
            return n
    return 0


def _wrapper_python() -> str:
    """The Python that runs the ``micropython`` wrapper script (it loads the unix port)."""
    script = find_micropython()
    with open(script, "rb") as f:
        first = f.readline()
    if first.startswith(b"#!"):
        interpreter = first[2:].decode().strip().split()[0]
        if os.access(interpreter, os.X_OK):
            return interpreter
    return sys.executable
