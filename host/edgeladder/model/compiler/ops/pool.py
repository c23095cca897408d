"""AVERAGE_POOL_2D and MAX_POOL_2D: NHWC, batch 1; int8 pools keep the input's quantization.

TFLM's int8 reference pools work on the raw int8 values (no requantization):
max pool takes the largest value over the valid window; average pool sums the valid taps
(padding excluded from both the sum and the count) and divides rounding half away from zero,
``(sum + count/2) / count`` for a positive sum, ``(sum - count/2) / count`` otherwise (C
division). Both then clamp to the fused activation range of the output.
"""

from __future__ import annotations

from edgeladder.model.compiler.fmt import mformat as F
from edgeladder.model.compiler.ir import (
    Arena,
    OpContext,
    OpError,
    OpRecord,
    activation_range,
    require_int8,
)
from edgeladder.model.compiler.ops.conv import out_size, pad_before


def _compile_pool(ctx: OpContext, opcode: int) -> list[OpRecord]:
    op, x, out = ctx.op, ctx.input(0), ctx.output()
    require_int8(x, "input")
    out_scale, out_zp = require_int8(out, "output")
    if len(x.shape) != 4 or len(out.shape) != 4:
        raise OpError(f"input {x.shape} and output {out.shape} must be NHWC (4-D)")
    if x.shape[0] != 1:
        raise OpError(f"batch {x.shape[0]} is not supported; supported: batch 1")
    _, in_h, in_w, c = x.shape
    o = op.options
    f_h, f_w = o.get("filter_h", 0), o.get("filter_w", 0)
    s_h, s_w = o.get("stride_h", 0), o.get("stride_w", 0)
    if min(f_h, f_w, s_h, s_w) < 1:
        raise OpError(f"filter {f_h}x{f_w} and stride {s_h}x{s_w} must be positive")
    padding = o.get("padding", "VALID")
    out_h = out_size(padding, in_h, f_h, s_h, 1)
    out_w = out_size(padding, in_w, f_w, s_w, 1)
    if tuple(out.shape) != (1, out_h, out_w, c):
        raise OpError(f"output shape {out.shape} does not match {padding} padding")
    act = activation_range(o.get("fused_activation_function", "NONE"), out_scale, out_zp)
    params = [
        Arena(op.inputs[0]), Arena(op.outputs[0]), in_h, in_w, c, out_h, out_w, f_h, f_w,
        s_h, s_w, pad_before(in_h, f_h, s_h, 1, out_h), pad_before(in_w, f_w, s_w, 1, out_w),
        *act,
    ]  # fmt: skip
    return [OpRecord(opcode, params, (op.inputs[0],), (op.outputs[0],), op.index)]


def compile_average_pool_2d(ctx: OpContext) -> list[OpRecord]:
    return _compile_pool(ctx, F.AVERAGE_POOL_2D)


def compile_max_pool_2d(ctx: OpContext) -> list[OpRecord]:
    return _compile_pool(ctx, F.MAX_POOL_2D)


REGISTRY = {"AVERAGE_POOL_2D": compile_average_pool_2d, "MAX_POOL_2D": compile_max_pool_2d}
