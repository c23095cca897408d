"""SOFTMAX int8 -> int8 (output scale 1/256, zero point -128, as TFLM requires).

TFLM's int8 softmax (reference_ops::Softmax, parameters from CalculateSoftmaxParams):
``real = min(beta * in_scale * 2**26, 2**31 - 1)``, ``(mult, lshift) = QM(real)`` and
``diff_min = -floor(31 * 2**26 / 2**lshift)``. Per row, with ``d = x - max(row)`` (<= 0)::

    e(d)   = exp_on_negative_values(Q5.26 raw: MBQM_GT1(d, mult, lshift))    # Q0.31
    sum    = sum over d >= diff_min of RoundingDivideByPOT(e(d), 12)         # Q12.19
    scale, nbits = GetReciprocal(sum, 12)                                    # Q0.31
    out    = clamp(RoundingDivideByPOT(SRDHM(scale, e(d)), nbits + 23) - 128)  if d >= diff_min
             -128                                                            otherwise

Only ``e(d)`` depends on the input scale and beta, and ``d`` takes 256 values, so the
compiler stores ``sm_lut[k] = e(-k)`` for k = 0..255 (int32, Q0.31), with 0 where
``-k < diff_min``: a 0 entry adds nothing to ``sum`` and yields exactly -128, so the board
may skip the diff_min test. The board indexes the table with ``max(row) - x``.
"""

from __future__ import annotations

import math

import numpy as np

from edgeladder.model import fixedpoint as fp
from edgeladder.model.compiler.fmt import mformat as F
from edgeladder.model.compiler.ir import (
    Arena,
    OpContext,
    OpError,
    OpRecord,
    count,
    int32_blob,
    require_int8,
)
from edgeladder.model.quantmath import quantize_multiplier

SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12


def softmax_params(beta: float, in_scale: float) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, diff_min) as CalculateSoftmaxParams for int8."""
    real = min(beta * in_scale * (1 << (31 - SCALED_DIFF_INTEGER_BITS)), (1 << 31) - 1.0)
    if not real > 1.0:  # QuantizeMultiplierGreaterThanOne's precondition
        raise OpError(f"beta * input scale = {beta * in_scale} is too small for int8 softmax")
    mult, shift = quantize_multiplier(real)
    diff_min = -fp.input_radius(SCALED_DIFF_INTEGER_BITS, shift)
    return mult, shift, diff_min


def exp_table(beta: float, in_scale: float) -> list[int]:
    """The 256-entry table: entry k is e(-k) in Q0.31, or 0 where -k < diff_min."""
    mult, shift, diff_min = softmax_params(beta, in_scale)
    table = []
    for k in range(256):
        if -k < diff_min:
            table.append(0)
        else:
            rescaled = fp.multiply_greater_than_one(-k, mult, shift)
            table.append(fp.exp_on_negative_values(rescaled, SCALED_DIFF_INTEGER_BITS))
    return table


def softmax_row(row: np.ndarray, table: list[int]) -> np.ndarray:
    """What the board computes for one row from the table (the test oracle for the engine)."""
    xs = [int(v) for v in row]
    top = max(xs)
    exps = [table[top - v] for v in xs]
    total = sum(fp.rdbpot(e, ACCUMULATION_INTEGER_BITS) for e in exps)
    scale, nbits = fp.get_reciprocal(total, ACCUMULATION_INTEGER_BITS)
    exponent = nbits + 31 - 8
    out = [fp.rdbpot(fp.srdhm(scale, e), exponent) - 128 for e in exps]
    return np.clip(out, -128, 127).astype(np.int8)


def compile_softmax(ctx: OpContext) -> list[OpRecord]:
    op, x, out = ctx.op, ctx.input(0), ctx.output()
    in_scale, _ = require_int8(x, "input")
    out_scale, out_zp = require_int8(out, "output")
    if out_zp != -128 or out_scale != 1.0 / 256:
        raise OpError(
            f"output scale {out_scale} and zero point {out_zp}; supported: 1/256 and -128"
        )
    beta = float(op.options.get("beta", 1.0))
    if not (math.isfinite(beta) and beta > 0):
        raise OpError(f"beta {beta} is not supported; supported: beta > 0")
    if not x.shape or tuple(x.shape) != tuple(out.shape):
        raise OpError(f"input {x.shape} and output {out.shape} must have the same shape")
    depth = x.shape[-1]
    _, _, diff_min = softmax_params(beta, in_scale)
    params = [
        Arena(op.inputs[0]), Arena(op.outputs[0]), count(x.shape) // depth, depth,
        int32_blob(exp_table(beta, in_scale)), diff_min, out_zp,
    ]  # fmt: skip
    return [OpRecord(F.SOFTMAX, params, (op.inputs[0],), (op.outputs[0],), op.index)]


REGISTRY = {"SOFTMAX": compile_softmax}
