# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# CONV_2D and DEPTHWISE_CONV_2D, NHWC, batch 1, as TFLite Micro's reference_integer_ops
# ConvPerChannel and DepthwiseConvPerChannel: taps outside the input are skipped (not
# zero-point padded), so the input offset is added per valid tap. One output row is
# accumulated, then requantized at once.
# Accumulator bound: k_h * k_w * in_c * 255 * 128 + |bias| < 2**31 for any layer the compiler
# accepts (TFLite has the same int32 accumulator); every partial sum is a sum of a subset of
# the same terms, so it obeys the same bound.
#
# Speed (viper's native emitters keep only a function's first three locals in registers, on
# x64 and on xtensawin; the rest live on the stack):
# - the hot loops run in _conv / _dw, whose first three locals are the input pointer X, the
#   weight pointer W and the accumulator; the engine-facing kernels only forward to them, with
#   the arena and body as X and W (a ptr8 argument is its buffer's address: nothing allocated);
# - the valid taps of an output pixel are found once per pixel (rows ky0..ky1, columns
#   kx0..kx1), so no tap is bounds-checked; with dilation 1 the valid columns of a filter row
#   are one contiguous run of (kx1 - kx0) * in_c bytes in both the input and the weights;
# - pointers advance instead of being recomputed from indices, and constant offsets X[1] ...
#   compile to single loads.

import micropython
from micropython import const

from ..fixedpoint import requant

# The requant block's layout (fixedpoint.requant reads it as _N, _C, ...). Mirrored here on
# purpose: const() folds only inside its own module, and an imported name would be a global
# lookup in the kernel's hot path.
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


def conv_2d(arena, body, p, q):
    _conv(arena, body, 0, arena, body, p, q)


def depthwise_conv_2d(arena, body, p, q):
    _dw(arena, body, 0, arena, body, p, q)


@micropython.viper
def _conv(X: ptr8, W: ptr8, acc: int, arena, body, p, q):
    one = 1
    H = one << 31
    P = ptr32(p)
    Q = ptr32(q)
    B = int(W)
    x0 = int(X) + int(P[0])
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
    # (x + off) with x = (v ^ 128) - 128: the 128s fold into o128 = off - 128.
    o128 = int((P[20] ^ H) - H) - 128
    _setup(p, q, 21)
    wk = k_w * in_c  # weights per filter row
    wo = k_h * wk  # weights per output channel
    xrow = dh * in_w * in_c  # input bytes between filter rows
    xcol = dw * in_c  # input bytes between filter columns
    row = out_w * out_c
    oy = 0
    while oy < out_h:
        iy0 = oy * sh - ph
        ky0 = 0
        while ky0 < k_h and iy0 + ky0 * dh < 0:
            ky0 += 1
        ky1 = k_h
        while ky1 > ky0 and iy0 + (ky1 - 1) * dh >= in_h:
            ky1 -= 1
        ox = 0
        while ox < out_w:
            ix0 = ox * sw - pw
            kx0 = 0
            while kx0 < k_w and ix0 + kx0 * dw < 0:
                kx0 += 1
            kx1 = k_w
            while kx1 > kx0 and ix0 + (kx1 - 1) * dw >= in_w:
                kx1 -= 1
            # A filter row's valid taps: nseg runs of seg bytes (one run when dw == 1).
            seg = in_c
            nseg = kx1 - kx0
            if dw == 1 and nseg:
                seg = nseg * in_c
                nseg = 1
            seg4 = seg & -4
            xs0 = x0 + ((iy0 + ky0 * dh) * in_w + ix0 + kx0 * dw) * in_c
            ws0 = w0 + (ky0 * k_w + kx0) * in_c
            oc = 0
            while oc < out_c:
                acc = int((bias[oc] ^ H) - H)
                xr = xs0
                wr = ws0 + oc * wo
                ky = ky0
                while ky < ky1:
                    xa = xr
                    wa = wr
                    s = 0
                    while s < nseg:
                        X = ptr8(xa)
                        W = ptr8(wa)
                        x4 = xa + seg4
                        while int(X) < x4:
                            acc += (
                                ((X[0] ^ 128) + o128) * ((W[0] ^ 128) - 128)
                                + ((X[1] ^ 128) + o128) * ((W[1] ^ 128) - 128)
                                + ((X[2] ^ 128) + o128) * ((W[2] ^ 128) - 128)
                                + ((X[3] ^ 128) + o128) * ((W[3] ^ 128) - 128)
                            )
                            X = ptr8(int(X) + 4)
                            W = ptr8(int(W) + 4)
                        r = seg - seg4  # 0..3 taps left, straight-line
                        if r == 1:
                            acc += ((X[0] ^ 128) + o128) * ((W[0] ^ 128) - 128)
                        elif r == 2:
                            acc += ((X[0] ^ 128) + o128) * ((W[0] ^ 128) - 128) + (
                                (X[1] ^ 128) + o128
                            ) * ((W[1] ^ 128) - 128)
                        elif r == 3:
                            acc += (
                                ((X[0] ^ 128) + o128) * ((W[0] ^ 128) - 128)
                                + ((X[1] ^ 128) + o128) * ((W[1] ^ 128) - 128)
                                + ((X[2] ^ 128) + o128) * ((W[2] ^ 128) - 128)
                            )
                        xa += xcol
                        wa += in_c
                        s += 1
                    xr += xrow
                    wr += wk
                    ky += 1
                Q[_ACC + ox * out_c + oc] = acc
                oc += 1
            ox += 1
        Q[_QOUT] = out + oy * row
        requant(arena, body, q)
        oy += 1


