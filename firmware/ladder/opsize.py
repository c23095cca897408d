# What each op of a model touches and how much scratch it needs, from its params alone, and the
# whole check a model file passes before the engine allocates anything for it. Plain code, no
# viper: the board's engine (ladder.engine) runs it at load, and the host's `edgeladder fit`
# imports this same file, so both accept and refuse exactly the same files.
#
# spans(p) lists (in_body, offset, size, alignment) of every byte the op's kernel reads or
# writes, and raises ValueError on fields that are inconsistent or that would make the kernel
# compute past 32 bits on an ESP32 (viper ints are machine words there). scratch(p) is how
# many accumulators it needs in the shared requant block (ladder.fixedpoint), SIZES below.
#
# Every dimension, count, stride and dilation is at least 1 (a compiled model has no empty
# op): then every kernel loop runs at most as many times as there are bytes in its spans, so
# no field can make invoke() run for hours, and one output row of accumulators is never more
# than the output itself.

from array import array

from . import mformat as F
from .mformat import const  # micropython's, or mformat's stand-in on CPython

# Control words before the accumulators in the requant block: fixedpoint.ACC (a const there,
# folded into the hot loops; tests/device/test_engine_kernels.py checks the two agree).
ACC = const(9)
# Elements per chunk of ADD and MUL: kernels/elementwise.K (checked the same way).
CHUNK = const(32)


def _positive(p, op, *idx):
    for i in idx:
        if p[i] < 1:
            raise ValueError("%s is %d; it must be at least 1" % (F.fields(op)[i], p[i]))


def _axis(n_out, stride, k, dil, pad, n_in, step):
    # The farthest coordinate a kernel computes along one axis (window start plus the whole
    # filter, padded), times the bytes per step along it, stays a 32-bit machine int.
    if (n_out * stride + k * dil + pad + n_in) * step > F.LIMIT:
        raise ValueError("window positions reach past 32 bits")


def _fc_spans(p):
    _positive(p, F.FULLY_CONNECTED, 6, 7, 8)
    b, n_in, n_out = p[6], p[7], p[8]
    return (
        (0, p[0], b * n_in, 1),
        (0, p[1], b * n_out, 1),
        (1, p[2], n_out * n_in, 1),
        (1, p[3], 4 * n_out, 4),
        (1, p[4], 4 * n_out, 4),
        (1, p[5], 4 * n_out, 4),
    )


def _conv_spans(p):
    # in_h .. dil_w (fields 6..17) are all dimensions, kernel sizes, strides or dilations.
    _positive(p, F.CONV_2D, *range(6, 18))
    in_w, in_c, out_c = p[7], p[8], p[11]
    _axis(p[9], p[14], p[12], p[16], p[18], p[6], in_w * in_c)
    _axis(p[10], p[15], p[13], p[17], p[19], in_w, in_c)
    return (
        (0, p[0], p[6] * in_w * in_c, 1),
        (0, p[1], p[9] * p[10] * out_c, 1),
        (1, p[2], out_c * p[12] * p[13] * in_c, 1),
        (1, p[3], 4 * out_c, 4),
        (1, p[4], 4 * out_c, 4),
        (1, p[5], 4 * out_c, 4),
    )


def _dw_spans(p):
    _positive(p, F.DEPTHWISE_CONV_2D, 20)
    if p[11] != p[8] * p[20]:
        raise ValueError("out_c %d != in_c %d * depth_mult %d" % (p[11], p[8], p[20]))
    s = _conv_spans(p)
    return s[:2] + ((1, p[2], p[12] * p[13] * p[11], 1),) + s[3:]


def _pool_spans(p):
    _positive(p, F.MAX_POOL_2D, *range(2, 11))
    c = p[4]
    _axis(p[5], p[9], p[7], 1, p[11], p[2], p[3] * c)
    _axis(p[6], p[10], p[8], 1, p[12], p[3], c)
    return ((0, p[0], p[2] * p[3] * c, 1), (0, p[1], p[5] * p[6] * c, 1))


def _mean_spans(p):
    _positive(p, F.MEAN, 2, 3, 4)
    if p[9] not in (0, 1):
        raise ValueError("mode %d not 0/1" % p[9])
    return ((0, p[0], p[2] * p[3] * p[4], 1), (0, p[1], p[4], 1))


def _elementwise_spans(p):
    n, n2 = p[3], p[4]
    if n < 1 or (n2 != 1 and n2 != n):
        raise ValueError("inputs of %d and %d elements; need n >= 1 and 1 or n" % (n, n2))
    return ((0, p[0], n, 1), (0, p[1], n2, 1), (0, p[2], n, 1))


