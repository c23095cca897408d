"""Fixtures for tests that run code on the real MicroPython VM at a board's heap."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edgeladder.boards import registry as boards
from edgeladder.device.micropython import VMResult, run_micropython


@pytest.fixture(scope="session")
def esp32_heap() -> int:
    """The usable MicroPython heap of an ESP32 without PSRAM, from boards/esp32.toml."""
    return boards.get("esp32").heap_bytes


@pytest.fixture
def upy(esp32_heap: int) -> Callable[..., VMResult]:
    """``upy(code, **kw)`` runs ``code`` under micropython at the ESP32 heap and returns the
    :class:`VMResult`; it asserts nothing (call ``.check()`` for that)."""

    def run(code: str, **kwargs) -> VMResult:
        kwargs.setdefault("heap_bytes", esp32_heap)
        return run_micropython(code, **kwargs)

    return run
