"""The gate (firmware/ladder/gate.py): integer confidence, identical on the board and the host.

A threshold chosen by ``edgeladder calibrate`` on the host means the same on a board only if
``confidence()`` gives the same integers under both runtimes: checked on 2,000 random logit
vectors per measure under micropython (ESP32 heap) and CPython. Then: the -p*log2(p) table,
cases a person can check by hand, monotonicity, closeness to the float definitions, no
allocation per call, no float anywhere, and small ints on a 32-bit board.
"""

from __future__ import annotations

import ast
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from edgeladder.device.micropython import FIRMWARE_DIR
from edgeladder.policy.config import exp_lut
from ladder import gate

N_VECTORS = 2000
GATE_PY = FIRMWARE_DIR / "ladder" / "gate.py"

# Logit scales and temperatures of the luts under test (the digits tiers' logit scales are
# around 0.05..0.3; temperatures from calibration around 0.5..3).
LUT_PARAMS = [(0.05, 1.0), (0.1, 0.7), (0.17, 1.3), (0.3, 2.5), (0.02, 0.5), (0.5, 1.0)]


def _vectors(rng: np.random.Generator) -> list[tuple[int, int, np.ndarray]]:
    """(lut index, class count, int8 logits): counts 2..16, uniform and peaked vectors."""
    out = []
    for i in range(N_VECTORS):
        n = int(rng.integers(2, 17))
        if i % 3 == 0:
            lg = rng.integers(-128, 128, n)
        elif i % 3 == 1:  # a few close contenders: margins near 0, entropy mid-range
            lg = np.clip(rng.normal(0, 6, n).round() + rng.integers(-40, 40), -128, 127)
        else:  # one clear winner
            lg = rng.integers(-128, 0, n)
            lg[rng.integers(n)] = rng.integers(40, 128)
        out.append((i % len(LUT_PARAMS), n, lg.astype(np.int8)))
    return out


_VM_SCRIPT = """\
from array import array
from ladder import gate
luts = []
with open({luts!r}, "rb") as f:
    raw = f.read()
for j in range(len(raw) // 512):
    luts.append([raw[512 * j + 2 * d] | raw[512 * j + 2 * d + 1] << 8 for d in range(256)])
raw = None
logits = array("b", bytearray(16))
res = array("i", bytearray(12))
with open({cases!r}, "rb") as fi, open({out!r}, "wb") as fo:
    rec = bytearray(18)
    while fi.readinto(rec) == 18:
        lut = luts[rec[0]]
        n = rec[1]
        for i in range(16):
            v = rec[2 + i]
            logits[i] = v - 256 if v > 127 else v
        for m in range(3):
            res[m] = gate.confidence(m, logits, n, lut)
        fo.write(res)
"""


def test_confidence_is_identical_under_micropython_and_cpython(upy, tmp_path):
    rng = np.random.default_rng(5)
    cases = _vectors(rng)
    luts = [exp_lut(s, t) for s, t in LUT_PARAMS]
    (tmp_path / "luts.bin").write_bytes(b"".join(struct.pack("<256H", *lut) for lut in luts))
    with open(tmp_path / "cases.bin", "wb") as f:
        for k, n, lg in cases:
            pad = np.zeros(16, np.int8)
            pad[:n] = lg
            f.write(bytes([k, n]) + pad.tobytes())
    upy(
        _VM_SCRIPT.format(
            luts=str(tmp_path / "luts.bin"),
            cases=str(tmp_path / "cases.bin"),
            out=str(tmp_path / "out.bin"),
        ),
        timeout=120,
    ).check()
    got = np.frombuffer((tmp_path / "out.bin").read_bytes(), "<i4").reshape(-1, 3)
    want = np.array(
        [[gate.confidence(m, lg.tolist(), n, luts[k]) for m in range(3)] for k, n, lg in cases]
    )
    assert got.shape == (N_VECTORS, 3)
    bad = np.nonzero((got != want).any(axis=1))[0]
    assert not len(bad), f"{len(bad)} differ, first #{bad[0]}: {got[bad[0]]} vs {want[bad[0]]}"
    # not vacuous: every measure spreads over its range
    for m in range(3):
        assert want[:, m].min() <= 6554 and want[:, m].max() == gate.ONE, gate.MEASURES[m]


def test_nlog_table_is_minus_p_log2_p_in_q12():
    table = struct.unpack("<257H", gate._NLOG)
    for k in range(257):
        p = k / 256
        want = 0 if k in (0, 256) else round(-p * math.log2(p) * 4096)
        assert table[k] == want, f"entry {k}"


