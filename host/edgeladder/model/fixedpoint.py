"""gemmlowp fixed point and TFLite's int8 reference activations, replicated in Python ints.

The board runs SOFTMAX, LOGISTIC and TANH through tables the compiler fills in, so the tables
must hold exactly what TFLite Micro's reference kernels compute. These functions follow
``fixedpoint/fixedpoint.h`` (gemmlowp) and ``tensorflow/lite/kernels/internal/common.h``
operation for operation, on scalar Python ints (exact, so C's int32/int64 arithmetic is
reproduced where it does not overflow, and saturates where gemmlowp saturates).

A raw int32 ``x`` in "Qk" format means the real value ``x / 2**(31 - k)`` (k integer bits).
"""

from __future__ import annotations

import math

from edgeladder.model import quantmath

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _trunc_div(a: int, b: int) -> int:
    """C's integer division: the quotient rounded toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def srdhm(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul: ``round(a * b / 2**31)``, ties away from zero."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _trunc_div(ab + nudge, 1 << 31)


def rdbpot(x: int, exponent: int) -> int:
    """RoundingDivideByPOT: ``x / 2**exponent`` rounded to nearest, ties away from zero."""
    mask = (1 << exponent) - 1
    remainder = x & mask  # Python's & on negatives is two's complement, as in C
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def srmbpot(x: int, exponent: int) -> int:
    """SaturatingRoundingMultiplyByPOT<exponent>: saturating left shift or rounding right shift."""
    if exponent < 0:
        return rdbpot(x, -exponent)
    if exponent == 0:
        return x
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return x << exponent


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    """TFLite's MultiplyByQuantizedMultiplier on one int: its one home is
    :func:`edgeladder.model.quantmath.multiply_by_quantized_multiplier` (numpy, any shape)."""
    return int(quantmath.multiply_by_quantized_multiplier(x, multiplier, shift))


def multiply_greater_than_one(x: int, multiplier: int, left_shift: int) -> int:
    """MultiplyByQuantizedMultiplierGreaterThanOne: no right shift, left shift before the mul."""
    return srdhm(x * (1 << left_shift), multiplier)


def clz32(x: int) -> int:
    """CountLeadingZeros of x as a uint32."""
    x &= 0xFFFFFFFF
    return 32 - x.bit_length()


# exp(-2**k) in Q0.31 for k = -2..4: gemmlowp's barrel shifter in exp_on_negative_values.
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))  # fmt: skip


def _exp_on_interval(a: int) -> int:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: a Taylor expansion around -1/8."""
    constant_term = 1895147668  # exp(-1/8)
    one_third = 715827883
    x = a + (1 << 28)  # x = a + 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = srmbpot(x4, -2)
    poly = srmbpot(srdhm(x4_over_4 + x3, one_third) + x2, -1)  # x^4/24 + x^3/6 + x^2/2
    return constant_term + srdhm(constant_term, x + poly)  # exp(-1/8) * (1 + x + ...)


def exp_on_negative_values(a: int, integer_bits: int) -> int:
    """gemmlowp exp_on_negative_values: ``a`` raw in Q(integer_bits), result raw Q0.31."""
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_quarter = (a & mask) - one_quarter
    result = _exp_on_interval(srmbpot(a_mod_quarter_minus_quarter, integer_bits))
    remainder = a_mod_quarter_minus_quarter - a
    # Multiply in exp(-2**k) for every set bit of the remainder (the whole quarters of -a).
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent and remainder & (1 << (fractional_bits + exponent)):
            result = srdhm(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):  # below -32: exp is 0
        result = 0
    return INT32_MAX if a == 0 else result


def _rounding_half_sum(a: int, b: int) -> int:
    s = a + b
    return _trunc_div(s + (1 if s >= 0 else -1), 2)


def _newton_reciprocal(a: int) -> int:
    """x ~ 1 / (1 + a) in Q2.29 for a in [0, 1) (Q0.31): three Newton-Raphson steps."""
    half_denominator = _rounding_half_sum(a, INT32_MAX)
    x = 1515870810 + srdhm(half_denominator, -1010580540)  # 48/17 - 32/17 * d
    one_q2 = 1 << 29
    for _ in range(3):
        one_minus_dx = one_q2 - srdhm(half_denominator, x)
        x = x + srmbpot(srdhm(x, one_minus_dx), 2)
    return x


def one_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    """1 / (1 + a), Q0.31 in and out."""
    return srmbpot(_newton_reciprocal(a), 1)  # ExactMulByPot<-1> then Rescale<0>


def one_minus_x_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    """(1 - a) / (1 + a), Q0.31 in and out."""
    return srmbpot(_newton_reciprocal(a) - (1 << 29), 2)


def logistic(a: int, integer_bits: int) -> int:
    """gemmlowp logistic: raw Q(integer_bits) in, Q0.31 out."""
    if a == 0:
        return 1 << 30  # one half
    r = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-abs(a), integer_bits))
    return r if a > 0 else INT32_MAX - r


def tanh(a: int, integer_bits: int) -> int:
    """gemmlowp tanh: raw Q(integer_bits) in, Q0.31 out (via exp(2a), hence one more bit)."""
    if a == 0:
        return 0
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-abs(a), integer_bits + 1))
    return -t if a < 0 else t


def get_reciprocal(x: int, integer_digits: int) -> tuple[int, int]:
    """TFLite's GetReciprocal: (1 / x scaled into Q0.31, num_bits_over_unit)."""
    headroom_plus_one = clz32(x)
    num_bits_over_unit = integer_digits - headroom_plus_one
    shifted_minus_one = ((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
    return one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), num_bits_over_unit


def input_radius(integer_bits: int, left_shift: int, total_bits: int = 31) -> int:
    """CalculateInputRadius: the largest |input| whose rescaled value stays in range."""
    # 2.0**shift rather than 1 << shift: a negative shift is valid here (tiny scales).
    rescaled = ((1 << integer_bits) - 1) * (1 << (total_bits - integer_bits)) / 2.0**left_shift
    return math.floor(rescaled)
