"""The unmodified esptool against the virtual ESP32 ROM bootloader, over a pty and RFC2217.

Each test serves a fresh 4 MB flash file (:class:`edgeladder_sim.flash.FlashImage`, the one
flash store) through :class:`edgeladder_sim.rom.RomBootloader`
and runs the real ``esptool`` executable (or ``edgeladder flash``) as a subprocess with a
timeout; servers stop in teardown. Byte-exact checks read the flash file itself.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edgeladder.boards.registry import get as get_board
from edgeladder_sim import chips, slip
from edgeladder_sim.autoreset import AutoResetCircuit
from edgeladder_sim.flash import FlashImage
from edgeladder_sim.image import boot_check, boot_check_file, build_image, parse_image
from edgeladder_sim.rom import RomBootloader, RomError
from edgeladder_sim.romserver import PtyRomServer, Rfc2217RomServer

BIN = Path(sys.executable).parent
ESPTOOL = BIN / "esptool"
EDGELADDER = BIN / "edgeladder"
FLASH_BYTES = 4 << 20
OFFSET = get_board("esp32").flash_offset  # 0x1000


def test_esptool_is_installed():
    # A base dependency: without it every test below would fail for the wrong reason.
    assert ESPTOOL.exists(), "esptool is missing from the venv; run `make test` to set it up"


def app_image(chip: str = "esp32", seed: int = 1) -> bytes:
    """A valid app image: one compressible and one incompressible segment."""
    noise = hashlib.sha256(str(seed).encode()).digest() * 200
    return build_image([(0x3FFB0000, noise), (0x40080000, bytes(range(256)) * 64)], chip=chip)


class Rig:
    """A flash file, its ROM, and a pty and an RFC2217 server sharing them."""

    def __init__(self, tmp: Path) -> None:
        self.flash_path = tmp / "flash.bin"
        self.flash = FlashImage(self.flash_path, FLASH_BYTES)
        self.rom = RomBootloader(self.flash, "esp32", boot_offset=OFFSET)
        lock = threading.Lock()
        self.pty = PtyRomServer(self.rom, lock).start()
        self.net = Rfc2217RomServer(self.rom, lock=lock).start()

    def flash_bytes(self, offset: int = 0, n: int = FLASH_BYTES) -> bytes:
        return self.flash_path.read_bytes()[offset : offset + n]

    def close(self) -> None:
        self.net.stop()
        self.pty.stop()
        self.flash.close()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def esptool(*args: str, port: str, reset: bool = False, timeout: float = 120) -> str:
    cmd = [str(ESPTOOL), "--port", port]
    if not reset:
        cmd += ["--before", "no-reset", "--after", "no-reset"]
    p = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd="/", check=False
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    return out


# -- protocol unit tests (no esptool) ---------------------------------------------------------


def command(op: int, data: bytes = b"", chk: int = 0) -> bytes:
    return slip.encode(struct.pack("<BBHI", 0, op, len(data), chk) + data)


def responses(rom: RomBootloader, frame: bytes) -> list[bytes]:
    return slip.Decoder().feed(rom.feed(frame))


def test_rom_sync_read_reg_and_unsupported_command(tmp_path):
    rom = RomBootloader(FlashImage(tmp_path / "f.bin", FLASH_BYTES), "esp32")
    sync = responses(rom, command(0x08, b"\x07\x07\x12\x20" + b"\x55" * 32))
    # Eight answers, value 0x55552007, 4 status bytes: what an ESP32 ROM sends.
    assert sync == [bytes.fromhex("010804000720555500000000")] * 8
    (magic,) = responses(rom, command(0x0A, struct.pack("<I", 0x40001000)))
    assert magic == bytes.fromhex("010a0400831df00000000000")
    # GET_SECURITY_INFO is not in the ESP32 ROM: status 1, reason 5 ("invalid message").
    (sec,) = responses(rom, command(0x14))
    assert sec[:4] == bytes.fromhex("01140400") and sec[8:] == bytes.fromhex("01050000")


def test_slip_escapes_round_trip():
    payload = bytes([0xC0, 0xDB, 1, 0xC0, 0xDB, 0xDC])
    assert slip.Decoder().feed(b"noise" + slip.encode(payload) + slip.encode(b"x")) == [
        payload,
        b"x",
    ]


def test_auto_reset_circuit_classic_tight_and_hard_reset():
    now = [0.0]
    c = AutoResetCircuit(settle=0.25, clock=lambda: now[0])
    # ClassicReset: IO0 high / EN low; then DTR on (EN rises), RTS off (IO0 low while settling).
    assert c.set(dtr=False) is None and c.set(rts=True) is None
    assert c.set(dtr=True) is None
    assert c.set(rts=False) == "download"
    assert c.set(dtr=False) is None
    # UnixTightReset: both lines change at once.
    c.set(dtr=True, rts=True)
    c.set(dtr=False, rts=False)
    c.set(dtr=False, rts=True)
    assert c.set(dtr=True, rts=False) == "download"
    c.set(dtr=False, rts=False)
    # HardReset: RTS pulse with DTR off; boots the flash once EN has settled.
    c.set(rts=True)
    c.set(rts=False)
    assert c.poll() is None
    now[0] += 0.3
    assert c.poll() == "firmware"


def test_image_check_refuses_other_chip_and_wrong_offset(tmp_path):
    flash = FlashImage(tmp_path / "f.bin", FLASH_BYTES)
    rep = boot_check(flash.read, "esp32", OFFSET)
    assert not rep.ok and "no firmware at 0x1000" in rep.message
    flash.write(0x10000, app_image())
    rep = boot_check(flash.read, "esp32", OFFSET)
    assert not rep.ok and "wrong offset" in rep.message and "0x10000" in rep.message
    flash.write(OFFSET, app_image("esp32s3"))
    rep = boot_check_file(flash.path, "esp32", OFFSET)
    assert not rep.ok and "built for esp32s3, not esp32" in rep.message
    assert parse_image(app_image("esp32s3")).chip_id == chips.get("esp32s3").IMAGE_CHIP_ID
    assert parse_image(app_image("esp32s3")).chip == "esp32s3"


def test_chip_registry_knows_which_roms_it_models(tmp_path):
    # Every chip's facts are data in one registry; only the ESP32's ROM is modelled.
    assert {c.NAME for c in chips.CHIPS.values() if c.ROM} == {"esp32"}
    assert chips.get("esp32").BOOTLOADER_OFFSET == OFFSET
    assert chips.by_image_id(chips.get("esp32c3").IMAGE_CHIP_ID).NAME == "esp32c3"
    assert chips.by_image_id(0xFFFF) is None
    flash = FlashImage(tmp_path / "f.bin", FLASH_BYTES)
    with pytest.raises(RomError, match="no ROM model for chip 'esp32s3'; known: esp32"):
        RomBootloader(flash, "esp32s3")
    with pytest.raises(RomError, match="unknown chip 'z80'"):
        RomBootloader(flash, "z80")


# -- the real esptool over a pty --------------------------------------------------------------


def test_flash_id_over_pty(rig):
    out = esptool("--chip", "esp32", "flash-id", port=rig.pty.path)
    assert "Chip type:          ESP32-D0WD-V3 (revision v3.0)" in out
    mac = ":".join(f"{b:02x}" for b in rig.rom.mac)
    assert f"MAC:                {mac}" in out
    assert "Stub flasher running." in out
    assert "Manufacturer: ef" in out and "Device: 4016" in out
    assert "Detected flash size: 4MB" in out


def test_chip_auto_detect_over_pty(rig):
    out = esptool("--chip", "auto", "--no-stub", "flash-id", port=rig.pty.path)
    assert "Detecting chip type... ESP32" in out
    assert "Detected flash size: 4MB" in out


@pytest.mark.parametrize("stub", [True, False], ids=["stub", "no-stub"])
def test_write_verify_read_round_trip(rig, tmp_path, stub):
    image = app_image()
    (tmp_path / "app.bin").write_bytes(image)
    flags = [] if stub else ["--no-stub"]

    def at_offset(chip: str, command: str, *args: str) -> str:
        return esptool("--chip", chip, *flags, command, f"{OFFSET:#x}", *args, port=rig.pty.path)

    out = at_offset("esp32", "write-flash", str(tmp_path / "app.bin"))
    assert "Hash of data verified." in out
    assert rig.flash_bytes(OFFSET, len(image)) == image
    assert rig.flash_bytes(0, OFFSET) == b"\xff" * OFFSET  # nothing before the offset
    out = at_offset("auto", "verify-flash", str(tmp_path / "app.bin"))
    assert "Verification successful (digest matched)." in out
    back = tmp_path / "back.bin"
    n = len(image) if stub else 1024  # the ROM reads 64 bytes per command: keep it short
    at_offset("esp32", "read-flash", str(n), str(back))
    assert back.read_bytes() == image[:n]
    assert rig.rom.mode == "download"  # --after no-reset: back in the ROM loader


def test_erase_flash(rig):
    rig.flash.write(0x200000, b"littlefs data")
    out = esptool("--chip", "esp32", "erase-flash", port=rig.pty.path)
    assert "Flash memory erased successfully" in out
    assert rig.flash_bytes() == b"\xff" * FLASH_BYTES


def write_flash(rig: Rig, image: Path, *flags: str, offset: int = OFFSET) -> str:
    """``esptool --chip esp32 write-flash [flags] OFFSET IMAGE`` over the rig's pty."""
    args = ("--chip", "esp32", "write-flash", *flags, f"{offset:#x}", str(image))
    return esptool(*args, port=rig.pty.path)


