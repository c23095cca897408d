"""Flash firmware onto a board with esptool's Python API: one code path for real and virtual ports.

:func:`flash_firmware` checks the image before it touches the board (ESP image magic, the chip
it was built for, that it fits), connects (resetting into the ROM bootloader through DTR/RTS
unless told not to), uploads esptool's flasher stub, optionally erases the whole flash, writes
the image at the board file's ``flash_offset`` (compressed, with esptool's MD5 check), verifies
the MD5 once more, and resets the board into the new firmware.

Every failure leaves as one line that says what to do: the device layer's
:class:`~edgeladder.device.ports.PortError` for a port that does not exist, is busy or where
nothing listens (the same check and messages as ``deploy``), :class:`BoardNotAnsweringError`
for a board whose bootloader does not answer, and a :class:`FlashError` for an image for
another chip or any other esptool error. A port is whatever pyserial opens: ``/dev/ttyUSB0``,
a virtual board's pty, ``rfc2217://host:port``.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeladder.boards import registry as boards
from edgeladder.device.ports import (
    BoardNotAnsweringError,
    DeviceError,
    PortError,
    check_port,
    has_reset_lines,
    open_error,
)
from edgeladder.errors import EdgeladderError

# progress(stage, done, total): stage is "connect", "erase", "write" or "verify".
ProgressFn = Callable[[str, int, int], None]

DEFAULT_BAUD = 460_800
_IMAGE_MAGIC = 0xE9
_CHIP_ID_OFFSET = 12  # u16 in the extended header, after the 8-byte header and 4 bytes


class FlashError(DeviceError):
    """Flashing a board failed."""


class WrongChipError(FlashError):
    """The image, the board file and the chip on the port disagree."""


class FirmwareError(FlashError):
    """The firmware file is missing or is not an ESP image."""


@dataclass
class FlashResult:
    port: str
    board: str
    chip: str  # e.g. "ESP32-D0WD-V3 (revision v3.0)"
    mac: str
    offset: int
    size: int
    md5: str
    erased: bool
    seconds: float
    log: list[str] = field(default_factory=list)  # what esptool said, for --verbose


def chip_ids() -> dict[int, str]:
    """Image chip id -> esptool chip name (``esp32``, ``esp32s3``, ...), from esptool itself."""
    from esptool.targets import CHIP_DEFS

    return {
        cls.IMAGE_CHIP_ID: name for name, cls in CHIP_DEFS.items() if cls.IMAGE_CHIP_ID is not None
    }


def check_image(data: bytes, chip: str, name: str = "firmware") -> None:
    """Refuse bytes that are not an ESP image for ``chip`` (before any port is opened)."""
    if len(data) < 24 or data[0] != _IMAGE_MAGIC:
        raise FirmwareError(
            f"{name} is not an ESP firmware image (first byte {data[:1].hex() or 'none'}, "
            f"expected e9): use the .bin release for {chip}, not an .elf, .uf2 or .hex"
        )
    chip_id = int.from_bytes(data[_CHIP_ID_OFFSET : _CHIP_ID_OFFSET + 2], "little")
    built_for = chip_ids().get(chip_id, f"chip id {chip_id}")
    if built_for != chip:
        raise WrongChipError(
            f"{name} is built for {built_for}, but the board's chip is {chip}: "
            f"use the {chip} build of the firmware"
        )


def flash_firmware(
    port: str,
    firmware: str | Path,
    board: str | boards.Board = "esp32",
    *,
    erase: bool = False,
    progress: ProgressFn | None = None,
    baud: int = DEFAULT_BAUD,
    before: str = "default-reset",
    after: str = "hard-reset",
    no_stub: bool = False,
    connect_attempts: int = 3,
) -> FlashResult:
    """Write ``firmware`` to the board on ``port`` at the board file's flash offset."""
    try:
        import esptool.cmds as cmds
    except ImportError as e:
        raise FlashError("esptool is not installed: pip install 'esptool>=5,<6'") from e
    board = boards.get(board) if isinstance(board, str) else board
    if board.chip is None or board.flash_offset is None:
        raise FlashError(f"board {board.name!r} has no chip and flash offset: it is not flashable")
    firmware = Path(firmware)
    try:
        data = firmware.read_bytes()
    except OSError as e:
        raise FirmwareError(f"cannot read the firmware file: {e.strerror}", firmware) from e
    check_image(data, board.chip, firmware.name)
    if board.flash_bytes and board.flash_offset + len(data) > board.flash_bytes:
        raise FirmwareError(
            f"{len(data)} bytes at {board.flash_offset:#x} do not fit in the "
            f"{board.name}'s {board.flash_bytes} bytes of flash",
            firmware,
        )
    check_port(port)

    report = progress or (lambda stage, done, total: None)
    logger = _Capture(report)
    if not has_reset_lines(port):
        # A pty (a virtual board's port) has no DTR/RTS, like a board without the auto-reset
        # circuit: esptool would only warn and go on, so say it once and skip the toggling.
        logger.lines.append(f"note: {port} has no DTR/RTS lines; not resetting the board")
        before = "no-reset" if before == "default-reset" else before
        after = "no-reset" if after == "hard-reset" else after
    started = time.monotonic()
    with logger.installed():
        esp = None
        try:
            report("connect", 0, 1)
            esp = cmds.connect_esp(
                port=port, chip="auto", before=before, connect_attempts=connect_attempts
            )
            found = esp.CHIP_NAME.lower().replace("-", "")
            if found != board.chip:
                raise WrongChipError(
                    f"the board on {port} is an {esp.CHIP_NAME}, but board {board.name!r} "
                    f"has an {board.chip}: pick the matching --board"
                )
            chip = esp.get_chip_description()
            mac = ":".join(f"{b:02x}" for b in esp.read_mac())
            report("connect", 1, 1)
            if not no_stub:
                esp = cmds.run_stub(esp)
            if baud > esp.ESP_ROM_BAUD:
                esp.change_baud(baud)
            cmds.attach_flash(esp)
            if erase:
                report("erase", 0, 1)
                cmds.erase_flash(esp)
                report("erase", 1, 1)
            logger.stage = "write"
            cmds.write_flash(esp, [(board.flash_offset, data)], flash_size="keep")
            # write_flash already compared MD5s; ask once more so the result can show it.
            report("verify", 0, 1)
            padded = data + b"\xff" * (-len(data) % 4)
            md5 = esp.flash_md5sum(board.flash_offset, len(padded))
            if md5 != hashlib.md5(padded).hexdigest():
                raise FlashError(
                    f"verify failed at {board.flash_offset:#x}: the flash MD5 {md5} differs "
                    "from the image's; retry with --erase, or lower the baud rate"
                )
            report("verify", 1, 1)
            cmds.reset_chip(esp, after)
        except EdgeladderError:
            raise
        except Exception as e:  # esptool raises FatalError, pyserial SerialException/OSError
            raise _translate(e, port, logger.lines) from e
        finally:
            if esp is not None:
                with contextlib.suppress(Exception):
                    esp._port.close()
    return FlashResult(
        port,
        board.name,
        chip,
        mac,
        board.flash_offset,
        len(data),
        md5,
        erase,
        time.monotonic() - started,
        logger.lines,
    )


