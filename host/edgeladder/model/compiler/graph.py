"""Graph preparation: from a TFLite graph to the list of ops the board runs.

* Float QUANTIZE after the graph input and DEQUANTIZE before the graph output are stripped,
  so the compiled model's input and output are the int8 tensors (their scale and zero point
  go into the header).
* RESHAPE/SQUEEZE/EXPAND_DIMS become aliases: the output names the input's arena bytes.
  A reshape of a constant becomes a constant.
* Every shape in a TFLite file is static, so the shape operand of RESHAPE is never
  evaluated: ops that only feed it (SHAPE -> STRIDED_SLICE -> PACK, as Keras's Flatten
  emits) are dropped by a liveness pass from the graph output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from edgeladder.model.compiler.ir import CompileError
from edgeladder.model.compiler.ops.shape import ALIAS_OPS
from edgeladder.model.tflite.reader import Operator, Tensor, TfliteModel


@dataclass
class PreparedGraph:
    tensors: dict[int, Tensor]
    ops: list[Operator]  # the data path, in execution order
    input: int
    output: int
    alias: dict[int, int] = field(default_factory=dict)  # tensor -> tensor owning its bytes
    dropped: list[int] = field(default_factory=list)  # TFLite op indices removed

    def root(self, t: int) -> int:
        while t in self.alias:
            t = self.alias[t]
        return t


# A float graph edge the board can still run: the op that converts it, which side of that op
# the edge tensor is on, which side holds the int8 tensor, and what the board needs.
_EDGES = {
    "input": ("QUANTIZE", "inputs", "outputs", "the board takes int8 input (or a float input "
              "whose only use is a QUANTIZE to int8)"),
    "output": ("DEQUANTIZE", "outputs", "inputs", "the board gives int8 output (or a float "
               "output made by a DEQUANTIZE from int8)"),
}  # fmt: skip


def _edge(model: TfliteModel, tensors: dict[int, Tensor], t: int, side: str, label: str):
    """The int8 tensor behind graph edge ``t``, and the converting op dropped (or None)."""
    if tensors[t].dtype == "INT8":
        return t, None
    op_name, edge_side, int8_side, need = _EDGES[side]
    ops = [op for op in model.ops if t in getattr(op, edge_side)]
    if not (
        len(ops) == 1
        and ops[0].op_name == op_name
        and tensors[getattr(ops[0], int8_side)[0]].dtype == "INT8"
    ):
        raise CompileError(f"graph {side} {tensors[t].name!r} is {tensors[t].dtype}; {need}", label)
    return getattr(ops[0], int8_side)[0], ops[0].index


def _strip_edges(model: TfliteModel, tensors: dict[int, Tensor], label: str):
    in_t, quantize = _edge(model, tensors, model.inputs[0], "input", label)
    out_t, dequantize = _edge(model, tensors, model.outputs[0], "output", label)
    return in_t, out_t, [i for i in (quantize, dequantize) if i is not None]


def prepare(model: TfliteModel, label: str) -> PreparedGraph:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise CompileError(
            f"the board runs models with one input and one output; this one has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs",
            label,
        )
    tensors = {t.index: t for t in model.tensors}
    in_t, out_t, dropped = _strip_edges(model, tensors, label)

    # A reshape of a constant is a constant with the new shape.
    for op in model.ops:
        if op.op_name in ALIAS_OPS and op.inputs and tensors[op.inputs[0]].data is not None:
            src, dst = tensors[op.inputs[0]], tensors[op.outputs[0]]
            tensors[dst.index] = dataclasses.replace(dst, data=src.data)
            dropped.append(op.index)

    # Liveness from the output: keep the ops whose results reach it through data operands.
    needed = {out_t}
    keep: list[Operator] = []
    for op in reversed(model.ops):
        if op.index in dropped or not any(o in needed for o in op.outputs):
            continue
        keep.append(op)
        operands = op.inputs[:1] if op.op_name in ALIAS_OPS else op.inputs
        needed.update(i for i in operands if i >= 0 and tensors[i].data is None)
    keep.reverse()
    kept = {op.index for op in keep}
    dropped += [op.index for op in model.ops if op.index not in kept and op.index not in dropped]

    produced = {o for op in keep for o in op.outputs} | {in_t}
    for t in sorted(needed - produced):
        raise CompileError(
            f"tensor {t} ({tensors[t].name!r}) is neither the input nor computed from it "
            "(a second input or a variable); not supported on the board",
            label,
        )

    graph = PreparedGraph(tensors, keep, in_t, out_t, dropped=sorted(dropped))
    for op in keep:
        if op.op_name in ALIAS_OPS:
            graph.alias[op.outputs[0]] = graph.root(op.inputs[0])
    return graph
