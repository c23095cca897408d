"""The bootloader's commands: one function per opcode, ``f(rom, op, data, chk) -> reply bytes``.

Checked against esptool 5's ``loader.py``: the ROM answers SYNC (eight times), READ_REG /
WRITE_REG, SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE, MEM_BEGIN/DATA/END, FLASH_BEGIN/DATA/END
and the deflate variants, SPI_FLASH_MD5 (32 hex characters) and READ_FLASH_SLOW (64-byte
blocks). The stub adds ERASE_FLASH, ERASE_REGION, flow-controlled READ_FLASH with a closing MD5
and RUN_USER_CODE, and returns MD5s as 16 raw bytes. :data:`HANDLERS` maps opcodes to functions;
:data:`STUB_ONLY` and :data:`ROM_ONLY` say which dialect has which.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import slip

if TYPE_CHECKING:
    from .loader import RomBootloader

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

_SYNC_PATTERN = b"\x07\x07\x12\x20"


@dataclass
class FlashWrite:
    offset: int
    size: int  # bytes that may be written (uncompressed)
    block_size: int
    compressed: bool
    written: int = 0
    inflater: object = None


@dataclass
class FlashRead:
    offset: int
    length: int
    block: int
    inflight: int
    sent: int = 0
    acked: int = 0


def checksum(data: bytes) -> int:
    """The ROM's data checksum: XOR of every byte, seeded with 0xEF."""
    state = 0xEF
    for b in data:
        state ^= b
    return state


def _block(rom: RomBootloader, op: int, data: bytes, chk: int) -> tuple[int, bytes] | bytes:
    """A DATA command's (seq, payload), or the failure reply (wrong length or checksum)."""
    n, seq, _, _ = struct.unpack_from("<IIII", data)
    payload = data[16:]
    if n != len(payload):
        return rom.fail(op, ROM_INVALID_MSG, STUB_BAD_LEN)
    if checksum(payload) != chk & 0xFF:
        return rom.fail(op, ROM_BAD_CHECKSUM, STUB_BAD_CHECKSUM)
    return seq, payload


# -- link


def sync(rom, op, data, chk):
    if data[:4] != _SYNC_PATTERN:
        return rom.fail(op, ROM_INVALID_MSG, STUB_BAD_LEN)
    value = 0 if rom.stub else rom.chip.SYNC_VALUE
    # The ROM answers a SYNC eight times; esptool reads the extra seven.
    return rom.respond(op, value=value) * 8


def change_baud(rom, op, data, chk):
    (new,) = struct.unpack_from("<I", data)
    out = rom.respond(op)  # sent at the old rate, then the UART switches
    rom.baud = new
    return out


def ok(rom, op, data, chk):
    return rom.respond(op)


def spi_set_params(rom, op, data, chk):
    _, total, _, sector, _, _ = struct.unpack_from("<IIIIII", data)
    if total == 0 or total > rom.flash.size or sector != SECTOR:
        # Smaller than the chip is fine (a header may say 2 MB); larger is not addressable.
        return rom.fail(op, ROM_FAILED, STUB_BAD_LEN)
    rom.flash_size = total
    return rom.respond(op)


# -- registers


def read_reg(rom, op, data, chk):
    (addr,) = struct.unpack_from("<I", data)
    value = rom.regs.read(addr, baud=rom.baud, in_loader=rom.in_loader)
    rom.last_value = value
    return rom.respond(op, value=value)


def write_reg(rom, op, data, chk):
    if len(data) % 16:
        raise ValueError("WRITE_REG takes 16-byte entries")
    for i in range(0, len(data), 16):
        addr, value, mask, _delay = struct.unpack_from("<IIII", data, i)
        rom.regs.write(addr, value, mask, baud=rom.baud, in_loader=rom.in_loader)
    return rom.respond(op)


# -- RAM (the stub upload)


