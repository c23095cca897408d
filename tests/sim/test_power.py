"""Boot from flash, and power cuts at any instant: the filesystem mounts and the board boots."""

from __future__ import annotations

import subprocess
import time

import pytest

from edgeladder_sim.plugin import mpremote_command

MAIN = b"print('main.py says hi')\n"
BOOT = b"print('boot.py says hi')\n"

WRITER = """\
import os
i = 0
while True:
    with open('f%d.bin' % (i % 7), 'wb') as f:
        for _ in range(8):
            f.write(b'%d' % i * 400)
    try:
        os.remove('f%d.bin' % ((i + 3) % 7))
    except OSError:
        pass
    i += 1
"""


def test_board_boots_main_py_from_flash(sim_board_factory, tmp_path):
    sim = sim_board_factory()
    sim.board.wait_booted(20)
    (tmp_path / "main.py").write_bytes(MAIN)
    (tmp_path / "boot.py").write_bytes(BOOT)
    sim.mpremote("fs", "cp", str(tmp_path / "main.py"), ":main.py")
    sim.mpremote("fs", "cp", str(tmp_path / "boot.py"), ":boot.py")
    start = len(sim.board.output())
    sim.board.reset()
    end = sim.board.wait_output(b"main.py says hi", 20, start=start)
    tail = sim.board.output()[start:end]
    assert tail.index(b"boot.py says hi") < tail.index(b"main.py says hi")


def test_first_boot_formats_the_flash(sim_board_factory):
    sim = sim_board_factory()
    sim.board.wait_booted(20)
    assert b"Performing initial setup" in sim.board.output()
    assert sim.board.flash.listdir() == ["boot.py"]


@pytest.mark.parametrize("cut_after_s", [0.15, 0.4, 0.8])
def test_power_cut_mid_write_keeps_a_bootable_filesystem(sim_board_factory, cut_after_s):
    sim = sim_board_factory(files={"main.py": MAIN})
    sim.board.wait_booted(20)
    argv = [*mpremote_command(), "connect", sim.port, "exec", "--no-follow", WRITER]
    subprocess.run(argv, capture_output=True, timeout=60, check=True)
    time.sleep(cut_after_s)
    sim.board.power_off()  # SIGKILL mid-write: no flush, no unmount
    assert sim.board.flash.mountable()
    start = len(sim.board.output())
    sim.board.power_on()
    sim.board.wait_output(b"main.py says hi", 20, start=start)
    sim.board.wait_booted(20)
    names = sim.mpremote("exec", "import os; print(sorted(os.listdir()))").stdout
    assert "main.py" in names and "boot.py" in names
