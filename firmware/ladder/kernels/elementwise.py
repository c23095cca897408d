# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# ADD and MUL of int8 tensors, as TFLite Micro's reference_integer_ops::Add / Mul. n2 == 1
# broadcasts a scalar second input. Work goes in chunks of K elements through requant's
# accumulator block, so each chunk costs a few calls, not a few per element.
#
# ADD: a = MBQM((x1 + off1) << ls, m1, s1), b = MBQM((x2 + off2) << ls, m2, s2),
#      out = clamp(MBQM(a + b, m_out, s_out) + out_zp). TFLite uses left_shift = 20, so the
#      shifted inputs are < 255 * 2**20 < 2**28, and a, b are smaller still (m < 2**31, s <= 0):
#      a + b < 2**29, no int32 overflow.
# MUL: out = clamp(MBQM((x1 + off1) * (x2 + off2), mult, shift) + out_zp); |product| <= 2**16.

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
# Elements per chunk: opsize.CHUNK sizes the scratch with it (a test checks they agree).
K = const(32)


@micropython.viper
def add(arena, body, p, q):
    one = 1
    H = one << 31
    P = ptr32(p)
    Q = ptr32(q)
    A = int(ptr8(arena))
    X1 = ptr8(A + int(P[0]))
    X2 = ptr8(A + int(P[1]))
    out = int(P[2])
    n = int(P[3])
    step2 = 0 if int(P[4]) == 1 else 1  # a scalar second input stays at element 0
    o1 = int((P[5] ^ H) - H) - 128  # folds the int8 sign extension's -128 in
    o2 = int((P[6] ^ H) - H) - 128
    ls = int(P[8])
    start = 0
    while start < n:
        k = n - start if n - start < K else K
        # Interleave the two shifted inputs so one requant call scales both: multiplier
        # index i % 2 picks (m1, s1) at p[9], p[10] or (m2, s2) at p[11], p[12] (8 bytes on).
        i = 0
        while i < k:
            Q[_ACC + 2 * i] = ((X1[start + i] ^ 128) + o1) << ls
            Q[_ACC + 2 * i + 1] = ((X2[(start + i) * step2] ^ 128) + o2) << ls
            i += 1
        Q[_QN] = 2 * k
        Q[_QC] = 2
        Q[_QM] = 36
        Q[_QS] = 40
        Q[_QSTRIDE] = 8
        Q[_QOUT] = -1
        requant(arena, p, q)
        i = 0
        while i < k:
            Q[_ACC + i] = int(Q[_ACC + 2 * i]) + int(Q[_ACC + 2 * i + 1])  # mod 2**32: exact
            i += 1
        Q[_QN] = k
        Q[_QC] = 1
        Q[_QM] = 52
        Q[_QS] = 56
        Q[_QSTRIDE] = 0
        Q[_QOUT] = out + start
        Q[_QZP] = P[7]
        Q[_QLO] = P[15]
        Q[_QHI] = P[16]
        requant(arena, p, q)
        start += k


@micropython.viper
def mul(arena, body, p, q):
    one = 1
    H = one << 31
    P = ptr32(p)
    Q = ptr32(q)
    A = int(ptr8(arena))
    X1 = ptr8(A + int(P[0]))
    X2 = ptr8(A + int(P[1]))
    out = int(P[2])
    n = int(P[3])
    step2 = 0 if int(P[4]) == 1 else 1
    o1 = int((P[5] ^ H) - H) - 128
    o2 = int((P[6] ^ H) - H) - 128
    Q[_QC] = 1
    Q[_QM] = 32
    Q[_QS] = 36
    Q[_QSTRIDE] = 0
    Q[_QZP] = P[7]
    Q[_QLO] = P[10]
    Q[_QHI] = P[11]
    start = 0
    while start < n:
        k = n - start if n - start < K else K
        i = 0
        while i < k:
            Q[_ACC + i] = ((X1[start + i] ^ 128) + o1) * ((X2[(start + i) * step2] ^ 128) + o2)
            i += 1
        Q[_QN] = k
        Q[_QOUT] = out + start
        requant(arena, p, q)
        start += k