def test_boot_refuses_image_for_another_chip(rig, tmp_path):
    # esptool itself refuses a foreign image at the bootloader offset unless forced.
    (tmp_path / "s3.bin").write_bytes(app_image("esp32s3"))
    write_flash(rig, tmp_path / "s3.bin", "--force")
    log = rig.rom.reset(download=False)
    assert rig.rom.mode == "halted"
    assert b"built for esp32s3, not esp32" in log


def test_boot_refuses_image_at_wrong_offset(rig, tmp_path):
    (tmp_path / "app.bin").write_bytes(app_image())
    write_flash(rig, tmp_path / "app.bin", offset=0x10000)
    log = rig.rom.reset(download=False)
    assert rig.rom.mode == "halted"
    assert b"wrong offset, flash it at 0x1000" in log
    rig.pty.reset(download=True)  # hold BOOT, press EN: the banner goes out on the pty
    write_flash(rig, tmp_path / "app.bin")
    log = rig.rom.reset(download=False)
    assert rig.rom.mode == "firmware" and b"entry 0x3ffb0000" in log


# -- RFC2217 with esptool's default reset sequences --------------------------------------------


def test_flash_id_over_rfc2217_with_dtr_rts_reset(rig, tmp_path):
    rig.rom.reset(download=False)  # running firmware (halted: the flash is blank)
    (tmp_path / "app.bin").write_bytes(app_image())
    rig.flash.write(OFFSET, app_image())
    out = esptool("flash-id", port=rig.net.url, reset=True, timeout=180)
    assert "Detecting chip type... ESP32" in out and "Detected flash size: 4MB" in out
    assert "Hard resetting via RTS pin..." in out
    # The hard reset boots the image once EN has settled.
    for _ in range(40):
        if rig.rom.mode == "firmware":
            break
        threading.Event().wait(0.05)
    assert rig.rom.mode == "firmware" and rig.rom.boot_report.ok


