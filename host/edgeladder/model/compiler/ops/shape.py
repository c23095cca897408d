"""RESHAPE, SQUEEZE, EXPAND_DIMS: no arithmetic, so no op on the board.

Graph preparation makes the output an alias of the input (same arena bytes); the shape
operand of RESHAPE (often SHAPE/STRIDED_SLICE/PACK arithmetic from Keras's Flatten) is never
evaluated because every tensor's shape is static in the file. What remains is a COPY, only
when the graph's output would otherwise share its bytes with the graph's input.
"""

from __future__ import annotations

from edgeladder.model.compiler.fmt import mformat as F
from edgeladder.model.compiler.ir import Arena, OpContext, OpError, OpRecord, count

ALIAS_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")


def compile_alias(ctx: OpContext) -> list[OpRecord]:
    x, out = ctx.input(0), ctx.output()
    if x.dtype != out.dtype:
        raise OpError(f"changes dtype {x.dtype} -> {out.dtype}")
    if count(x.shape) != count(out.shape):
        raise OpError(f"shape {x.shape} -> {out.shape} changes the element count")
    return []  # the planner aliases output to input


def copy_record(src: int, dst: int, nbytes: int, source: int) -> OpRecord:
    return OpRecord(F.COPY, [Arena(src), Arena(dst), nbytes], (src,), (dst,), source)


REGISTRY = {name: compile_alias for name in ALIAS_OPS}
