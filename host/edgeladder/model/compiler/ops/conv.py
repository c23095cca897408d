"""CONV_2D and DEPTHWISE_CONV_2D: NHWC, batch 1, SAME/VALID padding, stride, dilation.

TFLM's int8 ConvPerChannel / DepthwiseConvPerChannel: for every output pixel and channel,
``acc = bias[c] + sum over valid taps of w * (x - in_zp)`` (taps that fall into the padding
are skipped, so the input offset cannot be folded into the bias as for FULLY_CONNECTED),
then ``out = clamp(MBQM(acc, mult[c], shift[c]) + out_zp, act_min, act_max)``.
Padding is TFLite's ComputePaddingHeightWidth: ``pad = max(0, ((out-1)*stride +
(k-1)*dilation + 1 - in) // 2)`` on the top/left; the remainder goes bottom/right.
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
    int8_blob,
    int32_blob,
    require_const,
    require_int8,
)


def out_size(padding: str, size: int, k: int, stride: int, dilation: int) -> int:
    """TFLite's ComputeOutSize."""
    effective = (k - 1) * dilation + 1
    if padding == "SAME":
        return (size + stride - 1) // stride
    if padding == "VALID":
        return (size + stride - effective) // stride
    raise OpError(f"padding {padding} is not supported; supported: SAME, VALID")


def pad_before(size: int, k: int, stride: int, dilation: int, out: int) -> int:
    """TFLite's ComputePaddingWithOffset: the top (or left) padding."""
    effective = (k - 1) * dilation + 1
    return max(0, (out - 1) * stride + effective - size) // 2


def spatial(ctx: OpContext, in_hw: tuple[int, int], k_hw: tuple[int, int]) -> list[int]:
    """[out_h, out_w, stride_h, stride_w, dil_h, dil_w, pad_h, pad_w], checked against the graph."""
    o = ctx.op.options
    stride = (o.get("stride_h", 1), o.get("stride_w", 1))
    dil = (o.get("dilation_h", 1), o.get("dilation_w", 1))
    if min(stride) < 1 or min(dil) < 1:
        raise OpError(f"stride {stride} and dilation {dil} must be positive")
    padding = o.get("padding", "SAME")
    outs = [out_size(padding, in_hw[i], k_hw[i], stride[i], dil[i]) for i in range(2)]
    shape = ctx.output().shape
    if tuple(shape[1:3]) != tuple(outs):
        raise OpError(f"output shape {shape} does not match {padding} padding ({outs})")
    pads = [pad_before(in_hw[i], k_hw[i], stride[i], dil[i], outs[i]) for i in range(2)]
    return [*outs, *stride, *dil, *pads]


def _common(ctx: OpContext, qdim: int):
    x, w_t, out = ctx.input(0), ctx.input(1), ctx.output()
    in_scale, in_zp = require_int8(x, "input")
    out_scale, out_zp = require_int8(out, "output")
    if len(x.shape) != 4 or len(out.shape) != 4:
        raise OpError(f"input {x.shape} and output {out.shape} must be NHWC (4-D)")
    if x.shape[0] != 1:
        raise OpError(f"batch {x.shape[0]} is not supported; supported: batch 1")
    if w_t.dtype != "INT8" or len(w_t.shape) != 4:
        raise OpError(f"filter must be 4-D INT8, got {w_t.dtype} {w_t.shape}")
    if any(z != 0 for z in w_t.zero_points):
        raise OpError("filter must be symmetric (zero point 0)")
    if len(w_t.scales) > 1 and w_t.quantized_dimension != qdim:
        raise OpError(f"per-channel filter must be quantized along dimension {qdim}")
    w = require_const(w_t, "filter")
    out_c = out.shape[3]
    bias = np.zeros(out_c, dtype=np.int64)
    bias_t = ctx.optional_input(2)
    if bias_t is not None:
        if bias_t.dtype != "INT32":
            raise OpError(f"bias is {bias_t.dtype}; supported: INT32")
        bias = require_const(bias_t, "bias").reshape(out_c)
    mult, shift = channel_multipliers(in_scale, w_t.scales, out_scale, out_c)
    act = activation_range(
        ctx.op.options.get("fused_activation_function", "NONE"), out_scale, out_zp
    )
    return x, w, out, bias, mult, shift, in_zp, out_zp, act


def compile_conv_2d(ctx: OpContext) -> list[OpRecord]:
    x, w, out, bias, mult, shift, in_zp, out_zp, act = _common(ctx, 0)
    _, in_h, in_w, in_c = x.shape
    out_c, k_h, k_w, w_in_c = w.shape
    if w_in_c != in_c:
        raise OpError(
            f"grouped convolution ({in_c} input channels, filter {w.shape}) is not supported"
        )
    if out.shape[3] != out_c:
        raise OpError(f"output channels {out.shape[3]} != filter outputs {out_c}")
    geo = spatial(ctx, (in_h, in_w), (k_h, k_w))
    op = ctx.op
    params = [
        Arena(op.inputs[0]), Arena(op.outputs[0]), int8_blob(w), int32_blob(bias), mult, shift,
        in_h, in_w, in_c, geo[0], geo[1], out_c, k_h, k_w, *geo[2:],
        -in_zp, out_zp, *act,
    ]  # fmt: skip
    return [OpRecord(F.CONV_2D, params, (op.inputs[0],), (op.outputs[0],), op.index)]


def compile_depthwise_conv_2d(ctx: OpContext) -> list[OpRecord]:
    x, w, out, bias, mult, shift, in_zp, out_zp, act = _common(ctx, 3)
    _, in_h, in_w, in_c = x.shape
    one, k_h, k_w, out_c = w.shape
    if one != 1 or out.shape[3] != out_c or out_c % in_c:
        raise OpError(f"filter {w.shape} does not fit input {x.shape} and output {out.shape}")
    depth_mult = out_c // in_c
    geo = spatial(ctx, (in_h, in_w), (k_h, k_w))
    op = ctx.op
    params = [
        Arena(op.inputs[0]), Arena(op.outputs[0]), int8_blob(w.reshape(k_h, k_w, out_c)),
        int32_blob(bias), mult, shift,
        in_h, in_w, in_c, geo[0], geo[1], out_c, k_h, k_w, *geo[2:], depth_mult,
        -in_zp, out_zp, *act,
    ]  # fmt: skip
    return [OpRecord(F.DEPTHWISE_CONV_2D, params, (op.inputs[0],), (op.outputs[0],), op.index)]


REGISTRY = {"CONV_2D": compile_conv_2d, "DEPTHWISE_CONV_2D": compile_depthwise_conv_2d}
