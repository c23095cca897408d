# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# TFLite's integer requantization in viper, bit-exact on a 32-bit ESP32 and the 64-bit unix port.
#
# Viper ints are machine words: 32 bits on an ESP32, 64 on the unix port. TFLite's
# SaturatingRoundingDoublingHighMul (SRDHM) needs the 64-bit product of two int32s, so it is
# built from 16-bit limbs here, every intermediate fitting in 32 bits. Where a value may reach
# 2**31 or more (a bit pattern that is negative on a board and positive on the host), it is only
# ever used through shifts followed by masks, which give the same bits on both.
#
# Portability rules used throughout the kernels:
# - ptr32 loads zero-extend on x64 and not on xtensa: sx(v) = (v ^ H) - H with H = 1 << 31
#   (computed at run time) sign-extends on x64 and is the identity mod 2**32 on an ESP32.
# - ptr8 loads are 0..255: int8 is (v ^ 128) - 128.
# - no int literal of 2**30 or more (viper would make it an object); such values are computed.
# - nothing large crosses a function call: a machine int boxed into an object is a heap long
#   int on an ESP32 once |v| >= 2**30. Values go through arrays; arguments are small ints.
#
# requant() works on a control block q, an array('i') the engine allocates once:
#   q[_N] count, q[_C] channel period (multiplier index = i % c), q[_M], q[_S] byte offsets of
#   the first multiplier / shift in `src`, q[_STRIDE] bytes between successive multipliers,
#   q[_OUT] arena byte offset of the int8 output (-1: write int32 results back in place),
#   q[_ZP], q[_LO], q[_HI] output zero point and clamp; accumulators from q[ACC] on.

import array

import micropython
from micropython import const

_N = const(0)
_C = const(1)
_M = const(2)
_S = const(3)
_STRIDE = const(4)
_OUT = const(5)
_ZP = const(6)
_LO = const(7)
_HI = const(8)
ACC = const(9)