def mem_begin(rom, op, data, chk):
    size, _blocks, blocksize, addr = struct.unpack_from("<IIII", data)
    rom.mem_seg = (addr, size, blocksize)
    rom.mem[addr] = bytearray(size)
    return rom.respond(op)


def mem_data(rom, op, data, chk):
    struct.unpack_from("<IIII", data)  # a short header is a malformed command
    if rom.mem_seg is None:
        return rom.fail(op, ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
    block = _block(rom, op, data, chk)
    if isinstance(block, bytes):
        return block
    seq, payload = block
    addr, size, blocksize = rom.mem_seg
    start = seq * blocksize
    if start + len(payload) > size:
        return rom.fail(op, ROM_INVALID_MSG, STUB_TOO_MUCH_DATA)
    rom.mem[addr][start : start + len(payload)] = payload
    return rom.respond(op)


def mem_end(rom, op, data, chk):
    no_entry, entry = struct.unpack_from("<II", data)
    out = rom.respond(op)
    rom.mem_seg = None
    if no_entry:
        return out
    if any(a <= entry < a + len(m) for a, m in rom.mem.items()):
        # Code runs from RAM. The only code we run is esptool's flasher stub, whose first
        # words on the wire are "OHAI".
        rom.set_mode("stub")
        rom.slip.reset()
        return out + slip.encode(b"OHAI")
    rom.set_mode("halted")
    return out


# -- flash


def flash_begin(rom, op, data, chk):
    size, _blocks, block_size, offset = struct.unpack_from("<IIII", data)
    compressed = op == FLASH_DEFL_BEGIN
    if offset + size > rom.flash_size:
        return rom.fail(op, ROM_FAILED, STUB_BAD_LEN)
    # The ROM erases up front; the stub erases as it writes. Either way the sectors
    # covering [offset, offset + size) end up erased before data lands in them.
    start = offset - offset % SECTOR
    end = min(-(-(offset + size) // SECTOR) * SECTOR, rom.flash.size)
    if size:
        rom.flash.erase(start, end - start)
    inflater = zlib.decompressobj() if compressed else None
    rom.write_op = FlashWrite(offset, size, block_size, compressed, 0, inflater)
    return rom.respond(op)


def flash_data(rom, op, data, chk):
    struct.unpack_from("<IIII", data)  # a short header is a malformed command
    w = rom.write_op
    if w is None or w.compressed != (op == FLASH_DEFL_DATA):
        return rom.fail(op, ROM_FAILED, STUB_NOT_IN_FLASH_MODE)
    block = _block(rom, op, data, chk)
    if isinstance(block, bytes):
        return block
    seq, payload = block
    if w.compressed:
        try:
            plain = w.inflater.decompress(payload)
        except zlib.error:
            return rom.fail(op, ROM_DEFLATE_FAILED, STUB_INFLATE_ERROR)
        at = w.offset + w.written
    else:
        plain = payload
        at = w.offset + seq * w.block_size
    # The ROM pads the last raw block with 0xFF up to the block size: writing 0xFF over
    # erased flash changes nothing, so only refuse data that goes past the region.
    end = at + len(plain)
    if end > w.offset + w.size and plain[w.offset + w.size - at :].strip(b"\xff"):
        return rom.fail(op, ROM_INVALID_MSG, STUB_TOO_MUCH_DATA)
    keep = max(0, min(len(plain), w.offset + w.size - at))
    rom.flash.write(at, plain[:keep])
    w.written = max(w.written, at + keep - w.offset)
    return rom.respond(op)


def flash_end(rom, op, data, chk):
    (stay,) = struct.unpack_from("<I", data) if data else (1,)
    rom.write_op = None
    out = rom.respond(op)
    if stay:
        if not rom.stub:
            # ROM: 1 means "run user code"; leave the loader and boot the flash.
            return out + rom.boot(b"rst:0x3 (SW_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n")
        return out  # stub: 1 means stay in the stub
    # 0 means reboot: a CPU reset keeps the boot mode latched at power-on (download).
    return out + rom.reset(download=True)


def md5(rom, op, data, chk):
    addr, size, _, _ = struct.unpack_from("<IIII", data)
    if addr + size > rom.flash.size:
        return rom.fail(op, ROM_FLASH_READ_LEN, STUB_BAD_LEN)
    digest = hashlib.md5(rom.flash.read(addr, size))
    return rom.respond(op, digest.digest() if rom.stub else digest.hexdigest().encode())


def read_flash_slow(rom, op, data, chk):
    offset, n = struct.unpack_from("<II", data)
    if n > 64 or offset + n > rom.flash.size:
        return rom.fail(op, ROM_FLASH_READ_LEN, STUB_BAD_LEN)
    # The ROM always answers with its 64-byte buffer.
    return rom.respond(op, rom.flash.read(offset, n).ljust(64, b"\0"))


# -- stub only


def erase_flash(rom, op, data, chk):
    rom.flash.erase(0, rom.flash.size)
    return rom.respond(op)


def erase_region(rom, op, data, chk):
    offset, size = struct.unpack_from("<II", data)
    if offset % SECTOR or size % SECTOR or offset + size > rom.flash.size:
        return rom.respond(op, error=STUB_BAD_LEN)
    rom.flash.erase(offset, size)
    return rom.respond(op)


def read_flash(rom, op, data, chk):
    offset, length, block, inflight = struct.unpack_from("<IIII", data)
    if offset + length > rom.flash.size or block == 0:
        return rom.respond(op, error=STUB_BAD_LEN)
    rom.read_op = FlashRead(offset, length, block, max(1, inflight))
    return rom.respond(op) + _read_pump(rom)


def _read_pump(rom) -> bytes:
    # Send blocks while fewer than `inflight` are unacknowledged (the stub's flow control).
    r = rom.read_op
    out = bytearray()
    while r.sent < r.length and r.sent - r.acked < r.inflight * r.block:
        n = min(r.block, r.length - r.sent)
        out += slip.encode(rom.flash.read(r.offset + r.sent, n))
        r.sent += n
    return bytes(out)


def read_ack(rom, frame: bytes) -> bytes:
    """A frame from the host while READ_FLASH runs: the count of bytes it has received."""
    r = rom.read_op
    if len(frame) == 4:
        r.acked = max(r.acked, struct.unpack("<I", frame)[0])
    if r.acked >= r.length:
        rom.read_op = None
        return slip.encode(hashlib.md5(rom.flash.read(r.offset, r.length)).digest())
    return _read_pump(rom)


def run_user_code(rom, op, data, chk):
    return rom.boot(b"rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n")


HANDLERS = {
    SYNC: sync,
    READ_REG: read_reg,
    WRITE_REG: write_reg,
    SPI_ATTACH: ok,
    SPI_SET_PARAMS: spi_set_params,
    CHANGE_BAUDRATE: change_baud,
    MEM_BEGIN: mem_begin,
    MEM_DATA: mem_data,
    MEM_END: mem_end,
    FLASH_BEGIN: flash_begin,
    FLASH_DATA: flash_data,
    FLASH_END: flash_end,
    FLASH_DEFL_BEGIN: flash_begin,
    FLASH_DEFL_DATA: flash_data,
    FLASH_DEFL_END: flash_end,
    SPI_FLASH_MD5: md5,
    READ_FLASH_SLOW: read_flash_slow,
    ERASE_FLASH: erase_flash,
    ERASE_REGION: erase_region,
    READ_FLASH: read_flash,
    RUN_USER_CODE: run_user_code,
}
STUB_ONLY = frozenset({ERASE_FLASH, ERASE_REGION, READ_FLASH, RUN_USER_CODE})
ROM_ONLY = frozenset({READ_FLASH_SLOW})