@pytest.mark.parametrize("n", [2, 3, 10, 16])
def test_uniform_logits(n):
    lut = exp_lut(0.1, 1.0)
    for v in (-128, 0, 57, 127):
        lg = [v] * n
        assert abs(gate.confidence(gate.MAX, lg, n, lut) - gate.ONE / n) <= 2
        assert gate.confidence(gate.MARGIN, lg, n, lut) == 0
        assert gate.confidence(gate.ENTROPY, lg, n, lut) == 0


def test_one_dominant_logit_is_full_confidence():
    lut = exp_lut(0.1, 1.0)  # lut[255] = round(16384 * exp(-25.5)) = 0
    assert lut[255] == 0
    for top in range(10):
        lg = [-128] * 10
        lg[top] = 127
        for m in range(3):
            assert gate.confidence(m, lg, 10, lut) == gate.ONE, (gate.MEASURES[m], top)


def test_two_tied_winners_have_no_margin():
    lut = exp_lut(0.1, 1.0)
    lg = [-128] * 10
    lg[2] = lg[7] = 100
    assert abs(gate.confidence(gate.MAX, lg, 10, lut) - gate.ONE // 2) <= 2
    assert gate.confidence(gate.MARGIN, lg, 10, lut) == 0
    # H = 1 bit of log2(10) bits: 1 - 1/3.32 = 0.699
    assert (
        abs(gate.confidence(gate.ENTROPY, lg, 10, lut) / gate.ONE - (1 - 1 / math.log2(10))) < 0.01
    )


def test_raising_the_top_logit_never_lowers_max_or_margin():
    rng = np.random.default_rng(11)
    lut = exp_lut(0.1, 1.0)
    for _ in range(200):
        lg = rng.integers(-128, 100, 10)
        t = int(np.argmax(lg))
        prev = [-1, -1]
        for v in range(int(lg[t]), 128):
            lg[t] = v
            cur = [gate.confidence(m, lg.tolist(), 10, lut) for m in (gate.MAX, gate.MARGIN)]
            assert cur[0] >= prev[0] and cur[1] >= prev[1], (lg.tolist(), cur, prev)
            prev = cur


def test_sharper_temperature_raises_every_measure():
    """Lower temperature = sharper softmax: max and margin never drop; entropy-confidence drops
    at most by the table's rounding (p is looked up at k/256)."""
    rng = np.random.default_rng(12)
    luts = [exp_lut(0.1, t) for t in np.geomspace(20, 0.01, 30)]
    slack = {gate.MAX: 0, gate.MARGIN: 0, gate.ENTROPY: gate.ONE // 200}
    for _ in range(150):
        lg = rng.integers(-128, 127, 10)
        lg[int(np.argmax(lg))] += 1  # one top logit, so that the limit is max = 1
        lg = lg.tolist()
        prev = None
        for lut in luts:
            cur = [gate.confidence(m, lg, 10, lut) for m in range(3)]
            if prev is not None:
                for m in range(3):
                    assert cur[m] >= prev[m] - slack[m], (gate.MEASURES[m], lg, prev, cur)
            prev = cur
        assert prev[gate.MAX] > 0.99 * gate.ONE  # it did sharpen all the way


def test_close_to_the_float_definitions():
    rng = np.random.default_rng(13)
    for s, t in LUT_PARAMS:
        lut = exp_lut(s, t)
        for _ in range(100):
            lg = rng.integers(-128, 128, 10)
            e = np.array([lut[int(lg.max() - v)] for v in lg], float)
            p = np.sort(e / e.sum())[::-1]
            nz = p[p > 0]
            h = float(-(nz * np.log2(nz)).sum())
            got = [gate.confidence(m, lg.tolist(), 10, lut) / gate.ONE for m in range(3)]
            assert abs(got[0] - p[0]) < 1e-4
            assert abs(got[1] - (p[0] - p[1])) < 1e-4
            assert abs(got[2] - (1 - h / math.log2(10))) < 0.02


def test_no_allocation_per_call(upy):
    res = upy(
        "import gc\n"
        "from array import array\n"
        "from ladder import gate\n"
        f"lut = {exp_lut(0.1, 1.0)!r}\n"
        "lg = array('b', [3, -50, 90, 89, 0, -128, 127, 12, 40, 41])\n"
        "def calls(k):\n"
        "    acc = 0\n"
        "    gc.collect()\n"
        "    before = gc.mem_alloc()\n"
        "    for i in range(k):\n"
        "        acc += gate.confidence(i % 3, lg, 10, lut)\n"
        "    return gc.mem_alloc() - before, acc > 0\n"
        "calls(3)\n"
        "print(*calls(1000))\n"
    ).check()
    assert res.stdout.split() == ["0", "True"]


def test_gate_has_no_float():
    tree = ast.parse(Path(GATE_PY).read_text())
    floats = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant)
              and isinstance(n.value, float)]  # fmt: skip
    divs = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.Div, ast.Pow))]
    calls = [n.lineno for n in ast.walk(tree)
             if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "float"]  # fmt: skip
    assert not floats and not divs and not calls, (floats, divs, calls)