def _translate(e: Exception, port: str, lines: list[str]) -> DeviceError:
    """One error for what esptool or pyserial raised: the port's, the bootloader's, or flash's."""
    found = open_error(port, e)
    if found is not None:
        return found
    msg = str(e)
    low = msg.lower()
    first = next((ln.strip() for ln in msg.splitlines() if ln.strip()), type(e).__name__)
    if "failed to connect" in low or "no serial data received" in low:
        return BoardNotAnsweringError(
            f"no ESP bootloader answers on {port}: hold BOOT, press and release EN, release "
            "BOOT, then retry (a virtual board must be running and in download mode)"
        )
    if "wrong chip argument" in low or ("image" in low and "not an" in low):
        return WrongChipError(f"{first}: use firmware and --board for the chip on {port}")
    return FlashError(f"flashing over {port} failed: {first}")


__all__ = [
    "BoardNotAnsweringError",
    "FirmwareError",
    "FlashError",
    "FlashResult",
    "PortError",
    "WrongChipError",
    "check_image",
    "chip_ids",
    "flash_firmware",
]


class _Capture:
    """An esptool/esp-pylib logger: progress bars go to a callback, text to a list."""

    def __init__(self, report: ProgressFn) -> None:
        self.report = report
        self.lines: list[str] = []
        self.stage = "write"

    def installed(self):
        from contextlib import contextmanager

        from esp_pylib.logger import EspLog, EspLogBase

        capture = self

        class Logger(EspLogBase):
            def print(self, *args: Any, **kwargs: Any) -> None:
                text = kwargs.get("sep", " ").join(str(a) for a in args).strip()
                if text:
                    capture.lines.append(text)

            def note(self, *args: Any) -> None:
                self.print("note:", *args)

            def hint(self, *args: Any) -> None:
                self.print("hint:", *args)

            def debug(self, *args: Any) -> None:
                pass

            def warn(self, *args: Any, suggestion: str | None = None) -> None:
                self.print("warning:", *args)

            def err(self, *args: Any, suggestion: str | None = None) -> None:
                self.print("error:", *args)

            def set_verbosity(self, mode: int | str) -> None:
                pass

            def stage(self, finish: bool = False) -> None:
                pass

            def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
                capture.report(capture.stage, cur_iter, total_iters)

        @contextmanager
        def manager():
            previous = EspLog.instance
            EspLog.instance = Logger()
            try:
                yield
            finally:
                EspLog.instance = previous

        return manager()
