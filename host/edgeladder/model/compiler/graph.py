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


def _strip_edges(model: TfliteModel, tensors: dict[int, Tensor], label: str):
    in_t, out_t = model.inputs[0], model.outputs[0]
    dropped: list[int] = []
    if tensors[in_t].dtype != "INT8":
        users = [op for op in model.ops if in_t in op.inputs]
        if not (
            len(users) == 1
            and users[0].op_name == "QUANTIZE"
            and tensors[users[0].outputs[0]].dtype == "INT8"
        ):
            raise CompileError(
                f"graph input {tensors[in_t].name!r} is {tensors[in_t].dtype}; the board takes "
                "int8 input (or a float input whose only use is a QUANTIZE to int8)",
                label,
            )
        dropped.append(users[0].index)
        in_t = users[0].outputs[0]
    if tensors[out_t].dtype != "INT8":
        makers = [op for op in model.ops if out_t in op.outputs]
        if not (
            len(makers) == 1
            and makers[0].op_name == "DEQUANTIZE"
            and tensors[makers[0].inputs[0]].dtype == "INT8"
        ):
            raise CompileError(
                f"graph output {tensors[out_t].name!r} is {tensors[out_t].dtype}; the board "
                "gives int8 output (or a float output made by a DEQUANTIZE from int8)",
                label,
            )
        dropped.append(makers[0].index)
        out_t = makers[0].inputs[0]
    return in_t, out_t, dropped


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
