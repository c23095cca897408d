"""The host compiler: an int8 ``.tflite`` model -> the board's model file (``.ldr``).

The format is defined once in ``firmware/ladder/mformat.py`` and documented in
``docs/model-format.md``. Pipeline: read the TFLite file, prepare the graph (strip edge
QUANTIZE/DEQUANTIZE, alias reshapes, drop shape arithmetic), compile each op into integer
parameters and constants (``ops/``), plan the arena (``planner``), lay out the body
(``layout``) and put the header in front, its sha256 covering every byte after it.

Only numpy is needed: no TensorFlow, no TFLite Micro.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from edgeladder.model.compiler import layout, planner
from edgeladder.model.compiler.fmt import mformat, pack
from edgeladder.model.compiler.graph import PreparedGraph, prepare
from edgeladder.model.compiler.ir import CompileError, OpContext, OpError, OpRecord, count
from edgeladder.model.compiler.ops import EDGE_OPS, REGISTRY, SUPPORTED
from edgeladder.model.compiler.ops.shape import copy_record
from edgeladder.model.tflite.reader import TfliteModel, read_model
from edgeladder.util.atomic import write_bytes

__all__ = ["CompileError", "CompiledModel", "TensorInfo", "compile_model", "write_compiled"]


@dataclass(frozen=True)
class TensorInfo:
    """The compiled model's input or output: where it lives and how it is quantized."""

    index: int  # row in the tensor table
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    offset: int  # arena byte offset
    size: int  # bytes (int8: one per element)


@dataclass
class CompiledModel:
    data: bytes  # the whole file: header + body
    arena_size: int
    ops: list[tuple[str, int]]  # (format opcode name, index of the TFLite op it came from)
    input: TensorInfo
    output: TensorInfo
    model_id: int
    model_version: int
    buffers: list[planner.Buffer] = field(repr=False, default_factory=list)
    dropped: list[int] = field(default_factory=list)  # TFLite ops folded away or aliased

    @property
    def sha256(self) -> str:
        """Hex digest stored in the header: of every byte after it (header fields and body)."""
        return hashlib.sha256(self.data[mformat.HASHED_FROM :]).hexdigest()


def _label(model: TfliteModel) -> str:
    return str(model.path) if model.path is not None else "model bytes"


def _compile_ops(graph: PreparedGraph, label: str) -> list[OpRecord]:
    records: list[OpRecord] = []
    for op in graph.ops:
        fn = REGISTRY.get(op.op_name)
        if fn is None:
            where = " only at the graph's input/output" if op.op_name in EDGE_OPS else ""
            raise CompileError(
                f"op {op.index} ({op.op_name}) is not supported on the board{where}; "
                f"supported: {', '.join(SUPPORTED)}",
                label,
            )
        try:
            recs = fn(OpContext(op, graph.tensors))
        except OpError as e:
            raise CompileError(f"op {op.index} ({op.op_name}): {e}", label) from None
        for r in recs:
            r.name = mformat.NAMES[r.opcode]
        records += recs
    # The output must not share bytes with the input (e.g. a model that only reshapes).
    if graph.root(graph.output) == graph.root(graph.input):
        out = graph.output
        graph.alias.pop(out, None)
        source = next((op.index for op in graph.ops if out in op.outputs), -1)
        rec = copy_record(graph.input, out, count(graph.tensors[out].shape), source)
        rec.name = "COPY"
        records.append(rec)
    return records


def compile_model(
    source: str | Path | bytes, *, model_id: int | None = None, model_version: int = 1
) -> CompiledModel:
    """Compile an int8 TFLite model for the board; raise CompileError or ModelFileError."""
    model = read_model(source)
    label = _label(model)
    graph = prepare(model, label)
    records = _compile_ops(graph, label)

    # Tensor table: the input, then every activation in the order the ops touch it.
    order: list[int] = [graph.input]
    for r in records:
        order += [t for t in (*r.inputs, *r.outputs) if t not in order]
    if graph.output not in order:
        order.append(graph.output)
    sizes = {graph.root(t): count(graph.tensors[graph.root(t)].shape) for t in order}
    for t in order:  # an alias's buffer is as large as its largest view
        sizes[graph.root(t)] = max(sizes[graph.root(t)], count(graph.tensors[t].shape))
    buffers = planner.lifetimes(
        ((r.inputs, r.outputs) for r in records), graph.root, sizes, graph.input, graph.output
    )
    arena_size = planner.plan(buffers)
    offsets = {b.tensor: b.offset for b in buffers}

    def arena_offset(t: int) -> int:
        return offsets[graph.root(t)]

    rows = []
    for t in order:
        tensor = graph.tensors[t]
        zp = tensor.zero_points[0] if tensor.zero_points else 0
        rows.append(layout.tensor_record(arena_offset(t), tuple(tensor.shape), zp, label))
    body = layout.assemble(records, rows, arena_offset, label)

    if model_id is None:  # stable per source model: the first 4 bytes of its sha256
        model_id = int.from_bytes(hashlib.sha256(model.raw).digest()[:4], "little")
    info = {}
    for name, t in (("input", graph.input), ("output", graph.output)):
        tensor = graph.tensors[t]
        info[name] = TensorInfo(
            index=order.index(t),
            shape=tuple(tensor.shape),
            scale=float(tensor.scales[0]),
            zero_point=int(tensor.zero_points[0]),
            offset=arena_offset(t),
            size=count(tensor.shape),
        )
    header = mformat.Header(
        model_id=model_id, model_version=model_version, body_size=len(body),
        arena_size=arena_size, n_tensors=len(rows), n_ops=len(records),
        input_index=info["input"].index, output_index=info["output"].index,
        in_scale=info["input"].scale, in_zp=info["input"].zero_point,
        out_scale=info["output"].scale, out_zp=info["output"].zero_point,
    )  # fmt: skip
    return CompiledModel(
        data=pack(header, body),
        arena_size=arena_size,
        ops=[(r.name, r.source) for r in records],
        input=info["input"],
        output=info["output"],
        model_id=model_id,
        model_version=model_version,
        buffers=buffers,
        dropped=graph.dropped,
    )


def write_compiled(compiled: CompiledModel, path: str | Path) -> Path:
    """Write the compiled model atomically (temp file, fsync, rename)."""
    return write_bytes(path, compiled.data)


def default_output(source: Path) -> Path:
    """MODEL.tflite -> MODEL.ldr next to it."""
    return source.with_suffix(".ldr")


def board_support(model: TfliteModel) -> dict:
    """Whether ``model`` runs on the board, op by op, from the compiler's op registry.

    Each TFLite op is ``compiled`` (becomes a board op), ``folded`` (removed at compile
    time: reshapes, shape arithmetic, edge QUANTIZE/DEQUANTIZE) or ``unsupported``. The
    verdict comes from a real compile, so unsupported *options* are caught too.
    """
    try:
        compiled = compile_model(model.raw)
    except CompileError as e:
        compiled_ops, error = set(), str(e).split(": ", 1)[-1]
    else:
        compiled_ops, error = {i for _, i in compiled.ops}, None
    ops = {}
    for op in model.ops:
        if op.index in compiled_ops:
            ops[op.index] = "compiled"
        elif op.op_name not in REGISTRY and op.op_name not in EDGE_OPS and error is not None:
            ops[op.index] = "unsupported"
        else:
            ops[op.index] = "folded" if error is None else "unchecked"
    return {
        "runs_on_board": error is None,
        "error": error,
        "arena_bytes": compiled.arena_size if error is None else None,
        "compiled_bytes": len(compiled.data) if error is None else None,
        "ops": ops,
    }
