"""Host helpers for the engine tests: a tiny model packer and TFLite Micro reference arithmetic.

The references follow tensorflow/lite/kernels/internal/reference/integer_ops (and gemmlowp's
fixedpoint.h for softmax) in plain Python ints, independent of the board code.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from edgeladder.model.compiler import fmt  # noqa: E402
from ladder import mformat as F  # noqa: E402

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1

# Runs on the device: reads cases "model_path arena_hex" per stdin line, prints the arena hex.
RUNNER = """
import sys, binascii, gc
from ladder import Model
m = last = None
while True:
    line = sys.stdin.readline()
    if not line:
        break
    path, data = line.split()
    if path != last:
        m = None  # one model at a time: the ESP32 heap is small
        gc.collect()
        m = Model.load(path)
        last = path
    raw = binascii.unhexlify(data)
    a = m.arena
    for i in range(len(raw)):
        v = raw[i]
        a[i] = v - 256 if v > 127 else v
    m.invoke()
    print(binascii.hexlify(bytes(a)).decode())
"""


# --- packing -------------------------------------------------------------------------------


def pack(ops, consts, arena_size, tensors, io=(0, 1), scales=(0.5, 0.25), model_id=7):
    """A model file. ops: [(opcode, [int | const name])]; consts: {name: bytes};
    tensors: [(arena offset, shape, zero point)]. Constant names become body offsets."""
    nt, nops = len(tensors), len(ops)
    params_at = nt * F.TENSOR_SIZE + nops * F.OP_SIZE
    const_at = params_at + 4 * sum(len(p) for _, p in ops)
    blob, where = b"", {}
    for name, data in consts.items():
        where[name] = const_at + len(blob)
        blob += data + b"\0" * (-len(data) % 4)
    body = b""
    for off, shape, zp in tensors:
        size = 1
        for d in shape:
            size *= d
        dims = [*shape, 0, 0, 0, 0][:4]
        body += struct.pack(F.TENSOR_FMT, off, size, len(shape), zp, *dims)
    at = params_at
    for opcode, p in ops:
        body += struct.pack(F.OP_FMT, opcode, len(p), at)
        at += 4 * len(p)
    for _, p in ops:
        body += struct.pack(f"<{len(p)}i", *[where[v] if isinstance(v, str) else v for v in p])
    body += blob
    tin, tout = tensors[io[0]], tensors[io[1]]
    h = F.Header(
        model_id=model_id, model_version=1, body_size=len(body), arena_size=arena_size,
        n_tensors=nt, n_ops=nops, input_index=io[0], output_index=io[1],
        in_scale=scales[0], in_zp=tin[2], out_scale=scales[1], out_zp=tout[2],
    )  # fmt: skip
    return fmt.pack(h, body)


def run_and_compare(upy, jobs, lines, timeout):
    """Runs RUNNER on ``lines`` ("model_path arena_hex" each) and checks every resulting arena
    against its job (params, arena in, constants, reference function)."""
    out = upy(RUNNER, stdin="".join(lines).encode(), timeout=timeout).check().stdout.split()
    assert len(out) == len(jobs)
    for (p, a, cvals, ref), got_hex in zip(jobs, out, strict=True):
        got = [v - 256 if v > 127 else v for v in bytes.fromhex(got_hex)]
        at, want = ref(a, cvals, p)
        assert got[at : at + len(want)] == want, json.dumps({"params": p})


def i32(values):
    return struct.pack(f"<{len(values)}i", *values)


def i8(values):
    return bytes(v & 0xFF for v in values)


# --- fixed point (TFLite / gemmlowp) -------------------------------------------------------


def srdhm(a, b):
    if a == b == I32_MIN:
        return I32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    return v // (1 << 31) if v >= 0 else -((-v) // (1 << 31))  # C truncation


def rdbpot(x, e):
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def mbqm(x, m, s):
    left, right = max(s, 0), max(-s, 0)
    x = max(I32_MIN, min(I32_MAX, x << min(left, 31)))  # saturating, as the board does
    return rdbpot(srdhm(x, m), min(right, 31))


def _cdiv_round(acc, n):
    # TFLite: acc > 0 ? (acc + n/2) / n : (acc - n/2) / n, with C's truncating division.
    if acc > 0:
        return (acc + n // 2) // n
    return -((n // 2 - acc) // n)


def _clamp(v, lo=-128, hi=127):
    return max(lo, min(hi, v))


# --- kernels: arena (list of int8) and consts -> expected output bytes ----------------------


def ref_fc(a, c, p):
    x0, out, w, b, m, s, batches, n_in, n_out, zp, lo, hi = p
    res = []
    for bi in range(batches):
        xs = a[x0 + bi * n_in : x0 + (bi + 1) * n_in]
        for o in range(n_out):
            acc = c[b][o] + sum(
                xv * wv for xv, wv in zip(xs, c[w][o * n_in : (o + 1) * n_in], strict=True)
            )
            res.append(_clamp(mbqm(acc, c[m][o], c[s][o]) + zp, lo, hi))
    return out, res


def ref_conv(a, c, p, depthwise=False):
    x0, out, w, b, m, s, ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, dh, dw, ph, pw = p[:20]
    dm = p[20] if depthwise else 1
    off, zp, lo, hi = p[-4:]
    res = []
    for oy in range(oh):
        for ox in range(ow):
            for o in range(oc):
                acc = 0
                for ky in range(kh):
                    for kx in range(kw):
                        iy, ix = oy * sh - ph + ky * dh, ox * sw - pw + kx * dw
                        if not (0 <= iy < ih and 0 <= ix < iw):
                            continue
                        base = x0 + (iy * iw + ix) * ic
                        if depthwise:
                            acc += (a[base + o // dm] + off) * c[w][(ky * kw + kx) * oc + o]
                        else:
                            wb = ((o * kh + ky) * kw + kx) * ic
                            for i in range(ic):
                                acc += (a[base + i] + off) * c[w][wb + i]
                acc += c[b][o]
                res.append(_clamp(mbqm(acc, c[m][o], c[s][o]) + zp, lo, hi))
    return out, res


def ref_pool(a, p, is_max):
    x0, out, ih, iw, ch, oh, ow, fh, fw, sh, sw, ph, pw, lo, hi = p
    res = []
    for oy in range(oh):
        for ox in range(ow):
            for k in range(ch):
                vals = [
                    a[x0 + (iy * iw + ix) * ch + k]
                    for iy in range(oy * sh - ph, oy * sh - ph + fh)
                    for ix in range(ox * sw - pw, ox * sw - pw + fw)
                    if 0 <= iy < ih and 0 <= ix < iw
                ]
                v = max(vals) if is_max else _cdiv_round(sum(vals), len(vals))
                res.append(_clamp(v, lo, hi))
    return out, res


def ref_mean(a, p):
    x0, out, h, w, ch, in_zp, out_zp, m, s, mode = p
    n, res = h * w, []
    for k in range(ch):
        t = sum(a[x0 + i * ch + k] for i in range(n))
        if mode == 1:
            res.append(t // n if t >= 0 else -((-t) // n))
        else:
            res.append(_clamp(mbqm(t - n * in_zp, m, s) + out_zp))
    return out, res


def ref_add(a, p):
    x1, x2, out, n, n2, o1, o2, zp, ls, m1, s1, m2, s2, mo, so, lo, hi = p
    res = []
    for i in range(n):
        v1 = mbqm((a[x1 + i] + o1) << ls, m1, s1)
        v2 = mbqm((a[x2 + (i if n2 > 1 else 0)] + o2) << ls, m2, s2)
        res.append(_clamp(mbqm(v1 + v2, mo, so) + zp, lo, hi))
    return out, res


def ref_mul(a, p):
    x1, x2, out, n, n2, o1, o2, zp, m, s, lo, hi = p
    res = []
    for i in range(n):
        prod = (a[x1 + i] + o1) * (a[x2 + (i if n2 > 1 else 0)] + o2)
        res.append(_clamp(mbqm(prod, m, s) + zp, lo, hi))
    return out, res


def _sat_shl(v, e):
    thr = (1 << (31 - e)) - 1
    return I32_MAX if v > thr else I32_MIN if v < -thr else v << e


def _recip(s):
    """TFLite GetReciprocal(s, 12) with gemmlowp one_over_one_plus_x_for_x_in_0_1."""
    hpo = 32 - s.bit_length()
    x = ((s << hpo) & 0xFFFFFFFF) - (1 << 31)
    hd = (x + I32_MAX + 1) // 2  # RoundingHalfSum(x, One), sum >= 0
    y = 1515870810 + srdhm(hd, -1010580540)
    for _ in range(3):
        t = (1 << 29) - srdhm(hd, y)
        y = y + _sat_shl(srdhm(y, t), 2)
    return _sat_shl(y, 1), 12 - hpo


def ref_softmax(a, c, p):
    x0, out, rows, depth, lut, dmin, zp = p
    res = []
    for r in range(rows):
        xs = a[x0 + r * depth : x0 + (r + 1) * depth]
        mx = max(xs)
        total = sum(rdbpot(c[lut][mx - v], 12) for v in xs if v - mx >= dmin)
        recip, nb = _recip(total)
        for v in xs:
            if v - mx >= dmin:
                u = rdbpot(srdhm(recip, c[lut][mx - v]), min(nb + 23, 31))
                res.append(_clamp(u + zp))
            else:
                res.append(-128)
    return out, res
