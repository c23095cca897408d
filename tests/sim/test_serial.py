"""The serial line's routing: ROM bootloader hand-over, reset lines, the CLI around it."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import tty

import pytest

from edgeladder_sim.board import BOOT_SETTLE_S, Board
from edgeladder_sim.bridge import PtyBridge


class FakeRom:
    """A stand-in ROM handler: records what it got and answers every chunk with 'ROM'."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.got = b""
        self.closed = False

    def feed(self, data: bytes) -> None:
        self.got += data
        self.board.emit(b"ROM")

    def close(self) -> None:
        self.closed = True


def _read_until(fd: int, pattern: bytes, timeout: float) -> bytes:
    data, end = b"", time.monotonic() + timeout
    while pattern not in data:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {pattern!r} within {timeout} s; got {data!r}")
        if select.select([fd], [], [], left)[0]:
            data += os.read(fd, 4096)
    return data


@pytest.fixture
def rom_board(tmp_path):
    roms: list[FakeRom] = []

    def factory(board):
        roms.append(FakeRom(board))
        return roms[-1]

    board = Board("esp32", tmp_path, rom_factory=factory)
    bridge = PtyBridge(board)
    fd = os.open(bridge.port, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    try:
        board.power_on()
        board.wait_booted(20)
        yield board, fd, roms
    finally:
        os.close(fd)
        bridge.close()
        board.close()


def test_slip_sync_hands_the_line_to_the_rom(rom_board):
    board, fd, roms = rom_board
    pid = board.pid
    sync = b"\xc0\x00\x08\x24\x00\x00\x00\x00\x00\x07\x07\x12\x20" + b"\x55" * 32 + b"\xc0"
    os.write(fd, sync[:2])  # split across reads on purpose
    time.sleep(0.1)
    os.write(fd, sync[2:])
    _read_until(fd, b"ROM", 5)
    assert board.mode == "bootloader"
    assert roms[0].got.startswith(b"\xc0\x00\x08")
    assert board.pid is None  # MicroPython is not running while the ROM owns the line
    board.reset()
    assert roms[0].closed and board.mode == "repl" and board.pid not in (None, pid)
    board.wait_booted(20)
    os.write(fd, b"\r\x01print(5 * 5)\x04")
    _read_until(fd, b"OK25\n\x04\x04>", 10)


def test_classic_reset_sequence_enters_the_bootloader(rom_board):
    board, _fd, _roms = rom_board
    # esptool's ClassicReset: IO0 high, EN low; then EN released and IO0 low; then IO0 high
    board.set_lines(dtr=False)
    board.set_lines(rts=True)
    assert board.mode == "off"
    board.set_lines(dtr=True)
    board.set_lines(rts=False)
    assert board.mode == "bootloader"
    board.set_lines(dtr=False)
    # esptool's hard reset: EN pulsed with IO0 high boots the firmware
    board.set_lines(rts=True)
    board.set_lines(rts=False)
    time.sleep(BOOT_SETTLE_S + 0.3)
    assert board.mode == "repl"
    board.wait_booted(20)


def test_sim_board_command_prints_the_port_first(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeladder_sim", "board", "--flash", str(tmp_path / "f.bin")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = proc.stdout.readline().strip()
        second = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/")
        assert second.startswith("rfc2217://") or "not available" in second
        console = subprocess.run(
            [sys.executable, "-m", "edgeladder.cli", "console", port, "--seconds", "1.5"],
            input="",
            capture_output=True,
            timeout=30,
        )
        assert console.returncode == 0, console.stderr
        from edgeladder_sim.plugin import mpremote_command

        out = subprocess.run(
            [*mpremote_command(), "connect", port, "exec", "print('via cli')"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.stdout == "via cli\n", out.stderr
    finally:
        proc.send_signal(2)  # Ctrl-C
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert (tmp_path / "f.bin").stat().st_size == 4 * 1024 * 1024


def test_console_on_a_missing_port_says_what_to_do():
    result = subprocess.run(
        [sys.executable, "-m", "edgeladder.cli", "console", "/dev/does-not-exist"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "serial port /dev/does-not-exist does not exist" in result.stderr  # the one port check


def test_console_streams_what_main_py_prints(sim_board_factory):
    sim = sim_board_factory(
        files={"main.py": b"import time\nwhile True:\n    print('beat')\n    time.sleep_ms(100)\n"}
    )
    result = subprocess.run(
        [sys.executable, "-m", "edgeladder.cli", "console", sim.port, "--seconds", "1.5"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"beat") >= 3


def test_sim_board_fixture_runs_the_firmware(sim_board):
    assert b"edgeladder ladder" in sim_board.board.output()
    out = sim_board.mpremote("exec", "import ladder; print(ladder.__version__)").stdout
    assert out.strip()


def test_esptool_reaches_the_rom_through_the_repl_port(sim_board_factory):
    """SYNC auto-detection hands the running board's pty to the ROM bootloader model."""
    esptool = os.path.join(os.path.dirname(sys.executable), "esptool")
    sim = sim_board_factory()
    sim.board.wait_booted(20)
    argv = [esptool, "--port", sim.port, "--before", "no-reset", "--after", "no-reset"]
    result = subprocess.run([*argv, "flash-id"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Detected flash size: 4MB" in result.stdout
    assert sim.board.mode == "bootloader"
    sim.board.reset()
    sim.board.wait_booted(20)
    assert sim.mpremote("exec", "print('back in MicroPython')").stdout == "back in MicroPython\n"


def test_the_board_side_markers_are_the_ones_the_vm_reads():
    # boot/*.py (MicroPython) print the markers that edgeladder_sim.vm strips and acts on
    from edgeladder_sim import vm
    from edgeladder_sim.flash import BOOT_DIR

    def spelled(marker: bytes) -> str:
        return marker.decode("latin-1").encode("unicode_escape").decode()

    bootstrap = (BOOT_DIR / "bootstrap.py").read_text()
    assert spelled(vm._UP) in bootstrap and spelled(vm._READY) in bootstrap
    assert spelled(vm._RESET) in (BOOT_DIR / "machine.py").read_text()
