"""FULLY_CONNECTED: int8 input and weights, int32 bias, per-channel requantization.

TFLM computes ``out[b][o] = clamp(out_zp + MBQM(sum_i w[o][i] * (x[b][i] - in_zp) + bias[o]))``
with one multiplier/shift per output (per-channel weights) or one for all (per-tensor; the
arrays then repeat it, which is the same arithmetic). The input offset term
``-in_zp * sum_i w[o][i]`` does not depend on the input, so it is folded into the bias here
and the board accumulates plain ``w * x`` products.
"""

from __future__ import annotations

import numpy as np

from edgeladder.model.compiler.fmt import mformat as F
from edgeladder.model.compiler.ir import (
    Arena,
    OpContext,
    OpError,
    OpRecord,
    activation_range,
    channel_multipliers,
    count,
    int8_blob,
    int32_blob,
    require_const,
    require_int8,
)


def compile_fully_connected(ctx: OpContext) -> list[OpRecord]:
    op = ctx.op
    x, w_t, out = ctx.input(0), ctx.input(1), ctx.output()
    in_scale, in_zp = require_int8(x, "input")
    out_scale, out_zp = require_int8(out, "output")
    if w_t.dtype != "INT8":
        raise OpError(f"weights are {w_t.dtype}; supported: INT8")
    w = require_const(w_t, "weights").astype(np.int64)
    if w.ndim != 2:
        raise OpError(f"weights have shape {w_t.shape}, expected [outputs, inputs]")
    n_out, n_in = w.shape
    if any(z != 0 for z in w_t.zero_points):
        raise OpError("weights must be symmetric (zero point 0)")
    if len(w_t.scales) > 1 and w_t.quantized_dimension != 0:
        raise OpError("per-channel weights must be quantized along the output dimension")
    total = count(x.shape)
    if total % n_in:
        raise OpError(f"input of {total} values does not split into rows of {n_in}")
    batches = total // n_in
    if count(out.shape) != batches * n_out:
        raise OpError(f"output shape {out.shape} does not hold {batches} x {n_out} values")

    bias_t = ctx.optional_input(2)
    bias = np.zeros(n_out, dtype=np.int64)
    if bias_t is not None:
        if bias_t.dtype != "INT32":
            raise OpError(f"bias is {bias_t.dtype}; supported: INT32")
        bias = require_const(bias_t, "bias").astype(np.int64).reshape(n_out)
    # Fold the input offset into the bias: sum_i w*(x - zp) + b == sum_i w*x + (b - zp*sum_i w).
    folded = bias - in_zp * w.sum(axis=1)

    mult, shift = channel_multipliers(in_scale, w_t.scales, out_scale, n_out)
    act_min, act_max = activation_range(
        op.options.get("fused_activation_function", "NONE"), out_scale, out_zp
    )
    params = [
        Arena(op.inputs[0]), Arena(op.outputs[0]), int8_blob(w), int32_blob(folded), mult, shift,
        batches, n_in, n_out, out_zp, act_min, act_max,
    ]  # fmt: skip
    return [OpRecord(F.FULLY_CONNECTED, params, (op.inputs[0],), (op.outputs[0],), op.index)]


REGISTRY = {"FULLY_CONNECTED": compile_fully_connected}
