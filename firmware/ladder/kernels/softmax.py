# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# SOFTMAX, int8 -> int8, as TFLite Micro's (reference_ops::Softmax, gemmlowp fixed point).
#
# Per row: max; for every diff = x - max >= diff_min, exp(diff) as a Q0.31 value from the
# compiler's table (lut[-diff], int32 [256]: exp_on_negative_values of the beta-scaled diff),
# summed as Q12.19 (RoundingDivideByPOT(e, 12)); the reciprocal of the sum by TFLite's
# GetReciprocal (count leading zeros, then gemmlowp's one_over_one_plus_x_for_x_in_0_1, three
# Newton-Raphson steps); out = RDBPOT(SRDHM(recip, e), bits_over_unit + 23) + out_zp (TFLM: -128),
# clamped. diff < diff_min gives -128. Sums: depth * 2**19 < 2**31 for depth < 4096.
# SRDHM goes through srdhm_at (values in an array, so no long ints are made on a board).

import micropython
from micropython import const

from ..fixedpoint import srdhm_at

_A = const(0)  # scratch slots: srdhm_at(q, 0) computes q[2] = SRDHM(q[0], q[1])
_B = const(1)
_R = const(2)
_S = const(3)  # the row's sum of exps, handed to _recip through memory


@micropython.viper
def _recip(q) -> int:
    """GetReciprocal(q[_S], 12): q[_R] = 1/(1+x) in Q0.31; returns the bits over unit."""
    one = 1
    H = one << 31
    IMAX = H - 1
    Q = ptr32(q)
    s = int(Q[_S])  # 0 < s < 2**31
    hpo = 1  # CountLeadingZeros of a positive int32 is at least 1
    while hpo < 31 and not (s & (one << (31 - hpo))):
        hpo += 1
    x = (s << hpo) - H  # (uint32(s) << hpo) - 2**31: in [0, 2**31) on both word sizes
    # half_denominator = RoundingHalfSum(x, One) = (x + 2**31) / 2, without the overflow.
    hd = (x >> 1) + (one << 30)
    Q[_A] = hd
    Q[_B] = -1010580540  # -32/17 in Q2.29
    srdhm_at(q, 0)
    c = 757935405  # 48/17 in Q2.29 is 1515870810 = 2c: no literal of 2**30 or more
    x = c + c + int((Q[_R] ^ H) - H)
    it = 0
    while it < 3:
        Q[_A] = hd
        Q[_B] = x
        srdhm_at(q, 0)  # half_denominator * x: Q2.29
        Q[_A] = x
        Q[_B] = (one << 29) - int((Q[_R] ^ H) - H)  # One - that, Q2.29
        srdhm_at(q, 0)  # x * (1 - hd * x): Q4.27
        v = int((Q[_R] ^ H) - H)
        # Rescale<2>: gemmlowp's saturating multiply by 4 (threshold 2**29 - 1).
        t = (one << 29) - 1
        if v > t:
            v = IMAX
        elif v < 0 - t:
            v = 0 - IMAX - 1
        else:
            v = v << 2
        x = x + v  # F2 + F2: a plain add; Newton steps keep x near 1/hd < 2
        it += 1
    # ExactMulByPot<-1> then Rescale<0>: saturating multiply by 2 (threshold 2**30 - 1).
    t = (one << 30) - 1
    if x > t:
        x = IMAX
    elif x < 0 - t:
        x = 0 - IMAX - 1
    else:
        x = x << 1
    Q[_R] = x
    return 12 - hpo


@micropython.viper
def softmax(arena, body, p, q):
    one = 1
    H = one << 31
    P = ptr32(p)
    Q = ptr32(q)
    A = int(ptr8(arena))
    X = ptr8(A + int(P[0]))
    Y = ptr8(A + int(P[1]))
    rows = int(P[2])
    depth = int(P[3])
    L = ptr32(int(ptr8(body)) + int(P[4]))
    dmin = int((P[5] ^ H) - H)
    zp = int((P[6] ^ H) - H)
    r = 0
    while r < rows:
        mx = -128
        i = 0
        while i < depth:
            v = (X[i] ^ 128) - 128
            if v > mx:
                mx = v
            i += 1
        total = 0
        i = 0
        while i < depth:
            diff = (X[i] ^ 128) - 128 - mx
            if diff >= dmin:
                # Rescale<12>: RoundingDivideByPOT(e, 12) of a positive e (threshold 2047).
                e = int((L[0 - diff] ^ H) - H)
                t = e >> 12
                if (e & 4095) > 2047:
                    t += 1
                total += t
            i += 1
        Q[_S] = total
        nb = int(_recip(q)) + 23
        if nb > 31:
            nb = 31  # only a sum >= 2**28 (depth >= 512 of near-equal scores) gets here
        mask = (one << nb) - 1
        recip = Q[_R]
        i = 0
        while i < depth:
            diff = (X[i] ^ 128) - 128 - mx
            v = -128
            if diff >= dmin:
                Q[_A] = recip
                Q[_B] = L[0 - diff]
                srdhm_at(q, 0)
                w = int((Q[_R] ^ H) - H)  # >= 0: both factors are positive
                v = (w >> nb) + zp
                if (w & mask) > (mask >> 1):
                    v += 1
                if v < -128:
                    v = -128
                elif v > 127:
                    v = 127
            Y[i] = v
            i += 1
        X = ptr8(int(X) + depth)
        Y = ptr8(int(Y) + depth)
        r += 1
