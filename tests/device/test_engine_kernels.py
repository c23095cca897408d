"""Engine kernels under MicroPython at the ESP32 heap, against TFLite Micro's reference arithmetic.

Each case is a one-op model packed here; the device fills the whole arena with random bytes,
invokes, and returns the arena; the host recomputes the op with engine_ref. Seeds are printed.
"""

from __future__ import annotations

import math
import random

import engine_ref as R
import pytest

from ladder import mformat as F

SEED = random.randrange(1 << 30)
INT_EDGES = [
    R.I32_MIN,
    R.I32_MIN + 1,
    -(1 << 30),
    -65536,
    -32769,
    -1,
    0,
    1,
    32767,
    65535,
    (1 << 30) - 1,
    1 << 30,
    R.I32_MAX - 1,
    R.I32_MAX,
]

FP_RUNNER = """
import sys
from ladder import fixedpoint as fp
while True:
    line = sys.stdin.readline()
    if not line:
        break
    op, a, b = line.split()
    a = int(a); b = int(b)
    print(fp.srdhm(a, b) if op == "s" else fp.mbqm(a, b, int(sys.stdin.readline())))
"""


def _rng(tag):
    print(f"seed {SEED} ({tag})")
    return random.Random(f"{SEED}-{tag}")


def test_fixedpoint_matches_tflite(upy):
    rng = _rng("fixedpoint")
    cases = [("s", a, b) for a in INT_EDGES for b in INT_EDGES]
    for _ in range(3000):
        cases.append(("s", rng.randint(R.I32_MIN, R.I32_MAX), rng.randint(R.I32_MIN, R.I32_MAX)))
    # Ties: products that land exactly on a rounding boundary.
    cases += [("s", k, 1 << 30) for k in range(-9, 10)] + [("s", k, -(1 << 30)) for k in (-3, 3)]
    mcases = []
    for _ in range(3000):
        x = rng.choice(
            [
                rng.randint(-(1 << 20), 1 << 20),
                rng.randint(R.I32_MIN, R.I32_MAX),
                rng.choice(INT_EDGES),
            ]
        )
        m = rng.choice([rng.randint(1 << 30, R.I32_MAX), rng.choice(INT_EDGES)])
        mcases.append((x, m, rng.randint(-31, 7)))
    mcases += [(x, 1 << 30, s) for x in (-6, -5, -3, -2, 2, 3, 5, 6) for s in (-1, -2)]
    lines = [f"{op} {a} {b}\n" for op, a, b in cases]
    lines += [f"m {x} {m}\n{s}\n" for x, m, s in mcases]
    out = upy(FP_RUNNER, stdin="".join(lines).encode(), timeout=120).check().stdout.split()
    want = [R.srdhm(a, b) for _, a, b in cases] + [R.mbqm(*c) for c in mcases]
    bad = [(c, g, w) for c, g, w in zip(cases + mcases, out, want, strict=False) if int(g) != w]
    assert len(out) == len(want) and not bad, bad[:5]


# --- one-op models ------------------------------------------------------------------------


def _mult(rng):
    return rng.choice([rng.randint(1 << 30, R.I32_MAX), 1 << 30, R.I32_MAX])


def _act(rng):
    lo = rng.choice([-128, -128, rng.randint(-128, 0)])
    return lo, rng.choice([127, 127, rng.randint(max(lo, 0), 127)])


def case_fc(rng):
    batches, n_in, n_out = rng.randint(1, 3), rng.randint(1, 37), rng.randint(1, 12)
    c = {
        "w": [rng.randint(-128, 127) for _ in range(n_in * n_out)],
        "b": [rng.randint(-(1 << 20), 1 << 20) for _ in range(n_out)],
        "m": [_mult(rng) for _ in range(n_out)],
        "s": [rng.randint(-14, 2) for _ in range(n_out)],
    }
    x, out = 0, batches * n_in
    p = [x, out, "w", "b", "m", "s", batches, n_in, n_out, rng.randint(-128, 127), *_act(rng)]
    return F.FULLY_CONNECTED, p, c, out + batches * n_out, R.ref_fc


