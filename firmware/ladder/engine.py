# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# The board's int8 engine: loads a model file (ladder.mformat), checks it completely, then runs it
# with viper kernels. Everything is allocated in Model.load: one arena, one int32 params array per
# op, one shared requant block, a tuple of (kernel, params) pairs. invoke() allocates nothing.
#
# A corrupt file raises ValueError("model: ...") at load, never later: ladder.opsize.Plan checks
# the header, the sha256 and every op (each offset and size an op uses against the arena or the
# body), so a kernel can never touch memory outside them, and every loop bound is a checked,
# positive field; a file larger than the free heap is refused the same way.

import gc
from array import array

import micropython

from . import mformat as F
from .kernels import KERNELS
from .quant import top_k_into


@micropython.viper
def _misaligned(buf) -> int:
    return int(ptr8(buf)) & 3


class Tensor:
    """An input or output: shape, quantization, and `data`, int8 values inside the arena."""

    def __init__(self, shape, scale, zero_point, data):
        self.shape = shape
        self.scale = scale
        self.zero_point = zero_point
        self.data = data

    def __len__(self):
        return len(self.data)


class Model:
    """A loaded model. Model.load(path | bytes | memoryview); invoke() runs it in place."""

    @classmethod
    def load(cls, source):
        # The load-time checks (ladder.opsize) are imported on the first load, not by `import
        # ladder`: code that only quantizes or gates never pays their heap. Imported here,
        # before the file's buffer, their objects do not split the free run the model needs.
        from . import opsize  # noqa: F401

        if isinstance(source, str):
            with open(source, "rb") as f:
                size = f.seek(0, 2)
                f.seek(0)
                buf = bytearray(size)
                got = f.readinto(buf)
            if got != size:
                raise ValueError("model: read %d of %d bytes from %s" % (got or 0, size, source))
            return cls(buf)
        if isinstance(source, (bytes, bytearray, memoryview)):
            return cls(source)
        raise TypeError("Model.load takes a path, bytes or a memoryview")

    def __init__(self, buf):
        # Free what the imports and the file read left behind first: the checks' small objects
        # then fill those holes instead of splitting the free run the arena needs (a model
        # near the heap's size, as the digits large tier at an ESP32's, fails without it).
        from .opsize import Plan

        gc.collect()
        plan = Plan(buf)  # header, sha256, tables and tensors checked (ladder.opsize)
        h = plan.header
        self.model_id = h.model_id
        self.model_version = h.model_version
        try:
            self._allocate(plan)
        except MemoryError:
            # Sizes the checks allow can still be more than this board's free heap: a refusal
            # of the model like every other, not a MemoryError from deep inside load.
            raise ValueError(
                "model: its arena (%d bytes) and buffers do not fit the free heap; use a smaller"
                " model" % h.arena_size
            ) from None

    def _allocate(self, plan):
        h = plan.header
        body = plan.body
        if _misaligned(body):
            # int32 constants need 4-aligned addresses on an ESP32 (a misaligned load faults).
            # A frozen bytes object is not guaranteed to be aligned: copy it once.
            body = memoryview(bytearray(body))
        self.body = body
        self.arena = array("b", bytearray(h.arena_size))
        self.input = self._tensor(plan.input, h.in_scale, h.in_zp)
        self.output = self._tensor(plan.output, h.out_scale, h.out_zp)
        ops = []
        for op, p in plan.ops():  # checks each op before it is kept
            ops.append((KERNELS[op], p))
        self._ops = tuple(ops)
        self._logits = None
        if ops and op == F.SOFTMAX:
            # The gate's logits: the final SOFTMAX's input ("in", rows * depth bytes), a view
            # made once. It still holds this invoke's values afterwards because the arena plan
            # (host/edgeladder/model/compiler/planner.py) keeps a buffer alive from the op that
            # writes it to the last op that reads it: the SOFTMAX reads the logits, and its
            # output is alive from that same op on (written there, the graph output until the
            # end), so the two never share bytes, and no later op exists to overwrite them.
            self._logits = memoryview(self.arena)[p[0] : p[0] + p[2] * p[3]]
        from .opsize import requant_words

        self._q = array("i", bytearray(4 * requant_words(plan.need)))

    def _tensor(self, t, scale, zp):
        off, size, shape = t
        return Tensor(shape, scale, zp, memoryview(self.arena)[off : off + size])

    def invoke(self):
        """Run every op once on the arena; allocates nothing."""
        a = self.arena
        b = self.body
        q = self._q
        for kernel, p in self._ops:
            kernel(a, b, p, q)

    def logits(self):
        """The int8 input of the final SOFTMAX (a memoryview into the arena, valid after
        invoke()), or None if the model does not end with SOFTMAX."""
        return self._logits

    def set_input(self, values):
        """Copy int8 values (array('b'), list, or bytes of two's complement) into the input."""
        d = self.input.data
        if len(values) != len(d):
            raise ValueError("input needs %d values, got %d" % (len(d), len(values)))
        for i in range(len(d)):
            v = values[i]
            d[i] = v - 256 if v > 127 else v

    def top_k(self, k, idx_out):
        """idx_out[:k] = the k best output indices, best first (ladder.quant.top_k_into)."""
        top_k_into(self.output.data, k, idx_out)
        return idx_out
