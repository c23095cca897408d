# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# FULLY_CONNECTED, as TFLite Micro's reference_integer_ops::FullyConnected (per-channel form).
# The compiler folded the input offset into the bias, so a dot product is plain int8 x int8.
# Accumulator bound: |sum| <= n_in * 128 * 128 + |bias|; the compiler keeps n_in * 2**14 plus
# the bias inside int32, as TFLite does, so 32-bit viper ints never wrap (a partial sum is a
# sum of a subset of the same terms).
# Speed: the dot product runs in _fc, whose first three locals (kept in registers by viper's
# native emitters on x64 and xtensawin) are the input pointer X, the weight pointer W and the
# accumulator; W walks the [n_out][n_in] weights once per batch row without recomputation.

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


def fully_connected(arena, body, p, q):
    _fc(arena, body, 0, arena, body, p, q)  # a ptr8 argument is its buffer's address


@micropython.viper
def _fc(X: ptr8, W: ptr8, acc: int, arena, body, p, q):
    one = 1
    H = one << 31
    P = ptr32(p)
    Q = ptr32(q)
    B = int(W)
    x0 = int(X) + int(P[0])
    out = int(P[1])
    w0 = B + int(P[2])
    bias = ptr32(B + int(P[3]))
    batches = int(P[6])
    n_in = int(P[7])
    n_out = int(P[8])
    Q[_QN] = n_out
    Q[_QC] = n_out
    Q[_QM] = P[4]
    Q[_QS] = P[5]
    Q[_QSTRIDE] = 4
    Q[_QZP] = P[9]
    Q[_QLO] = P[10]
    Q[_QHI] = P[11]
    n4 = n_in & -4
    r = n_in - n4  # 0..3 inputs after the unrolled part, done straight-line
    b = 0
    while b < batches:
        xb = x0 + b * n_in
        x4 = xb + n4
        W = ptr8(w0)
        o = 0
        while o < n_out:
            X = ptr8(xb)
            acc = int((bias[o] ^ H) - H)
            while int(X) < x4:  # unrolled by 4; int8 from a byte: (v ^ 128) - 128
                acc += (
                    ((X[0] ^ 128) - 128) * ((W[0] ^ 128) - 128)
                    + ((X[1] ^ 128) - 128) * ((W[1] ^ 128) - 128)
                    + ((X[2] ^ 128) - 128) * ((W[2] ^ 128) - 128)
                    + ((X[3] ^ 128) - 128) * ((W[3] ^ 128) - 128)
                )
                X = ptr8(int(X) + 4)
                W = ptr8(int(W) + 4)
            if r == 1:
                acc += ((X[0] ^ 128) - 128) * ((W[0] ^ 128) - 128)
            elif r == 2:
                acc += ((X[0] ^ 128) - 128) * ((W[0] ^ 128) - 128) + ((X[1] ^ 128) - 128) * (
                    (W[1] ^ 128) - 128
                )
            elif r == 3:
                acc += (
                    ((X[0] ^ 128) - 128) * ((W[0] ^ 128) - 128)
                    + ((X[1] ^ 128) - 128) * ((W[1] ^ 128) - 128)
                    + ((X[2] ^ 128) - 128) * ((W[2] ^ 128) - 128)
                )
            W = ptr8(int(W) + r)
            Q[_ACC + o] = acc
            o += 1
        Q[_QOUT] = out + b * n_out
        requant(arena, body, q)
        b += 1
