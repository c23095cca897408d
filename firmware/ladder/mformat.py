# The board's model file format, defined once: the host compiler packs with these names and
# layouts, the board engine unpacks with the same ones. MicroPython-compatible (CPython too):
# no f-strings, no typing, only struct. docs/model-format.md explains every field.
#
# File = header (HEADER_SIZE bytes) + body. The body holds, in order: the tensor table, the
# op table, then constants (weights, biases, multipliers, lookup tables), each 4-aligned.
# Every offset in the op parameters is a byte offset: into the arena for activations,
# into the body for constants. All integers little-endian.

import hashlib
import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


MAGIC = b"LDRM"
# 2: the sha256 moved up front, so it covers the rest of the header (arena size, ...) too.
VERSION = const(2)

# magic, version, header size, then the sha256 of every byte after it (the rest of the header
# and the body), then the named fields of HEADER_FIELDS in order.
HEAD_FMT = "<4sHH32s"
REST_FMT = "<IIIIHHHHfifi"
HEADER_FMT = HEAD_FMT + REST_FMT[1:]
HEADER_SIZE = const(80)
HASHED_FROM = const(40)  # the sha256 covers file[HASHED_FROM : HEADER_SIZE + body_size]
# fmt: off
HEADER_FIELDS = (
    "model_id", "model_version", "body_size", "arena_size", "n_tensors", "n_ops",
    "input_index", "output_index", "in_scale", "in_zp", "out_scale", "out_zp",
)
# fmt: on
# Every size and offset stays at most LIMIT: the viper kernels compute with machine words,
# 32-bit signed on an ESP32, so a sum of two such values never wraps there; and any int up to
# it is exact on every port (an ESP32 allocates ints of 2**30 or more, but never fails on them).
LIMIT = const(0x3FFFFFFF)

# One tensor record: arena offset, byte size, rank, zero point, 2 pad bytes, 4 dims
# (dims past the rank are 0).
TENSOR_FMT = "<IIBbxxHHHH"
TENSOR_SIZE = const(20)

# One op record: opcode, param count, offset of its int32 params in the body.
OP_FMT = "<HHI"
OP_SIZE = const(8)

# Opcodes of the format (not TFLite's numbering). Each op's parameters are int32 values in
# the order of its _FIELDS entry below (fields(op)). "in"/"out"/"in2" are arena offsets;
# fields ending in "_w", "_b", "_m", "_s", "_lut" are body offsets of constants. "*_off"
# fields hold minus a zero point (TFLite's input_offset), "*_zp" fields the zero point itself.
FULLY_CONNECTED = const(1)
CONV_2D = const(2)
DEPTHWISE_CONV_2D = const(3)
AVERAGE_POOL_2D = const(4)
MAX_POOL_2D = const(5)
MEAN = const(6)
ADD = const(7)
MUL = const(8)
COPY = const(9)
PAD = const(10)
CONCATENATION = const(11)
SOFTMAX = const(12)
LUT = const(13)

