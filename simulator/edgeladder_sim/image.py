"""ESP firmware image headers: the check a chip makes before it boots what is in flash.

An ESP32 app or bootloader image starts with an 8-byte header (magic ``0xE9``, segment count,
SPI mode, flash size/frequency, entry address), then a 16-byte extended header whose bytes
4-5 are the chip id the image was built for, then the segments (load address, length, data).
A one-byte XOR checksum (seeded with ``0xEF``) ends the image at a 16-byte boundary, and a
SHA-256 of everything before it follows when the extended header's last byte is 1.

:func:`boot_check` is what the virtual board's ROM runs on a reset into firmware: it refuses an
image written at the wrong offset or built for another chip with a message that says what to
do, instead of booting garbage. :func:`build_image` makes a minimal valid image (tests, and a
placeholder firmware for a fresh virtual board).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from . import chips

MAGIC = 0xE9
CHECKSUM_SEED = 0xEF
HEADER_LEN = 8
EXT_HEADER_LEN = 16
SHA256_LEN = 32
_MAX_SEGMENTS = 16
# Offsets where a misplaced image is commonly found: a merged binary written at 0, or an app
# image written where the app partition usually starts.
_LIKELY_OFFSETS = (0x0, 0x1000, 0x2000, 0x8000, 0x10000)


class ImageError(Exception):
    """Bytes that are not a valid image for the chip."""


@dataclass(frozen=True)
class Segment:
    load_addr: int
    data: bytes


@dataclass(frozen=True)
class ImageInfo:
    chip_id: int
    entry: int
    flash_mode: int
    flash_size_freq: int
    segments: list[Segment] = field(default_factory=list)
    length: int = 0  # bytes including checksum padding and any appended SHA-256
    sha256_appended: bool = False

    @property
    def chip(self) -> str:
        chip = chips.by_image_id(self.chip_id)
        return chip.NAME if chip else f"chip id {self.chip_id}"


def parse_image(data: bytes) -> ImageInfo:
    """Parse and verify an image at the start of ``data`` (trailing bytes are ignored)."""
    if len(data) < HEADER_LEN + EXT_HEADER_LEN:
        raise ImageError(f"too short for an image header ({len(data)} bytes)")
    magic, nseg, mode, size_freq, entry = struct.unpack_from("<BBBBI", data, 0)
    if magic != MAGIC:
        raise ImageError(f"no image magic: first byte is {magic:#04x}, not {MAGIC:#04x}")
    if not 0 < nseg <= _MAX_SEGMENTS:
        raise ImageError(f"implausible segment count {nseg}")
    (chip_id,) = struct.unpack_from("<H", data, HEADER_LEN + 4)
    hash_appended = data[HEADER_LEN + EXT_HEADER_LEN - 1] == 1
    pos = HEADER_LEN + EXT_HEADER_LEN
    segments = []
    checksum = CHECKSUM_SEED
    for i in range(nseg):
        if pos + 8 > len(data):
            raise ImageError(f"segment {i} header runs past the end of the data")
        addr, length = struct.unpack_from("<II", data, pos)
        pos += 8
        if pos + length > len(data):
            raise ImageError(f"segment {i} ({length} bytes at {addr:#010x}) is truncated")
        seg = data[pos : pos + length]
        for b in seg:
            checksum ^= b
        segments.append(Segment(addr, bytes(seg)))
        pos += length
    # The checksum byte sits at the end of 16-byte-aligned padding.
    pos = (pos + 16) & ~15
    if pos > len(data):
        raise ImageError("checksum byte is missing (image truncated)")
    if data[pos - 1] != checksum:
        raise ImageError(
            f"checksum mismatch: stored {data[pos - 1]:#04x}, computed {checksum:#04x}"
        )
    if hash_appended:
        if pos + SHA256_LEN > len(data):
            raise ImageError("SHA-256 digest is missing (image truncated)")
        if hashlib.sha256(data[:pos]).digest() != data[pos : pos + SHA256_LEN]:
            raise ImageError("SHA-256 digest does not match the image")
        pos += SHA256_LEN
    return ImageInfo(chip_id, entry, mode, size_freq, segments, pos, hash_appended)


def build_image(
    segments: list[tuple[int, bytes]],
    *,
    chip: str = "esp32",
    entry: int | None = None,
    flash_mode: int = 2,  # DIO
    flash_size_freq: int = 0x20,  # 4 MB, 40 MHz
    sha256: bool = True,
) -> bytes:
    """A valid image of ``segments`` for ``chip``, as esptool's ``elf2image`` lays it out."""
    try:
        chip_id = chips.get(chip).IMAGE_CHIP_ID
    except chips.ChipError as e:
        raise ImageError(str(e)) from None
    if not segments:
        raise ImageError("an image needs at least one segment")
    if entry is None:
        entry = segments[0][0]
    out = bytearray(struct.pack("<BBBBI", MAGIC, len(segments), flash_mode, flash_size_freq, entry))
    # wp_pin 0xEE (disabled), drive settings, chip id, min rev, min/max rev full, reserved, hash.
    out += struct.pack("<BBBBHBHH4xB", 0xEE, 0, 0, 0, chip_id, 0, 0, 0xFFFF, int(sha256))
    checksum = CHECKSUM_SEED
    for addr, data in segments:
        data = bytes(data) + b"\0" * (-len(data) % 4)  # segments are word-aligned
        out += struct.pack("<II", addr, len(data)) + data
        for b in data:
            checksum ^= b
    out += b"\0" * (15 - len(out) % 16) + bytes([checksum])
    if sha256:
        out += hashlib.sha256(out).digest()
    return bytes(out)


