"""Read a TFLite flatbuffer (schema.fbs, identifier ``TFL3``) without TensorFlow.

A gateway installs only numpy/click/rich, so this is a small flatbuffer accessor in pure
Python. Every read is bounds-checked: a corrupt or truncated file raises
:class:`ModelFileError`, never ``IndexError``/``struct.error``. Offsets to tables, vectors
and strings are unsigned and point forward, so a malicious file cannot make the parser loop.
Field slot numbers below follow the table definitions in schema.fbs (slot = 4 + 2 * field id).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeladder.errors import ModelFileError

IDENTIFIER = b"TFL3"

# BuiltinOperator from schema.fbs: the position in this list is the builtin code.
BUILTIN_OPS: tuple[str, ...] = tuple(
    """
ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE
EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D
LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1
RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM
CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND
SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE
BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM
CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE
SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE
POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT
UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE
RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL
REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE
MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5
SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM
CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS HASHTABLE HASHTABLE_FIND
HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE
ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU
DYNAMIC_UPDATE_SLICE RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX
UNSORTED_SEGMENT_SUM ATAN2 UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT
STABLEHLO_LOGISTIC STABLEHLO_ADD STABLEHLO_DIVIDE STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM
STABLEHLO_RESHAPE STABLEHLO_CLAMP STABLEHLO_CONCATENATE STABLEHLO_BROADCAST_IN_DIM
STABLEHLO_CONVOLUTION STABLEHLO_SLICE STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE STABLEHLO_ABS
STABLEHLO_AND STABLEHLO_COSINE STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG
STABLEHLO_MINIMUM STABLEHLO_NEGATE STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER
STABLEHLO_RSQRT STABLEHLO_SELECT STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER
STABLEHLO_COMPARE STABLEHLO_CONVERT STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE
STABLEHLO_PAD STABLEHLO_IOTA STABLEHLO_DOT_GENERAL STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT
STABLEHLO_WHILE STABLEHLO_GATHER STABLEHLO_TRANSPOSE DILATE STABLEHLO_RNG_BIT_GENERATOR
REDUCE_WINDOW STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT STABLEHLO_CASE
""".split()  # noqa: SIM905 (a word list reads better than 210 quoted strings)
)

# TensorType from schema.fbs, by value; numpy dtype strings where numpy has one.
TENSOR_TYPES: tuple[str, ...] = tuple(
    """FLOAT32 FLOAT16 INT32 UINT8 INT64 STRING BOOL INT16 COMPLEX64 INT8 FLOAT64 COMPLEX128
    UINT64 RESOURCE VARIANT UINT32 UINT16 INT4 BFLOAT16 INT2 UINT4 FLOAT8_E4M3FN""".split()  # noqa: SIM905
)
NUMPY_DTYPES: dict[str, str] = {
    "FLOAT32": "<f4", "FLOAT16": "<f2", "INT32": "<i4", "UINT8": "u1", "INT64": "<i8",
    "BOOL": "?", "INT16": "<i2", "COMPLEX64": "<c8", "INT8": "i1", "FLOAT64": "<f8",
    "COMPLEX128": "<c16", "UINT64": "<u8", "UINT32": "<u4", "UINT16": "<u2",
}  # fmt: skip
_PADDING = ("SAME", "VALID")
_ACTIVATION = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")


def _enum(names: tuple[str, ...], value: int) -> str:
    # Newer schemas add values; show them rather than reject the file.
    return names[value] if 0 <= value < len(names) else f"UNKNOWN_{value}"


class _Buf:
    """Bounds-checked little-endian reads over the whole file."""

    def __init__(self, data: bytes, path: Path | None) -> None:
        self.data = data
        self.view = memoryview(data)
        self.path = path
        # Vectors of a real file do not overlap, so reading them all touches each byte about
        # once. A corrupt file can make thousands of tables share one big vector; this budget
        # stops that from turning a small file into gigabytes of tuples and copies.
        self.budget = 2 * len(data) + 65536

    def spend(self, size: int) -> None:
        self.budget -= size
        if self.budget < 0:
            raise self.fail("corrupt: tables share overlapping data (reads exceed the file size)")

    def fail(self, message: str) -> ModelFileError:
        if self.path is None:
            return ModelFileError(f"model bytes: {message}")
        return ModelFileError(message, self.path)

    def check(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > len(self.data):
            raise self.fail(
                f"truncated or corrupt: {what} at byte {pos} (+{size}) lies outside "
                f"the {len(self.data)}-byte file"
            )

    def read(self, fmt: str, pos: int, what: str) -> Any:
        self.check(pos, struct.calcsize("<" + fmt), what)
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def table(self, pos: int, what: str) -> _Table:
        return _Table(self, pos, what)


class _Table:
    """A flatbuffer table: a signed offset to its vtable, then fields found through it."""

    def __init__(self, buf: _Buf, pos: int, what: str) -> None:
        self.buf, self.pos, self.what = buf, pos, what
        vtable = pos - buf.read("i", pos, what)
        self.vt_size = buf.read("H", vtable, f"{what} vtable")
        buf.check(vtable, self.vt_size, f"{what} vtable")
        self.vtable = vtable

    def _field(self, slot: int) -> int | None:
        # A slot past the vtable's end is a field this writer did not know: default value.
        if slot + 2 > self.vt_size:
            return None
        off = self.buf.read("H", self.vtable + slot, f"{self.what} vtable")
        return self.pos + off if off else None

    def scalar(self, slot: int, fmt: str, default: Any) -> Any:
        pos = self._field(slot)
        return default if pos is None else self.buf.read(fmt, pos, f"{self.what} field {slot}")

    def _target(self, slot: int) -> int | None:
        pos = self._field(slot)
        if pos is None:
            return None
        return pos + self.buf.read("I", pos, f"{self.what} field {slot}")

    def table(self, slot: int, what: str) -> _Table | None:
        pos = self._target(slot)
        return None if pos is None else self.buf.table(pos, what)

    def _vector(self, slot: int, item: int, what: str) -> tuple[int, int] | None:
        pos = self._target(slot)
        if pos is None:
            return None
        n = self.buf.read("I", pos, what)
        self.buf.check(pos + 4, n * item, what)
        self.buf.spend(4 + n * item)
        return pos + 4, n

    def scalars(self, slot: int, fmt: str, what: str) -> tuple[Any, ...]:
        vec = self._vector(slot, struct.calcsize("<" + fmt), what)
        if vec is None:
            return ()
        start, n = vec
        return struct.unpack_from(f"<{n}{fmt}", self.buf.data, start)

    def raw(self, slot: int, what: str) -> memoryview | None:
        vec = self._vector(slot, 1, what)
        return None if vec is None else self.buf.view[vec[0] : vec[0] + vec[1]]

    def string(self, slot: int, what: str) -> str | None:
        raw = self.raw(slot, what)
        return None if raw is None else bytes(raw).decode("utf-8", "replace")

    def tables(self, slot: int, what: str) -> list[_Table]:
        vec = self._vector(slot, 4, what)
        if vec is None:
            return []
        start, n = vec
        out = []
        for i in range(n):
            elem = start + 4 * i
            out.append(self.buf.table(elem + self.buf.read("I", elem, what), f"{what}[{i}]"))
        return out


# Builtin options we decode, keyed by the BuiltinOptions union type (not by op: the pool
# ops share Pool2DOptions). Each field: (name, slot, struct format, default, enum names).
_Spec = tuple[tuple[str, int, str, Any, tuple[str, ...] | None], ...]
_ACT: _Spec = (("fused_activation_function", 4, "b", 0, _ACTIVATION),)
_OPTIONS: dict[int, _Spec] = {
    1: (("padding", 4, "b", 0, _PADDING), ("stride_w", 6, "i", 0, None),
        ("stride_h", 8, "i", 0, None), ("fused_activation_function", 10, "b", 0, _ACTIVATION),
        ("dilation_w", 12, "i", 1, None), ("dilation_h", 14, "i", 1, None)),
    2: (("padding", 4, "b", 0, _PADDING), ("stride_w", 6, "i", 0, None),
        ("stride_h", 8, "i", 0, None), ("depth_multiplier", 10, "i", 0, None),
        ("fused_activation_function", 12, "b", 0, _ACTIVATION),
        ("dilation_w", 14, "i", 1, None), ("dilation_h", 16, "i", 1, None)),
    5: (("padding", 4, "b", 0, _PADDING), ("stride_w", 6, "i", 0, None),
        ("stride_h", 8, "i", 0, None), ("filter_w", 10, "i", 0, None),
        ("filter_h", 12, "i", 0, None), ("fused_activation_function", 14, "b", 0, _ACTIVATION)),
    8: (("fused_activation_function", 4, "b", 0, _ACTIVATION),
        ("keep_num_dims", 8, "?", False, None)),
    9: (("beta", 4, "f", 0.0, None),),
    10: (("axis", 4, "i", 0, None), ("fused_activation_function", 6, "b", 0, _ACTIVATION)),
    11: _ACT,  # AddOptions
    21: _ACT,  # MulOptions
    28: _ACT,  # SubOptions
}  # fmt: skip
_RESHAPE_OPTIONS = 17


def _options(kind: int, table: _Table | None) -> dict[str, Any]:
    if table is None:
        return {}
    if kind == _RESHAPE_OPTIONS:
        shape = table.scalars(4, "i", "ReshapeOptions.new_shape")
        return {"new_shape": shape if shape else None}
    out: dict[str, Any] = {}
    for name, slot, fmt, default, names in _OPTIONS.get(kind, ()):
        value = table.scalar(slot, fmt, default)
        out[name] = _enum(names, value) if names else value
    return out


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: int
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0
    # Constant contents (weights, biases); None for activations and graph inputs.
    data: bytes | None = field(default=None, repr=False)
    shape_signature: tuple[int, ...] | None = None
    is_variable: bool = False

    @property
    def quantized(self) -> bool:
        return bool(self.scales)

    def numpy(self) -> Any:
        """The constant data as a numpy array of ``shape`` (None for non-constant tensors)."""
        if self.data is None:
            return None
        import numpy as np  # optional dependency: only needed for this helper

        if self.dtype not in NUMPY_DTYPES:
            raise ModelFileError(f"tensor {self.name!r}: no numpy dtype for {self.dtype}")
        arr = np.frombuffer(self.data, dtype=NUMPY_DTYPES[self.dtype])
        if arr.size != _count(self.shape):
            raise ModelFileError(
                f"tensor {self.name!r}: {len(self.data)} data bytes do not fit shape {self.shape}"
            )
        return arr.reshape(self.shape)


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= max(d, 1)  # -1 (unknown batch) counts as 1
    return n


@dataclass(frozen=True)
class Operator:
    index: int
    op_name: str
    inputs: tuple[int, ...]  # tensor indices; -1 marks an omitted optional input
    outputs: tuple[int, ...]
    options: dict[str, Any]
    opcode_index: int = 0
    builtin_code: int = 0
    custom_code: str | None = None
    version: int = 1


@dataclass(frozen=True)
class Subgraph:
    name: str
    tensors: tuple[Tensor, ...]
    ops: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class TfliteModel:
    version: int
    description: str
    subgraphs: tuple[Subgraph, ...]
    buffers: tuple[memoryview, ...] = field(repr=False)
    metadata: dict[str, bytes] = field(repr=False)
    path: Path | None = None
    raw: bytes = field(default=b"", repr=False)  # the whole file, for hashing and export

    # The main graph (subgraph 0) is what runs; other subgraphs are IF/WHILE bodies.
    @property
    def ops(self) -> tuple[Operator, ...]:
        return self.subgraphs[0].ops

    @property
    def tensors(self) -> tuple[Tensor, ...]:
        return self.subgraphs[0].tensors

    @property
    def inputs(self) -> tuple[int, ...]:
        return self.subgraphs[0].inputs

    @property
    def outputs(self) -> tuple[int, ...]:
        return self.subgraphs[0].outputs

    def input_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.inputs]

    def output_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.outputs]


def read_model(source: str | Path | bytes) -> TfliteModel:
    """Parse a .tflite file (path) or its bytes; raise ModelFileError on any bad input."""
    path: Path | None = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelFileError("file not found", path) from None
        except IsADirectoryError:
            raise ModelFileError("is a directory, expected a .tflite file", path) from None
        except OSError as e:
            raise ModelFileError(f"cannot read: {e.strerror or e}", path) from None
    return _parse(_Buf(data, path))


def _parse(buf: _Buf) -> TfliteModel:
    if len(buf.data) < 8:
        raise buf.fail(f"too short ({len(buf.data)} bytes) to be a TFLite model")
    if buf.data[4:8] != IDENTIFIER:
        raise buf.fail(
            f"not a TFLite model: expected identifier TFL3 at byte 4, found {buf.data[4:8]!r}"
        )
    root = buf.table(buf.read("I", 0, "root offset"), "Model")
    buffers = tuple(_buffer(buf, t) for t in root.tables(12, "Model.buffers"))
    # One copy per buffer, shared by every tensor that uses it (the converter deduplicates
    # constants); buffer 0 is the schema's empty sentinel: empty means "not constant".
    contents = tuple(bytes(b) if len(b) else None for b in buffers)
    codes = [_opcode(t) for t in root.tables(6, "Model.operator_codes")]
    subgraphs = tuple(
        _subgraph(buf, t, i, contents, codes)
        for i, t in enumerate(root.tables(8, "Model.subgraphs"))
    )
    if not subgraphs:
        raise buf.fail("model has no subgraphs")
    metadata = {}
    for t in root.tables(16, "Model.metadata"):
        index = t.scalar(6, "I", 0)
        if index < len(contents):
            metadata[t.string(4, "Metadata.name") or ""] = contents[index] or b""
    return TfliteModel(
        version=root.scalar(4, "I", 0),
        description=root.string(10, "Model.description") or "",
        subgraphs=subgraphs,
        buffers=buffers,
        metadata=metadata,
        path=buf.path,
        raw=buf.data,
    )


def _buffer(buf: _Buf, t: _Table) -> memoryview:
    data = t.raw(4, "Buffer.data")
    if data is not None and len(data):
        return data
    # Models over 2 GB keep data outside the flatbuffer: offset from the file start, valid > 1.
    offset, size = t.scalar(6, "Q", 0), t.scalar(8, "Q", 0)
    if offset > 1:
        buf.check(offset, size, "external buffer data")
        buf.spend(size)
        return buf.view[offset : offset + size]
    return buf.view[0:0]


def _opcode(t: _Table) -> tuple[int, str | None, int]:
    # Codes > 127 live in builtin_code; old files only fill the int8 deprecated field.
    code = max(t.scalar(4, "b", 0), t.scalar(10, "i", 0))
    return code, t.string(6, "OperatorCode.custom_code"), t.scalar(8, "i", 1)


def _subgraph(
    buf: _Buf,
    t: _Table,
    sg: int,
    contents: tuple[bytes | None, ...],
    codes: list[tuple[int, str | None, int]],
) -> Subgraph:
    where = f"subgraph {sg}"
    tables = t.tables(4, f"{where} tensors")
    tensors = tuple(_tensor(buf, tt, i, contents, where) for i, tt in enumerate(tables))

    def indices(values: tuple[int, ...], what: str, optional: bool = True) -> tuple[int, ...]:
        # -1 marks an omitted optional operand of an op; graph inputs/outputs must be real.
        for v in values:
            if not (0 <= v < len(tensors) or (optional and v == -1)):
                raise buf.fail(f"{what} refers to tensor {v}, but {where} has {len(tensors)}")
        return values

    ops = []
    for i, ot in enumerate(t.tables(10, f"{where} operators")):
        opcode_index = ot.scalar(4, "I", 0)
        if opcode_index >= len(codes):
            raise buf.fail(f"{where} operator {i} uses opcode {opcode_index} of {len(codes)}")
        code, custom, version = codes[opcode_index]
        what = f"{where} operator {i}"
        ops.append(
            Operator(
                index=i,
                op_name=_enum(BUILTIN_OPS, code),
                inputs=indices(ot.scalars(6, "i", what), f"{what} input"),
                outputs=indices(ot.scalars(8, "i", what), f"{what} output"),
                options=_options(ot.scalar(10, "B", 0), ot.table(12, f"{what} options")),
                opcode_index=opcode_index,
                builtin_code=code,
                custom_code=custom,
                version=version,
            )
        )
    return Subgraph(
        name=t.string(12, f"{where} name") or "",
        tensors=tensors,
        ops=tuple(ops),
        inputs=indices(t.scalars(6, "i", f"{where} inputs"), f"{where} input", False),
        outputs=indices(t.scalars(8, "i", f"{where} outputs"), f"{where} output", False),
    )


def _tensor(buf: _Buf, t: _Table, i: int, contents: tuple[bytes | None, ...], where: str) -> Tensor:
    what = f"{where} tensor {i}"
    index = t.scalar(8, "I", 0)
    if index >= len(contents):
        raise buf.fail(f"{what} uses buffer {index}, but the model has {len(contents)}")
    q = t.table(12, f"{what} quantization")
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    qdim = 0
    if q is not None:
        scales = q.scalars(8, "f", f"{what} scale")
        zero_points = q.scalars(10, "q", f"{what} zero_point")
        qdim = q.scalar(16, "i", 0)
    signature = t.scalars(18, "i", f"{what} shape_signature")
    return Tensor(
        index=i,
        name=t.string(10, f"{what} name") or "",
        shape=t.scalars(4, "i", f"{what} shape"),
        dtype=_enum(TENSOR_TYPES, t.scalar(6, "b", 0)),
        buffer=index,
        scales=scales,
        zero_points=zero_points,
        quantized_dimension=qdim,
        data=contents[index],
        shape_signature=signature or None,
        is_variable=t.scalar(14, "?", False),
    )
