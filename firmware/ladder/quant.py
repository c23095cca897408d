# Integer-only helpers that feed the int8 engine: raw sensor readings to int8 inputs, and the
# k best int8 scores. Nothing here allocates per call on a board; the caller owns the buffers.
#
# Plain bytecode on purpose (no @micropython.viper): viper ints are machine words, 64-bit on the
# unix port and 32-bit on an ESP32, so viper overflow would differ between the simulator and a
# board; plain code gives the same bits on both, and CPython can import this file too.
#
# Small ints: an ESP32 holds ints in [-2**30, 2**30) without allocating; anything larger becomes
# a heap "long int". (The 64-bit unix port's limit is 2**62, so the simulator alone cannot catch
# this; tests/device/test_quant.py checks the ranges below under CPython.) The product of a Q31
# multiplier and a reading needs up to 59 bits, so it is done in 14-bit limbs, every partial
# result staying under 2**30.

import struct

try:
    from micropython import const
except ImportError:  # CPython (host tools and tests)

    def const(x):
        return x


_LIMB = const(14)
_LIMB_MASK = const(0x3FFF)
# |reading - offset| must stay below 2**28: two 14-bit limbs. A 24-bit ADC fits.
_X_LIMIT = const(0x10000000)
# shift = -29 already rounds every |x| < 2**28 to 0; deeper shifts give the same result.
_MAX_RSHIFT = const(29)

# The multiplier (>= 2**30) is a long int on a board: any arithmetic on it would allocate.
# Packing it into this buffer does not, and its bytes give the limbs. Single-threaded use only.
_mbuf = bytearray(4)


def quantize_into(src, dst, offset, multiplier, shift, zero_point):
    """dst[i] = int8 of src[i], with TFLite's MultiplyByQuantizedMultiplier.

    dst[i] = clamp(MBQM(src[i] - offset, multiplier, shift) + zero_point, -128, 127)
    src: array('h'/'i'/'H'/'B') or bytearray of raw readings; dst: array('b') or bytearray
    (int8 stored two's complement) of the same length. Parameters come from the host's
    edgeladder.quantmath.reading_params.
    """
    n = len(src)
    if len(dst) != n:
        raise ValueError("dst holds %d values but src has %d; make them equal" % (len(dst), n))
    if multiplier != 0 and not (0x40000000 <= multiplier <= 0x7FFFFFFF):
        raise ValueError("multiplier must be 0 or a Q31 int in [2**30, 2**31)")
    if not -128 <= zero_point <= 127:
        raise ValueError("zero_point %d is outside int8" % zero_point)

    # multiplier = m2 * 2**28 + m1 * 2**14 + m0, with m0, m1 < 2**14 and m2 < 2**3.
    struct.pack_into("<I", _mbuf, 0, multiplier)
    b = _mbuf[1]
    m0 = _mbuf[0] | (b & 0x3F) << 8
    m1 = b >> 6 | _mbuf[2] << 2 | (_mbuf[3] & 0x0F) << 10
    m2 = _mbuf[3] >> 4

    ls = shift if shift > 0 and multiplier else 0
    rs = -shift if shift < 0 else 0
    if rs > _MAX_RSHIFT:
        rs = _MAX_RSHIFT
    half = (1 << rs) >> 1
    # With a left shift, x << ls >= 2**28 means |result| >= 2**27 (multiplier >= 2**30): it
    # saturates, so x is not shifted at all. Without one, x >= 2**28 is a reading out of range.
    lim = _X_LIMIT >> ls if ls < 28 else 1
    wrap = 0xFF if isinstance(dst, bytearray) else -1  # bytearray holds int8 as 0..255

    for i in range(n):
        x = src[i] - offset
        d = 0
        if x < 0:
            x = -x
            d = 1  # work on |x|; d also turns the rounding nudge 2**30 into 2**30 - 1
        if x >= lim:
            if not ls:
                raise ValueError("reading %d is 2**28 or more from offset %d" % (src[i], offset))
            v = 0x10000
        else:
            a = x << ls  # < 2**28
            a0 = a & _LIMB_MASK
            a1 = a >> _LIMB
            # T = floor((a * multiplier + 2**30 - d) / 2**31), column by column in base 2**14.
            # Every term is >= 0 except -d, so each partial sum is below the column's total:
            # col0 < 2**28, col1 < 2**29 + 2**15, col2 < 2**28 + 2**18.
            c = a0 * m0 - d
            c = a0 * m1 + a1 * m0 + (c >> _LIMB)
            c = a0 * m2 + a1 * m1 + 4 + (c >> _LIMB)  # 4 * 2**28 is the 2**30 nudge
            v = (a1 * m2 + (c >> _LIMB)) << 11 | (c & _LIMB_MASK) >> 3  # T < 2**28
            v = (v + half) >> rs  # RoundingDivideByPOT on |T|: halves away from zero
        if d:
            v = -v
        v += zero_point
        if v > 127:
            v = 127
        elif v < -128:
            v = -128
        dst[i] = v & wrap


def top_k_into(scores, k, idx_out):
    """idx_out[:k] = indices of the k largest int8 scores, best first, ties to the lower index.

    scores: array('b'), or a bytearray of int8 values stored two's complement.
    idx_out: any writable int array (or bytearray when len(scores) <= 256).
    """
    n = len(scores)
    if not 0 < k <= n:
        raise ValueError("k must be in 1..%d, got %d" % (n, k))
    if len(idx_out) < k:
        raise ValueError("idx_out holds %d values, needs k=%d" % (len(idx_out), k))
    filled = 0
    for i in range(n):
        s = scores[i]
        if s > 127:
            s -= 256
        if filled < k:
            j = filled
            filled += 1
        else:
            w = scores[idx_out[k - 1]]
            if w > 127:
                w -= 256
            if s <= w:  # an equal later index never beats an earlier one
                continue
            j = k - 1
        # Insertion: move worse entries down one place; equal ones stay ahead (lower index).
        while j:
            p = idx_out[j - 1]
            w = scores[p]
            if w > 127:
                w -= 256
            if w >= s:
                break
            idx_out[j] = p
            j -= 1
        idx_out[j] = i
