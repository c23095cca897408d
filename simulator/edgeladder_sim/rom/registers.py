"""The chip's registers as esptool reaches them with READ_REG / WRITE_REG.

A written register reads back what was written; the rest read as the chip would: the
chip-detect magic, the eFuses (MAC with its CRC, revision v3.0, package, no encryption), the
APB date, the UART divider for the current baud rate, the crystal calibration, the boot
strapping pins, and an SPI0 controller that runs esptool's ``run_spiflash_command`` (JEDEC id,
SFDP, status registers) when CMD_USR is set.
"""

from __future__ import annotations

from ..chips import Chip

_CMD_USR = 1 << 18
_USR_MISO = 1 << 28
# SFDP header of a Winbond W25Q32JV: "SFDP", rev 1.6, one parameter header (JEDEC basic).
_SFDP = bytes.fromhex("53464450 0601 00ff 00 06 01 10 800000 ff")
_JEDEC = {4 << 20: 0x1640EF, 8 << 20: 0x1740EF, 16 << 20: 0x1840EF, 2 << 20: 0x1540EF}


def crc8_mac(mac: bytes) -> int:
    """eFuse MAC CRC8 (poly 0x07 reflected = 0x8C), as espefuse computes it for ESP32."""
    crc = 0
    for b in mac[::-1]:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


class RegisterFile:
    """The registers of one chip between two resets; ``flash_size`` sizes the JEDEC id."""

    def __init__(self, chip: type[Chip], mac: bytes, flash_size: int) -> None:
        self.chip = chip
        self.mac = mac
        self.flash_size = flash_size
        self.written: dict[int, int] = {}

    def read(self, addr: int, *, baud: int, in_loader: bool) -> int:
        c = self.chip
        if addr in self.written:
            return self.written[addr]
        if addr == c.MAGIC_REG:
            return c.MAGIC_VALUE
        if c.EFUSE_BASE <= addr < c.EFUSE_BASE + 0x100 and addr % 4 == 0:
            return self._efuse((addr - c.EFUSE_BASE) // 4)
        if addr == c.APB_CTL_DATE:
            return c.APB_DATE_VALUE
        if addr == c.UART_CLKDIV:
            return round(c.XTAL_HZ / baud) & 0xFFFFF
        if addr == c.RTCCALICFG1:
            # ROM's own estimate: cali * 15625 * ck8m / 40 == crystal Hz (esptool's ESP32 check).
            return round(c.XTAL_HZ * 40 / (15625 * c.CK8M_FREQ)) << 7
        if addr == c.GPIO_STRAP:
            return 0x03 if in_loader else 0x13
        return 0

    def write(self, addr: int, value: int, mask: int, *, baud: int, in_loader: bool) -> None:
        old = self.read(addr, baud=baud, in_loader=in_loader)
        self.written[addr] = (old & ~mask | value & mask) & 0xFFFFFFFF
        c = self.chip
        if addr == c.SPI_BASE + c.SPI_CMD and self.written[addr] & _CMD_USR:
            self._spi_user_command()

    def _efuse(self, word: int) -> int:
        m = self.mac
        if word == 1:
            return int.from_bytes(m[2:6], "big")
        if word == 2:
            return crc8_mac(m) << 16 | int.from_bytes(m[0:2], "big")
        return self.chip.EFUSE_WORDS.get(word, 0)

    def _spi_user_command(self) -> None:
        # esptool's run_spiflash_command: opcode in USR2, MISO bit count in MISO_DLEN,
        # a 24-bit address MSB-aligned in ADDR; the answer lands in W0, then CMD_USR clears.
        c, regs = self.chip, self.written
        base = c.SPI_BASE
        opcode = regs.get(base + c.SPI_USR2, 0) & 0xFF
        usr = regs.get(base + c.SPI_USR, 0)
        read_bits = (regs.get(base + c.SPI_MISO_DLEN, 0) + 1) if usr & _USR_MISO else 0
        addr = regs.get(base + c.SPI_ADDR, 0) >> 8
        answer = None
        if opcode == 0x9F:  # RDID
            answer = _JEDEC.get(self.flash_size, 0x1640EF)
        elif opcode == 0x5A:  # RDSFDP
            raw = (_SFDP[addr:] + b"\xff" * 4)[:4]
            answer = int.from_bytes(raw, "little")
        elif opcode in (0x05, 0x35, 0x15):  # RDSR, RDSR2, RDSR3: nothing protected, not busy
            answer = 0
        if answer is not None and read_bits:
            regs[base + c.SPI_W0] = answer & ((1 << min(read_bits, 32)) - 1)
        regs[base + c.SPI_CMD] &= ~_CMD_USR
