"""One chip's serial bootloader as a state machine: modes, resets, framing, dispatch.

SLIP frames in (``0xC0`` ends, ``0xDB 0xDC``/``0xDB 0xDD`` escapes). A command is ``<BBHI``
(direction 0, opcode, size, checksum) + data; a response is ``<BBHI`` (direction 1, opcode,
size, value) + data + status bytes: 4 from the ESP32 ROM, 2 from the stub. A command without a
handler in the current dialect (GET_SECURITY_INFO, 0x14, included) gets status 1, error 5, as on
an ESP32, so esptool falls back to the magic register. MEM_END with an entry point inside the
uploaded RAM "runs the stub": the chip then sends ``OHAI`` and speaks the stub dialect.

Leaving the loader (FLASH_END "run user code", RUN_USER_CODE, a reset with GPIO0 high) boots
the firmware: the ROM checks the image in flash (:func:`edgeladder_sim.image.boot_check`),
prints the boot log, and :attr:`RomBootloader.mode` becomes ``"firmware"`` (or ``"halted"`` if
the image was refused). The board then hands the port to MicroPython.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Protocol

from .. import chips, slip
from ..image import BootReport, boot_check
from . import commands as cmd
from .registers import RegisterFile

_BANNER = b"ets Jun  8 2016 00:22:57\r\n\r\n"


class Flash(Protocol):
    """What the ROM needs from the board's flash (:class:`edgeladder_sim.flash.FlashImage`)."""

    size: int

    def read(self, offset: int, n: int) -> bytes: ...
    def write(self, offset: int, data: bytes) -> None: ...
    def erase(self, offset: int, n: int) -> None: ...


class RomError(chips.ChipError):
    """A bad argument to the ROM model (unknown chip, MAC of the wrong length)."""


class RomBootloader:
    """One chip's serial bootloader: bytes in, bytes out.

    ``mode`` is ``"download"`` (the ROM loader), ``"stub"`` (esptool's flasher stub running
    in RAM), ``"firmware"`` (booted a valid image) or ``"halted"`` (refused the image, or
    jumped to code it cannot run). ``boot_report`` says what the last boot found.
    ``on_mode`` is called with the new mode on every change (for the board's bridge).
    """

    def __init__(
        self,
        flash: Flash,
        chip: str = "esp32",
        *,
        mac: bytes | None = None,
        boot_offset: int | None = None,
        on_mode: Callable[[str], None] | None = None,
    ) -> None:
        try:
            self.chip = chips.with_rom(chip)
        except chips.ChipError as e:
            raise RomError(str(e)) from None
        self.flash = flash
        if mac is None:
            seed = str(getattr(flash, "path", id(flash))).encode()
            mac = self.chip.MAC_OUI + hashlib.sha256(seed).digest()[:3]
        if len(mac) != 6:
            raise RomError(f"a MAC has 6 bytes, not {len(mac)}")
        self.mac = bytes(mac)
        self.boot_offset = self.chip.BOOTLOADER_OFFSET if boot_offset is None else boot_offset
        self.on_mode = on_mode
        self.boot_report: BootReport | None = None
        self.mode = "download"
        self.baud = 115200
        self._reset_state()

    # -- public interface

    def reset(self, download: bool = True) -> bytes:
        """A reset through EN, into the loader (GPIO0 low) or the firmware; returns the boot log."""
        self._reset_state()
        self.baud = 115200
        if download:
            self.set_mode("download")
            return (
                _BANNER + b"rst:0x1 (POWERON_RESET),boot:0x3 "
                b"(DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\r\nwaiting for download\r\n"
            )
        return self.boot(b"rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n")

    def feed(self, data: bytes) -> bytes:
        """Bytes from the host; returns the bytes the chip sends back."""
        if not self.in_loader:
            return b""  # the firmware owns the port now (the bridge routes it elsewhere)
        out = bytearray()
        for frame in self.slip.feed(data):
            out += self._frame(frame)
        return bytes(out)

    @property
    def in_loader(self) -> bool:
        """The ROM loader or the stub owns the line."""
        return self.mode in ("download", "stub")

    @property
    def stub(self) -> bool:
        return self.mode == "stub"

    # -- for the command handlers

    def set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            if self.on_mode:
                self.on_mode(mode)

    def boot(self, reset_line: bytes) -> bytes:
        """Leave the loader: check the image in flash and boot it; returns the boot log."""
        self._reset_state()
        report = boot_check(self.flash.read, self.chip.NAME, self.boot_offset)
        self.boot_report = report
        log = _BANNER + reset_line
        if not report.ok:
            self.set_mode("halted")
            return log + f"invalid header: {report.message}\r\n".encode()
        log += b"configsip: 0, SPIWP:0xee\r\nmode:DIO, clock div:2\r\n"
        for seg in report.image.segments:
            log += f"load:{seg.load_addr:#010x},len:{len(seg.data)}\r\n".encode()
        log += f"entry {report.image.entry:#010x}\r\n".encode()
        self.set_mode("firmware")
        return log

    def respond(
        self, op: int, data: bytes = b"", *, value: int | None = None, error: int = 0
    ) -> bytes:
        if self.stub:
            status = bytes([error, 0]) if error else b"\0\0"
            value = 0 if value is None else value
        else:
            status = bytes([1, error, 0, 0]) if error else b"\0\0\0\0"
            # The ROM leaves the value field as the last register it read (seen on real chips).
            value = self.last_value if value is None else value
        body = data + status
        return slip.encode(struct.pack("<BBHI", 1, op, len(body), value) + body)

    def fail(self, op: int, rom_reason: int, stub_code: int) -> bytes:
        return self.respond(op, error=stub_code if self.stub else rom_reason)

    # -- internals

    def _reset_state(self) -> None:
        self.slip = slip.Decoder()
        self.regs = RegisterFile(self.chip, self.mac, self.flash.size)
        self.mem: dict[int, bytearray] = {}
        self.mem_seg: tuple[int, int, int] | None = None  # (addr, size, blocksize)
        self.write_op: cmd.FlashWrite | None = None
        self.read_op: cmd.FlashRead | None = None
        self.last_value = 0
        self.flash_size = self.flash.size

    def _frame(self, frame: bytes) -> bytes:
        if self.read_op is not None:
            return cmd.read_ack(self, frame)
        if len(frame) < 8 or frame[0] != 0:
            return b""  # not a command: the ROM ignores it
        _, op, size, chk = struct.unpack_from("<BBHI", frame)
        data = frame[8:]
        if len(data) != size:
            return self.fail(op, cmd.ROM_INVALID_MSG, cmd.STUB_BAD_LEN)
        handler = cmd.HANDLERS.get(op)
        other_dialect = cmd.ROM_ONLY if self.stub else cmd.STUB_ONLY
        if handler is None or op in other_dialect:
            return self.fail(op, cmd.ROM_INVALID_MSG, cmd.STUB_NOT_IMPLEMENTED)
        try:
            return handler(self, op, data, chk)
        except (struct.error, ValueError):
            return self.fail(op, cmd.ROM_INVALID_MSG, cmd.STUB_BAD_LEN)