def _conv_geometry(rng):
    ih, iw = rng.randint(1, 7), rng.randint(1, 7)
    kh, kw = rng.randint(1, 3), rng.randint(1, 3)
    sh, sw, dh, dw = rng.randint(1, 2), rng.randint(1, 2), rng.randint(1, 2), rng.randint(1, 2)
    if rng.random() < 0.5:  # SAME
        oh, ow = -(-ih // sh), -(-iw // sw)
        ph = max(0, ((oh - 1) * sh + (kh - 1) * dh + 1 - ih) // 2)
        pw = max(0, ((ow - 1) * sw + (kw - 1) * dw + 1 - iw) // 2)
    else:  # VALID (may leave no output: then retry)
        oh, ow = (ih - (kh - 1) * dh - 1) // sh + 1, (iw - (kw - 1) * dw - 1) // sw + 1
        ph = pw = 0
    if oh < 1 or ow < 1:
        return _conv_geometry(rng)
    return ih, iw, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw


def case_conv(rng, depthwise=False):
    ih, iw, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw = _conv_geometry(rng)
    ic = rng.randint(1, 5)
    dm = rng.randint(1, 3) if depthwise else 1
    oc = ic * dm if depthwise else rng.randint(1, 6)
    nw = kh * kw * oc * (1 if depthwise else ic)
    c = {
        "w": [rng.randint(-128, 127) for _ in range(nw)],
        "b": [rng.randint(-(1 << 16), 1 << 16) for _ in range(oc)],
        "m": [_mult(rng) for _ in range(oc)],
        "s": [rng.randint(-12, 1) for _ in range(oc)],
    }
    out = ih * iw * ic
    geo = [ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, dh, dw, ph, pw] + ([dm] if depthwise else [])
    p = [0, out, "w", "b", "m", "s", *geo, rng.randint(-127, 128), rng.randint(-128, 127)]
    p += _act(rng)
    if depthwise:
        return (
            F.DEPTHWISE_CONV_2D,
            p,
            c,
            out + oh * ow * oc,
            lambda a, c, p: R.ref_conv(a, c, p, True),
        )
    return F.CONV_2D, p, c, out + oh * ow * oc, R.ref_conv


def case_pool(rng, is_max):
    ih, iw, ch = rng.randint(1, 7), rng.randint(1, 7), rng.randint(1, 4)
    fh, fw, sh, sw = rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 2), rng.randint(1, 2)
    ph, pw = rng.randint(0, fh - 1), rng.randint(0, fw - 1)
    oh, ow = (ih + 2 * ph - fh) // sh + 1, (iw + 2 * pw - fw) // sw + 1
    if oh < 1 or ow < 1:
        return case_pool(rng, is_max)
    out = ih * iw * ch
    p = [0, out, ih, iw, ch, oh, ow, fh, fw, sh, sw, ph, pw, *_act(rng)]
    op = F.MAX_POOL_2D if is_max else F.AVERAGE_POOL_2D
    return op, p, {}, out + oh * ow * ch, lambda a, c, p: R.ref_pool(a, p, is_max)


def case_mean(rng):
    h, w, ch = rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 5)
    zp = rng.randint(-128, 127)
    if rng.random() < 0.3:
        q = [zp, zp, 1 << 30, 1, 1]  # equal quantization: TFLM's truncating path
    else:
        q = [zp, rng.randint(-128, 127), _mult(rng), rng.randint(-6, 1), 0]
    p = [0, h * w * ch, h, w, ch, *q]
    return F.MEAN, p, {}, h * w * ch + ch, lambda a, c, p: R.ref_mean(a, p)


def case_add(rng, mul=False):
    n = rng.randint(1, 80)
    n2 = rng.choice([1, n])
    x2, out = n, n + n2
    offs = [rng.randint(-127, 128), rng.randint(-127, 128), rng.randint(-128, 127)]
    if mul:
        p = [0, x2, out, n, n2, *offs, _mult(rng), rng.randint(-20, 0), *_act(rng)]
        return F.MUL, p, {}, out + n, lambda a, c, p: R.ref_mul(a, p)
    scales = [_mult(rng), rng.randint(-8, 0), _mult(rng), rng.randint(-8, 0)]
    p = [0, x2, out, n, n2, *offs, 20, *scales, _mult(rng), rng.randint(-25, -15), *_act(rng)]
    return F.ADD, p, {}, out + n, lambda a, c, p: R.ref_add(a, p)


def case_softmax(rng):
    rows, depth = rng.randint(1, 3), rng.randint(1, 40)
    beta = rng.choice([0.01, 0.05, 0.2, 1.0])
    lut = [min(R.I32_MAX, round(math.exp(-k * beta) * 2**31)) for k in range(256)]
    p = [0, rows * depth, rows, depth, "lut", rng.choice([-255, -128, -40]), -128]
    return F.SOFTMAX, p, {"lut": lut}, 2 * rows * depth, R.ref_softmax


def case_lut(rng):
    n = rng.randint(1, 50)
    table = [rng.randint(-128, 127) for _ in range(256)]
    ref = lambda a, c, p: (n, [table[v + 128] for v in a[:n]])  # noqa: E731
    return F.LUT, [0, n, n, "lut"], {"lut8": table}, 2 * n, ref


def case_shape(rng):
    kind = rng.choice(["copy", "pad", "concat"])
    if kind == "copy":
        n = rng.randint(1, 30)
        return F.COPY, [0, n, n], {}, 2 * n, lambda a, c, p: (n, a[:n])
    if kind == "pad":
        d = [rng.randint(1, 3) for _ in range(4)]
        ba = [rng.randint(0, 2) for _ in range(8)]
        e = [d[i] + ba[2 * i] + ba[2 * i + 1] for i in range(4)]
        n_in, value = d[0] * d[1] * d[2] * d[3], rng.randint(-128, 127)

        def ref(a, c, p):
            res = []
            for i0 in range(e[0]):
                for i1 in range(e[1]):
                    for i2 in range(e[2]):
                        for i3 in range(e[3]):
                            j = [i0 - ba[0], i1 - ba[2], i2 - ba[4], i3 - ba[6]]
                            inside = all(0 <= j[k] < d[k] for k in range(4))
                            flat = ((j[0] * d[1] + j[1]) * d[2] + j[2]) * d[3] + j[3]
                            res.append(a[flat] if inside else value)
            return n_in, res

        return F.PAD, [0, n_in, *d, *ba, value], {}, n_in + math.prod(e), ref
    outer, inner, k = rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 3)
    axes = [rng.randint(1, 3) for _ in range(k)]
    offs, at = [], 0
    for ax in axes:
        offs.append(at)
        at += outer * inner * ax
    p = [at, outer, inner, k] + [v for o, ax in zip(offs, axes, strict=True) for v in (o, ax)]

    def ref(a, c, p):
        res = []
        for o in range(outer):
            for off, ax in zip(offs, axes, strict=True):
                res += a[off + o * ax * inner : off + (o + 1) * ax * inner]
        return at, res

    return F.CONCATENATION, p, {}, at + outer * inner * sum(axes), ref