@micropython.viper
def requant(dst, src, q):
    """MultiplyByQuantizedMultiplier (TFLite, double rounding) over q's accumulators.

    Each x becomes RDBPOT(SRDHM(sat(x << ls), m), rs), ls = max(s, 0), rs = max(-s, 0); then
    (if q[_OUT] >= 0) + zero point, clamped, stored as int8 into dst at q[_OUT] + i.
    """
    one = 1
    H = one << 31  # 2**31 on x64; INT32_MIN's bits on an ESP32
    IMAX = H - 1  # INT32_MAX on both (wraps on an ESP32)
    IMIN = 0 - IMAX - 1
    Q = ptr32(q)
    n = int(Q[_N])
    c = int(Q[_C])
    stride = int(Q[_STRIDE])
    out = int((Q[_OUT] ^ H) - H)
    zp = int((Q[_ZP] ^ H) - H)
    lo = int((Q[_LO] ^ H) - H)
    hi = int((Q[_HI] ^ H) - H)
    base = int(ptr8(src))
    pm = base + int(Q[_M])
    ps = base + int(Q[_S])
    Y = ptr8(int(ptr8(dst)) + out)
    ch = 0
    i = 0
    while i < n:
        x = int((Q[ACC + i] ^ H) - H)
        m = int((ptr32(pm + ch * stride)[0] ^ H) - H)
        s = int((ptr32(ps + ch * stride)[0] ^ H) - H)
        ch += 1
        if ch == c:
            ch = 0
        rs = 0
        if s > 0:
            # TFLite multiplies by 2**s in int32 (undefined past INT32_MAX); saturate instead,
            # as the host reference (edgeladder.quantmath) does.
            if s > 31:
                s = 31
            lim = IMAX >> s
            if x > lim:
                x = IMAX
            elif x < 0 - lim - 1:
                x = IMIN
            else:
                x = x << s
        elif s < 0:
            rs = 0 - s
            if rs > 31:
                rs = 31  # |v| < 2**31 rounds to 0 or -1 for any deeper shift; TFLite keeps <= 31
        # --- SRDHM(x, m): sign and magnitude, magnitudes <= 2**31 as 16-bit limbs.
        d = 0  # 1 when the exact product is negative: the nudge becomes 1 - 2**30
        if x < 0:
            x = 0 - x
            d = 1
        if m < 0:
            m = 0 - m
            d ^= 1
        xh = (x >> 16) & 0xFFFF  # <= 2**15, and == 2**15 only when x == 2**31 (so xl == 0)
        xl = x & 0xFFFF
        yh = (m >> 16) & 0xFFFF
        yl = m & 0xFFFF
        if xh == 0x8000 and yh == 0x8000:
            v = IMAX  # INT32_MIN * INT32_MIN: TFLite's one overflow case
        else:
            # floor((P + 2**30 - d) / 2**31), P = x * m, column by column in base 2**16.
            # c0 = xl*yl <= (2**16-1)**2 < 2**32 (a bit pattern; used only masked).
            c0 = xl * yl
            t0 = (c0 & 0xFFFF) + 0xFFFF * d  # low limb of the nudge: 0xFFFF or 0; < 2**17
            # c1 <= 2*(2**15-1)*(2**16-1) + (2**16-2) + 1 + 2**14 < 2**32 (when one magnitude
            # is 2**31 its low limb is 0 and the sum is smaller still): bits, read masked.
            c1 = xh * yl + xl * yh + ((c0 >> 16) & 0xFFFF) + (t0 >> 16) + 0x4000 - d
            # The quotient is the exact result, < 2**31 here, and so is each term.
            v = 2 * xh * yh + ((c1 >> 15) & 0x1FFFF)
            if d:
                v = 0 - v
        # --- RoundingDivideByPOT(v, rs): halves away from zero. mask <= 2**31 - 1.
        if rs:
            mask = (one << rs) - 1
            thr = mask >> 1
            if v < 0:
                thr += 1
            r = v & mask
            v = v >> rs
            if r > thr:
                v += 1
        if out < 0:
            Q[ACC + i] = v
        else:
            v += zp
            if v < lo:
                v = lo
            elif v > hi:
                v = hi
            Y[i] = v
        i += 1


@micropython.viper
def srdhm_at(q, j: int):
    """q[j + 2] = SRDHM(q[j], q[j + 1]); same limb arithmetic as requant (see there)."""
    one = 1
    H = one << 31
    Q = ptr32(q)
    x = int((Q[j] ^ H) - H)
    m = int((Q[j + 1] ^ H) - H)
    d = 0
    if x < 0:
        x = 0 - x
        d = 1
    if m < 0:
        m = 0 - m
        d ^= 1
    xh = (x >> 16) & 0xFFFF
    xl = x & 0xFFFF
    yh = (m >> 16) & 0xFFFF
    yl = m & 0xFFFF
    if xh == 0x8000 and yh == 0x8000:
        Q[j + 2] = H - 1
        return
    c0 = xl * yl
    t0 = (c0 & 0xFFFF) + 0xFFFF * d
    c1 = xh * yl + xl * yh + ((c0 >> 16) & 0xFFFF) + (t0 >> 16) + 0x4000 - d
    v = 2 * xh * yh + ((c1 >> 15) & 0x1FFFF)
    if d:
        v = 0 - v
    Q[j + 2] = v


# Host-side test helpers (they allocate; never used by invoke()).
_T = array.array("i", [0] * (ACC + 1))
_P = array.array("i", [0, 0])
_D = bytearray(1)


def srdhm(a, b):
    _T[0] = a
    _T[1] = b
    srdhm_at(_T, 0)
    return _T[2]


def mbqm(x, m, s):
    """MultiplyByQuantizedMultiplier(x, m, s) through requant (in-place mode)."""
    _P[0] = m
    _P[1] = s
    t = _T
    t[_N] = 1
    t[_C] = 1
    t[_M] = 0
    t[_S] = 4
    t[_STRIDE] = 0
    t[_OUT] = -1
    t[ACC] = x
    requant(_D, _P, t)
    return t[ACC]
