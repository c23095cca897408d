"""A whole virtual board over RFC2217: the real esptool resets it into the ROM and back.

Test (1) runs the unmodified esptool with its default ``--before default-reset`` (DTR/RTS
into the bootloader) and ``--after hard-reset`` against a running board; no
``?ign_set_control``, so every line change is answered by the server. Then MicroPython runs
again and mpremote talks to it over the pty. Test (2) starts ``edgeladder sim board`` and
connects to both of the ports it prints. RFC2217 with esptool is slow (pyserial renegotiates
the port with fixed sleeps): flash-id takes about 20 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from edgeladder_sim.bridge import VirtualBoard
from edgeladder_sim.plugin import mpremote_command

BIN = Path(sys.executable).parent
ESPTOOL = BIN / "esptool"
EDGELADDER = BIN / "edgeladder"

# pyserial's rfc2217 client still calls Thread.setDaemon / setName.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:serial.rfc2217")


def wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def vboard(tmp_path):
    vb = VirtualBoard("esp32", tmp_path, rfc2217=True)
    vb.board.power_on()
    vb.board.wait_booted(20.0, ready=False)
    yield vb
    vb.close()


def test_esptool_auto_resets_into_the_bootloader_and_back(vboard):
    url = vboard.rfc2217_url
    assert url is not None and url.startswith("rfc2217://127.0.0.1:") and "?" not in url
    assert vboard.board.mode == "repl"
    boots = vboard.board.boots
    board, set_lines = vboard.board, vboard.board.set_lines
    changes: list[tuple[bool | None, bool | None, str]] = []

    def spy(*, dtr=None, rts=None):  # what the server does with SET_CONTROL
        set_lines(dtr=dtr, rts=rts)
        changes.append((dtr, rts, board.mode))

    board.set_lines = spy
    p = subprocess.run(
        [str(ESPTOOL), "--port", url, "--after", "hard-reset", "flash-id"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd="/",
        check=False,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "Detecting chip type... ESP32" in out and "Detected flash size: 4MB" in out
    assert "Hard resetting via RTS pin..." in out
    # A line change (not a SYNC seen by the REPL) put the chip into download mode, and the ROM's
    # boot log went out on the line.
    modes = [mode for _, _, mode in changes]
    assert "bootloader" in modes and modes[modes.index("bootloader") - 1] != "bootloader"
    assert b"waiting for download" in board.output()
    # The hard reset boots MicroPython again once EN has settled.
    assert wait_for(lambda: vboard.board.mode == "repl" and vboard.board.boots > boots, 5.0)
    vboard.board.wait_booted(20.0, ready=False)
    r = subprocess.run(
        [*mpremote_command(), "connect", vboard.port, "exec", "print(6 * 7)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0 and r.stdout.strip() == "42", r.stdout + r.stderr


def test_sim_board_prints_pty_and_rfc2217_url(tmp_path):
    proc = subprocess.Popen(
        [str(EDGELADDER), "sim", "board", "--flash", str(tmp_path / "flash.bin")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        port = proc.stdout.readline().strip()
        url = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/"), (port, url)
        assert url.startswith("rfc2217://127.0.0.1:"), (port, url)
        # The pty: the REPL answers.
        r = subprocess.run(
            [*mpremote_command(), "connect", port, "exec", "print('pty ok')"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0 and r.stdout.strip() == "pty ok", r.stdout + r.stderr
        # The RFC2217 port: the same REPL, through pyserial's client (lines left alone).
        with serial.serial_for_url(url, timeout=0.2) as s:
            s.write(b"\r\x03")
            s.write(b"print(6 * 7)\r")
            got, end = b"", time.monotonic() + 10
            while b"42\n" not in got.replace(b"\r", b"") and time.monotonic() < end:
                got += s.read(256)
            assert b"42" in got, got
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the board stops and cleans up
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