# A table: one op per block reads better than one field per line. One string of names per op,
# not a tuple: on a board each tuple of names costs heap for as long as the engine is
# imported (about 11 KB for all of them on the 64-bit unix port); fields(op) splits one.
# fmt: off
_FIELDS = {
    # out[b][o] = clamp(out_zp + requant_o(sum_i in[b][i] * w[o][i] + bias[o])), where the
    # compiler folds the input offset into the bias: bias[o] = b[o] + in_off * sum_i w[o][i].
    # w: int8 [n_out][n_in]; bias: int32 [n_out]; mult, shift: int32 [n_out] (per channel).
    FULLY_CONNECTED: "in out fc_w fc_b fc_m fc_s batches n_in n_out out_zp act_min act_max",
    # NHWC, batch 1. w: int8 [out_c][k_h][k_w][in_c]; bias int32 [out_c] (not folded: padded
    # positions are skipped, so the input offset applies to valid taps only).
    CONV_2D: (
        "in out cv_w cv_b cv_m cv_s in_h in_w in_c out_h out_w out_c k_h k_w stride_h stride_w "
        "dil_h dil_w pad_h pad_w in_off out_zp act_min act_max"
    ),
    # w: int8 [k_h][k_w][out_c]; out channel o reads input channel o // depth_mult.
    DEPTHWISE_CONV_2D: (
        "in out dw_w dw_b dw_m dw_s in_h in_w in_c out_h out_w out_c k_h k_w stride_h stride_w "
        "dil_h dil_w pad_h pad_w depth_mult in_off out_zp act_min act_max"
    ),
    # int8 pools keep the input's quantization.
    AVERAGE_POOL_2D: (
        "in out in_h in_w c out_h out_w f_h f_w stride_h stride_w pad_h pad_w act_min act_max"
    ),
    MAX_POOL_2D: (
        "in out in_h in_w c out_h out_w f_h f_w stride_h stride_w pad_h pad_w act_min act_max"
    ),
    # Mean over the spatial axes of NHWC (global average pooling), n = h * w values per
    # channel. mode 0: out = clamp(MBQM(sum - in_zp * n, mult, shift) + out_zp), where the
    # compiler has already folded 1/n into mult/shift as TFLM does; mode 1 (input and output
    # quantized alike): out = sum / n in C integer division (truncates toward zero).
    MEAN: "in out h w c in_zp out_zp mult shift mode",
    # TFLite's quantized add: both inputs rescaled to a common scale with a left shift.
    # n2 == 1 broadcasts a scalar second input.
    ADD: "in in2 out n n2 in_off in2_off out_zp left_shift m1 s1 m2 s2 m_out s_out act_min act_max",
    MUL: "in in2 out n n2 in_off in2_off out_zp mult shift act_min act_max",
    # A byte copy where the planner could not alias (reshape-like ops usually vanish).
    COPY: "in out n",
    # 4-D NHWC pad with the zero point; before/after per axis.
    PAD: "in out d0 d1 d2 d3 b0 a0 b1 a1 b2 a2 b3 a3 value",
    # Inputs share the output's quantization (the converter guarantees it for int8).
    # outer = product of dims before the axis, inner = product after it; then per input:
    # arena offset and its size along the axis (variable length: n_inputs pairs follow).
    CONCATENATION: "out outer inner n_inputs",
    # TFLite Micro's int8 softmax, with exp(diff) precomputed as a 256-entry int32 table:
    # sm_lut[max(row) - x] is exp(x - max(row)) in Q0.31, 0 where x - max(row) < diff_min.
    SOFTMAX: "in out rows depth sm_lut diff_min out_zp",
    # Any elementwise int8 -> int8 map (LOGISTIC, TANH, requantizing QUANTIZE, ...),
    # precomputed on the host with the reference arithmetic: out = lut[in + 128].
    LUT: "in out n lut_lut",
}
# fmt: on
NAMES = {
    FULLY_CONNECTED: "FULLY_CONNECTED",
    CONV_2D: "CONV_2D",
    DEPTHWISE_CONV_2D: "DEPTHWISE_CONV_2D",
    AVERAGE_POOL_2D: "AVERAGE_POOL_2D",
    MAX_POOL_2D: "MAX_POOL_2D",
    MEAN: "MEAN",
    ADD: "ADD",
    MUL: "MUL",
    COPY: "COPY",
    PAD: "PAD",
    CONCATENATION: "CONCATENATION",
    SOFTMAX: "SOFTMAX",
    LUT: "LUT",
}


# Fields that may be negative; every other field is a size, count, offset or stride (>= 0).
# fmt: off
SIGNED = (
    "in_off", "in2_off", "in_zp", "out_zp", "act_min", "act_max", "value", "diff_min",
    "mult", "shift", "m1", "s1", "m2", "s2", "m_out", "s_out",
)
# fmt: on


def _bad(msg, *args):
    return ValueError("model: " + (msg % args if args else msg))


class Header:
    """The header by name: HEADER_FIELDS, and `digest` (the sha256 stored in the file)."""

    def __init__(self, digest=None, **fields):
        self.digest = digest
        for name in HEADER_FIELDS:
            setattr(self, name, fields.pop(name))
        if fields:
            raise TypeError("unknown header fields %r" % (sorted(fields),))