@micropython.viper
def _dw(X: ptr8, W: ptr8, acc: int, arena, body, p, q):
    one = 1
    H = one << 31
    P = ptr32(p)
    Q = ptr32(q)
    B = int(W)
    x0 = int(X) + int(P[0])
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
    o128 = int((P[21] ^ H) - H) - 128
    _setup(p, q, 22)
    xrow = dh * in_w * in_c  # input bytes between filter rows
    xcol = dw * in_c  # input bytes between filter columns (one channel's taps)
    wrow = k_w * out_c  # weight bytes between filter rows
    row = out_w * out_c
    oy = 0
    while oy < out_h:
        iy0 = oy * sh - ph
        ky0 = 0
        while ky0 < k_h and iy0 + ky0 * dh < 0:
            ky0 += 1
        ky1 = k_h
        while ky1 > ky0 and iy0 + (ky1 - 1) * dh >= in_h:
            ky1 -= 1
        ox = 0
        while ox < out_w:
            ix0 = ox * sw - pw
            kx0 = 0
            while kx0 < k_w and ix0 + kx0 * dw < 0:
                kx0 += 1
            kx1 = k_w
            while kx1 > kx0 and ix0 + (kx1 - 1) * dw >= in_w:
                kx1 -= 1
            xspan = (kx1 - kx0) * xcol  # a filter row's valid taps of one channel
            xs0 = x0 + ((iy0 + ky0 * dh) * in_w + ix0 + kx0 * dw) * in_c
            ws0 = w0 + (ky0 * k_w + kx0) * out_c
            # Output channel oc = ic * dm + m reads input channel ic.
            oc = 0
            ic = 0
            m = 0
            while oc < out_c:
                acc = int((bias[oc] ^ H) - H)
                xr = xs0 + ic
                wr = ws0 + oc
                ky = ky0
                while ky < ky1:
                    X = ptr8(xr)
                    W = ptr8(wr)
                    xe = xr + xspan
                    while int(X) < xe:
                        acc += ((X[0] ^ 128) + o128) * ((W[0] ^ 128) - 128)
                        X = ptr8(int(X) + xcol)
                        W = ptr8(int(W) + out_c)
                    xr += xrow
                    wr += wrow
                    ky += 1
                Q[_ACC + ox * out_c + oc] = acc
                oc += 1
                m += 1
                if m == dm:
                    m = 0
                    ic += 1
            ox += 1
        Q[_QOUT] = out + oy * row
        requant(arena, body, q)
        oy += 1
