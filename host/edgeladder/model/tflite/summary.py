"""Summarize a TFLite model for ``edgeladder inspect``: ops, MACs, tensors, quantization.

MACs count multiply-accumulates of the matrix ops only (FULLY_CONNECTED, CONV_2D,
DEPTHWISE_CONV_2D). Elementwise ops, pooling, softmax and reshapes are counted as 0 MACs:
they are cheap next to the matrix ops and have no single agreed cost. A batch dimension of
-1 or 1 counts as 1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeladder.errors import ModelFileError
from edgeladder.model.tflite.reader import Operator, Tensor, TfliteModel

FLOAT_DTYPES = frozenset(
    {"FLOAT16", "FLOAT32", "FLOAT64", "BFLOAT16", "COMPLEX64", "COMPLEX128", "FLOAT8_E4M3FN"}
)
INTEGER_DTYPES = frozenset(
    {"INT2", "INT4", "UINT4", "INT8", "UINT8", "INT16", "UINT16", "INT32", "UINT32", "INT64",
     "UINT64", "BOOL"}
)  # fmt: skip
# Bits per element, for the size of tensors that have no constant data.
_BITS = {"INT2": 2, "INT4": 4, "UINT4": 4, "INT8": 8, "UINT8": 8, "BOOL": 8, "INT16": 16,
         "UINT16": 16, "FLOAT16": 16, "BFLOAT16": 16, "FLOAT8_E4M3FN": 8, "INT32": 32,
         "UINT32": 32, "FLOAT32": 32, "INT64": 64, "UINT64": 64, "FLOAT64": 64,
         "COMPLEX64": 64, "COMPLEX128": 128}  # fmt: skip


def _dims(shape: tuple[int, ...]) -> list[int]:
    return [max(d, 1) for d in shape]  # -1 (dynamic batch) counts as 1


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in _dims(shape):
        n *= d
    return n


def _at(t: tuple[Tensor, ...], i: int) -> Tensor:
    if i < 0:
        raise IndexError(i)  # -1 marks an omitted input; never index from the end
    return t[i]


def _fc_macs(op: Operator, t: tuple[Tensor, ...]) -> int:
    # weights are [out_units, in_features]; batch = whatever the input has beyond one row
    out_units, in_features = _dims(_at(t, op.inputs[1]).shape)[-2:]
    batch = max(_elements(_at(t, op.inputs[0]).shape) // max(in_features, 1), 1)
    return batch * in_features * out_units


def _conv_macs(op: Operator, t: tuple[Tensor, ...]) -> int:
    # filter [out_c, kh, kw, in_c], output [n, out_h, out_w, out_c]
    _, kh, kw, in_c = _dims(_at(t, op.inputs[1]).shape)
    return _elements(_at(t, op.outputs[0]).shape) * kh * kw * in_c


def _depthwise_macs(op: Operator, t: tuple[Tensor, ...]) -> int:
    # filter [1, kh, kw, out_c]: each output element reads one kh x kw window of one channel
    _, kh, kw, _ = _dims(_at(t, op.inputs[1]).shape)
    return _elements(_at(t, op.outputs[0]).shape) * kh * kw


# One entry per op with a MAC cost; an op absent here costs 0 (see the module docstring).
MAC_COUNTERS: dict[str, Callable[[Operator, tuple[Tensor, ...]], int]] = {
    "FULLY_CONNECTED": _fc_macs,
    "CONV_2D": _conv_macs,
    "DEPTHWISE_CONV_2D": _depthwise_macs,
}


def op_macs(model: TfliteModel, op: Operator) -> int:
    counter = MAC_COUNTERS.get(op.op_name)
    if counter is None:
        return 0
    try:
        return counter(op, model.tensors)
    except (ValueError, IndexError):
        # A weight tensor of an unexpected rank: the reader accepted the file, so report
        # the op instead of guessing.
        raise ModelFileError(
            f"operator {op.index} ({op.op_name}) has weights of an unexpected shape",
            model.path,
        ) from None


def tensor_bytes(t: Tensor) -> int:
    if t.data is not None:
        return len(t.data)
    return (_elements(t.shape) * _BITS.get(t.dtype, 8) + 7) // 8


def _tensor_info(t: Tensor) -> dict[str, Any]:
    return {
        "index": t.index,
        "name": t.name,
        "shape": list(t.shape),
        "dtype": t.dtype,
        "scales": list(t.scales),
        "zero_points": list(t.zero_points),
        "quantized_dimension": t.quantized_dimension,
        "bytes": tensor_bytes(t),
        "constant": t.data is not None,
    }


def _ref(model: TfliteModel, i: int) -> dict[str, Any] | None:
    if i < 0:
        return None  # omitted optional input (e.g. a FULLY_CONNECTED without bias)
    t = model.tensors[i]
    return {"index": i, "name": t.name, "shape": list(t.shape), "dtype": t.dtype}


def is_full_integer(model: TfliteModel) -> bool:
    """int8 graph inputs and outputs, and only integer tensors in every op."""
    io = model.input_tensors() + model.output_tensors()
    if any(t.dtype != "INT8" for t in io):
        return False
    used = {i for op in model.ops for i in (*op.inputs, *op.outputs) if i >= 0}
    return all(model.tensors[i].dtype in INTEGER_DTYPES for i in used)


def summarize(model: TfliteModel) -> dict[str, Any]:
    ops = []
    for op in model.ops:
        ops.append(
            {
                "index": op.index,
                "op": op.op_name,
                "inputs": [_ref(model, i) for i in op.inputs],
                "outputs": [_ref(model, i) for i in op.outputs],
                "options": {
                    k: list(v) if isinstance(v, tuple) else v for k, v in op.options.items()
                },
                "macs": op_macs(model, op),
            }
        )
    # Tensors may share a buffer (deduplicated constants): count each buffer once.
    constant_buffers = {t.buffer: len(t.data) for t in model.tensors if t.data is not None}
    return {
        "path": str(model.path) if model.path else None,
        "size_bytes": len(model.raw),
        "version": model.version,
        "description": model.description,
        "subgraphs": len(model.subgraphs),
        "ops": ops,
        "op_counts": dict(Counter(op.op_name for op in model.ops)),
        "tensors": [_tensor_info(t) for t in model.tensors],
        "inputs": [_tensor_info(t) for t in model.input_tensors()],
        "outputs": [_tensor_info(t) for t in model.output_tensors()],
        "total_macs": sum(o["macs"] for o in ops),
        "parameter_bytes": sum(constant_buffers.values()),
        "full_integer": is_full_integer(model),
    }


def require_int8(model: TfliteModel, path: str | Path | None = None) -> None:
    """Raise ModelFileError unless every graph input and output is int8."""
    for kind, tensors in (("input", model.input_tensors()), ("output", model.output_tensors())):
        for t in tensors:
            if t.dtype == "INT8":
                continue
            what = "a float model" if t.dtype in FLOAT_DTYPES else "not an int8 model"
            raise ModelFileError(
                f"is {what} ({kind} tensor {t.name!r} is {t.dtype}); int8 full-integer "
                "quantization is required — rebuild with `edgeladder build`",
                path if path is not None else model.path,
            )


def _quant(info: dict[str, Any]) -> str:
    scales, zps = info["scales"], info["zero_points"]
    if not scales:
        return ""
    if len(scales) == 1:
        return f"s={scales[0]:.6g} zp={zps[0] if zps else 0}"
    return f"per-channel x{len(scales)} (axis {info['quantized_dimension']})"


def _shape(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def render(summary: dict[str, Any], console: Any = None) -> None:
    """Print the summary as rich tables (ops with MACs; tensors with quantization)."""
    from rich.console import Console
    from rich.markup import escape  # tensor names may contain "[...]", which rich would parse
    from rich.table import Table

    console = console or Console()
    title = escape(summary["path"] or "model")
    ops = Table(title=f"{title}: {len(summary['ops'])} ops", title_justify="left")
    for col, just in (("#", "right"), ("op", "left"), ("inputs", "left"), ("outputs", "left"),
                      ("MACs", "right")):  # fmt: skip
        ops.add_column(col, justify=just)  # type: ignore[arg-type]
    for op in summary["ops"]:
        ins = " ".join("-" if r is None else _shape(r["shape"]) for r in op["inputs"])
        outs = " ".join(_shape(r["shape"]) for r in op["outputs"] if r)
        ops.add_row(str(op["index"]), op["op"], ins, outs, f"{op['macs']:,}")
    ops.add_row("", "total", "", "", f"{summary['total_macs']:,}", style="bold")
    console.print(ops)

    tensors = Table(title="tensors", title_justify="left")
    for col in ("#", "name", "shape", "dtype", "quantization", "bytes"):
        # fold long tensor names rather than cut them: they are how people find a layer
        tensors.add_column(
            col, justify="right" if col in ("#", "bytes") else "left", overflow="fold"
        )
    for t in summary["tensors"]:
        size = f"{t['bytes']:,}" + (" const" if t["constant"] else "")
        tensors.add_row(
            str(t["index"]), escape(t["name"]), _shape(t["shape"]), t["dtype"], _quant(t), size
        )
    console.print(tensors)

    io = ", ".join(
        f"{escape(t['name'])} {_shape(t['shape'])} {t['dtype']}" for t in summary["inputs"]
    )
    out = ", ".join(
        f"{escape(t['name'])} {_shape(t['shape'])} {t['dtype']}" for t in summary["outputs"]
    )
    console.print(f"inputs: {io}\noutputs: {out}")
    console.print(
        f"{summary['size_bytes']:,} bytes, parameters {summary['parameter_bytes']:,} bytes, "
        f"{summary['total_macs']:,} MACs, "
        f"full integer: {'yes' if summary['full_integer'] else 'no'}"
    )
