"""Quantization arithmetic on the host, written to match TFLite's reference kernels bit for bit.

The host does the float work (turning scales into a Q31 multiplier and a shift) so that a board
only ever does integer arithmetic: ``ladder.quant.quantize_into`` on the device and
:func:`quantize_readings` here compute the same bytes from the same :class:`ReadingParams`.

Rounding, as in TFLite: ``TfLiteRound`` (``std::round``) rounds half away from zero; Python's
``round`` and ``np.round`` round half to even, so neither is used.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from edgeladder.errors import EdgeladderError

INT8_MIN, INT8_MAX = -128, 127
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


class QuantError(EdgeladderError):
    """Quantization parameters that the board cannot use."""


class ReadingParams(NamedTuple):
    """Integer parameters that map a raw sensor reading ``r`` to an int8 model input.

    ``q = clamp(MultiplyByQuantizedMultiplier(r - offset, multiplier, shift) + zero_point)``
    """

    offset: int
    multiplier: int
    shift: int
    zero_point: int


def round_half_away(x: float) -> int:
    """``std::round``: the nearest integer, halves away from zero (2.5 -> 3, -2.5 -> -3)."""
    if not math.isfinite(x):
        raise QuantError(f"cannot round {x}")
    mag = abs(x)
    whole = math.floor(mag)
    # mag - whole is exact for doubles, so no 0.49999999999999994 + 0.5 == 1.0 trap.
    n = whole + 1 if mag - whole >= 0.5 else whole
    return int(-n if x < 0 else n)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``real ~= multiplier * 2**(shift - 31)``.

    ``multiplier`` is a Q31 int32 with ``2**30 <= |multiplier| < 2**31`` (or 0), e.g.
    0.5 -> (2**30, 0), 1.0 -> (2**30, 1). Multipliers below about ``2**-32`` flush to (0, 0),
    as in TFLite, because every product would shift out to zero.
    """
    real = float(real)
    if not math.isfinite(real):
        raise QuantError(f"multiplier {real} is not a finite number")
    if real == 0.0:
        return 0, 0
    frac, shift = math.frexp(real)  # real = frac * 2**shift, 0.5 <= |frac| < 1
    q = round_half_away(frac * (1 << 31))  # exact: a power-of-two scaling
    if q == 1 << 31:  # frac rounded up to 1.0: renormalize
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float values to int8 as TFLite's ``AffineQuantize`` does it.

    The division is in float32, like the kernel's ``val / static_cast<float>(scale)`` on a
    float32 tensor; the quotient rounds half away from zero, then ``zero_point`` is added and the
    result clamped to [-128, 127] (never truncated).
    """
    if not (math.isfinite(scale) and scale > 0):
        raise QuantError(f"scale must be a positive finite number, got {scale}")
    _check_zero_point(zero_point)
    q = np.asarray(x, dtype=np.float32) / np.float32(scale)
    if not np.all(np.isfinite(q)):
        raise QuantError("cannot quantize NaN or infinite values")
    q = _round_half_away(q.astype(np.float64))  # float32 -> float64 is exact
    q = np.clip(q + zero_point, INT8_MIN, INT8_MAX)
    return q.astype(np.int8)


def reading_params(
    scale_in: float, offset: float, q_scale: float, zero_point: int
) -> ReadingParams:
    """Parameters for a board to quantize raw readings without floats.

    A raw reading ``r`` means the physical value ``(r - offset) * scale_in`` (``offset`` in raw
    counts, e.g. 2048 for a mid-scale 12-bit ADC); the model input is that value quantized with
    ``q_scale`` and ``zero_point``. Fixed point makes this
    ``clamp(round((r - offset) * scale_in / q_scale) + zero_point)`` up to TFLite's rounding.
    """
    for name, value in (("scale_in", scale_in), ("q_scale", q_scale)):
        if not (math.isfinite(value) and value > 0):
            raise QuantError(f"{name} must be a positive finite number, got {value}")
    if not (math.isfinite(offset) and float(offset).is_integer()):
        raise QuantError(
            f"offset must be a whole number of raw counts, got {offset}; "
            "round it, or fold the fraction into the model's first layer"
        )
    offset = int(offset)
    if abs(offset) >= 1 << 29:
        raise QuantError(f"offset {offset} does not fit a board's small ints (|offset| < 2**29)")
    _check_zero_point(zero_point)
    multiplier, shift = quantize_multiplier(scale_in / q_scale)
    return ReadingParams(offset, multiplier, shift, int(zero_point))


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier`` (double rounding) on int32 values, as int64.

    ``SaturatingRoundingDoublingHighMul(x * 2**left_shift, multiplier)`` then
    ``RoundingDivideByPOT(.., right_shift)``. Where TFLite's ``x * 2**left_shift`` would overflow
    int32 (undefined in C), the product saturates to int32 here and on the board.
    """
    x = np.asarray(x, dtype=np.int64)
    if x.size and (x.min() < _INT32_MIN or x.max() > _INT32_MAX):
        raise QuantError("multiply_by_quantized_multiplier takes int32 values")
    if not _INT32_MIN <= multiplier <= _INT32_MAX:
        raise QuantError(f"multiplier {multiplier} is not an int32")
    left = max(shift, 0)
    right = max(-shift, 0)
    # With left >= 31 any nonzero x saturates anyway; capping keeps the shift inside int64.
    a = np.clip(x << min(left, 31), _INT32_MIN, _INT32_MAX)

    # SaturatingRoundingDoublingHighMul: nudge, then divide by 2**31 truncating toward zero.
    ab = a * np.int64(multiplier)  # |a|, |multiplier| <= 2**31: fits int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    high = np.sign(num) * (np.abs(num) >> 31)
    overflow = (a == _INT32_MIN) & (multiplier == _INT32_MIN)
    high = np.where(overflow, _INT32_MAX, high)

    # RoundingDivideByPOT: round half away from zero. TFLite keeps right <= 31; past that
    # |high| < 2**31 rounds to 0 and the capped shift gives exactly that.
    right = min(right, 62)
    mask = (1 << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (remainder > threshold)


def quantize_readings(readings: np.ndarray, params: ReadingParams) -> np.ndarray:
    """The host twin of the board's ``quantize_into``: raw integer readings to int8."""
    r = np.asarray(readings)
    if r.dtype.kind not in "iu":
        raise QuantError(f"readings must be integers, got dtype {r.dtype}")
    _check_zero_point(params.zero_point)
    x = r.astype(np.int64) - params.offset
    y = multiply_by_quantized_multiplier(x, params.multiplier, params.shift) + params.zero_point
    return np.clip(y, INT8_MIN, INT8_MAX).astype(np.int8)


def _round_half_away(q: np.ndarray) -> np.ndarray:
    whole = np.trunc(q)
    frac = q - whole  # exact
    return whole + np.where(np.abs(frac) >= 0.5, np.sign(q), 0.0)


def _check_zero_point(zero_point: int) -> None:
    if int(zero_point) != zero_point or not INT8_MIN <= zero_point <= INT8_MAX:
        raise QuantError(f"zero_point must be an integer in [-128, 127], got {zero_point}")
