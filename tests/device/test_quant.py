"""ladder.quant under MicroPython at the ESP32 heap, checked against the host's quantmath."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeladder.model.quantmath import ReadingParams, quantize_readings, reading_params

QUANT_PY = Path(__file__).resolve().parents[2] / "firmware" / "ladder" / "quant.py"
X_LIMIT = 1 << 28  # the board's documented bound on |reading - offset|
ESP32_SMALL_INT = 1 << 30  # an ESP32 keeps ints in [-2**30, 2**30) off the heap

# Reads one case per stdin line, answers one JSON list of int8 per line.
DEVICE_RUNNER = """
import sys, json
from array import array
from ladder import quantize_into
while True:
    line = sys.stdin.readline()
    if not line:
        break
    kind, to_bytearray, offset, m, shift, zp, vals = json.loads(line)
    src = bytearray(vals) if kind == "bytearray" else array(kind, vals)
    n = len(vals)
    dst = bytearray(n) if to_bytearray else array("b", bytes(n))
    quantize_into(src, dst, offset, m, shift, zp)
    print(json.dumps([v - 256 if v > 127 else v for v in dst] if to_bytearray else list(dst)))
"""

_KIND_RANGE = {"h": (-(1 << 15), (1 << 15) - 1), "H": (0, (1 << 16) - 1), "i": None}


def _readings(rng, kind: str, offset: int, n: int) -> list[int]:
    if kind == "bytearray":
        return rng.integers(0, 256, n).tolist()
    if kind == "i":
        span = int(rng.choice([1 << 8, 1 << 16, 1 << 24, X_LIMIT - 1]))
        return (offset + rng.integers(-span, span, n, endpoint=True)).tolist()
    lo, hi = _KIND_RANGE[kind]
    return rng.integers(lo, hi, n, endpoint=True).tolist()


def _cases() -> list[tuple[str, bool, ReadingParams, list[int]]]:
    rng = np.random.default_rng(20240601)
    cases = []
    # Realistic parameter sets from reading_params, scale ratios from 2**-36 to 2**12.
    for _ in range(300):
        kind = str(rng.choice(["h", "H", "i", "bytearray"]))
        offset = {"h": 0, "H": 2048, "bytearray": 128}.get(kind, int(rng.integers(-5000, 5000)))
        offset += int(rng.integers(-100, 100))
        ratio = 2.0 ** rng.uniform(-36, 12)
        q_scale = float(rng.uniform(0.001, 1))
        params = reading_params(ratio * q_scale, offset, q_scale, int(rng.integers(-128, 128)))
        cases.append((kind, bool(rng.integers(2)), params, _readings(rng, kind, offset, 24)))
    # Ties: multiplier 2**30 is exactly 0.5, so odd x lands on .5 before each rounding step.
    ties = list(range(-300, 301))
    for shift in range(-8, 3):
        for zp in (-128, -1, 0, 127):
            cases.append(("h", zp % 2 == 0, ReadingParams(0, 1 << 30, shift, zp), ties))
    # Extremes of every parameter and of the reading range.
    big = [0, 1, -1, 2, -2, X_LIMIT - 1, -(X_LIMIT - 1), X_LIMIT // 2, -(X_LIMIT // 2), 12345]
    big += [(1 << 14) - 1, 1 << 14, -(1 << 14), 511, 512, -512, -513, 255, 256, -257]
    for m in (0, 1 << 30, (1 << 30) + 1, (1 << 31) - 1, 0x5A5A5A5A, 0x7FFFC000):
        for shift in (-40, -31, -30, -29, -28, -27, -20, -14, -1, 0, 1, 2, 13, 19, 27, 28, 31):
            cases.append(("i", shift % 2 == 0, ReadingParams(0, m, shift, 0), big))
    for zp in (-128, 127):
        cases.append(("h", True, ReadingParams(-32768, (1 << 31) - 1, -8, zp), [-32768, 32767]))
    return cases


CASES = _cases()


def test_quantize_into_matches_host_bit_for_bit(upy):
    lines = [
        json.dumps([kind, to_ba, p.offset, p.multiplier, p.shift, p.zero_point, vals])
        for kind, to_ba, p, vals in CASES
    ]
    result = upy(DEVICE_RUNNER, stdin="\n".join(lines).encode() + b"\n").check()
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(got) == len(CASES)
    total = 0
    for (kind, _, params, vals), out in zip(CASES, got, strict=True):
        want = quantize_readings(np.array(vals, dtype=np.int64), params).tolist()
        assert out == want, (kind, params)
        total += len(vals)
    assert total > 10_000


def test_quantize_into_saturates_and_rounds_ties_like_tflite(upy):
    # 0.5 * x: SaturatingRoundingDoublingHighMul rounds halves up (-0.5 -> 0, 0.5 -> 1), and
    # 0.25 * x rounds twice (x=1: 0.25 -> 0.5 -> 1), both as TFLite's default build does.
    code = """
