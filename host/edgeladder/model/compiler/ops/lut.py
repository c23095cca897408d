"""Elementwise int8 -> int8 maps compiled to a 256-byte table: ``out = lut[x + 128]``.

LOGISTIC and TANH (TFLM logistic_common.cc / tanh.cc with reference_integer_ops): the input
moves to Q4.27 with ``real = in_scale * 2**27``, ``(q, e) = frexp(real)``,
``mult = round(q * 2**31)``, ``radius = floor(15 * 2**27 / 2**e)``; then for ``v = x - in_zp``:
``v <= -radius`` -> -128, ``v >= radius`` -> 127, otherwise
LOGISTIC: ``clamp(RDBPOT(logistic(MBQM(v, mult, e)), 23) - 128)`` (output zero point -128),
TANH: ``clamp(RDBPOT(tanh(MBQM(v, mult, e)), 24))`` (output zero point 0), gemmlowp's
fixed-point logistic/tanh on a Q4 input. QUANTIZE int8 -> int8 (requantize):
``clamp(MBQM(x - in_zp, m, s) + out_zp)`` with ``(m, s) = QM(in_scale / out_scale)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from edgeladder.model import fixedpoint as fp
from edgeladder.model.compiler.fmt import mformat as F
from edgeladder.model.compiler.ir import (
    Arena,
    OpContext,
    OpError,
    OpRecord,
    count,
    int8_blob,
    require_int8,
)
from edgeladder.model.quantmath import quantize_multiplier, round_half_away

INPUT_INTEGER_BITS = 4


def _clamp8(v: int) -> int:
    return max(-128, min(127, v))


def _q4_params(in_scale: float) -> tuple[int, int, int]:
    """(multiplier, shift, radius) as TFLM's int8 LOGISTIC/TANH Prepare."""
    q, shift = math.frexp(in_scale * (1 << (31 - INPUT_INTEGER_BITS)))
    mult = round_half_away(q * (1 << 31))
    if mult >= 1 << 31:  # TFLM casts this to int32 without renormalizing: it wraps
        mult -= 1 << 32
    return mult, shift, fp.input_radius(INPUT_INTEGER_BITS, shift)


def _activation_table(in_scale: float, in_zp: int, body: Callable[[int], int]) -> list[int]:
    mult, shift, radius = _q4_params(in_scale)
    table = []
    for x in range(-128, 128):
        v = x - in_zp
        if v <= -radius:
            table.append(-128)
        elif v >= radius:
            table.append(127)
        else:
            table.append(_clamp8(body(fp.multiply_by_quantized_multiplier(v, mult, shift))))
    return table


def logistic_table(in_scale: float, in_zp: int) -> list[int]:
    return _activation_table(
        in_scale, in_zp, lambda q4: fp.rdbpot(fp.logistic(q4, INPUT_INTEGER_BITS), 23) - 128
    )


def tanh_table(in_scale: float, in_zp: int) -> list[int]:
    return _activation_table(
        in_scale, in_zp, lambda q4: fp.rdbpot(fp.tanh(q4, INPUT_INTEGER_BITS), 24)
    )


def requantize_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> list[int]:
    mult, shift = quantize_multiplier(in_scale / out_scale)
    return [
        _clamp8(fp.multiply_by_quantized_multiplier(x - in_zp, mult, shift) + out_zp)
        for x in range(-128, 128)
    ]


def _record(ctx: OpContext, table: list[int]) -> list[OpRecord]:
    op = ctx.op
    n = count(ctx.input(0).shape)
    if count(ctx.output().shape) != n:
        raise OpError(f"input {ctx.input(0).shape} and output {ctx.output().shape} differ in size")
    params = [Arena(op.inputs[0]), Arena(op.outputs[0]), n, int8_blob(table)]
    return [OpRecord(F.LUT, params, (op.inputs[0],), (op.outputs[0],), op.index)]


def compile_logistic(ctx: OpContext) -> list[OpRecord]:
    in_scale, in_zp = require_int8(ctx.input(0), "input")
    _, out_zp = require_int8(ctx.output(), "output")
    if out_zp != -128:
        raise OpError(f"output zero point {out_zp}; supported: -128 (scale 1/256)")
    return _record(ctx, logistic_table(in_scale, in_zp))


def compile_tanh(ctx: OpContext) -> list[OpRecord]:
    in_scale, in_zp = require_int8(ctx.input(0), "input")
    _, out_zp = require_int8(ctx.output(), "output")
    if out_zp != 0:
        raise OpError(f"output zero point {out_zp}; supported: 0 (scale 1/128)")
    return _record(ctx, tanh_table(in_scale, in_zp))


def compile_requantize(ctx: OpContext) -> list[OpRecord]:
    """QUANTIZE inside the graph: int8 -> int8 with new scale and zero point."""
    if ctx.input(0).dtype != "INT8":
        raise OpError(
            f"QUANTIZE from {ctx.input(0).dtype} inside the graph; supported: int8 -> int8 "
            "(float QUANTIZE/DEQUANTIZE only at the graph's input and output)"
        )
    in_scale, in_zp = require_int8(ctx.input(0), "input")
    return _record(ctx, requantize_table(in_scale, in_zp, *require_int8(ctx.output(), "output")))


REGISTRY = {"LOGISTIC": compile_logistic, "TANH": compile_tanh, "QUANTIZE": compile_requantize}