@dataclass(frozen=True)
class BootReport:
    """What the ROM found when it tried to boot from flash."""

    ok: bool
    offset: int
    message: str
    image: ImageInfo | None = None


def boot_check(read, chip: str = "esp32", offset: int | None = None) -> BootReport:
    """Check the image a ``chip`` would boot; ``read(offset, n)`` reads the flash.

    ``offset`` defaults to where the chip's ROM loads the first image from.
    """
    expected = chips.get(chip).IMAGE_CHIP_ID
    if offset is None:
        offset = chips.get(chip).BOOTLOADER_OFFSET
    head = read(offset, 0x10000)
    try:
        info = parse_image(head)
    except ImageError as e:
        hint = _find_misplaced(read, chip, expected, offset)
        if head[:4] == b"\xff\xff\xff\xff":
            what = f"no firmware at {offset:#x} (the flash is erased there)"
        else:
            what = f"invalid image at {offset:#x}: {e}"
        return BootReport(False, offset, f"{what}; {hint}")
    if info.chip_id != expected:
        return BootReport(
            False,
            offset,
            f"the image at {offset:#x} is built for {info.chip}, not {chip}; "
            f"flash the {chip} build of the firmware",
            info,
        )
    return BootReport(True, offset, f"valid {chip} image at {offset:#x}", info)


def _find_misplaced(read, chip: str, expected: int, offset: int) -> str:
    for other in _LIKELY_OFFSETS:
        if other == offset:
            continue
        try:
            info = parse_image(read(other, 0x10000))
        except ImageError:
            continue
        if info.chip_id == expected:
            return (
                f"an {chip} image was found at {other:#x}: it was written at the wrong "
                f"offset, flash it at {offset:#x}"
            )
        return (
            f"an image for {info.chip} was found at {other:#x}; "
            f"flash the {chip} build at {offset:#x}"
        )
    return f"write an {chip} firmware image at {offset:#x}"


def boot_check_file(path, chip: str = "esp32", offset: int | None = None) -> BootReport:
    """:func:`boot_check` on a flash file (for a board's boot hook)."""
    with open(path, "rb") as f:

        def read(at: int, n: int) -> bytes:
            f.seek(at)
            return f.read(n)

        return boot_check(read, chip, offset)