def _add_spans(p):
    # x << left_shift in a machine word: a shift of 32 or more differs between CPUs.
    if p[8] > 31:
        raise ValueError("left_shift %d is more than 31" % p[8])
    return _elementwise_spans(p)


def _copy_spans(p):
    return ((0, p[0], p[2], 1), (0, p[1], p[2], 1))


def _pad_spans(p):
    _positive(p, F.PAD, 2, 3, 4, 5)
    n_in = p[2] * p[3] * p[4] * p[5]
    n_out = 1
    for i in range(4):
        n_out *= p[2 + i] + p[6 + 2 * i] + p[7 + 2 * i]
    return ((0, p[0], n_in, 1), (0, p[1], n_out, 1))


def _concat_spans(p):
    # mformat.ops has checked the count: 4 + 2 * n_inputs params.
    k = p[3]
    _positive(p, F.CONCATENATION, 1, 2, 3)
    step = p[1] * p[2]
    s = []
    total = 0
    for j in range(k):
        if p[5 + 2 * j] < 1:
            raise ValueError("input %d has axis size %d" % (j, p[5 + 2 * j]))
        s.append((0, p[4 + 2 * j], step * p[5 + 2 * j], 1))
        total += p[5 + 2 * j]
    s.append((0, p[0], step * total, 1))
    return s


def _softmax_spans(p):
    _positive(p, F.SOFTMAX, 2, 3)
    n = p[2] * p[3]
    return ((0, p[0], n, 1), (0, p[1], n, 1), (1, p[4], 1024, 4))


def _lut_spans(p):
    return ((0, p[0], p[2], 1), (0, p[1], p[2], 1), (1, p[3], 256, 1))


# opcode -> (scratch, spans). scratch: the params whose product is the number of accumulators
# (FULLY_CONNECTED: n_out, one batch row; the convolutions: out_w * out_c, one output row;
# MEAN: c), or a fixed count. Adding an op: its kernel in kernels/, its fields in mformat, and
# one entry here.
SIZES = {
    F.FULLY_CONNECTED: ((8,), _fc_spans),
    F.CONV_2D: ((10, 11), _conv_spans),
    F.DEPTHWISE_CONV_2D: ((10, 11), _dw_spans),
    F.AVERAGE_POOL_2D: (0, _pool_spans),
    F.MAX_POOL_2D: (0, _pool_spans),
    F.MEAN: ((4,), _mean_spans),
    F.ADD: (2 * CHUNK, _add_spans),
    F.MUL: (2 * CHUNK, _elementwise_spans),
    F.COPY: (0, _copy_spans),
    F.PAD: (0, _pad_spans),
    F.CONCATENATION: (0, _concat_spans),
    F.SOFTMAX: (0, _softmax_spans),
    F.LUT: (0, _lut_spans),
}


def check_op(k, op, p, nbody, narena):
    """The accumulators op k needs; ValueError("model: ...") if any byte it touches lies
    outside the body or the arena, misaligned, or its fields are inconsistent."""
    scratch, spans = SIZES[op]
    name = F.NAMES[op]
    try:
        s = spans(p)
    except ValueError as e:
        raise ValueError("model: op %d (%s): %s" % (k, name, e)) from None
    for in_body, start, size, align in s:
        limit = nbody if in_body else narena
        if start < 0 or size < 0 or start + size > limit or start % align:
            raise ValueError(
                "model: op %d (%s) reaches %s bytes %d..%d, outside 0..%d"
                % (k, name, "body" if in_body else "arena", start, start + size, limit)
            )
    if scratch.__class__ is int:
        return scratch
    n = 1
    for i in scratch:
        n *= p[i]
    return n


def requant_words(need):
    """Length of the requant block (int32 words) for ops needing `need` accumulators."""
    return ACC + need


class Plan:
    """A model file as Model.load checks it: `header`, `body` (a memoryview), `input` and
    `output` (arena offset, bytes, shape), all checked here; ops() then walks the op table."""

    def __init__(self, buf):
        h = F.read_header(buf)
        body = F.read_body(buf, h)
        self.header = h
        self.body = body
        self.input = F.tensor(body, h, h.input_index)
        self.output = F.tensor(body, h, h.output_index)
        self.need = 0  # the most accumulators an op uses, once ops() has run to the end

    def ops(self):
        """(opcode, params as an array('i')) of every op in order, each one checked by
        mformat.ops and check_op before it is yielded. The engine allocates its arena before
        walking (while the heap is least fragmented), so the walk yields what it keeps."""
        h = self.header
        for k, op, p in F.ops(self.body, h):
            self.need = max(self.need, check_op(k, op, p, h.body_size, h.arena_size))
            yield op, array("i", p)