def fields(op):
    """The names of an op's int32 params in order (a new tuple), or None if op is unknown."""
    names = _FIELDS.get(op)
    return None if names is None else tuple(names.split())


def read_header(buf):
    """The Header of a model file; ValueError on a short buffer, bad magic, version or size."""
    if len(buf) < HEADER_SIZE:
        raise _bad("file too short for a header (%d bytes)", len(buf))
    v = struct.unpack_from(HEADER_FMT, buf, 0)
    if v[0] != MAGIC:
        raise _bad("bad magic %r, not an edgeladder model", bytes(v[0]))
    if v[1] != VERSION:
        raise _bad("format version %d, this engine reads %d", v[1], VERSION)
    if v[2] != HEADER_SIZE:
        raise _bad("header size %d, expected %d", v[2], HEADER_SIZE)
    h = Header(v[3], **{name: v[4 + i] for i, name in enumerate(HEADER_FIELDS)})
    if len(buf) < HEADER_SIZE + h.body_size:
        raise _bad(
            "truncated, body needs %d bytes but %d present", h.body_size, len(buf) - HEADER_SIZE
        )
    return h


def read_body(buf, h):
    """The body (a memoryview of buf) once the sha256 matches and the tables fit in it."""
    end = HEADER_SIZE + h.body_size
    if hashlib.sha256(memoryview(buf)[HASHED_FROM:end]).digest() != h.digest:
        raise _bad("sha256 mismatch: the file is corrupt or truncated; copy it again")
    if h.arena_size > LIMIT:
        raise _bad("arena of %d bytes: more than a 32-bit board can address", h.arena_size)
    if h.n_tensors * TENSOR_SIZE + h.n_ops * OP_SIZE > h.body_size:
        raise _bad(
            "%d tensors and %d ops do not fit a %d-byte body", h.n_tensors, h.n_ops, h.body_size
        )
    for i in (h.input_index, h.output_index):
        if i >= h.n_tensors:
            raise _bad("tensor index %d out of range (%d tensors)", i, h.n_tensors)
    return memoryview(buf)[HEADER_SIZE:end]


def tensor(body, h, i):
    """Row i of the tensor table as (arena offset, byte size, shape), inside the arena."""
    off, size, rank, _, d0, d1, d2, d3 = struct.unpack_from(TENSOR_FMT, body, i * TENSOR_SIZE)
    if rank > 4:
        raise _bad("tensor %d has rank %d (at most 4)", i, rank)
    shape = (d0, d1, d2, d3)[:rank]
    count = 1
    for d in shape:
        count *= d
    if count != size or off + size > h.arena_size:
        raise _bad(
            "tensor %d: %d bytes at %d, shape %r, arena %d", i, size, off, shape, h.arena_size
        )
    return off, size, shape


def ops(body, h):
    """The op table, in order, as (index, opcode, params): the op's int32 values, exactly
    len(fields(opcode)) of them (CONCATENATION: 4 + 2 * n_inputs), 4-aligned inside the body,
    and every field not in SIGNED >= 0. ValueError("model: ...") on the first bad op."""
    at = h.n_tensors * TENSOR_SIZE
    for k in range(h.n_ops):
        op, n, off = struct.unpack_from(OP_FMT, body, at + k * OP_SIZE)
        names = fields(op)
        if names is None:
            raise _bad("op %d has opcode %d, which this engine does not run", k, op)
        name = NAMES[op]
        count = len(names)
        if n < count or (n != count and op != CONCATENATION):
            raise _bad("op %d (%s) has %d params, expected %d", k, name, n, count)
        if off & 3 or off + 4 * n > len(body):
            raise _bad("op %d (%s) params at %d run past the body", k, name, off)
        p = struct.unpack_from("<%di" % n, body, off)
        for j in range(count):
            if p[j] < 0 and names[j] not in SIGNED:
                raise _bad("op %d (%s) field %s is %d", k, name, names[j], p[j])
        if op == CONCATENATION and n != 4 + 2 * p[3]:
            raise _bad("op %d (%s): %d inputs need %d params, got %d", k, name, p[3],
                       4 + 2 * p[3], n)  # fmt: skip
        yield k, op, p
