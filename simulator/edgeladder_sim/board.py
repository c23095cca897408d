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
The handler answers with :meth:`Board.emit`, reads and writes ``board.flash`` (the VM is not
running while the ROM owns the line) and learns the chip from ``board.spec`` (an
``edgeladder.boards.registry.Board``). Without a factory, the board wraps
:class:`edgeladder_sim.rom.RomBootloader` (bytes in, bytes out) on its own flash: its boot log
is printed on entry, and when it boots firmware (esptool's ``run``, or FLASH_END with reboot)
the board starts MicroPython again.

``board.boot_check``: ``None`` or ``f(board) -> str | None``, called on every hard boot
(power-on, reset); a returned message is printed and the board halts instead of starting
MicroPython (an image at the wrong offset or for another chip).

:meth:`Board.enter_bootloader` resets the chip into download mode; :meth:`Board.reset`
resets it into a normal boot (MicroPython from flash); :meth:`Board.set_lines` takes the
DTR/RTS levels of a USB-serial adapter wired as on ESP32 devkits (RTS drives EN, DTR drives
GPIO0, through the usual two transistors: :class:`edgeladder_sim.autoreset.AutoResetCircuit`),
so esptool's classic and tight reset sequences and its hard reset work unchanged over RFC2217.
A pty has no modem lines: there the board enters download mode by itself when a SLIP frame with
the SYNC command (``C0 00 08``) arrives while MicroPython runs — what esptool sends first with
``--before no-reset``.

How the REPL maps onto the unix port
------------------------------------
The unix port's REPL is MicroPython's own ``pyexec``: friendly REPL, raw REPL (Ctrl-A) and
raw-paste mode (``05 41 01``) behave as on a board. The process (:mod:`edgeladder_sim.vm`) runs
``boot/bootstrap.py`` (MicroPython) with ``-i``: it mounts littlefs from the flash file at ``/``,
runs ``boot.py`` and then (after a hard boot, or a soft reset from the friendly REPL, and only if
``boot.py`` finished) ``main.py``, then the REPL starts. ``machine.reset()`` is a hard reset, as
on a board: the board boots again from flash (boot check, ``boot.py``, ``main.py``, friendly
REPL) on the same port. Where a board soft-resets, the unix port exits (Ctrl-D, ``sys.exit()``):
the board prints ``MPY: soft reboot`` and starts a new process on the same flash, back in the raw
REPL if that is where the reset came from. Ctrl-C: with the pipes the VM has instead of a
terminal, a 0x03 byte is only data; the board turns it into SIGINT when the VM has its
interrupt handler installed (running code with ``micropython.kbd_intr(3)``), else passes it on,
as a board's UART driver does.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from edgeladder.boards import registry as boards
from edgeladder.errors import EdgeladderError

from .autoreset import BOOT_SETTLE_S, AutoResetCircuit
from .flash import FlashImage, FlashLayout
from .rom import RomBootloader
from .vm import VM

__all__ = ["BOOT_SETTLE_S", "Board", "SerialHandler", "SimError"]

_SLIP_SYNC = b"\xc0\x00\x08"  # SLIP frame start, request, SYNC
_OUTPUT_LOG_BYTES = 1 << 20


class SimError(EdgeladderError):
    """A virtual board cannot do what was asked."""


class SerialHandler(Protocol):
    """Who owns the serial line instead of MicroPython (the ROM bootloader)."""

    def feed(self, data: bytes) -> None: ...


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
        self._vm: VM | None = None
        self._rom: SerialHandler | None = None
        self._raw = False  # REPL kind that a soft reset returns to
        self._tail = b""  # last bytes from the host, to find a SYNC split across reads
        self._lock = threading.RLock()
        self._out_lock = threading.Lock()
        self._listeners: list[Callable[[bytes], None]] = []
        self._log = bytearray()
        self._log_changed = threading.Condition(self._out_lock)
        self._circuit = AutoResetCircuit()
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

        EN low holds the chip in reset; GPIO0 low while EN rises (within :data:`BOOT_SETTLE_S`)
        selects download mode, else the chip boots from flash when that time is up
        (:class:`~edgeladder_sim.autoreset.AutoResetCircuit`).
        """
        with self._lock:
            was_in_reset = self._circuit.in_reset
            mode = self._circuit.set(dtr=dtr, rts=rts)
            if not self._circuit.settling:
                self._cancel_boot_timer()
            self._come_out_of_reset(mode)
            if self._circuit.in_reset and not was_in_reset:  # EN low: held in reset
                self._stop()
                self.mode = "off"
            if self._circuit.settling and self._boot_timer is None:
                # EN released: the chip boots once it has settled
                self._boot_timer = threading.Timer(self._circuit.settle, self._boot_settled)
                self._boot_timer.daemon = True
                self._boot_timer.start()

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
                if at >= 0:
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
        self.boots += 1
        self._vm = VM(self, raw=self._raw)

    def _stop(self) -> None:
        vm, self._vm = self._vm, None
        if vm is not None:
            vm.kill()
        rom, self._rom = self._rom, None
        if rom is not None and hasattr(rom, "close"):
            rom.close()

    def _vm_exited(self, vm: VM, returncode: int) -> None:
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

    def _vm_reset(self, vm: VM) -> None:
        # machine.reset(): the chip restarts from its ROM (boot check, boot.py, main.py)
        with self._lock:
            if vm is self._vm:
                self.power_on()

    def _track_repl_kind(self, data: bytes) -> None:
        raw_at, friendly_at = data.rfind(b"\x01"), data.rfind(b"\x02")  # ctrl-A / ctrl-B
        if raw_at != friendly_at:
            self._raw = raw_at > friendly_at

    def _make_rom(self) -> SerialHandler:
        if self.rom_factory is not None:
            return self.rom_factory(self)
        return _RomAdapter(self)

    def _come_out_of_reset(self, mode: str | None) -> None:
        if mode == "download":
            self.enter_bootloader()
        elif mode == "firmware":
            self.power_on()

    def _boot_settled(self) -> None:
        with self._lock:
            if self._boot_timer is None:
                return  # cancelled: the lines changed again
            self._boot_timer = None
            self._come_out_of_reset(self._circuit.poll(force=True))

    def _cancel_boot_timer(self) -> None:
        timer, self._boot_timer = self._boot_timer, None
        if timer is not None:
            timer.cancel()


class _RomAdapter:
    """The ROM bootloader (bytes in, bytes out) as a :class:`SerialHandler` on the board's flash."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self._rom = RomBootloader(
            board.flash, board.spec.chip or "esp32", boot_offset=board.spec.flash_offset
        )
        board.emit(self._rom.reset(download=True))

    def feed(self, data: bytes) -> None:
        self.board.emit(self._rom.feed(data))
        if self._rom.mode == "firmware":
            # the loader jumped to the image: MicroPython starts (after this call returns)
            threading.Thread(target=self.board.reset, daemon=True).start()