from array import array
from ladder import quantize_into
src = array("h", [-3, -2, -1, 0, 1, 2, 3, 1000, -1000])
dst = array("b", bytes(9))
quantize_into(src, dst, 0, 1 << 30, 0, 0)
print(list(dst))
quantize_into(src, dst, 0, 1 << 30, -1, 0)
print(list(dst))
"""
    out = upy(code).check().stdout.splitlines()
    assert out == ["[-1, -1, 0, 0, 1, 1, 2, 127, -128]", "[-1, -1, 0, 0, 1, 1, 1, 127, -128]"]


def test_top_k_matches_a_host_sort(upy):
    rng = np.random.default_rng(7)
    cases = []
    for _ in range(200):
        n = int(rng.integers(1, 40))
        # A narrow value range makes many ties.
        lo, hi = (-128, 127) if rng.integers(2) else (-3, 3)
        scores = rng.integers(lo, hi, n, endpoint=True).tolist()
        cases.append((scores, int(rng.integers(1, n + 1)), bool(rng.integers(2))))
    code = """
import sys, json
from array import array
from ladder import top_k_into
while True:
    line = sys.stdin.readline()
    if not line:
        break
    scores, k, as_bytearray = json.loads(line)
    s = bytearray(v & 0xFF for v in scores) if as_bytearray else array("b", scores)
    idx = array("H", bytes(2 * k))
    top_k_into(s, k, idx)
    print(json.dumps(list(idx)))
"""
    stdin = "\n".join(json.dumps(c) for c in cases).encode() + b"\n"
    got = [json.loads(line) for line in upy(code, stdin=stdin).check().stdout.splitlines()]
    for (scores, k, _), out in zip(cases, got, strict=True):
        want = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
        assert out == want, (scores, k)


def test_no_allocation_across_1000_calls(upy):
    # heap_lock() makes any allocation raise MemoryError, so it catches even garbage that a
    # collection would hide. mem_alloc() is also read with no collection in between; it counts
    # whole GC blocks (16 bytes on an ESP32, 32 on the 64-bit unix port), so it is a coarser check.
    code = """
import gc, micropython
from array import array
from ladder import quantize_into, top_k_into

def run():
    src = array("h", range(-600, 600, 20))
    dst = array("b", bytes(len(src)))
    dstb = bytearray(len(src))
    idx = array("H", bytes(2 * 5))
    gc.collect()
    before = gc.mem_alloc()
    micropython.heap_lock()
    try:
        for i in range(1000):
            quantize_into(src, dst, 7, 0x5A5A5A5A, -3, -5)
            quantize_into(src, dstb, -7, 1 << 30, 2, 5)
            top_k_into(dst, 5, idx)
    finally:
        micropython.heap_unlock()
    after = gc.mem_alloc()
    print(before, after)

