# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# Byte-moving ops: COPY (a reshape the planner could not alias), PAD (4-D, with the pad value,
# normally the zero point) and CONCATENATION (inputs share the output's quantization, so bytes
# are copied unchanged). No arithmetic, so nothing to prove about overflow.

import micropython


@micropython.viper
def _move(dst: ptr8, src: ptr8, n: int):
    i = 0
    while i < n:
        dst[i] = src[i]
        i += 1


@micropython.viper
def copy(arena, body, p, q):
    P = ptr32(p)
    A = int(ptr8(arena))
    _move(ptr8(A + int(P[1])), ptr8(A + int(P[0])), int(P[2]))


@micropython.viper
def pad(arena, body, p, q):
    P = ptr32(p)
    A = int(ptr8(arena))
    X = A + int(P[0])
    Y = A + int(P[1])
    d0 = int(P[2])
    d1 = int(P[3])
    d2 = int(P[4])
    d3 = int(P[5])
    b0 = int(P[6])
    b1 = int(P[8])
    b2 = int(P[10])
    b3 = int(P[12])
    e1 = b1 + d1 + int(P[9])  # output dims
    e2 = b2 + d2 + int(P[11])
    e3 = b3 + d3 + int(P[13])
    total = (b0 + d0 + int(P[7])) * e1 * e2 * e3
    value = int(P[14]) & 0xFF
    po = ptr8(Y)
    i = 0
    while i < total:
        po[i] = value
        i += 1
    i0 = 0
    while i0 < d0:
        i1 = 0
        while i1 < d1:
            i2 = 0
            while i2 < d2:
                dst = Y + (((i0 + b0) * e1 + i1 + b1) * e2 + i2 + b2) * e3 + b3
                src = X + ((i0 * d1 + i1) * d2 + i2) * d3
                _move(ptr8(dst), ptr8(src), d3)
                i2 += 1
            i1 += 1
        i0 += 1


@micropython.viper
def concatenation(arena, body, p, q):
    P = ptr32(p)
    A = int(ptr8(arena))
    Y = A + int(P[0])
    outer = int(P[1])
    inner = int(P[2])
    k = int(P[3])
    o = 0
    while o < outer:
        j = 0
        while j < k:
            n = int(P[5 + 2 * j]) * inner  # bytes of input j per outer step
            _move(ptr8(Y), ptr8(A + int(P[4 + 2 * j]) + o * n), n)
            Y += n
            j += 1
        o += 1
