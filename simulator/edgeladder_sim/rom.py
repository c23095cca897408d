"""The ESP32 serial ROM bootloader and esptool's flasher stub, as a byte-stream state machine.

:class:`RomBootloader` takes the bytes a host writes to the chip's UART0 and returns the bytes
the chip would send back; it does no I/O and owns no thread, so a pty bridge, an RFC2217
server or a unit test can drive it. What it speaks (checked against esptool 5's ``loader.py``
and ``targets/esp32.py``):

- SLIP frames (``0xC0`` ends, ``0xDB 0xDC``/``0xDB 0xDD`` escapes). A command is
  ``<BBHI`` (direction 0, opcode, size, checksum) + data; a response is ``<BBHI`` (direction 1,
  opcode, size, value) + data + status bytes: 4 from the ESP32 ROM, 2 from the stub.
- ROM: SYNC (eight answers, as the ROM gives), READ_REG/WRITE_REG over a register file that
  holds the chip-detect magic, the eFuses (MAC, revision v3.0, package, no encryption), the
  UART divider, and enough of the SPI0 controller for esptool's ``run_spiflash_command``
  (JEDEC id, SFDP, status), SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE, MEM_BEGIN/DATA/END,
  FLASH_BEGIN/DATA/END and the deflate variants, SPI_FLASH_MD5 (32 hex characters),
  READ_FLASH_SLOW (64-byte blocks). Anything else - GET_SECURITY_INFO (0x14) included - gets
  status 1, error 5, as on an ESP32, so esptool falls back to the magic register.
- MEM_END with an entry point inside the uploaded RAM "runs the stub": the chip then sends
  ``OHAI`` and speaks the stub dialect (2 status bytes, MD5 as 16 raw bytes, ERASE_FLASH,
  ERASE_REGION, flow-controlled READ_FLASH with a closing MD5, RUN_USER_CODE).

Leaving the loader (FLASH_END "run user code", RUN_USER_CODE, a reset with GPIO0 high) boots
the firmware: the ROM checks the image in flash (:func:`edgeladder_sim.image.boot_check`),
prints the boot log, and :attr:`RomBootloader.mode` becomes ``"firmware"`` (or ``"halted"`` if
the image was refused). The board's bridge then hands the port to MicroPython.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from .image import BOOT_OFFSETS, BootReport, boot_check

SLIP_END = 0xC0
SLIP_ESC = 0xDB
SECTOR = 0x1000

# Opcodes (esptool's ESP_CMDS)
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SYNC, WRITE_REG, READ_REG = 0x08, 0x09, 0x0A
SPI_SET_PARAMS, SPI_ATTACH, READ_FLASH_SLOW, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0E, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END, SPI_FLASH_MD5 = 0x10, 0x11, 0x12, 0x13
ERASE_FLASH, ERASE_REGION, READ_FLASH, RUN_USER_CODE = 0xD0, 0xD1, 0xD2, 0xD3

# ROM status: (1, reason); reasons from esptool's FatalError.WithResult table.
ROM_INVALID_MSG, ROM_FAILED, ROM_BAD_CHECKSUM = 0x05, 0x06, 0x07
ROM_FLASH_READ_LEN, ROM_DEFLATE_FAILED = 0x0A, 0x0B
# Stub status: (code, 0).
STUB_BAD_LEN, STUB_BAD_CHECKSUM, STUB_NOT_IN_FLASH_MODE = 0xC0, 0xC1, 0xC6
STUB_INFLATE_ERROR, STUB_TOO_MUCH_DATA, STUB_NOT_IMPLEMENTED = 0xC7, 0xC9, 0xFF


class Flash(Protocol):
    """What the ROM needs from the board's flash (a :class:`FlashImage` or the board's own)."""

    size: int

    def read(self, offset: int, n: int) -> bytes: ...
    def write(self, offset: int, data: bytes) -> None: ...
    def erase(self, offset: int, n: int) -> None: ...


class FlashImage:
    """SPI NOR flash kept in a file of ``size`` bytes; erased bytes are ``0xFF``.

    Writes behave as on NOR flash: they can only clear bits (``new = old & data``), so data
    written over unerased flash reads back corrupted, as on a chip.
    """

    def __init__(self, path: str | Path, size: int) -> None:
        self.path = Path(path)
        self.size = size
        if not self.path.exists() or self.path.stat().st_size != size:
            with open(self.path, "ab") as f:
                have = f.tell()
                if have < size:
                    f.write(b"\xff" * (size - have))
        self._fd = os.open(self.path, os.O_RDWR)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise ValueError(f"flash access {offset:#x}+{n:#x} is outside {self.size:#x} bytes")

    def read(self, offset: int, n: int) -> bytes:
        n = max(0, min(n, self.size - offset))
        self._check(offset, n)
        return os.pread(self._fd, n, offset)

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        old = os.pread(self._fd, len(data), offset)
        anded = (int.from_bytes(old, "little") & int.from_bytes(data, "little")).to_bytes(
            len(data), "little"
        )
        os.pwrite(self._fd, anded, offset)

    def erase(self, offset: int, n: int) -> None:
        self._check(offset, n)
        os.pwrite(self._fd, b"\xff" * n, offset)

    def md5(self, offset: int, n: int) -> str:
        return hashlib.md5(self.read(offset, n)).hexdigest()


# --- SLIP -----------------------------------------------------------------------------------


def slip_encode(payload: bytes) -> bytes:
    body = payload.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
    return b"\xc0" + body + b"\xc0"


class SlipDecoder:
    """Splits a byte stream into SLIP frames; bytes between frames are dropped (line noise)."""

    def __init__(self) -> None:
        self._frame: bytearray | None = None
        self._escaped = False

    def reset(self) -> None:
        self._frame, self._escaped = None, False

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        for b in data:
            if self._frame is None:
                if b == SLIP_END:
                    self._frame = bytearray()
            elif self._escaped:
                self._escaped = False
                self._frame.append({0xDC: 0xC0, 0xDD: 0xDB}.get(b, b))
            elif b == SLIP_ESC:
                self._escaped = True
            elif b == SLIP_END:
                if self._frame:
                    frames.append(bytes(self._frame))
                    self._frame = None
                # An empty frame is two ENDs in a row: the second one opens the next frame.
                else:
                    self._frame = bytearray()
            else:
                self._frame.append(b)
        return frames


# --- chip facts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Esp32:
    """Facts about an ESP32 (revision v3.0, ESP32-D0WD-V3) as its ROM exposes them."""

    NAME = "esp32"
    MAGIC_REG, MAGIC_VALUE = 0x40001000, 0x00F01D83
    EFUSE_BASE = 0x3FF5A000
    APB_CTL_DATE = 0x3FF6607C  # bit 31 is revision bit 2
    UART_CLKDIV = 0x3FF40014
    RTCCALICFG1 = 0x3FF5F06C
    GPIO_STRAP = 0x3FF44038
    SPI_BASE = 0x3FF42000
    SPI_CMD, SPI_ADDR, SPI_USR, SPI_USR2, SPI_MISO_DLEN, SPI_W0 = 0x00, 0x04, 0x1C, 0x24, 0x2C, 0x80
    XTAL_HZ = 40_000_000
    ROM_STATUS_LEN = 4
    SYNC_VALUE = 0x55552007  # what an ESP32 ROM puts in the value field of its SYNC answers
    # eFuse BLK0 words 3..6: package D0WD (1), rated 240 MHz, rev bits for v3, coding none.
    EFUSE_WORDS: ClassVar[dict[int, int]] = {
        3: 0x0000A200,
        4: 0x00000531,
        5: 0x00100000,
        6: 0x00000000,
    }
    APB_DATE_VALUE = 0x96042000
    CK8M_FREQ = 0x31  # low byte of eFuse word 4, used by esptool's ROM crystal estimate


CHIPS = {"esp32": Esp32}
MAC_OUI = bytes.fromhex("240ac4")  # an Espressif OUI


def _crc8_mac(mac: bytes) -> int:
    # eFuse MAC CRC8 (poly 0x07 reflected = 0x8C), as espefuse computes it for ESP32.
    crc = 0
    for b in mac[::-1]:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


# SFDP header of a Winbond W25Q32JV: "SFDP", rev 1.6, one parameter header (JEDEC basic).
_SFDP = bytes.fromhex("53464450 0601 00ff 00 06 01 10 800000 ff")
_JEDEC = {4 << 20: 0x1640EF, 8 << 20: 0x1740EF, 16 << 20: 0x1840EF, 2 << 20: 0x1540EF}


@dataclass
class _FlashWrite:
    offset: int
    size: int  # bytes that may be written (uncompressed)
    block_size: int
    compressed: bool
    written: int = 0
    inflater: object = None


@dataclass
class _FlashRead:
    offset: int
    length: int
    block: int
    inflight: int
    sent: int = 0
    acked: int = 0


class RomError(Exception):
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
        if chip not in CHIPS:
            raise RomError(f"no ROM model for chip {chip!r}; known: {', '.join(CHIPS)}")
        self.chip = CHIPS[chip]()
        self.flash = flash
        if mac is None:
            mac = (
                MAC_OUI
                + hashlib.sha256(str(getattr(flash, "path", id(flash))).encode()).digest()[:3]
            )
        if len(mac) != 6:
            raise RomError(f"a MAC has 6 bytes, not {len(mac)}")
        self.mac = bytes(mac)
        self.boot_offset = BOOT_OFFSETS.get(chip, 0) if boot_offset is None else boot_offset
        self.on_mode = on_mode
        self.boot_report: BootReport | None = None
        self.mode = "download"
        self.baud = 115200
        self._reset_state()

    # -- public interface --------------------------------------------------------------------

    def reset(self, download: bool = True) -> bytes:
        """A reset through EN, into the loader (GPIO0 low) or the firmware; returns the boot log."""
        self._reset_state()
        self.baud = 115200
        if download:
            self._set_mode("download")
            return (
                b"ets Jun  8 2016 00:22:57\r\n\r\n"
                b"rst:0x1 (POWERON_RESET),boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\r\n"
                b"waiting for download\r\n"
            )
        return self._boot(b"rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n")

    def feed(self, data: bytes) -> bytes:
        """Bytes from the host; returns the bytes the chip sends back."""
        if self.mode not in ("download", "stub"):
            return b""  # the firmware owns the port now (the bridge routes it elsewhere)
        out = bytearray()
        for frame in self._slip.feed(data):
            out += self._frame(frame)
        return bytes(out)

    # -- state -------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._slip = SlipDecoder()
        self._regs: dict[int, int] = {}
        self._mem: dict[int, bytearray] = {}
        self._mem_seg: tuple[int, int, int] | None = None  # (addr, size, blocksize)
        self._write: _FlashWrite | None = None
        self._read: _FlashRead | None = None
        self._last_value = 0
        self._flash_size = self.flash.size

    def _set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            if self.on_mode:
                self.on_mode(mode)

    def _boot(self, reset_line: bytes) -> bytes:
        self._reset_state()
        report = boot_check(self.flash.read, self.chip.NAME, self.boot_offset)
        self.boot_report = report
        log = b"ets Jun  8 2016 00:22:57\r\n\r\n" + reset_line
        if not report.ok:
            self._set_mode("halted")
            return log + f"invalid header: {report.message}\r\n".encode()
        log += b"configsip: 0, SPIWP:0xee\r\nmode:DIO, clock div:2\r\n"
        for seg in report.image.segments:
            log += f"load:{seg.load_addr:#010x},len:{len(seg.data)}\r\n".encode()
        log += f"entry {report.image.entry:#010x}\r\n".encode()
        self._set_mode("firmware")
        return log

    # -- framing -----------------------------------------------------------------------------

    @property
    def _stub(self) -> bool:
        return self.mode == "stub"

    def _respond(
        self, op: int, data: bytes = b"", *, value: int | None = None, error: int = 0
    ) -> bytes:
        if self._stub:
            status = bytes([error, 0]) if error else b"\0\0"
            value = 0 if value is None else value
        else:
            status = bytes([1, error, 0, 0]) if error else b"\0\0\0\0"
            # The ROM leaves the value field as the last register it read (seen on real chips).
            value = self._last_value if value is None else value
        body = data + status
        return slip_encode(struct.pack("<BBHI", 1, op, len(body), value) + body)

    def _fail(self, op: int, rom_reason: int, stub_code: int) -> bytes:
        return self._respond(op, error=stub_code if self._stub else rom_reason)

    def _frame(self, frame: bytes) -> bytes:
        if self._read is not None:
            return self._read_ack(frame)
        if len(frame) < 8 or frame[0] != 0:
            return b""  # not a command: the ROM ignores it
        _, op, size, chk = struct.unpack_from("<BBHI", frame)
        data = frame[8:]
        if len(data) != size:
            return self._fail(op, ROM_INVALID_MSG, STUB_BAD_LEN)
        handler = _HANDLERS.get(op)
        if (
            handler is None
            or (op >= 0xD0 and not self._stub)
            or (op == READ_FLASH_SLOW and self._stub)
        ):
            return self._fail(op, ROM_INVALID_MSG, STUB_NOT_IMPLEMENTED)
        try:
            return handler(self, op, data, chk)
        except (struct.error, ValueError):
            return self._fail(op, ROM_INVALID_MSG, STUB_BAD_LEN)

    # -- commands: link ----------------------------------------------------------------------

    def _sync(self, op, data, chk):
        if data[:4] != b"\x07\x07\x12\x20":
            return self._fail(op, ROM_INVALID_MSG, STUB_BAD_LEN)
        value = 0 if self._stub else self.chip.SYNC_VALUE
        # The ROM answers a SYNC eight times; esptool reads the extra seven.
        return self._respond(op, value=value) * 8

    def _change_baud(self, op, data, chk):
        (new,) = struct.unpack_from("<I", data)
        out = self._respond(op)  # sent at the old rate, then the UART switches
        self.baud = new
        return out

    def _ok(self, op, data, chk):
        return self._respond(op)

    def _spi_set_params(self, op, data, chk):
        _, total, _, sector, _, _ = struct.unpack_from("<IIIIII", data)
        if total == 0 or total > self.flash.size or sector != SECTOR:
            # Smaller than the chip is fine (a header may say 2 MB); larger is not addressable.
            return self._fail(op, ROM_FAILED, STUB_BAD_LEN)
        self._flash_size = total
        return self._respond(op)

    # -- commands: registers -----------------------------------------------------------------

    def _read_reg(self, op, data, chk):
        (addr,) = struct.unpack_from("<I", data)
        value = self._reg(addr)
        self._last_value = value
        return self._respond(op, value=value)

    def _write_reg(self, op, data, chk):
        if len(data) % 16:
            raise ValueError("WRITE_REG takes 16-byte entries")
        for i in range(0, len(data), 16):
            addr, value, mask, _delay = struct.unpack_from("<IIII", data, i)
            self._regs[addr] = (self._reg(addr) & ~mask | value & mask) & 0xFFFFFFFF
            c = self.chip
            if addr == c.SPI_BASE + c.SPI_CMD and self._regs[addr] & (1 << 18):
                self._spi_user_command()
        return self._respond(op)

    def _reg(self, addr: int) -> int:
        c = self.chip
        if addr in self._regs:
            return self._regs[addr]
        if addr == c.MAGIC_REG:
            return c.MAGIC_VALUE
        if c.EFUSE_BASE <= addr < c.EFUSE_BASE + 0x100 and addr % 4 == 0:
            return self._efuse((addr - c.EFUSE_BASE) // 4)
        if addr == c.APB_CTL_DATE:
            return c.APB_DATE_VALUE
        if addr == c.UART_CLKDIV:
            return round(c.XTAL_HZ / self.baud) & 0xFFFFF
        if addr == c.RTCCALICFG1:
            # ROM's own estimate: cali * 15625 * ck8m / 40 == crystal Hz (esptool's ESP32 check).
            return round(c.XTAL_HZ * 40 / (15625 * c.CK8M_FREQ)) << 7
        if addr == c.GPIO_STRAP:
            return 0x03 if self.mode in ("download", "stub") else 0x13
        return 0

    def _efuse(self, word: int) -> int:
        m = self.mac
        if word == 1:
            return int.from_bytes(m[2:6], "big")
        if word == 2:
            return _crc8_mac(m) << 16 | int.from_bytes(m[0:2], "big")
        return self.chip.EFUSE_WORDS.get(word, 0)

    def _spi_user_command(self) -> None:
        # esptool's run_spiflash_command: opcode in USR2, MISO bit count in MISO_DLEN,
        # a 24-bit address MSB-aligned in ADDR; the answer lands in W0, then CMD_USR clears.
        c = self.chip
        base = c.SPI_BASE
        opcode = self._regs.get(base + c.SPI_USR2, 0) & 0xFF
        usr = self._regs.get(base + c.SPI_USR, 0)
        read_bits = (self._regs.get(base + c.SPI_MISO_DLEN, 0) + 1) if usr & (1 << 28) else 0
        addr = self._regs.get(base + c.SPI_ADDR, 0) >> 8
        answer = None
        if opcode == 0x9F:  # RDID
            answer = _JEDEC.get(self.flash.size, 0x1640EF)
        elif opcode == 0x5A:  # RDSFDP
            raw = (_SFDP[addr:] + b"\xff" * 4)[:4]
            answer = int.from_bytes(raw, "little")
        elif opcode in (0x05, 0x35, 0x15):  # RDSR, RDSR2, RDSR3: nothing protected, not busy
            answer = 0
        if answer is not None and read_bits:
            self._regs[base + c.SPI_W0] = answer & ((1 << min(read_bits, 32)) - 1)
        self._regs[base + c.SPI_CMD] &= ~(1 << 18)

    # -- commands: RAM (the stub upload) -----------------------------------------------------

    def _mem_begin(self, op, data, chk):
        size, _blocks, blocksize, addr = struct.unpack_from("<IIII", data)
        self._mem_seg = (addr, size, blocksize)
        self._mem[addr] = bytearray(size)
        return self._respond(op)

    def _mem_data(self, op, data, chk):
        n, seq, _, _ = struct.unpack_from("<IIII", data)
        payload = data[16:]
        if self._mem_seg is None:
            return self._fail(op, ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
        if n != len(payload):
            return self._fail(op, ROM_INVALID_MSG, STUB_BAD_LEN)
        if _checksum(payload) != chk & 0xFF:
            return self._fail(op, ROM_BAD_CHECKSUM, STUB_BAD_CHECKSUM)
        addr, size, blocksize = self._mem_seg
        start = seq * blocksize
        if start + n > size:
            return self._fail(op, ROM_INVALID_MSG, STUB_TOO_MUCH_DATA)
        self._mem[addr][start : start + n] = payload
        return self._respond(op)

    def _mem_end(self, op, data, chk):
        no_entry, entry = struct.unpack_from("<II", data)
        out = self._respond(op)
        self._mem_seg = None
        if no_entry:
            return out
        if any(a <= entry < a + len(m) for a, m in self._mem.items()):
            # Code runs from RAM. The only code we run is esptool's flasher stub, whose first
            # words on the wire are "OHAI".
            self._set_mode("stub")
            self._slip.reset()
            return out + slip_encode(b"OHAI")
        self._set_mode("halted")
        return out

    # -- commands: flash ---------------------------------------------------------------------

    def _flash_begin(self, op, data, chk):
        size, _blocks, block_size, offset = struct.unpack_from("<IIII", data)
        compressed = op == FLASH_DEFL_BEGIN
        if offset + size > self._flash_size:
            return self._fail(op, ROM_FAILED, STUB_BAD_LEN)
        # The ROM erases up front; the stub erases as it writes. Either way the sectors
        # covering [offset, offset + size) end up erased before data lands in them.
        start = offset - offset % SECTOR
        end = min(-(-(offset + size) // SECTOR) * SECTOR, self.flash.size)
        if size:
            self.flash.erase(start, end - start)
        inflater = zlib.decompressobj() if compressed else None
        self._write = _FlashWrite(offset, size, block_size, compressed, 0, inflater)
        return self._respond(op)

    def _flash_data(self, op, data, chk):
        n, seq, _, _ = struct.unpack_from("<IIII", data)
        payload = data[16:]
        w = self._write
        if w is None or w.compressed != (op == FLASH_DEFL_DATA):
            return self._fail(op, ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
        if n != len(payload):
            return self._fail(op, ROM_INVALID_MSG, STUB_BAD_LEN)
        if _checksum(payload) != chk & 0xFF:
            return self._fail(op, ROM_BAD_CHECKSUM, STUB_BAD_CHECKSUM)
        if w.compressed:
            try:
                plain = w.inflater.decompress(payload)
            except zlib.error:
                return self._fail(op, ROM_DEFLATE_FAILED, STUB_INFLATE_ERROR)
            at = w.offset + w.written
        else:
            plain = payload
            at = w.offset + seq * w.block_size
        # The ROM pads the last raw block with 0xFF up to the block size: writing 0xFF over
        # erased flash changes nothing, so only refuse data that goes past the region.
        end = at + len(plain)
        if end > w.offset + w.size and plain[w.offset + w.size - at :].strip(b"\xff"):
            return self._fail(op, ROM_INVALID_MSG, STUB_TOO_MUCH_DATA)
        keep = max(0, min(len(plain), w.offset + w.size - at))
        self.flash.write(at, plain[:keep])
        w.written = max(w.written, at + keep - w.offset)
        return self._respond(op)

    def _flash_end(self, op, data, chk):
        (stay,) = struct.unpack_from("<I", data) if data else (1,)
        self._write = None
        out = self._respond(op)
        if stay:
            if not self._stub:
                # ROM: 1 means "run user code"; leave the loader and boot the flash.
                return out + self._boot(b"rst:0x3 (SW_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n")
            return out  # stub: 1 means stay in the stub
        # 0 means reboot: a CPU reset keeps the boot mode latched at power-on (download).
        return out + self.reset(download=True)

    def _md5(self, op, data, chk):
        addr, size, _, _ = struct.unpack_from("<IIII", data)
        if addr + size > self.flash.size:
            return self._fail(op, ROM_FLASH_READ_LEN, STUB_BAD_LEN)
        digest = hashlib.md5(self.flash.read(addr, size))
        return self._respond(op, digest.digest() if self._stub else digest.hexdigest().encode())

    def _read_flash_slow(self, op, data, chk):
        offset, n = struct.unpack_from("<II", data)
        if n > 64 or offset + n > self.flash.size:
            return self._fail(op, ROM_FLASH_READ_LEN, STUB_BAD_LEN)
        # The ROM always answers with its 64-byte buffer.
        return self._respond(op, self.flash.read(offset, n).ljust(64, b"\0"))

    # -- stub-only commands ------------------------------------------------------------------

    def _erase_flash(self, op, data, chk):
        self.flash.erase(0, self.flash.size)
        return self._respond(op)

    def _erase_region(self, op, data, chk):
        offset, size = struct.unpack_from("<II", data)
        if offset % SECTOR or size % SECTOR or offset + size > self.flash.size:
            return self._respond(op, error=STUB_BAD_LEN)
        self.flash.erase(offset, size)
        return self._respond(op)

    def _read_flash(self, op, data, chk):
        offset, length, block, inflight = struct.unpack_from("<IIII", data)
        if offset + length > self.flash.size or block == 0:
            return self._respond(op, error=STUB_BAD_LEN)
        self._read = _FlashRead(offset, length, block, max(1, inflight))
        return self._respond(op) + self._read_pump()

    def _read_pump(self) -> bytes:
        # Send blocks while fewer than `inflight` are unacknowledged (the stub's flow control).
        r = self._read
        out = bytearray()
        while r.sent < r.length and r.sent - r.acked < r.inflight * r.block:
            n = min(r.block, r.length - r.sent)
            out += slip_encode(self.flash.read(r.offset + r.sent, n))
            r.sent += n
        return bytes(out)

    def _read_ack(self, frame: bytes) -> bytes:
        r = self._read
        if len(frame) == 4:
            r.acked = max(r.acked, struct.unpack("<I", frame)[0])
        if r.acked >= r.length:
            self._read = None
            return slip_encode(hashlib.md5(self.flash.read(r.offset, r.length)).digest())
        return self._read_pump()

    def _run_user_code(self, op, data, chk):
        return self._boot(b"rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n")


def _checksum(data: bytes) -> int:
    state = 0xEF
    for b in data:
        state ^= b
    return state


R = RomBootloader
_HANDLERS = {
    SYNC: R._sync,
    READ_REG: R._read_reg,
    WRITE_REG: R._write_reg,
    SPI_ATTACH: R._ok,
    SPI_SET_PARAMS: R._spi_set_params,
    CHANGE_BAUDRATE: R._change_baud,
    MEM_BEGIN: R._mem_begin,
    MEM_DATA: R._mem_data,
    MEM_END: R._mem_end,
    FLASH_BEGIN: R._flash_begin,
    FLASH_DATA: R._flash_data,
    FLASH_END: R._flash_end,
    FLASH_DEFL_BEGIN: R._flash_begin,
    FLASH_DEFL_DATA: R._flash_data,
    FLASH_DEFL_END: R._flash_end,
    SPI_FLASH_MD5: R._md5,
    READ_FLASH_SLOW: R._read_flash_slow,
    ERASE_FLASH: R._erase_flash,
    ERASE_REGION: R._erase_region,
    READ_FLASH: R._read_flash,
    RUN_USER_CODE: R._run_user_code,
}
del R


class AutoResetCircuit:
    """The two-transistor auto-reset circuit of ESP32 dev boards, driven by DTR and RTS.

    EN (chip enable) is low only while RTS is asserted and DTR is not; GPIO0 is low only while
    DTR is asserted and RTS is not. The chip samples GPIO0 as EN rises, but EN rises slowly
    through an RC network, so a GPIO0 low seen within ``settle`` seconds after the rise still
    selects download mode (esptool's ClassicReset relies on that: it releases EN one line
    change before it pulls GPIO0 low; over RFC2217 with ``ign_set_control`` each change comes
    0.1 s after the previous one). Call :meth:`set` on every
    line change and :meth:`poll` now and then; both return ``"download"`` or ``"firmware"``
    when the chip comes out of reset, else ``None``.
    """

    def __init__(self, settle: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        self.dtr = False
        self.rts = False
        self.settle = settle
        self._clock = clock
        self._rise: float | None = None
        self.in_reset = False

    def _en_low(self) -> bool:
        return self.rts and not self.dtr

    def _io0_low(self) -> bool:
        return self.dtr and not self.rts

    def set(self, dtr: bool | None = None, rts: bool | None = None) -> str | None:
        result = self.poll()
        was_low = self._en_low()
        if dtr is not None:
            self.dtr = bool(dtr)
        if rts is not None:
            self.rts = bool(rts)
        if self._en_low():
            self.in_reset = True
            self._rise = None
        elif was_low:
            self.in_reset = False
            self._rise = self._clock()
        if self._rise is not None and self._io0_low():
            # GPIO0 low while EN is still rising: download mode is certain now.
            self._rise = None
            return result or "download"
        return result

    def poll(self, force: bool = False) -> str | None:
        """Resolve a pending boot once the settle time has passed (or now, if ``force``)."""
        if self._rise is None:
            return None
        if not force and self._clock() - self._rise < self.settle:
            return None
        self._rise = None
        return "firmware"
