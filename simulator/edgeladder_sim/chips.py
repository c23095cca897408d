"""The chips the simulator knows, as data: one small class per chip, one registry dict.

As in esptool's ``targets/``: facts are UPPER_CASE class attributes, a variant overrides only
what differs, and code that needs a chip looks it up in :data:`CHIPS` (or loops over it) instead
of comparing names. Every chip has the facts its firmware images carry (the image chip id, where
its ROM loads the first image from); a chip whose serial ROM the simulator models
(:attr:`Chip.ROM`) also has the register facts esptool reads (checked against esptool 5's
``targets/esp32.py``).
"""

from __future__ import annotations

from typing import ClassVar


class ChipError(Exception):
    """A chip the simulator does not know, or whose ROM it does not model."""


class Chip:
    """Facts shared by every ESP chip; a subclass per chip overrides what differs."""

    NAME: ClassVar[str] = ""
    IMAGE_CHIP_ID: ClassVar[int] = -1  # esp_chip_id_t in ESP-IDF, in the image's extended header
    BOOTLOADER_OFFSET: ClassVar[int] = 0x0  # where the ROM loads the first image from
    ROM: ClassVar[bool] = False  # the simulator models this chip's serial ROM bootloader


class Esp32(Chip):
    """An ESP32 (revision v3.0, ESP32-D0WD-V3) as its ROM exposes it."""

    NAME = "esp32"
    IMAGE_CHIP_ID = 0
    BOOTLOADER_OFFSET = 0x1000
    ROM = True
    MAGIC_REG, MAGIC_VALUE = 0x40001000, 0x00F01D83
    EFUSE_BASE = 0x3FF5A000
    APB_CTL_DATE = 0x3FF6607C  # bit 31 is revision bit 2
    APB_DATE_VALUE = 0x96042000
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
    CK8M_FREQ = 0x31  # low byte of eFuse word 4, used by esptool's ROM crystal estimate
    MAC_OUI = bytes.fromhex("240ac4")  # an Espressif OUI


class Esp32S2(Chip):
    NAME, IMAGE_CHIP_ID, BOOTLOADER_OFFSET = "esp32s2", 2, 0x1000


class Esp32C3(Chip):
    NAME, IMAGE_CHIP_ID = "esp32c3", 5


class Esp32S3(Chip):
    NAME, IMAGE_CHIP_ID = "esp32s3", 9


class Esp32C2(Chip):
    NAME, IMAGE_CHIP_ID = "esp32c2", 12


class Esp32C6(Chip):
    NAME, IMAGE_CHIP_ID = "esp32c6", 13


class Esp32H2(Chip):
    NAME, IMAGE_CHIP_ID = "esp32h2", 16


class Esp32P4(Chip):
    NAME, IMAGE_CHIP_ID, BOOTLOADER_OFFSET = "esp32p4", 18, 0x2000


CHIPS: dict[str, type[Chip]] = {
    c.NAME: c for c in (Esp32, Esp32S2, Esp32C3, Esp32S3, Esp32C2, Esp32C6, Esp32H2, Esp32P4)
}


def get(name: str) -> type[Chip]:
    """The chip called ``name``; :class:`ChipError` naming the known ones if there is none."""
    try:
        return CHIPS[name]
    except KeyError:
        raise ChipError(f"unknown chip {name!r}; known: {', '.join(CHIPS)}") from None


def by_image_id(chip_id: int) -> type[Chip] | None:
    """The chip whose images carry ``chip_id``, or None."""
    return next((c for c in CHIPS.values() if chip_id == c.IMAGE_CHIP_ID), None)


def with_rom(name: str) -> type[Chip]:
    """The chip called ``name`` if the simulator models its serial ROM, else :class:`ChipError`."""
    chip = get(name)
    if not chip.ROM:
        known = ", ".join(n for n, c in CHIPS.items() if c.ROM)
        raise ChipError(f"no ROM model for chip {name!r}; known: {known}")
    return chip
