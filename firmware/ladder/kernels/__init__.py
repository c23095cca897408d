# The engine's op registry: format opcode -> kernel. Adding an op = one file here, one entry
# below, its fields in mformat and its sizes in ladder/opsize.py.
#
# A kernel is kernel(arena, body, params, q): arena an array('b'), body the model's constants
# (bytes or memoryview), params the op's int32 fields as an array('i'), q the shared requant
# control block (fixedpoint.py). What it touches and how many accumulators it needs in q are
# plain functions in ladder/opsize.py, which the host's `fit` imports too (viper modules do
# not import on CPython).

from .. import mformat as F
from . import conv, elementwise, fc, lut, mean, pool, shape, softmax

KERNELS = {
    F.FULLY_CONNECTED: fc.fully_connected,
    F.CONV_2D: conv.conv_2d,
    F.DEPTHWISE_CONV_2D: conv.depthwise_conv_2d,
    F.AVERAGE_POOL_2D: pool.average_pool_2d,
    F.MAX_POOL_2D: pool.max_pool_2d,
    F.MEAN: mean.mean,
    F.ADD: elementwise.add,
    F.MUL: elementwise.mul,
    F.COPY: shape.copy,
    F.PAD: shape.pad,
    F.CONCATENATION: shape.concatenation,
    F.SOFTMAX: softmax.softmax,
    F.LUT: lut.lut,
}
