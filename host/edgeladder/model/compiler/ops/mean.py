"""MEAN over contiguous inner axes of a batch-1 tensor (global average pooling, NHWC or NWC).

TFLM's int8 MEAN (reduce_common.cc) has two paths, and the board needs to know which:

* ``mode 1`` -- input and output share scale and zero point: ``reference_ops::Mean`` sums the
  raw int8 values and divides with C integer division, ``out = trunc(sum / n)``.
* ``mode 0`` -- otherwise ``QuantizedMeanOrSum``: ``out = clamp(MBQM(sum - in_zp * n, mult,
  shift) + out_zp)``, where TFLM folds 1/n into the multiplier of ``in_scale / out_scale``:
  ``k = min(floor(log2 n), 32, 31 + shift0)``, ``mult = (mult0 << k) // n``, ``shift = shift0 - k``.
  The compiler stores the folded ``mult``/``shift``, so the board does no 64-bit division.
"""

from __future__ import annotations

from edgeladder.model.compiler.fmt import mformat as F
from edgeladder.model.compiler.ir import (
    Arena,
    OpContext,
    OpError,
    OpRecord,
    count,
    require_const,
    require_int8,
)
from edgeladder.model.quantmath import quantize_multiplier


def fold_count(mult: int, shift: int, n: int) -> tuple[int, int]:
    """TFLM's "readapt output rescaling" step: a 1/n factor folded into (mult, shift)."""
    k = min(n.bit_length() - 1, 32, 31 + shift)
    return (mult << k) // n, shift - k


def compile_mean(ctx: OpContext) -> list[OpRecord]:
    op, x, out = ctx.op, ctx.input(0), ctx.output()
    in_scale, in_zp = require_int8(x, "input")
    out_scale, out_zp = require_int8(out, "output")
    rank = len(x.shape)
    raw_axes = [int(a) for a in require_const(ctx.input(1), "axis").reshape(-1)]
    axes = sorted({a + rank if a < 0 else a for a in raw_axes})
    if not axes or axes[0] < 0 or axes[-1] >= rank or axes != list(range(axes[0], axes[-1] + 1)):
        raise OpError(f"axes {raw_axes} of a {rank}-D input; supported: contiguous inner axes")
    if count(x.shape[: axes[0]]) != 1:
        raise OpError(f"input {x.shape}: supported: batch 1 (the reduced axes follow it)")
    reduced = [x.shape[a] for a in axes]
    h, w = (reduced[0], count(tuple(reduced[1:]))) if reduced else (1, 1)
    c = count(x.shape[axes[-1] + 1 :])
    if count(out.shape) != c:
        raise OpError(f"output shape {out.shape} does not hold {c} means")
    if in_zp == out_zp and in_scale == out_scale:
        mode, mult, shift = 1, 0, 0
    else:
        mode = 0
        mult, shift = fold_count(*quantize_multiplier(in_scale / out_scale), h * w)
    params = [Arena(op.inputs[0]), Arena(op.outputs[0]), h, w, c, in_zp, out_zp, mult, shift, mode]
    return [OpRecord(F.MEAN, params, (op.inputs[0],), (op.outputs[0],), op.index)]


REGISTRY = {"MEAN": compile_mean}
