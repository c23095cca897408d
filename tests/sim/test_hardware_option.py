"""The ``hardware`` marker means something: skipped, and said, without --port; run with one.

The hardware tests (tests/hardware/) run here against a virtual board's port, the one that
``edgeladder sim board`` prints on its first line, exactly as they would against a real board.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HARDWARE_TESTS = REPO / "tests" / "hardware"


def _pytest(*args: str, build: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGELADDER_TEST_BUILD": str(build)}
    argv = [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


def test_without_a_port_the_hardware_tests_are_skipped_and_say_why(digits_build):
    r = _pytest(str(HARDWARE_TESTS), build=digits_build.out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 skipped" in r.stdout and "0 passed" not in r.stdout
    assert "needs a board on a serial port; run with --port PORT" in r.stdout  # the -rs line
    assert "no --port, tests marked hardware are skipped" in r.stdout  # the header


def test_with_a_virtual_boards_port_the_hardware_tests_run(digits_build, sim_board_cli):
    port = sim_board_cli()
    r = _pytest(str(HARDWARE_TESTS), "--port", port, "--board", "esp32", build=digits_build.out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout and "skipped" not in r.stdout
    assert f"board esp32 on {port}" in r.stdout
