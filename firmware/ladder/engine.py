# ruff: noqa: F821  (ptr8, ptr32 are viper builtins)
# The board's int8 engine: loads a model file (ladder.mformat), checks it completely, then runs it
# with viper kernels. Everything is allocated in Model.load: one arena, one int32 params array per
# op, one shared requant block, a tuple of (kernel, params) pairs. invoke() allocates nothing.
#
# A corrupt file raises ValueError at load, never later: every offset and size an op uses is
# checked against the arena or the body (kernel spans), so a kernel can never touch memory
# outside them, and every loop bound is a checked, non-negative field.

import hashlib
import struct
from array import array

import micropython
from micropython import const

from . import mformat as F
from .fixedpoint import ACC
from .kernels import KERNELS
from .quant import top_k_into

_H = const(80)  # mformat.HEADER_SIZE
_TS = const(20)  # mformat.TENSOR_SIZE
_OS = const(8)  # mformat.OP_SIZE

# Fields that may be negative; every other field is a size, count, offset or stride (>= 0).
_SIGNED = (
    "in_off",
    "in2_off",
    "in_zp",
    "out_zp",
    "act_min",
    "act_max",
    "value",
    "diff_min",
    "mult",
    "shift",
    "m1",
    "s1",
    "m2",
    "s2",
    "m_out",
    "s_out",
)


@micropython.viper
def _misaligned(buf) -> int:
    return int(ptr8(buf)) & 3


def _bad(msg, *args):
    return ValueError("model: " + (msg % args if args else msg))


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
        if isinstance(source, str):
            with open(source, "rb") as f:
                size = f.seek(0, 2)
                f.seek(0)
                buf = bytearray(size)
                got = f.readinto(buf)
            if got != size:
                raise _bad("read %d of %d bytes from %s", got or 0, size, source)
            return cls(buf)
        if isinstance(source, (bytes, bytearray, memoryview)):
            return cls(source)
        raise TypeError("Model.load takes a path, bytes or a memoryview")

    def __init__(self, buf):
        h = F.unpack_header(buf)  # magic, version, sizes: ValueError if bad
        self.model_id = h[3]
        self.model_version = h[4]
        nbody, narena, nt, nops, i_in, i_out = h[5], h[6], h[7], h[8], h[9], h[10]
        body = memoryview(buf)[_H : _H + nbody]
        if hashlib.sha256(body).digest() != h[15]:
            raise _bad("body sha256 mismatch: the file is corrupt or truncated; copy it again")
        if _misaligned(body):
            # int32 constants need 4-aligned addresses on an ESP32 (a misaligned load faults).
            # A frozen bytes object is not guaranteed to be aligned: copy it once.
            body = memoryview(bytearray(body))
        self.body = body
        if nt * _TS + nops * _OS > nbody:
            raise _bad("%d tensors and %d ops do not fit a %d-byte body", nt, nops, nbody)
        for i in (i_in, i_out):
            if i >= nt:
                raise _bad("tensor index %d out of range (%d tensors)", i, nt)
        self.arena = array("b", bytearray(narena))
        self.input = self._tensor(i_in, h[11], h[12], narena)
        self.output = self._tensor(i_out, h[13], h[14], narena)
        ops = []
        need = 0
        for k in range(nops):
            op, n, off = struct.unpack_from(F.OP_FMT, body, nt * _TS + k * _OS)
            entry = KERNELS.get(op)
            if entry is None:
                raise _bad("op %d has opcode %d, which this engine does not run", k, op)
            name = F.NAMES[op]
            fields = F.FIELDS[op]
            if n < len(fields) or (n != len(fields) and op != F.CONCATENATION):
                raise _bad("op %d (%s) has %d params, expected %d", k, name, n, len(fields))
            if off & 3 or off + 4 * n > nbody:
                raise _bad("op %d (%s) params at %d run past the body", k, name, off)
            p = array("i", struct.unpack_from("<%di" % n, body, off))
            for j in range(len(fields)):
                if p[j] < 0 and fields[j] not in _SIGNED:
                    raise _bad("op %d (%s) field %s is %d", k, name, fields[j], p[j])
            try:
                spans = entry[2](p)
            except ValueError as e:
                raise _bad("op %d (%s): %s", k, name, e) from None
            for in_body, start, size, align in spans:
                limit = nbody if in_body else narena
                if start < 0 or size < 0 or start + size > limit or start % align:
                    raise _bad(
                        "op %d (%s) reaches %s bytes %d..%d, outside 0..%d",
                        k,
                        name,
                        "body" if in_body else "arena",
                        start,
                        start + size,
                        limit,
                    )
            need = max(need, entry[1](p))
            ops.append((entry[0], p))
        self._ops = tuple(ops)
        self._logits = None
        if nops and op == F.SOFTMAX:
            # The gate's logits: the final SOFTMAX's input ("in", rows * depth bytes), a view
            # made once. It still holds this invoke's values afterwards because the arena plan
            # (host/edgeladder/compiler/planner.py) keeps a buffer alive from the op that writes
            # it to the last op that reads it: the SOFTMAX reads the logits, and its output is
            # alive from that same op on (written there, the graph output until the end), so
            # the two never share bytes, and no later op exists to overwrite the logits.
            self._logits = memoryview(self.arena)[p[0] : p[0] + p[2] * p[3]]
        self._q = array("i", bytearray(4 * (ACC + need)))

    def _tensor(self, i, scale, zp, narena):
        off, size, rank, _, d0, d1, d2, d3 = struct.unpack_from(F.TENSOR_FMT, self.body, i * _TS)
        if rank > 4:
            raise _bad("tensor %d has rank %d (at most 4)", i, rank)
        shape = (d0, d1, d2, d3)[:rank]
        count = 1
        for d in shape:
            count *= d
        if count != size or off + size > narena:
            raise _bad("tensor %d: %d bytes at %d, shape %r, arena %d", i, size, off, shape, narena)
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
