"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits_build():
    """The real ``models/digits`` build (the must-show figures come from it).

    Built into ``build/digits`` — the same place ``make demo`` uses — so that a second test
    run reuses it through the build cache; ``EDGELADDER_TEST_BUILD`` moves it elsewhere.
    A clean checkout (CI) always trains it for real, which takes a few minutes.
    """
    from edgeladder.build.pipeline import build
    from edgeladder.build.recipe import load_recipe

    out = Path(os.environ.get("EDGELADDER_TEST_BUILD", REPO / "build" / "digits"))
    return build(load_recipe(REPO / "models" / "digits"), out)


@pytest.fixture
def sim_board_cli():
    """Start ``edgeladder sim board`` as a user would; returns the port it prints first.

    ``start(edgeladder=[...], env=..., cwd=...)`` runs the given command (default: this
    interpreter's ``edgeladder``); every board started is stopped with Ctrl-C at teardown.
    """
    import signal
    import subprocess
    import sys

    procs: list[subprocess.Popen] = []

    def start(edgeladder=(sys.executable, "-m", "edgeladder.cli"), env=None, cwd=REPO) -> str:
        proc = subprocess.Popen(
            [*map(str, edgeladder), "sim", "board", "--board", "esp32"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd, env=env,
        )  # fmt: skip
        procs.append(proc)
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/"), f"`edgeladder sim board` printed {port!r}"
        return port

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGINT)  # the command's own way to stop: Ctrl-C
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
