"""A virtual ESP32: the real MicroPython unix port as its CPU, a flash file, one serial line.

A :class:`Board` owns the flash image, the MicroPython process and the serial routing. Bytes
from the host arrive through :meth:`Board.serial_in` (from the pty bridge in
:mod:`edgeladder_sim.bridge`, or from an RFC2217 server); bytes from the board go to every
callback added with :meth:`Board.add_listener`. The board is in one of these modes:

``"repl"``        MicroPython runs; the serial line is its REPL (friendly, raw, raw-paste).
``"bootloader"``  the ESP32 ROM serial bootloader owns the line (esptool's protocol).
``"halted"``      the boot check refused the image in flash; only a bootloader entry helps.
``"off"``         no power: input is dropped, nothing is printed.

Hooks for the ROM bootloader and the RFC2217 server
---------------------------------------------------
``Board(..., rom_factory=f)``: ``f(board)`` returns a handler with ``feed(data: bytes)`` (host
bytes in download mode) and optionally ``close()`` (called when the chip leaves download mode).
The handler answers with :meth:`Board.emit`, reads and writes ``board.flash.path`` (the flash
file; the VM is not running while the ROM owns the line) and learns the chip from
``board.spec`` (an ``edgeladder.boards.registry.Board``). Without a factory, the board wraps
``edgeladder_sim.rom.RomBootloader`` (bytes in, bytes out) if that module exists: its boot log
is printed on entry, and when it boots firmware (esptool's ``run``, or FLASH_END with reboot)
the board starts MicroPython again.

``board.boot_check``: ``None`` or ``f(board) -> str | None``, called on every hard boot
(power-on, reset); a returned message is printed and the board halts instead of starting
MicroPython (an image at the wrong offset or for another chip).

:meth:`Board.enter_bootloader` resets the chip into download mode; :meth:`Board.reset`
resets it into a normal boot (MicroPython from flash); :meth:`Board.set_lines` takes the
DTR/RTS levels of a USB-serial adapter wired as on ESP32 devkits (RTS drives EN, DTR drives
GPIO0, through the usual two transistors), so esptool's classic and tight reset sequences
and its hard reset work unchanged over RFC2217. A pty has no modem lines: there the board
enters download mode by itself when a SLIP frame with the SYNC command (``C0 00 08``) arrives
while MicroPython runs — what esptool sends first with ``--before no-reset``.

How the REPL maps onto the unix port
------------------------------------
The unix port's REPL is MicroPython's own ``pyexec``: friendly REPL, raw REPL (Ctrl-A) and
raw-paste mode (``05 41 01``) behave as on a board. The process runs :data:`BOOTSTRAP_SOURCE`
with ``-i``: it mounts littlefs from the flash file at ``/``, runs ``boot.py`` and then (after a
hard boot, or a soft reset from the friendly REPL, and only if ``boot.py`` finished) ``main.py``,
then the REPL starts. Where a board soft-resets, the unix port exits (Ctrl-D, ``sys.exit()``):
the board prints ``MPY: soft reboot`` and starts a new process on the same flash, back in the raw
REPL if that is where the reset came from. Ctrl-C: with the pipes the VM has instead of a
terminal, a 0x03 byte is only data; the board turns it into SIGINT when the VM has its
interrupt handler installed (running code with ``micropython.kbd_intr(3)``), else passes it on,
as a board's UART driver does.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from edgeladder.boards import registry as boards
from edgeladder.device.micropython import find_micropython
from edgeladder.errors import EdgeladderError

from .flash import BDEV_SOURCE, DEFAULT_BOOT_PY, FlashImage, FlashLayout

_UP = b"\x00\x1b[edgeladder-sim:up]\x00"  # the VM runs the bootstrap: Ctrl-C can interrupt
_READY = b"\x00\x1b[edgeladder-sim:ready]\x00"  # boot.py/main.py done, the REPL starts
_PROMPT = b">>> "
_SLIP_SYNC = b"\xc0\x00\x08"  # SLIP frame start, request, SYNC
_OUTPUT_LOG_BYTES = 1 << 20
BOOT_SETTLE_S = 0.25  # EN rises through an RC network: GPIO0 counts until then (as rom.py)

BOOTSTRAP_SOURCE = """\
import sys
sys.stdout.write({up!r})
import gc, os, vfs, micropython
{bdev}

