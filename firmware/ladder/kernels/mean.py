# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# MEAN over the spatial axes of NHWC (batch 1): out[c] from n = h * w inputs, as the format
# defines it (mformat.FIELDS[MEAN]):
# - mode 0: out = clamp(MBQM(sum - in_zp * n, mult, shift) + out_zp), 1/n folded into mult/shift
#   by the compiler;
# - mode 1 (input and output quantized alike, TFLM's reference_ops::Mean): the raw sum divided by
#   n with C's truncating division.
# Sums: n * 255 < 2**31 for any tensor that fits the arena.

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
def mean(arena, body, p, q):
    one = 1
    H = one << 31
    P = ptr32(p)
    Q = ptr32(q)
    A = int(ptr8(arena))
    X = ptr8(A + int(P[0]))
    Y = ptr8(A + int(P[1]))
    n = int(P[2]) * int(P[3])
    c = int(P[4])
    in_zp = int((P[5] ^ H) - H)
    out_zp = int((P[6] ^ H) - H)
    trunc = int(P[9])  # mode 1
    ch = 0
    while ch < c:
        acc = 0
        i = ch
        k = 0
        while k < n:
            acc += (X[i] ^ 128) - 128
            i += c
            k += 1
        if trunc:
            # |mean| <= 128: no rounding, no zero point, no clamp needed.
            Y[ch] = acc // n if acc >= 0 else 0 - ((0 - acc) // n)
        else:
            Q[_ACC + ch] = acc - n * in_zp
        ch += 1
    if trunc:
        return
    Q[_QN] = c
    Q[_QC] = 1
    Q[_QM] = 28  # mult and shift are this op's own fields 7 and 8
    Q[_QS] = 32
    Q[_QSTRIDE] = 0
    Q[_QOUT] = int(P[1])
    Q[_QZP] = out_zp
    Q[_QLO] = -128
    Q[_QHI] = 127
    requant(arena, p, q)
