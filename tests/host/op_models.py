"""One tiny int8 TFLite model per op and option case, built with TensorFlow at test time.

Importable by any test (not a conftest): ``CASES`` maps a case name to a builder, and
:func:`tflite_bytes` converts a case once per process (cached). The conversion is the recipe
of ``edgeladder build``: full-integer int8, int8 graph input and output (unless the case asks
for float edges), a representative dataset of random normal inputs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def _keras():
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf.keras


_BIAS = "random_normal"  # the converter drops all-zero biases; keep them in the graph


def _seq(shape, *layers, batch=1):
    def build(k):
        inp = k.Input(shape=shape, batch_size=batch)
        x = inp
        for layer in layers:
            x = layer(k)(x)
        return k.Model(inp, x)

    return build


def _two_branch(shape, combine):
    def build(k):
        inp = k.Input(shape=shape, batch_size=1)
        a = k.layers.Conv2D(4, 1, bias_initializer=_BIAS)(inp)
        b = k.layers.Conv2D(4, 1, activation="relu", bias_initializer=_BIAS)(inp)
        return k.Model(inp, combine(k)([a, b]))

    return build


L = Callable  # a layer factory: keras -> layer

CASES: dict[str, tuple[Callable, tuple[int, ...]]] = {
    "dense": (_seq((24,), lambda k: k.layers.Dense(7, bias_initializer=_BIAS)), (24,)),
    "dense_relu": (
        _seq((24,), lambda k: k.layers.Dense(7, activation="relu", bias_initializer=_BIAS)),
        (24,),
    ),
    "dense_relu6": (
        _seq((24,), lambda k: k.layers.Dense(7, bias_initializer=_BIAS),
             lambda k: k.layers.ReLU(6.0)),
        (24,),
    ),
    "conv_same": (
        _seq((9, 9, 3), lambda k: k.layers.Conv2D(5, 3, padding="same", bias_initializer=_BIAS)),
        (9, 9, 3),
    ),
    "conv_valid_stride2_relu": (
        _seq((9, 9, 3), lambda k: k.layers.Conv2D(
            4, 3, strides=2, padding="valid", activation="relu", bias_initializer=_BIAS)),
        (9, 9, 3),
    ),
    "conv_dilated": (
        _seq((9, 9, 2), lambda k: k.layers.Conv2D(
            3, 3, dilation_rate=2, padding="same", bias_initializer=_BIAS)),
        (9, 9, 2),
    ),
    "depthwise_mult2": (
        _seq((8, 8, 3), lambda k: k.layers.DepthwiseConv2D(
            3, padding="same", depth_multiplier=2, bias_initializer=_BIAS)),
        (8, 8, 3),
    ),
    "avgpool_same": (
        _seq((7, 7, 3), lambda k: k.layers.Conv2D(3, 1, bias_initializer=_BIAS),
             lambda k: k.layers.AveragePooling2D(2, padding="same")),
        (7, 7, 3),
    ),
    "maxpool": (_seq((8, 8, 3), lambda k: k.layers.MaxPooling2D(2)), (8, 8, 3)),
    "mean": (
        _seq((6, 6, 4), lambda k: k.layers.Conv2D(4, 1, bias_initializer=_BIAS),
             lambda k: k.layers.GlobalAveragePooling2D()),
        (6, 6, 4),
    ),
    "add": (_two_branch((5, 5, 2), lambda k: k.layers.Add()), (5, 5, 2)),
    "mul": (_two_branch((5, 5, 2), lambda k: k.layers.Multiply()), (5, 5, 2)),
    "concat": (_two_branch((5, 5, 2), lambda k: k.layers.Concatenate()), (5, 5, 2)),
    "pad": (_seq((6, 6, 2), lambda k: k.layers.ZeroPadding2D(((1, 2), (0, 1)))), (6, 6, 2)),
    "conv1d": (  # lowers to EXPAND_DIMS -> CONV_2D -> SQUEEZE (or RESHAPEs)
        _seq((16, 3), lambda k: k.layers.Conv1D(4, 3, bias_initializer=_BIAS),
             lambda k: k.layers.GlobalAveragePooling1D()),
        (16, 3),
    ),
    "flatten_dense": (
        _seq((4, 4, 2), lambda k: k.layers.Flatten(), lambda k: k.layers.Dense(3)), (4, 4, 2)
    ),
    "flatten_dynamic": (  # batch None: Flatten computes its shape (SHAPE, STRIDED_SLICE, PACK)
        _seq((4, 4, 2), lambda k: k.layers.Flatten(), lambda k: k.layers.Dense(3), batch=None),
        (4, 4, 2),
    ),
    "mean_same_quant": (_seq((6, 6, 4), lambda k: k.layers.GlobalAveragePooling2D()), (6, 6, 4)),
    "softmax": (_seq((64, 10), lambda k: k.layers.Softmax()), (64, 10)),
    "logistic": (_seq((256,), lambda k: k.layers.Activation("sigmoid")), (256,)),
    "tanh": (_seq((256,), lambda k: k.layers.Activation("tanh")), (256,)),
    # Cases the board must refuse, each with a clear one-line error.
    "leaky_relu": (_seq((8,), lambda k: k.layers.LeakyReLU()), (8,)),
    "conv_batch2": (
        _seq((5, 5, 1), lambda k: k.layers.Conv2D(2, 3, bias_initializer=_BIAS), batch=2),
        (5, 5, 1),
    ),
}  # fmt: skip

# Float edges: the converter adds QUANTIZE after the input and DEQUANTIZE before the output.
FLOAT_EDGE_CASES = {"dense_float_io": "dense"}


@functools.cache
def tflite_bytes(name: str, int8_io: bool = True, scale: float = 1.0) -> bytes:
    """The int8 .tflite bytes of a case (``scale`` widens the calibration data's range)."""
    from edgeladder.build.quantize import convert_int8

    build, shape = CASES[name]
    keras = _keras()
    keras.utils.set_random_seed(sum(name.encode()) % 1000)  # the same weights in every process
    model = build(keras)
    batch = model.inputs[0].shape[0] or 1  # a None batch converts to 1 (signature -1)
    rng = np.random.default_rng(0)
    rep = [(scale * rng.standard_normal((batch, *shape))).astype(np.float32) for _ in range(48)]
    # TensorFlow's own default for Dense weights (per tensor), unlike `edgeladder build`.
    return convert_int8(model, rep, per_channel_dense=False, int8_io=int8_io)
