# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# FULLY_CONNECTED, as TFLite Micro's reference_integer_ops::FullyConnected (per-channel form).
# The compiler folded the input offset into the bias, so a dot product is plain int8 x int8.
# Accumulator bound: |sum| <= n_in * 128 * 128 + |bias|; the compiler keeps n_in * 2**14 plus
# the bias inside int32, as TFLite does, so 32-bit viper ints never wrap.

import micropython
from micropython import const

from ..fixedpoint import requant

# requant's control block (see fixedpoint.py).
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
    return p[8]  # one accumulator per output of a batch row


def spans(p):
    # (in body?, offset, bytes, alignment) of everything the kernel touches.
    b, n_in, n_out = p[6], p[7], p[8]
    return (
        (0, p[0], b * n_in, 1),
        (0, p[1], b * n_out, 1),
        (1, p[2], n_out * n_in, 1),
        (1, p[3], 4 * n_out, 4),
        (1, p[4], 4 * n_out, 4),
        (1, p[5], 4 * n_out, 4),
    )


@micropython.viper
def fully_connected(arena, body, p, q):
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
    b = 0
    while b < batches:
        X = ptr8(x0 + b * n_in)
        o = 0
        while o < n_out:
            W = ptr8(w0 + o * n_in)
            acc = int((bias[o] ^ H) - H)
            i = 0
            while i < n4:  # unrolled by 4; int8 from a byte: (v ^ 128) - 128
                acc += (
                    ((X[i] ^ 128) - 128) * ((W[i] ^ 128) - 128)
                    + ((X[i + 1] ^ 128) - 128) * ((W[i + 1] ^ 128) - 128)
                    + ((X[i + 2] ^ 128) - 128) * ((W[i + 2] ^ 128) - 128)
                    + ((X[i + 3] ^ 128) - 128) * ((W[i + 3] ^ 128) - 128)
                )
                i += 4
            while i < n_in:
                acc += ((X[i] ^ 128) - 128) * ((W[i] ^ 128) - 128)
                i += 1
            Q[_ACC + o] = acc
            o += 1
        Q[_QOUT] = out + b * n_out
        requant(arena, body, q)
        b += 1
