"""Host quantization math, on numbers a person can check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edgeladder.errors import EdgeladderError
from edgeladder.model.quantmath import (
    QuantError,
    ReadingParams,
    multiply_by_quantized_multiplier,
    quantize,
    quantize_multiplier,
    quantize_readings,
    reading_params,
    round_half_away,
)

Q30 = 1 << 30


@pytest.mark.parametrize(
    ("real", "expected"),
    [
        (0.5, (Q30, 0)),
        (0.25, (Q30, -1)),
        (1.0, (Q30, 1)),
        (0.75, (3 << 29, 0)),
        (3.0, (3 << 29, 2)),
        (-0.5, (-Q30, 0)),
        (0.0, (0, 0)),
        # frac * 2**31 = 2**30 + 0.5 exactly: half away from zero, not to even.
        (0.5 + 2.0**-32, (Q30 + 1, 0)),
        # frac rounds up to 1.0: halve the multiplier and bump the shift.
        (1 - 2.0**-40, (Q30, 1)),
        # Below 2**-32 every product shifts out: flushed to zero as in TFLite.
        (2.0**-33, (0, 0)),
        (2.0**-32, (Q30, -31)),
    ],
)
def test_quantize_multiplier(real, expected):
    assert quantize_multiplier(real) == expected


def test_quantize_multiplier_rejects_non_finite():
    with pytest.raises(QuantError):
        quantize_multiplier(float("nan"))


def test_round_half_away():
    assert [round_half_away(v) for v in (2.5, -2.5, 0.5, -0.5, 1.49, 0.49999999999999994)] == [
        3,
        -3,
        1,
        -1,
        1,
        0,
    ]


def test_quantize_rounds_half_away_and_clamps():
    x = np.array([2.5, -2.5, 0.5, -0.5, 1.5, 300, -300, 127.4, -128.6])
    assert quantize(x, 1.0, 0).tolist() == [3, -3, 1, -1, 2, 127, -128, 127, -128]
    assert quantize(x, 1.0, 0).dtype == np.int8
    # The zero point is added after rounding, then the sum is clamped.
    assert quantize(np.array([2.5, 126.0, -200.0]), 1.0, 10).tolist() == [13, 127, -128]
    assert quantize(np.array([1.0, -1.25]), 0.5, -1).tolist() == [1, -4]


def test_quantize_divides_in_float32_like_tflite():
    # 0.49999999 is 0.5 in float32, so TFLite's kernel rounds it to 1 (float64 would give 0).
    assert quantize(np.array([0.49999999]), 1.0, 0).tolist() == [1]


def test_quantize_rejects_bad_input():
    with pytest.raises(QuantError, match="scale"):
        quantize(np.array([1.0]), 0.0, 0)
    with pytest.raises(QuantError, match="zero_point"):
        quantize(np.array([1.0]), 1.0, 128)
    with pytest.raises(QuantError, match="NaN"):
        quantize(np.array([np.nan]), 1.0, 0)


def test_multiply_by_quantized_multiplier_by_hand():
    x = np.array([-3, -2, -1, 0, 1, 2, 3])
    # * 0.5: SaturatingRoundingDoublingHighMul rounds halves up (-1.5 -> -1, -0.5 -> 0).
    assert multiply_by_quantized_multiplier(x, Q30, 0).tolist() == [-1, -1, 0, 0, 1, 1, 2]
    # * 0.25 rounds twice: 0.25 -> 0.5 -> 1, and -0.75 -> -0.5 -> -1.
    assert multiply_by_quantized_multiplier(x, Q30, -1).tolist() == [-1, -1, 0, 0, 1, 1, 1]
    # * 2: a left shift first.
    assert multiply_by_quantized_multiplier(x, Q30, 2).tolist() == [-6, -4, -2, 0, 2, 4, 6]
    # The left-shifted product saturates at int32 instead of wrapping.
    big = multiply_by_quantized_multiplier(np.array([1 << 30, -(1 << 30)]), Q30, 5)
    assert big.tolist() == [1 << 30, -(1 << 30)]  # (2**31 - 1) * 0.5, rounded; -2**31 * 0.5


def test_multiply_by_quantized_multiplier_tracks_the_real_product():
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << 20), 1 << 20, 2000)
    for real in (0.001, 0.37, 0.5, 0.99, 1.7, 12.3):
        m, s = quantize_multiplier(real)
        got = multiply_by_quantized_multiplier(x, m, s)
        assert np.max(np.abs(got - x * real)) <= 1 + np.max(np.abs(x)) * real * 2.0**-30


def test_reading_params_for_a_12_bit_adc():
    # Mid-scale 2048 is zero; one count is 0.5 units and the model's step is 1 unit.
    params = reading_params(0.5, 2048, 1.0, 0)
    assert params == ReadingParams(offset=2048, multiplier=Q30, shift=0, zero_point=0)
    r = np.array([2045, 2046, 2047, 2048, 2049, 2050, 4095, 0], dtype=np.int16)
    assert quantize_readings(r, params).tolist() == [-1, -1, 0, 0, 1, 1, 127, -128]


def test_quantize_readings_stays_within_one_step_of_float_math():
    rng = np.random.default_rng(2)
    r = rng.integers(0, 4096, 5000)
    params = reading_params(3.3 / 4095, 1000, 0.0123, -5)
    ideal = np.clip(np.round((r - 1000) * (3.3 / 4095) / 0.0123) - 5, -128, 127)
    assert np.max(np.abs(quantize_readings(r, params) - ideal)) <= 1


def test_reading_params_rejects_what_a_board_cannot_use():
    with pytest.raises(QuantError, match="whole number of raw counts"):
        reading_params(0.5, 2047.5, 1.0, 0)
    with pytest.raises(QuantError, match="scale_in"):
        reading_params(-0.5, 0, 1.0, 0)
    with pytest.raises(QuantError, match="q_scale"):
        reading_params(0.5, 0, 0.0, 0)
    with pytest.raises(QuantError, match="zero_point"):
        reading_params(0.5, 0, 1.0, -129)
    assert issubclass(QuantError, EdgeladderError)
    assert reading_params(0.5, 2048.0, 1.0, 0).offset == 2048
