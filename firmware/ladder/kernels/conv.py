# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# CONV_2D and DEPTHWISE_CONV_2D, NHWC, batch 1, as TFLite Micro's reference_integer_ops
# ConvPerChannel and DepthwiseConvPerChannel: taps outside the input are skipped (not
# zero-point padded), so the input offset is added per valid tap. One output row is
# accumulated, then requantized at once.
# Accumulator bound: k_h * k_w * in_c * 255 * 128 + |bias| < 2**31 for any layer the compiler
# accepts (TFLite has the same int32 accumulator).

import micropython
from micropython import const

from ..fixedpoint import requant

_QN = const(0)
_QC = const(1)
_QM = const(2)
_QS = const(3)
_QSTRIDE = const(4)
_QOUT = const(5)
_QZP = const(6)
_QLO = const(7)
_QHI = const(8)
_ACC = const(9)


def scratch(p):
    return p[10] * p[11]  # out_w * out_c accumulators: one output row


def spans(p):
    out_c = p[11]
    return (
        (0, p[0], p[6] * p[7] * p[8], 1),
        (0, p[1], p[9] * p[10] * out_c, 1),
        (1, p[2], out_c * p[12] * p[13] * p[8], 1),
        (1, p[3], 4 * out_c, 4),
        (1, p[4], 4 * out_c, 4),
        (1, p[5], 4 * out_c, 4),
    )


def dw_spans(p):
    if p[11] != p[8] * p[20]:
        raise ValueError("out_c %d != in_c %d * depth_mult %d" % (p[11], p[8], p[20]))
    s = spans(p)
    return s[:2] + ((1, p[2], p[12] * p[13] * p[11], 1),) + s[3:]


@micropython.viper
def _setup(p, q, n: int):
    # requant header from the shared field layout: ... cv_m 4, cv_s 5, out_zp/act_min/act_max
    # at n, n + 1, n + 2 (the last three fields of both ops).
    P = ptr32(p)
    Q = ptr32(q)
    Q[_QN] = P[10] * P[11]
    Q[_QC] = P[11]
    Q[_QM] = P[4]
    Q[_QS] = P[5]
    Q[_QSTRIDE] = 4
    Q[_QZP] = P[n]
    Q[_QLO] = P[n + 1]
    Q[_QHI] = P[n + 2]


@micropython.viper
def conv_2d(arena, body, p, q):
    one = 1
    H = one << 31
    P = ptr32(p)
    Q = ptr32(q)
    A = int(ptr8(arena))
    B = int(ptr8(body))
    x0 = A + int(P[0])
    out = int(P[1])
    w0 = B + int(P[2])
    bias = ptr32(B + int(P[3]))
    in_h = int(P[6])
    in_w = int(P[7])
    in_c = int(P[8])
    out_h = int(P[9])
    out_w = int(P[10])
    out_c = int(P[11])
    k_h = int(P[12])
    k_w = int(P[13])
    sh = int(P[14])
    sw = int(P[15])
    dh = int(P[16])
    dw = int(P[17])
    ph = int(P[18])
    pw = int(P[19])
    o128 = int((P[20] ^ H) - H) - 128
    _setup(p, q, 21)
    c4 = in_c & -4
    wk = k_w * in_c  # weights per filter row
    wo = k_h * wk  # weights per output channel
    row = out_w * out_c
    oy = 0
    while oy < out_h:
        iy0 = oy * sh - ph
        ox = 0
        while ox < out_w:
            ix0 = ox * sw - pw
            oc = 0
            while oc < out_c:
                acc = int((bias[oc] ^ H) - H)
                ky = 0
                while ky < k_h:
                    iy = iy0 + ky * dh
                    if iy >= 0 and iy < in_h:
                        kx = 0
                        while kx < k_w:
                            ix = ix0 + kx * dw
                            if ix >= 0 and ix < in_w:
                                X = ptr8(x0 + (iy * in_w + ix) * in_c)
                                W = ptr8(w0 + oc * wo + ky * wk + kx * in_c)
                                i = 0
                                while i < c4:
                                    # (x + off) with x = (v ^ 128) - 128: the 128s fold
                                    # into o128 = off - 128.
                                    acc += (
                                        ((X[i] ^ 128) + o128) * ((W[i] ^ 128) - 128)
                                        + ((X[i + 1] ^ 128) + o128) * ((W[i + 1] ^ 128) - 128)
                                        + ((X[i + 2] ^ 128) + o128) * ((W[i + 2] ^ 128) - 128)
                                        + ((X[i + 3] ^ 128) + o128) * ((W[i + 3] ^ 128) - 128)
                                    )
                                    i += 4
                                while i < in_c:
                                    acc += ((X[i] ^ 128) + o128) * ((W[i] ^ 128) - 128)
                                    i += 1
                            kx += 1
                    ky += 1
                Q[_ACC + ox * out_c + oc] = acc
                oc += 1
            ox += 1
        Q[_QOUT] = out + oy * row
        requant(arena, body, q)
        oy += 1


@micropython.viper
def depthwise_conv_2d(arena, body, p, q):
    one = 1
    H = one << 31
    P = ptr32(p)
    Q = ptr32(q)
    A = int(ptr8(arena))
    B = int(ptr8(body))
    x0 = A + int(P[0])
    out = int(P[1])
    w0 = B + int(P[2])
    bias = ptr32(B + int(P[3]))
    in_h = int(P[6])
    in_w = int(P[7])
    in_c = int(P[8])
    out_h = int(P[9])
    out_w = int(P[10])
    out_c = int(P[11])
    k_h = int(P[12])
    k_w = int(P[13])
    sh = int(P[14])
    sw = int(P[15])
    dh = int(P[16])
    dw = int(P[17])
    ph = int(P[18])
    pw = int(P[19])
    dm = int(P[20])
    off = int((P[21] ^ H) - H)
    _setup(p, q, 22)
    row = out_w * out_c
    oy = 0
    while oy < out_h:
        iy0 = oy * sh - ph
        ox = 0
        while ox < out_w:
            ix0 = ox * sw - pw
            acc = ptr32(int(Q) + (_ACC + ox * out_c) * 4)
            oc = 0
            while oc < out_c:
                acc[oc] = (bias[oc] ^ H) - H
                oc += 1
            ky = 0
            while ky < k_h:
                iy = iy0 + ky * dh
                if iy >= 0 and iy < in_h:
                    kx = 0
                    while kx < k_w:
                        ix = ix0 + kx * dw
                        if ix >= 0 and ix < in_w:
                            X = ptr8(x0 + (iy * in_w + ix) * in_c)
                            W = ptr8(w0 + (ky * k_w + kx) * out_c)
                            # Output channel oc = ic * dm + m reads input channel ic.
                            oc = 0
                            ic = 0
                            while ic < in_c:
                                xv = ((X[ic] ^ 128) - 128) + off
                                m = 0
                                while m < dm:
                                    acc[oc] = int(acc[oc]) + xv * ((W[oc] ^ 128) - 128)
                                    oc += 1
                                    m += 1
                                ic += 1
                        kx += 1
                ky += 1
            ox += 1
        Q[_QOUT] = out + oy * row
        requant(arena, body, q)
        oy += 1