# -- edgeladder flash ---------------------------------------------------------------------------


def edgeladder(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EDGELADDER), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_edgeladder_flash_over_pty(rig, tmp_path):
    fw = tmp_path / "micropython.bin"
    fw.write_bytes(app_image(seed=7))
    p = edgeladder(
        "flash", "--board", "esp32", "--port", rig.pty.path, "--firmware", str(fw), "--erase"
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "verified" in p.stdout and "after a full erase" in p.stdout
    assert rig.flash_bytes(OFFSET, len(fw.read_bytes())) == fw.read_bytes()


def test_edgeladder_flash_over_rfc2217_boots_the_image(rig, tmp_path):
    fw = tmp_path / "micropython.bin"
    fw.write_bytes(app_image(seed=8))
    url = rig.net.url.split("?")[0]  # the server answers SET_CONTROL: no need to ignore it
    p = edgeladder("flash", "--board", "esp32", "--port", url, "--firmware", str(fw))
    assert p.returncode == 0, p.stdout + p.stderr
    assert rig.flash_bytes(OFFSET, len(fw.read_bytes())) == fw.read_bytes()
    for _ in range(40):
        if rig.rom.mode == "firmware":
            break
        threading.Event().wait(0.05)
    assert rig.rom.mode == "firmware"


def test_edgeladder_flash_errors_are_one_clear_line(rig, tmp_path):
    fw = tmp_path / "micropython.bin"
    fw.write_bytes(app_image())
    s3 = tmp_path / "s3.bin"
    s3.write_bytes(app_image("esp32s3"))

    p = edgeladder("flash", "--port", "/dev/ttyNOPE9", "--firmware", str(fw))
    assert p.returncode == 1 and "does not exist" in p.stderr and "edgeladder sim board" in p.stderr

    p = edgeladder("flash", "--port", rig.pty.path, "--firmware", str(s3))
    assert p.returncode == 1 and "built for esp32s3, but the board's chip is esp32" in p.stderr

    p = edgeladder("flash", "--port", rig.pty.path, "--firmware", str(tmp_path / "missing.bin"))
    assert p.returncode == 1 and "missing.bin" in p.stderr

    # Another program holds the port (pyserial's exclusive lock is flock).
    fd = os.open(rig.pty.path, os.O_RDWR | os.O_NOCTTY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        p = edgeladder("flash", "--port", rig.pty.path, "--firmware", str(fw))
    finally:
        os.close(fd)
    assert p.returncode == 1 and "is busy" in p.stderr

    # Nothing answers: the chip runs (refused) firmware and the pty has no reset lines.
    rig.rom.reset(download=False)
    p = edgeladder("flash", "--port", rig.pty.path, "--firmware", str(fw), timeout=240)
    assert p.returncode == 1 and "no ESP bootloader answers" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
