"""CONCATENATION of int8 activations that share the output's quantization.

TFLM's int8 concatenation copies bytes without requantizing, so inputs whose scale or zero
point differ from the output's are rejected (LiteRT would rescale them; the two would
disagree). Viewing the output as [outer][axis][inner], each input contributes
``axis_i * inner`` contiguous bytes per outer index, in input order.
"""

from __future__ import annotations

from edgeladder.model.compiler.fmt import mformat as F
from edgeladder.model.compiler.ir import Arena, OpContext, OpError, OpRecord, count, require_int8


def compile_concatenation(ctx: OpContext) -> list[OpRecord]:
    op, out = ctx.op, ctx.output()
    q_out = require_int8(out, "output")
    act = op.options.get("fused_activation_function", "NONE")
    if act != "NONE":
        raise OpError(f"fused activation {act} is not supported; supported: NONE")
    rank = len(out.shape)
    axis = op.options.get("axis", 0)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        raise OpError(f"axis {op.options.get('axis')} of a rank-{rank} output")
    pairs: list = []
    total = 0
    for k, i in enumerate(op.inputs):
        t = ctx.tensor(i)
        if t.data is not None:
            raise OpError(f"constant input {t.name!r} is not supported")
        if require_int8(t, f"input {k}") != q_out:
            raise OpError(f"input {k} is quantized differently from the output")
        if len(t.shape) != rank or any(
            t.shape[d] != out.shape[d] for d in range(rank) if d != axis
        ):
            raise OpError(f"input {k} shape {t.shape} does not fit output {out.shape}")
        pairs += [Arena(i), t.shape[axis]]
        total += t.shape[axis]
    if total != out.shape[axis]:
        raise OpError(f"inputs sum to {total} along axis {axis}, output has {out.shape[axis]}")
    params = [
        Arena(op.outputs[0]), count(out.shape[:axis]), count(out.shape[axis + 1 :]),
        len(op.inputs), *pairs,
    ]  # fmt: skip
    return [OpRecord(F.CONCATENATION, params, tuple(op.inputs), (op.outputs[0],), op.index)]


REGISTRY = {"CONCATENATION": compile_concatenation}
