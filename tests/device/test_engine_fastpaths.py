"""The conv / depthwise / FC kernels' fast paths, each hit on purpose, against engine_ref.

The kernels find each output pixel's valid taps once, then run contiguous spans unrolled by 4
with a straight-line remainder of 0..3 taps (kernels/conv.py, kernels/fc.py). These geometries
sweep every remainder, dilation 1 (one run per filter row) and 2 (one run per tap), borders on
every side, pixels with no valid column, and depth multipliers 1..3.
"""

from __future__ import annotations

import itertools

import engine_ref as R
from test_engine_kernels import _act, _mult, _rng

from ladder import mformat as F


def _conv_case(rng, depthwise, ih, iw, ic, kh, kw, stride, dil, same, dm=1):
    if same:
        oh, ow = -(-ih // stride), -(-iw // stride)
        ph = max(0, ((oh - 1) * stride + (kh - 1) * dil + 1 - ih) // 2)
        pw = max(0, ((ow - 1) * stride + (kw - 1) * dil + 1 - iw) // 2)
    else:
        oh, ow = (ih - (kh - 1) * dil - 1) // stride + 1, (iw - (kw - 1) * dil - 1) // stride + 1
        ph = pw = 0
    oc = ic * dm if depthwise else 3
    nw = kh * kw * oc * (1 if depthwise else ic)
    c = {
        "w": [rng.choice([-128, 127, rng.randint(-128, 127)]) for _ in range(nw)],
        "b": [rng.randint(-(1 << 16), 1 << 16) for _ in range(oc)],
        "m": [_mult(rng) for _ in range(oc)],
        "s": [rng.randint(-12, 1) for _ in range(oc)],
    }
    out = ih * iw * ic
    geo = [ih, iw, ic, oh, ow, oc, kh, kw, stride, stride, dil, dil, ph, pw]
    geo += [dm] if depthwise else []
    p = [0, out, "w", "b", "m", "s", *geo, rng.choice([-127, 128, rng.randint(-127, 128)])]
    p += [rng.randint(-128, 127), *_act(rng)]
    if depthwise:
        op, ref = F.DEPTHWISE_CONV_2D, (lambda a, c, p: R.ref_conv(a, c, p, True))
    else:
        op, ref = F.CONV_2D, R.ref_conv
    return op, p, c, out + oh * ow * oc, ref


def _fc_case(rng, n_in, batches):
    n_out = 3
    c = {
        "w": [rng.randint(-128, 127) for _ in range(n_in * n_out)],
        "b": [rng.randint(-(1 << 20), 1 << 20) for _ in range(n_out)],
        "m": [_mult(rng) for _ in range(n_out)],
        "s": [rng.randint(-14, 2) for _ in range(n_out)],
    }
    p = [0, batches * n_in, "w", "b", "m", "s", batches, n_in, n_out, rng.randint(-128, 127)]
    return F.FULLY_CONNECTED, p + list(_act(rng)), c, batches * (n_in + n_out), R.ref_fc


def _cases(rng):
    # Conv: in_c * valid columns covers remainders 0..3 and runs longer than 4.
    for ic, kw, dil, same in itertools.product((1, 2, 3, 5), (1, 2, 3), (1, 2), (True, False)):
        if (kw - 1) * dil + 1 <= 5:
            yield _conv_case(rng, False, 5, 5, ic, 3, kw, 1, dil, same)
    yield _conv_case(rng, False, 4, 3, 2, 3, 3, 2, 2, True)  # pixels with no valid column
    yield _conv_case(rng, False, 7, 7, 8, 1, 1, 1, 1, False)  # 1x1
    for ic, dm, dil, stride in itertools.product((1, 3, 4), (1, 2, 3), (1, 2), (1, 2)):
        yield _conv_case(rng, True, 5, 4, ic, 3, 3, stride, dil, True, dm)
    yield _conv_case(rng, True, 6, 6, 4, 3, 3, 1, 1, False)
    for n_in, batches in itertools.product(range(1, 10), (1, 2)):
        yield _fc_case(rng, n_in, batches)


def test_fast_paths_match_reference(upy, tmp_path):
    rng = _rng("fastpaths")
    jobs, lines = [], []
    for k, (op, p, consts, arena, ref) in enumerate(_cases(rng)):
        blobs = {n: (R.i8(v) if n == "w" else R.i32(v)) for n, v in consts.items()}
        path = tmp_path / f"m{k}.bin"
        path.write_bytes(R.pack([(op, p)], blobs, arena, [(0, (1,), 0), (0, (1,), 0)]))
        for _ in range(2):
            a = [rng.choice([-128, 127, rng.randint(-128, 127)]) for _ in range(arena)]
            jobs.append((p, a, consts, ref))
            lines.append(f"{path} {R.i8(a).hex()}\n")
    R.run_and_compare(upy, jobs, lines, timeout=300)