CASES = {
    "fc": case_fc,
    "conv": case_conv,
    "depthwise": lambda rng: case_conv(rng, True),
    "avg_pool": lambda rng: case_pool(rng, False),
    "max_pool": lambda rng: case_pool(rng, True),
    "mean": case_mean,
    "add": case_add,
    "mul": lambda rng: case_add(rng, True),
    "softmax": case_softmax,
    "lut": case_lut,
    "shape": case_shape,
}


def _const_bytes(name, values):
    return R.i8(values) if name in ("w", "lut8") else R.i32(values)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_kernel_matches_reference(kind, upy, tmp_path):
    rng = _rng(kind)
    jobs, lines = [], []
    for k in range(25):
        op, p, consts, arena, ref = CASES[kind](rng)
        names = {"lut8": "lut"}
        p = [names.get(v, v) if isinstance(v, str) else v for v in p]
        blobs = {names.get(n, n): _const_bytes(n, v) for n, v in consts.items()}
        cvals = {names.get(n, n): v for n, v in consts.items()}
        data = R.pack([(op, p)], blobs, arena, [(0, (1,), 0), (0, (1,), 0)])
        path = tmp_path / f"m{k}.bin"
        path.write_bytes(data)
        for _ in range(4):
            a = [rng.randint(-128, 127) for _ in range(arena)]
            jobs.append((p, a, cvals, ref))
            lines.append(f"{path} {R.i8(a).hex()}\n")
    R.run_and_compare(upy, jobs, lines, timeout=120)


def test_the_sizes_module_agrees_with_the_kernels(upy):
    """ladder.opsize sizes the requant block and the ADD/MUL chunks for the engine and for the
    host's fit; the viper modules fold their own consts (fixedpoint.ACC, elementwise.K)."""
    code = (
        "from ladder import fixedpoint, opsize\n"
        "from ladder.kernels import elementwise\n"
        "print(fixedpoint.ACC, opsize.ACC, elementwise.K, opsize.CHUNK)\n"
    )
    acc, acc2, k, chunk = upy(code).check().stdout.split()
    assert (acc, k) == (acc2, chunk)