run()
"""
    before, after = upy(code).check().stdout.split()
    assert before == after


def test_wrong_lengths_and_parameters_raise_value_error(upy):
    code = """
from array import array
from ladder import quantize_into, top_k_into
def attempt(f, *args):
    try:
        f(*args)
        print("no error")
    except ValueError as e:
        print("ValueError:", e)
attempt(quantize_into, array("h", [1, 2, 3, 4]), bytearray(3), 0, 1 << 30, 0, 0)
attempt(quantize_into, array("h", [1]), bytearray(1), 0, 12345, 0, 0)
attempt(quantize_into, array("h", [1]), bytearray(1), 0, 1 << 30, 0, 200)
attempt(quantize_into, array("i", [1 << 29]), bytearray(1), 0, 1 << 30, -3, 0)
attempt(top_k_into, array("b", [1, 2]), 3, bytearray(3))
attempt(top_k_into, array("b", [1, 2]), 2, bytearray(1))
"""
    out = upy(code).check().stdout.splitlines()
    assert out == [
        "ValueError: dst holds 3 values but src has 4; make them equal",
        "ValueError: multiplier must be 0 or a Q31 int in [2**30, 2**31)",
        "ValueError: zero_point 200 is outside int8",
        "ValueError: reading 536870912 is 2**28 or more from offset 0",
        "ValueError: k must be in 1..2, got 3",
        "ValueError: idx_out holds 1 values, needs k=2",
    ]


def _load_quant_under_cpython():
    spec = importlib.util.spec_from_file_location("ladder_quant_on_cpython", QUANT_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_int_stays_an_esp32_small_int():
    """The unix port cannot show it (its small ints have 63 bits), so trace the same file under
    CPython: after every line, each int local must fit an ESP32 small int. Expression temporaries
    are covered by the comments in quant.py: their terms are non-negative, so partial sums never
    exceed the local they end in. ``multiplier`` is the caller's object and is only compared and
    packed, never computed with."""
    from array import array

    quant = _load_quant_under_cpython()
    code_objects = {quant.quantize_into.__code__, quant.top_k_into.__code__}
    worst = {}

    def check_locals(frame):
        for name, value in frame.f_locals.items():
            if type(value) is int and name != "multiplier":
                worst[name] = max(worst.get(name, 0), abs(value) + (value >= 0))
                assert -ESP32_SMALL_INT <= value < ESP32_SMALL_INT, (name, value)

    def tracer(frame, event, arg):
        if frame.f_code not in code_objects:
            return None

        def local(frame, event, arg):
            if event in ("line", "return"):
                check_locals(frame)
            return local

        return local

    sys.settrace(tracer)
    try:
        # The largest multipliers at every shift bound every intermediate; a few others besides.
        largest = [c for c in CASES if c[2].multiplier >= 0x7FFFC000]
        for kind, _, params, vals in CASES[:300:30] + largest:
            src = bytearray(vals) if kind == "bytearray" else array(kind, vals)
            dst = array("b", bytes(len(vals)))
            quant.quantize_into(src, dst, *params)
            assert dst.tolist() == quantize_readings(np.array(vals), params).tolist()
        scores = array("b", [127, -128, 0, 127, -128] * 20)
        quant.top_k_into(scores, 10, array("i", bytes(40)))
    finally:
        sys.settrace(None)
    assert worst["c"] > 1 << 27  # the extremes really were exercised


@pytest.mark.parametrize("kind", ["h", "i"])
def test_quantize_into_under_cpython_too(kind):
    from array import array

    quant = _load_quant_under_cpython()
    params = reading_params(0.01, 100, 0.05, -3)
    vals = list(range(-700, 900, 7))
    dst = bytearray(len(vals))
    quant.quantize_into(array(kind, vals), dst, *params)
    got = [v - 256 if v > 127 else v for v in dst]
    assert got == quantize_readings(np.array(vals), params).tolist()