@pytest.mark.parametrize("n", range(2, 17))
def test_intermediates_stay_small_ints_on_a_32_bit_board(n):
    """ESP32 small ints are [-2**30, 2**30): larger values would be heap long ints (the unix
    port's 63-bit small ints cannot show it). The largest values gate.py makes, per class count:
    lut[0] << 15 (max, margin) and h << 16 with h < hmax (entropy)."""
    hmax = n * gate._nlog(32768 // n)
    assert gate.EXP_ONE << 15 < 2**30
    assert (hmax - 1) << 16 < 2**30
    assert n * gate.EXP_ONE < 2**30  # the sum of exp terms


# should_escalate: (score, threshold, link up, tier online, deadline ms, elapsed us, rtt ms,
# reserve ms) -> the ms to promise the next stage, or why the input stays. By hand:
ESCALATE_CASES = [
    ((100, 200, True, True, 300, 0, 20, 0), 300),  # unsure, all there: the whole deadline
    ((100, 200, True, True, 300, 0, 20, 3), 297),  # the board keeps its answer reserve
    ((100, 200, True, True, 300, 1, 20, 0), 299),  # 1 us elapsed rounds up to a whole ms
    ((100, 200, True, True, 300, 1000, 20, 0), 299),
    ((100, 200, True, True, 300, 1001, 20, 0), 298),
    ((100, 200, True, True, 40, 0, 50, 0), gate.NO_TIME),  # 40 ms left < a 50 ms round trip
    ((100, 200, True, True, 50, 0, 50, 0), gate.NO_TIME),  # equal is not enough
    ((100, 200, True, True, 51, 0, 50, 0), 51),
    ((100, 200, True, True, 54, 0, 50, 3), 51),
    ((100, 200, True, True, 53, 0, 50, 3), gate.NO_TIME),  # the reserve makes the difference
    ((200, 200, True, True, 300, 0, 20, 0), gate.CONFIDENT),  # at the threshold: sure
    ((100, 200, False, True, 300, 0, 20, 0), gate.LINK_DOWN),
    ((100, 200, True, False, 300, 0, 20, 0), gate.TIER_OFFLINE),
    ((100, 200, False, False, 300, 10**9, 20, 0), gate.LINK_DOWN),  # the first reason wins
    ((100, 200, True, True, 300, 400_000, 0, 0), gate.NO_TIME),  # the deadline has passed
]


@pytest.mark.parametrize(("args", "want"), ESCALATE_CASES)
def test_should_escalate_by_hand(args, want):
    assert gate.should_escalate(*args) == want
    if want < 0:
        assert gate.STAYS[-1 - want] in ("confident", "link_down", "tier_offline", "no_time")


def test_should_escalate_and_pack_topk_are_the_same_under_micropython(upy):
    from ladder import wire

    scores = [-3, 90, 89, -128, 127, 12, 90, 41, 0, -1]
    res = upy(
        "from ladder import gate, wire\n"
        f"for args, _ in {ESCALATE_CASES!r}:\n"
        "    print(gate.should_escalate(*args))\n"
        "from array import array\n"
        f"s = array('b', {scores!r})\n"
        "idx = bytearray(4)\n"
        "from ladder.quant import top_k_into\n"
        "top_k_into(s, 4, idx)\n"
        "dst = bytearray(8)\n"
        "wire.pack_topk(dst, s, idx, 4)\n"
        "print(bytes(dst).hex())\n"
        "raw = bytearray(v & 0xFF for v in s)\n"  # the same scores as two's complement bytes
        "wire.pack_topk(dst, raw, idx, 4)\n"
        "print(bytes(dst).hex())\n"
    ).check()
    lines = res.stdout.split()
    assert [int(v) for v in lines[:-2]] == [want for _, want in ESCALATE_CASES]
    # best first, ties to the lower index: 127 (label 4), 90 (1), 90 (6), 89 (2); score + 128
    want = bytes([4, 255, 1, 218, 6, 218, 2, 217])
    assert lines[-2:] == [want.hex(), want.hex()]
    dst = bytearray(8)
    wire.pack_topk(dst, scores, [4, 1, 6, 2], 4)  # the host packs the same bytes
    assert bytes(dst) == want
