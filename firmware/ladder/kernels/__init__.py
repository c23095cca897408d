# The engine's op registry: format opcode -> (kernel, scratch, spans). Adding an op = one file
# here and one entry below (plus its FIELDS in mformat).
#
# A kernel is kernel(arena, body, params, q): arena an array('b'), body the model's constants
# (bytes or memoryview), params the op's int32 fields as an array('i'), q the shared requant
# control block (fixedpoint.py). scratch(params) is how many accumulators it needs in q;
# spans(params) lists (in_body, offset, size, alignment) of every byte it touches, for load-time
# bounds checks (and raises ValueError on inconsistent fields).

from .. import mformat as F
from . import conv, elementwise, fc, lut, mean, pool, shape, softmax

KERNELS = {
    F.FULLY_CONNECTED: (fc.fully_connected, fc.scratch, fc.spans),
    F.CONV_2D: (conv.conv_2d, conv.scratch, conv.spans),
    F.DEPTHWISE_CONV_2D: (conv.depthwise_conv_2d, conv.scratch, conv.dw_spans),
    F.AVERAGE_POOL_2D: (pool.average_pool_2d, pool.scratch, pool.spans),
    F.MAX_POOL_2D: (pool.max_pool_2d, pool.scratch, pool.spans),
    F.MEAN: (mean.mean, mean.scratch, mean.spans),
    F.ADD: (elementwise.add, elementwise.scratch, elementwise.spans),
    F.MUL: (elementwise.mul, elementwise.scratch, elementwise.spans),
    F.COPY: (shape.copy, shape.scratch, shape.copy_spans),
    F.PAD: (shape.pad, shape.scratch, shape.pad_spans),
    F.CONCATENATION: (shape.concatenation, shape.scratch, shape.concat_spans),
    F.SOFTMAX: (softmax.softmax, softmax.scratch, softmax.spans),
    F.LUT: (lut.lut, lut.scratch, lut.spans),
}
