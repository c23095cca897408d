"""The ESP32 serial ROM bootloader and esptool's flasher stub, as a byte-stream state machine.

:class:`RomBootloader` takes the bytes a host writes to the chip's UART0 and returns the bytes
the chip would send back; it does no I/O and owns no thread, so a pty bridge, an RFC2217
server or a unit test can drive it. The parts:

- :mod:`.loader`: :class:`RomBootloader`, modes (download, stub, firmware, halted), resets and
  the boot from flash, response framing, dispatch to the handlers.
- :mod:`.commands`: one function per command (opcodes and status codes from esptool 5's
  ``loader.py``), registered in one table.
- :mod:`.registers`: the register file esptool reads and writes (chip-detect magic, eFuses,
  UART divider, the SPI0 controller that answers ``run_spiflash_command``).

The chip's facts come from :mod:`edgeladder_sim.chips`, the flash is
:class:`edgeladder_sim.flash.FlashImage`, SLIP is :mod:`edgeladder_sim.slip`, and the image check
at boot is :func:`edgeladder_sim.image.boot_check`.
"""

from .loader import Flash, RomBootloader, RomError

__all__ = ["Flash", "RomBootloader", "RomError"]