def _el_mount():
    # not interruptible, as in the port's C start-up code
    micropython.kbd_intr(-1)
    bd = FlashBdev({bdev_args})
    try:
        fs = vfs.VfsLfs2(bd)
    except OSError:
        # blank or unreadable: format, as the ESP32 port's inisetup.py does
        print("Performing initial setup")
        vfs.VfsLfs2.mkfs(bd)
        fs = vfs.VfsLfs2(bd)
        vfs.mount(fs, "/flash")
        with open("/flash/boot.py", "w") as f:
            f.write({boot_py!r})
        vfs.umount("/flash")
    vfs.umount("/")
    vfs.mount(fs, "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    micropython.kbd_intr(3)

def _el_exec(name):
    # pyexec_file_if_exists: True when the file is absent or ran to its end
    try:
        with open(name) as f:
            src = f.read()
    except OSError:
        return True
    try:
        code = compile(src, name, "exec")
        src = None
        exec(code, globals())
        return True
    except (Exception, KeyboardInterrupt) as e:
        sys.print_exception(e)
        return False

try:
    _el_mount()
    if _el_exec("boot.py") and sys.argv[-1] != "raw":
        _el_exec("main.py")
except KeyboardInterrupt:
    pass
finally:
    sys.stdout.write({ready!r})
del _el_mount, _el_exec
gc.collect()
"""


class SimError(EdgeladderError):
    """A virtual board cannot do what was asked."""


class SerialHandler(Protocol):
    """Who owns the serial line instead of MicroPython (the ROM bootloader)."""

    def feed(self, data: bytes) -> None: ...


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


class _VM:
    """One MicroPython process: a boot of the board. Dies at the next reset or power cut."""

    def __init__(self, board: Board, *, raw: bool) -> None:
        self.board = board
        self.raw = raw
        self.up = threading.Event()
        self.ready = threading.Event()
        self._open = threading.Event()  # input may flow to the VM
        self._input: queue.Queue[bytes | None] = queue.Queue()
        bootstrap = board.workdir / "bootstrap.py"
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
            str(bootstrap),
            "raw" if raw else "boot",
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
        pending = b""
        phase = "starting"
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                break
            pending += data
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


class Board:
    """One virtual board. Start it with :meth:`power_on`; stop it with :meth:`close`."""

    def __init__(
        self,
        spec: boards.Board | str,
        workdir: Path | str,
        *,
        flash: FlashImage | None = None,
        rom_factory: Callable[[Board], SerialHandler] | None = None,
    ) -> None:
        self.spec = boards.get(spec) if isinstance(spec, str) else spec
        if self.spec.role != "device" or not self.spec.heap_bytes:
            raise SimError(f"board {self.spec.name!r} is a {self.spec.role}, not a device")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flash = flash or FlashImage(
            self.workdir / "flash.bin", FlashLayout.for_board(self.spec)
        )
        self.rom_factory = rom_factory
        self.boot_check: Callable[[Board], str | None] | None = None
        self.mode = "off"
        self.boots = 0  # MicroPython starts (hard and soft)
        self._vm: _VM | None = None
        self._rom: SerialHandler | None = None
        self._raw = False  # REPL kind that a soft reset returns to
        self._tail = b""  # last bytes from the host, to find a SYNC split across reads
        self._lock = threading.RLock()
        self._out_lock = threading.Lock()
        self._listeners: list[Callable[[bytes], None]] = []
        self._log = bytearray()
        self._log_changed = threading.Condition(self._out_lock)
        self._lines = {"dtr": False, "rts": False}
        self._en = True
        self._boot_timer: threading.Timer | None = None

    # -- power and resets

    def power_on(self) -> None:
        """Power on (or hard-reset): boot MicroPython from flash, unless the boot check refuses."""
        with self._lock:
            self._stop()
            self.flash.create()
            self._raw = False
            if self.boot_check is not None:
                problem = self.boot_check(self)
                if problem:
                    self.mode = "halted"
                    self.emit(problem.encode() + b"\r\n")
                    return
            self.mode = "repl"
            self._start_vm()

    def power_off(self) -> None:
        """Cut the power at this instant: the VM is killed, the flash keeps what was written."""
        with self._lock:
            self._stop()
            self.mode = "off"

    reset = power_on  # EN pulled low and released with GPIO0 high: a normal boot

    def enter_bootloader(self) -> SerialHandler:
        """Reset into the ROM serial bootloader (GPIO0 low at reset); returns its handler."""
        with self._lock:
            self._stop()
            self._rom = self._make_rom()
            self.mode = "bootloader"
            return self._rom

    def set_lines(self, *, dtr: bool | None = None, rts: bool | None = None) -> None:
        """Set the adapter's DTR/RTS (True = asserted), wired as on an ESP32 devkit.

        EN is low only while RTS is asserted and DTR is not; GPIO0 is low only while DTR is
        asserted and RTS is not. EN rises slowly (an RC network), so GPIO0 low at any moment
        within :data:`BOOT_SETTLE_S` after EN's release selects download mode; otherwise the
        chip boots from flash when that time is up.
        """
        with self._lock:
            if dtr is not None:
                self._lines["dtr"] = bool(dtr)
            if rts is not None:
                self._lines["rts"] = bool(rts)
            en = not (self._lines["rts"] and not self._lines["dtr"])
            gpio0_low = self._lines["dtr"] and not self._lines["rts"]
            if self._en and not en:  # EN low: the chip is held in reset
                self._cancel_boot_timer()
                self._stop()
                self.mode = "off"
            elif en and not self._en:  # EN released: boot once it has settled
                self._boot_timer = threading.Timer(BOOT_SETTLE_S, self._boot_settled)
                self._boot_timer.daemon = True
                self._boot_timer.start()
            self._en = en
            if self._boot_timer is not None and gpio0_low:
                self._cancel_boot_timer()
                self.enter_bootloader()

    def close(self) -> None:
        """Power off and release everything (the flash file stays)."""
        self._cancel_boot_timer()
        self.power_off()
        with self._out_lock:
            self._listeners.clear()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the serial line

    def serial_in(self, data: bytes) -> None:
        """Bytes from the host, routed to whoever owns the line."""
        if not data:
            return
        with self._lock:
            if self.mode in ("repl", "halted"):
                seen = self._tail + data
                at = seen.find(_SLIP_SYNC)
                if at >= 0 and self._rom_available():
                    self.enter_bootloader()
                    self._tail = b""
                    self._rom.feed(seen[at:])
                    return
                self._tail = seen[-(len(_SLIP_SYNC) - 1) :]
                if self.mode == "repl" and self._vm is not None:
                    self._track_repl_kind(data)
                    self._vm.send(data)
            elif self.mode == "bootloader" and self._rom is not None:
                self._rom.feed(data)

    def emit(self, data: bytes) -> None:
        """Bytes from the board to the host: every listener gets them, in order."""
        if not data:
            return
        with self._out_lock:
            self._log += data
            if len(self._log) > _OUTPUT_LOG_BYTES:
                del self._log[: len(self._log) - _OUTPUT_LOG_BYTES]
            self._log_changed.notify_all()
            for listener in list(self._listeners):
                try:
                    listener(data)
                except Exception as e:  # one broken listener must not stop the board
                    print(f"edgeladder_sim: serial listener failed: {e}", file=sys.stderr)

    def add_listener(self, callback: Callable[[bytes], None]) -> None:
        with self._out_lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[bytes], None]) -> None:
        with self._out_lock, contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    # -- for tests and tools

    def output(self) -> bytes:
        """Everything the board printed (the last 1 MB)."""
        with self._out_lock:
            return bytes(self._log)

    def wait_output(self, pattern: bytes, timeout: float, *, start: int = 0) -> int:
        """Wait until ``pattern`` appears in the output after offset ``start``; its end offset."""
        with self._out_lock:
            ok = self._log_changed.wait_for(
                lambda: bytes(self._log).find(pattern, start) >= 0, timeout
            )
            if not ok:
                tail = bytes(self._log[-400:]).decode("utf-8", "replace")
                raise SimError(f"board did not print {pattern!r} within {timeout} s:\n{tail}")
            return bytes(self._log).find(pattern, start) + len(pattern)

    def wait_booted(self, timeout: float = 10.0, *, ready: bool = True) -> None:
        """Wait until MicroPython runs (``ready``: until boot.py/main.py finished)."""
        vm = self._vm
        if vm is None:
            raise SimError(f"board is {self.mode}: nothing is booting")
        event = vm.ready if ready else vm.up
        if not event.wait(timeout):
            tail = self.output()[-400:].decode("utf-8", "replace")
            raise SimError(f"board did not boot within {timeout} s:\n{tail}")

    @property
    def pid(self) -> int | None:
        """The MicroPython process (None when it is not running)."""
        vm = self._vm
        return vm.proc.pid if vm is not None else None

    # -- internals

    def _start_vm(self) -> None:
        (self.workdir / "bootstrap.py").write_text(
            BOOTSTRAP_SOURCE.format(
                up=_UP.decode(),
                ready=_READY.decode(),
                bdev=BDEV_SOURCE,
                bdev_args=self.flash.bdev_args(),
                boot_py=DEFAULT_BOOT_PY,
            )
        )
        self.boots += 1
        self._vm = _VM(self, raw=self._raw)

    def _stop(self) -> None:
        vm, self._vm = self._vm, None
        if vm is not None:
            vm.kill()
        rom, self._rom = self._rom, None
        if rom is not None and hasattr(rom, "close"):
            rom.close()

    def _vm_exited(self, vm: _VM, returncode: int) -> None:
        with self._lock:
            if vm is not self._vm:
                return  # killed on purpose: reset, power cut, bootloader
            if not vm.up.is_set():
                self._vm = None
                self.mode = "off"
                self.emit(
                    f"edgeladder_sim: MicroPython failed to start ({returncode})\r\n".encode()
                )
                return
            # the unix port exits where a board soft-resets (Ctrl-D, sys.exit())
            self.emit(b"MPY: soft reboot\r\n")
            self._start_vm()

    def _track_repl_kind(self, data: bytes) -> None:
        raw_at, friendly_at = data.rfind(b"\x01"), data.rfind(b"\x02")  # ctrl-A / ctrl-B
        if raw_at != friendly_at:
            self._raw = raw_at > friendly_at

    def _rom_available(self) -> bool:
        if self.rom_factory is not None:
            return True
        return importlib.util.find_spec("edgeladder_sim.rom") is not None

    def _make_rom(self) -> SerialHandler:
        if self.rom_factory is not None:
            return self.rom_factory(self)
        try:
            importlib.import_module("edgeladder_sim.rom")
        except ImportError as e:
            raise SimError("this simulator has no ROM bootloader (edgeladder_sim.rom)") from e
        return _RomAdapter(self)

    def _boot_settled(self) -> None:
        with self._lock:
            if self._boot_timer is None or not self._en:
                return  # cancelled, or held in reset again
            self._boot_timer = None
            self.power_on()

    def _cancel_boot_timer(self) -> None:
        timer, self._boot_timer = self._boot_timer, None
        if timer is not None:
            timer.cancel()


class _RomAdapter:
    """``edgeladder_sim.rom.RomBootloader`` (bytes in, bytes out) as a :class:`SerialHandler`."""

    def __init__(self, board: Board) -> None:
        from . import rom

        self.board = board
        self._flash = rom.FlashImage(board.flash.path, board.flash.layout.flash_bytes)
        self._rom = rom.RomBootloader(
            self._flash, board.spec.chip or "esp32", boot_offset=board.spec.flash_offset
        )
        board.emit(self._rom.reset(download=True))

    def feed(self, data: bytes) -> None:
        self.board.emit(self._rom.feed(data))
        if self._rom.mode == "firmware":
            # the loader jumped to the image: MicroPython starts (after this call returns)
            threading.Thread(target=self.board.reset, daemon=True).start()

    def close(self) -> None:
        self._flash.close()
