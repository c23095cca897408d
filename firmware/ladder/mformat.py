# The board's model file format, defined once: the host compiler packs with these names and
# layouts, the board engine unpacks with the same ones. MicroPython-compatible (CPython too):
# no f-strings, no typing, only struct. docs/model-format.md explains every field.
#
# File = header (HEADER_SIZE bytes) + body. The body holds, in order: the tensor table, the
# op table, then constants (weights, biases, multipliers, lookup tables), each 4-aligned.
# Every offset in the op parameters is a byte offset: into the arena for activations,
# into the body for constants. All integers little-endian.

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


MAGIC = b"LDRM"
VERSION = const(1)

# magic, version, header size, model id, model version, body size, arena size,
# tensor count, op count, input tensor, output tensor, input scale, input zero point,
# output scale, output zero point, sha256 of the body.
HEADER_FMT = "<4sHHIIIIHHHHfifi32s"
HEADER_SIZE = const(80)

# One tensor record: arena offset, byte size, rank, zero point, 2 pad bytes, 4 dims
# (dims past the rank are 0).
TENSOR_FMT = "<IIBbxxHHHH"
TENSOR_SIZE = const(20)

# One op record: opcode, param count, offset of its int32 params in the body.
OP_FMT = "<HHI"
OP_SIZE = const(8)

# Opcodes of the format (not TFLite's numbering). Each op's parameters are int32 values in
# the order of its FIELDS tuple below. "in"/"out"/"in2" are arena offsets; fields ending in
# "_w", "_b", "_m", "_s", "_lut" are body offsets of constants. "*_off" fields hold minus
# a zero point (TFLite's input_offset), "*_zp" fields the zero point itself.
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

# A table: one op per block reads better than one field per line.
# fmt: off
FIELDS = {
    # out[b][o] = clamp(out_zp + requant_o(sum_i in[b][i] * w[o][i] + bias[o])), where the
    # compiler folds the input offset into the bias: bias[o] = b[o] + in_off * sum_i w[o][i].
    # w: int8 [n_out][n_in]; bias: int32 [n_out]; mult, shift: int32 [n_out] (per channel).
    FULLY_CONNECTED: (
        "in", "out", "fc_w", "fc_b", "fc_m", "fc_s",
        "batches", "n_in", "n_out", "out_zp", "act_min", "act_max",
    ),
    # NHWC, batch 1. w: int8 [out_c][k_h][k_w][in_c]; bias int32 [out_c] (not folded: padded
    # positions are skipped, so the input offset applies to valid taps only).
    CONV_2D: (
        "in", "out", "cv_w", "cv_b", "cv_m", "cv_s",
        "in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "k_h", "k_w",
        "stride_h", "stride_w", "dil_h", "dil_w", "pad_h", "pad_w",
        "in_off", "out_zp", "act_min", "act_max",
    ),
    # w: int8 [k_h][k_w][out_c]; out channel o reads input channel o // depth_mult.
    DEPTHWISE_CONV_2D: (
        "in", "out", "dw_w", "dw_b", "dw_m", "dw_s",
        "in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "k_h", "k_w",
        "stride_h", "stride_w", "dil_h", "dil_w", "pad_h", "pad_w", "depth_mult",
        "in_off", "out_zp", "act_min", "act_max",
    ),
    # int8 pools keep the input's quantization.
    AVERAGE_POOL_2D: (
        "in", "out", "in_h", "in_w", "c", "out_h", "out_w", "f_h", "f_w",
        "stride_h", "stride_w", "pad_h", "pad_w", "act_min", "act_max",
    ),
    MAX_POOL_2D: (
        "in", "out", "in_h", "in_w", "c", "out_h", "out_w", "f_h", "f_w",
        "stride_h", "stride_w", "pad_h", "pad_w", "act_min", "act_max",
    ),
    # Mean over the spatial axes of NHWC (global average pooling), n = h * w values per
    # channel. mode 0: out = clamp(MBQM(sum - in_zp * n, mult, shift) + out_zp), where the
    # compiler has already folded 1/n into mult/shift as TFLM does; mode 1 (input and output
    # quantized alike): out = sum / n in C integer division (truncates toward zero).
    MEAN: ("in", "out", "h", "w", "c", "in_zp", "out_zp", "mult", "shift", "mode"),
    # TFLite's quantized add: both inputs rescaled to a common scale with a left shift.
    # n2 == 1 broadcasts a scalar second input.
    ADD: (
        "in", "in2", "out", "n", "n2", "in_off", "in2_off", "out_zp", "left_shift",
        "m1", "s1", "m2", "s2", "m_out", "s_out", "act_min", "act_max",
    ),
    MUL: ("in", "in2", "out", "n", "n2", "in_off", "in2_off", "out_zp", "mult", "shift",
          "act_min", "act_max"),
    # A byte copy where the planner could not alias (reshape-like ops usually vanish).
    COPY: ("in", "out", "n"),
    # 4-D NHWC pad with the zero point; before/after per axis.
    PAD: (
        "in", "out", "d0", "d1", "d2", "d3",
        "b0", "a0", "b1", "a1", "b2", "a2", "b3", "a3", "value",
    ),
    # Inputs share the output's quantization (the converter guarantees it for int8).
    # outer = product of dims before the axis, inner = product after it; then per input:
    # arena offset and its size along the axis (variable length: n_inputs pairs follow).
    CONCATENATION: ("out", "outer", "inner", "n_inputs"),
    # TFLite Micro's int8 softmax, with exp(diff) precomputed as a 256-entry int32 table:
    # sm_lut[max(row) - x] is exp(x - max(row)) in Q0.31, 0 where x - max(row) < diff_min.
    SOFTMAX: ("in", "out", "rows", "depth", "sm_lut", "diff_min", "out_zp"),
    # Any elementwise int8 -> int8 map (LOGISTIC, TANH, requantizing QUANTIZE, ...),
    # precomputed on the host with the reference arithmetic: out = lut[in + 128].
    LUT: ("in", "out", "n", "lut_lut"),
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


def pack_header(
    model_id,
    model_version,
    body,
    arena_size,
    n_tensors,
    n_ops,
    input_index,
    output_index,
    in_scale,
    in_zp,
    out_scale,
    out_zp,
    digest,
):
    return struct.pack(
        HEADER_FMT,
        MAGIC,
        VERSION,
        HEADER_SIZE,
        model_id,
        model_version,
        len(body),
        arena_size,
        n_tensors,
        n_ops,
        input_index,
        output_index,
        in_scale,
        in_zp,
        out_scale,
        out_zp,
        digest,
    )


def unpack_header(buf):
    """The header fields as a tuple; ValueError on a short buffer, bad magic or version."""
    if len(buf) < HEADER_SIZE:
        raise ValueError("model: file too short for a header (%d bytes)" % len(buf))
    h = struct.unpack_from(HEADER_FMT, buf, 0)
    if h[0] != MAGIC:
        raise ValueError("model: bad magic %r, not an edgeladder model" % (bytes(h[0]),))
    if h[1] != VERSION:
        raise ValueError("model: format version %d, this engine reads %d" % (h[1], VERSION))
    if h[2] != HEADER_SIZE:
        raise ValueError("model: header size %d, expected %d" % (h[2], HEADER_SIZE))
    if len(buf) < HEADER_SIZE + h[5]:
        raise ValueError(
            "model: truncated, body needs %d bytes but %d present" % (h[5], len(buf) - HEADER_SIZE)
        )
    return h
