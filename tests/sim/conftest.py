"""System tests on virtual boards: the real MicroPython unix port, the real mpremote.

The fixtures (sim_board, ...) come from the edgeladder_sim.plugin pytest plugin, which
the package registers through its pytest11 entry point. Boards made with ``firmware=True``
get this repository's digits task through ``edgeladder deploy``, as a real board would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sim_deploy_task(digits_build) -> tuple[Path, Path]:
    """What the plugin's ``firmware=True`` boards deploy: the digits task and its build."""
    return REPO / "models" / "digits", Path(digits_build.out)
