# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# LUT: any elementwise int8 -> int8 map (LOGISTIC, TANH, requantizing QUANTIZE, ...), computed on
# the host with the reference arithmetic. The table is 256 int8 bytes: out = lut[in + 128].

import micropython


@micropython.viper
def lut(arena, body, p, q):
    P = ptr32(p)
    A = int(ptr8(arena))
    X = ptr8(A + int(P[0]))
    Y = ptr8(A + int(P[1]))
    n = int(P[2])
    T = ptr8(int(ptr8(body)) + int(P[3]))
    i = 0
    while i < n:
        Y[i] = T[X[i] ^ 128]  # byte v holds int8 (v ^ 128) - 128, so index = in + 128
        i += 1
