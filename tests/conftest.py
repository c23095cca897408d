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
