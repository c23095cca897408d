"""PAD and PADV2 of an int8 tensor of rank <= 4 (extended to 4-D on the left).

TFLM's int8 pad writes the input unchanged inside a border of constant values: PADV2's
constant (raw int8) if given, else the output zero point (a real 0).
"""

from __future__ import annotations

from edgeladder.model.compiler.fmt import mformat as F
from edgeladder.model.compiler.ir import (
    Arena,
    OpContext,
    OpError,
    OpRecord,
    require_const,
    require_int8,
)


def compile_pad(ctx: OpContext) -> list[OpRecord]:
    op, x, out = ctx.op, ctx.input(0), ctx.output()
    require_int8(x, "input")
    _, out_zp = require_int8(out, "output")
    rank = len(x.shape)
    if rank > 4:
        raise OpError(f"input rank {rank}; supported: rank <= 4")
    pads = require_const(ctx.input(1), "paddings").reshape(-1, 2).tolist()
    if len(pads) != rank or min(min(p) for p in pads or [[0]]) < 0:
        raise OpError(f"paddings {pads} do not fit a rank-{rank} input")
    value = out_zp
    const_t = ctx.optional_input(2)
    if const_t is not None:
        value = int(require_const(const_t, "constant_values").reshape(-1)[0])
    dims = [1] * (4 - rank) + list(x.shape)
    pads = [[0, 0]] * (4 - rank) + pads
    expect = tuple(d + b + a for d, (b, a) in zip(dims, pads, strict=True))
    if expect[4 - rank :] != tuple(out.shape):
        raise OpError(f"output shape {out.shape} does not match paddings {pads}")
    flat = [v for p in pads for v in p]
    params = [Arena(op.inputs[0]), Arena(op.outputs[0]), *dims, *flat, value]
    return [OpRecord(F.PAD, params, (op.inputs[0],), (op.outputs[0],), op.index)]


REGISTRY = {"PAD": compile_pad, "PADV2": compile_pad}
