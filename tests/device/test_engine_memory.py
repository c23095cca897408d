"""The engine allocates nothing in ``invoke()`` and fits the ESP32's heap (issue 3, item 5).

Each digits tier is compiled, loaded from a file by the real ``micropython`` binary at the
ESP32's usable heap, and invoked 1,000 times with a changing input: ``gc.mem_alloc()`` must be
the same before and after, and a second 1,000 calls under ``micropython.heap_lock()`` (where
any allocation raises ``MemoryError``) must all succeed. After loading, at least
``APP_ROOM`` bytes of heap must be left for the application.

The unix port is a 64-bit build: object headers and pointers are twice an ESP32's, so the
engine's own objects weigh more here than on a board; byte buffers (model file, arena)
weigh the same. The figures printed are therefore a slight overestimate for a board.
"""

from __future__ import annotations

import re
from pathlib import Path

import engine_harness as H
import pytest
from engine_harness import TIERS, digits_tflite  # noqa: F401  (a fixture)

from edgeladder.device.micropython import run_micropython

INVOKES = 1000
APP_ROOM = 16 * 1024  # heap an application needs beside the model: buffers, gate, telemetry

_SCRIPT = """\
import gc, micropython
gc.collect()
a0 = gc.mem_alloc()
from ladder import Model
gc.collect()
a1 = gc.mem_alloc()
m = Model.load({path!r})
gc.collect()
a2 = gc.mem_alloc()
print("engine_bytes", a1 - a0)
print("model_bytes", a2 - a1)
print("free_after_load", gc.mem_free())

def loop(m, inp, n):
    k = len(inp)
    for i in range(n):
        inp[i % k] = (i * 37) & 127  # a different input every call
        m.invoke()

inp = m.input.data
gc.collect()
before = gc.mem_alloc()
loop(m, inp, {n})
after = gc.mem_alloc()
print("alloc_before", before)
print("alloc_after", after)
gc.collect()
micropython.heap_lock()
try:
    loop(m, inp, {n})
    locked = 1
except MemoryError:
    locked = 0
micropython.heap_unlock()
print("heap_lock_ok", locked)
"""


def _figures(stdout: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^(\w+) (-?\d+)$", stdout, re.M)}


_FIGURES: dict[str, dict[str, int]] = {}


@pytest.fixture
def memory(digits_tflite, esp32_heap, tmp_path):  # noqa: F811
    """``memory(tier)``: the device figures, our arena and TFLite Micro's (once per tier)."""

    def get(tier: str) -> dict[str, int]:
        if tier not in _FIGURES:
            _FIGURES[tier] = _measure(tier, digits_tflite[tier], esp32_heap, tmp_path)
        return _FIGURES[tier]

    return get


def _measure(tier: str, tflite: bytes, heap: int, tmp: Path) -> dict[str, int]:
    from edgeladder.model.compiler import compile_model

    compiled = compile_model(tflite)
    path = tmp / f"digits_{tier}.bin"
    path.write_bytes(bytes(compiled.data))
    code = _SCRIPT.format(path=str(path), n=INVOKES)
    result = run_micropython(
        code, heap_bytes=heap, path=[H.shipped_firmware()], timeout=600
    ).check()
    f = _figures(result.stdout)
    tflm = H.tflm_arena(tflite)
    f.update(
        file_bytes=len(compiled.data),
        arena=int(compiled.arena_size),
        tflm_arena_total=tflm["total"],
        tflm_arena_head=tflm["head"],
    )
    print(
        f"\ndigits_{tier} at the ESP32 heap ({heap} bytes), engine as x64 .mpy:"
        f" model file {f['file_bytes']} B, arena {f['arena']} B"
        f" (TFLite Micro: {f['tflm_arena_total']} B total, {f['tflm_arena_head']} B planned"
        f" head), engine {f['engine_bytes']} B, model after load {f['model_bytes']} B,"
        f" free after load {f['free_after_load']} B,"
        f" mem_alloc {f['alloc_before']} -> {f['alloc_after']} over {INVOKES} invokes,"
        f" heap_lock {'ok' if f['heap_lock_ok'] else 'MemoryError'}"
    )
    return f


@pytest.mark.parametrize("tier", TIERS)
def test_invoke_allocates_nothing(tier, memory):
    f = memory(tier)
    assert f["alloc_after"] == f["alloc_before"], (
        f"digits_{tier}: gc.mem_alloc() went from {f['alloc_before']} to {f['alloc_after']}"
        f" over {INVOKES} invoke() calls"
    )


@pytest.mark.parametrize("tier", TIERS)
def test_invoke_runs_with_the_heap_locked(tier, memory):
    assert memory(tier)["heap_lock_ok"] == 1, (
        f"digits_{tier}: invoke() raised MemoryError under micropython.heap_lock()"
    )


def _board_tiers() -> list[str]:
    """Tiers whose recipe targets a device board: those must leave room for the app."""
    from edgeladder.boards import registry as boards
    from edgeladder.build.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "models" / "digits")
    return [t.name for t in recipe.tiers if t.board and boards.get(t.board).role == "device"]


def test_the_digits_recipe_has_a_board_tier():
    assert _board_tiers() == ["tiny"]


@pytest.mark.parametrize("tier", _board_tiers())
def test_board_tier_fits_with_room_left(tier, memory, esp32_heap):
    # Gateway and cloud tiers are loaded above too (bit-exactness, no allocation) but are
    # not meant to share an ESP32's heap with an application.
    f = memory(tier)
    assert f["free_after_load"] >= APP_ROOM, (
        f"digits_{tier}: {f['free_after_load']} bytes free after load, want >= {APP_ROOM}"
        f" (engine {f['engine_bytes']}, model + arena {f['model_bytes']}, heap {esp32_heap})"
    )
