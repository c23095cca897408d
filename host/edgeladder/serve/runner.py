"""One stage's int8 ``.tflite`` under LiteRT, run on whole batches: outputs and logits.

Our converter bakes batch 1 into the graph: a RESHAPE before the dense layers carries a
constant shape ``[1, N]``, so ``resize_tensor_input`` to ``[B, ...]`` fails in that RESHAPE
("num_input_elements != num_output_elements"). At load we make a batch-capable copy in
memory: every RESHAPE whose constant shape (its second operand, and ``ReshapeOptions.new_shape``
where present) starts with 1 gets -1 there instead. Flatbuffer scalars and vectors can be
overwritten in place, so the copy is the same bytes with a few int32s changed, no re-serialising.

Then one interpreter per batch bucket (1, 2, 4, ... up to the largest batch): a batch of n runs
in the smallest bucket that holds it, padded with zeros (rows are independent). Before a runner
is used, every bucket is checked against the unpatched model, one sample per invoke, byte for
byte on outputs and logits; that also warms every bucket up. If the model cannot be patched or
the check fails, the runner loops over single invokes instead and says why (``note``; the tier
logs it and exports ``edgeladder_batched_invoke 0``).

LiteRT runs its reference kernels here (BUILTIN_REF, see :mod:`edgeladder.model.litert`):
the ones the board's engine and TFLite Micro match bit for bit, so a tier's answer is the
board's arithmetic.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeladder.errors import ModelFileError
from edgeladder.model.litert import Int8Runner
from edgeladder.model.tflite import reader
from edgeladder.serve import TierError

BUCKETS = (1, 2, 4, 8, 16, 32)
_RESHAPE_OPTIONS = 17  # BuiltinOptions union type of ReshapeOptions (schema.fbs)
_CHECK_SEED = 20240605


def buckets_for(max_batch: int) -> tuple[int, ...]:
    """The buckets a runner keeps for batches of at most max_batch (at least bucket 1)."""
    if max_batch < 1:
        raise TierError(f"max batch {max_batch} must be at least 1")
    top = next((b for b in BUCKETS if b >= max_batch), BUCKETS[-1])
    return tuple(b for b in BUCKETS if b <= top)


def batch_patch(model: bytes) -> tuple[bytes | None, str]:
    """(batch-capable copy of model, "") or (None, why not).

    The copy differs from model only in the int32 RESHAPE shapes whose first value was 1."""
    try:
        m = reader.read_model(model)
        offsets = _reshape_batch_offsets(model, m)
    except ModelFileError as e:
        return None, f"cannot read the model for patching ({e})"
    inputs = m.input_tensors()
    if len(inputs) != 1 or not inputs[0].shape or inputs[0].shape[0] != 1:
        return None, "the model does not take one input with batch dimension 1"
    patched = bytearray(model)
    for off in offsets:
        struct.pack_into("<i", patched, off, -1)
    return bytes(patched), ""


def _reshape_batch_offsets(data: bytes, m: reader.TfliteModel) -> list[int]:
    # The reader gives values, not where they are, so walk the same tables again with its
    # bounds-checked accessors (slots as in reader.py / schema.fbs) to find byte offsets.
    buf = reader._Buf(data, None)
    root = buf.table(buf.read("I", 0, "root offset"), "Model")
    buffers = root.tables(12, "Model.buffers")
    op_tables = root.tables(8, "Model.subgraphs")[0].tables(10, "subgraph 0 operators")
    offsets: set[int] = set()
    for op, table in zip(m.ops, op_tables, strict=True):
        if op.op_name != "RESHAPE":
            continue
        if len(op.inputs) > 1 and op.inputs[1] >= 0:
            shape = m.tensors[op.inputs[1]]
            if shape.dtype == "INT32" and shape.data is not None:
                vec = buffers[shape.buffer]._vector(4, 1, "Buffer.data")
                if vec is not None and vec[1] >= 4:
                    offsets.add(vec[0])
        if table.scalar(10, "B", 0) == _RESHAPE_OPTIONS:
            options = table.table(12, "ReshapeOptions")
            vec = None if options is None else options._vector(4, 4, "new_shape")
            if vec is not None and vec[1] >= 1:
                offsets.add(vec[0])
    # only shapes whose batch entry is 1: a -1 already there, or a real size, stays
    return sorted(o for o in offsets if struct.unpack_from("<i", data, o)[0] == 1)


@dataclass
class BatchRunner:
    """Batched LiteRT inference of one int8 classifier with a final SOFTMAX."""

    name: str
    sha256: str
    single: Int8Runner  # the unpatched model, batch 1: the reference and the fallback
    buckets: tuple[int, ...]
    classes: int
    input_index: int
    output_index: int
    input_bytes: int  # one int8 input, as it arrives in an ESCALATE
    interpreters: dict[int, object] = field(default_factory=dict)  # bucket -> interpreter
    note: str = ""  # why batching is off ("" when batched)

    @property
    def batched(self) -> bool:
        return bool(self.interpreters)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.single.input_shape

    @property
    def max_batch(self) -> int:
        return self.buckets[-1]

    @classmethod
    def load(cls, source: str | Path | bytes, max_batch: int = 16) -> BatchRunner:
        """Load, patch for batching, check every bucket against the unpatched model, warm up."""
        if isinstance(source, (bytes, bytearray)):
            model, name = bytes(source), "<model>"
        else:
            name = str(source)
            try:
                model = Path(source).read_bytes()
            except OSError as e:
                raise ModelFileError(f"cannot read: {e.strerror or e}", source) from e
        single = Int8Runner.from_bytes(model, name)
        if single.logits_index is None:
            raise ModelFileError("the model does not end with SOFTMAX: no logits to gate on", name)
        out = single.interpreter.get_output_details()[0]
        if len(out["shape"]) != 2 or out["shape"][0] != 1:
            raise ModelFileError(f"output shape {list(out['shape'])} is not (1, classes)", name)
        runner = cls(
            name=name,
            sha256=hashlib.sha256(model).hexdigest(),
            single=single,
            buckets=buckets_for(max_batch),
            classes=int(out["shape"][1]),
            input_index=int(single.interpreter.get_input_details()[0]["index"]),
            output_index=int(out["index"]),
            input_bytes=int(np.prod(single.input_shape)),
        )
        patched, why = batch_patch(model)
        if patched is not None:
            try:
                runner.interpreters = {b: _interpreter(patched, name, b) for b in runner.buckets}
            except (ModelFileError, ValueError, RuntimeError) as e:
                why = f"LiteRT cannot resize the patched model ({_first_line(e)})"
        runner.note = why
        runner.check()
        return runner

    def check(self) -> None:
        """Every bucket (and a partly filled one) == the unpatched model, byte for byte.

        On a mismatch, drop the batched interpreters: single invokes are always right."""
        n = self.max_batch
        rng = np.random.default_rng(_CHECK_SEED)
        x = rng.integers(-128, 128, size=(n, *self.input_shape), dtype=np.int8)
        x[0] = -128  # the extremes too: an empty frame and a saturated one
        if n > 1:
            x[1] = 127
        want_out, want_logits = self.single.run_int8_logits(x)
        if not self.batched:
            return
        sizes = sorted({*self.buckets, *(b - 1 for b in self.buckets if b > 2)})
        for size in sizes:
            out, logits = self.run(x[:size])
            if not (
                np.array_equal(out, want_out[:size]) and np.array_equal(logits, want_logits[:size])
            ):
                self.interpreters = {}
                self.note = (
                    f"the batch-patched model differs from the original at batch {size}; "
                    "running one sample per invoke"
                )
                return

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int8 inputs (n, *input_shape) -> (int8 outputs, int8 logits), each (n, classes)."""
        if not self.batched:
            return self.single.run_int8_logits(x)
        outs, logits = [], []
        top = self.buckets[-1]
        for start in range(0, len(x), top):
            o, lg = self._run_bucket(x[start : start + top])
            outs.append(o)
            logits.append(lg)
        if len(outs) == 1:
            return outs[0], logits[0]
        return np.concatenate(outs), np.concatenate(logits)

    def _run_bucket(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(x)
        bucket = next(b for b in self.buckets if b >= n)
        it = self.interpreters[bucket]
        if n < bucket:  # pad: rows are independent, the padding's results are thrown away
            x = np.concatenate([x, np.zeros((bucket - n, *x.shape[1:]), np.int8)])
        it.set_tensor(self.input_index, np.ascontiguousarray(x, dtype=np.int8))
        it.invoke()
        out = it.get_tensor(self.output_index)[:n].copy()
        logits = it.get_tensor(self.single.logits_index).reshape(bucket, -1)[:n].copy()
        return out, logits


def _interpreter(model: bytes, name: str, batch: int) -> object:
    # Int8Runner.from_bytes makes it with the same options as the reference (BUILTIN_REF,
    # tensors preserved for the logits); tensor indices are those of the unpatched model.
    it = Int8Runner.from_bytes(model, name).interpreter
    inp = it.get_input_details()[0]
    if batch != 1:
        it.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
        it.allocate_tensors()
    return it


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
