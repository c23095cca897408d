"""One small int8 model per op and option combination of the board engine (issue 3, item 3).

Not a conftest: tests and ``bench/engine.py`` import it. Each case is a Keras model with a
fixed batch-1 input, converted with the recipe of ``edgeladder build`` (full-integer int8,
int8 graph input and output, per-channel Dense weights, a representative dataset of random
normal data). :func:`tflite_bytes` builds a case once per process.

``OpCase.ops`` names the TFLite ops the case exists for; the converted graph must contain
them (``test_bitexact.test_case_contains_its_ops`` checks), so a converter change that
lowers a layer differently is noticed instead of silently testing something else.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

# Random, non-zero biases: the converter drops an all-zero bias, and we want it in the graph.
_BIAS = "random_normal"


@dataclass(frozen=True)
class OpCase:
    name: str
    input_shape: tuple[int, ...]  # without the batch dimension
    ops: tuple[str, ...]  # TFLite ops this case is meant to exercise
    build: Callable  # (keras) -> keras.Model on an Input of input_shape
    per_channel_dense: bool = True  # as edgeladder build converts; False: TF's default
    edit: Callable | None = None  # bytes -> bytes, graph surgery after conversion


def _keras():
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf.keras


def _model(k, shape, body, batch_size=1):
    inp = k.Input(shape=shape, batch_size=batch_size)
    return k.Model(inp, body(inp))


# --- builders ------------------------------------------------------------------------------
# Each returns f(keras) -> Model; small helpers keep the table below one line per case.


def _dense(units, act=None, bias=True, shape=(24,)):
    def build(k):
        layer = k.layers.Dense(
            units, activation=act, use_bias=bias, bias_initializer=_BIAS if bias else "zeros"
        )
        return _model(k, shape, layer)

    return build


def _conv(filters, kernel, strides=1, padding="same", dilation=1, act=None, shape=(9, 9, 3)):
    def build(k):
        layer = k.layers.Conv2D(
            filters, kernel, strides=strides, padding=padding, dilation_rate=dilation,
            activation=act, bias_initializer=_BIAS,
        )  # fmt: skip
        return _model(k, shape, layer)

    return build


def _dw(mult=1, kernel=3, strides=1, padding="same", dilation=1, act=None, shape=(9, 9, 4)):
    def build(k):
        layer = k.layers.DepthwiseConv2D(
            kernel, strides=strides, padding=padding, depth_multiplier=mult,
            dilation_rate=dilation, activation=act, bias_initializer=_BIAS,
        )  # fmt: skip
        return _model(k, shape, layer)

    return build


def _pool(kind, size, strides, padding, shape=(9, 9, 5)):
    def build(k):
        cls = k.layers.AveragePooling2D if kind == "avg" else k.layers.MaxPooling2D
        return _model(k, shape, cls(size, strides=strides, padding=padding))

    return build


def _mean(k):
    return _model(k, (6, 6, 8), k.layers.GlobalAveragePooling2D())


def _conv_branch(k, x, filters=6, act="relu"):
    return k.layers.Conv2D(filters, 3, padding="same", activation=act, bias_initializer=_BIAS)(x)


def _two_branches(layer):
    """Two 3x3 convolutions of the input (one with ReLU, one without), joined by ``layer``."""

    def build(k):
        def body(x):
            return getattr(k.layers, layer)()([_conv_branch(k, x), _conv_branch(k, x, act=None)])

        return _model(k, (6, 6, 3), body)

    return build


_add_branches = _two_branches("Add")


def _add_residual(k):
    def body(x):
        return k.layers.Add()([x, _conv_branch(k, x, filters=4, act=None)])

    return _model(k, (6, 6, 4), body)


def _add_relu(k):
    def body(x):
        y = k.layers.Add()([_conv_branch(k, x, act=None), _conv_branch(k, x, act=None)])
        return k.layers.ReLU()(y)

    return _model(k, (6, 6, 3), body)


_mul = _two_branches("Multiply")


def _flatten(k):
    def body(x):
        y = k.layers.Flatten()(_conv_branch(k, x, filters=4))
        return k.layers.Dense(8, bias_initializer=_BIAS)(y)

    return _model(k, (5, 5, 2), body)


def _reshape(k):
    def body(x):
        y = k.layers.Reshape((4, 12))(k.layers.Dense(48, bias_initializer=_BIAS)(x))
        return k.layers.Dense(5, bias_initializer=_BIAS)(y)  # FULLY_CONNECTED on 4 rows

    return _model(k, (16,), body)


def _squeeze(k):
    import tensorflow as tf

    def body(x):
        y = k.layers.Conv2D(4, (1, 3), padding="valid", bias_initializer=_BIAS)(x)  # [1,1,6,4]
        return k.layers.Lambda(lambda t: tf.squeeze(t, axis=1))(y)  # [1,6,4]

    return _model(k, (1, 8, 2), body)


def _squeeze_axis1(tflite: bytes) -> bytes:
    return reshape_to_squeeze(tflite, 1)


def _conv1d(k):
    # A dynamic batch: with batch 1 this TF lowers Conv1D's expand_dims to RESHAPE instead.
    layer = k.layers.Conv1D(6, 5, padding="same", activation="relu", bias_initializer=_BIAS)
    return _model(k, (32, 3), layer, batch_size=None)


def _flatten_dynamic(k):
    # Flatten on a dynamic batch leaves SHAPE -> STRIDED_SLICE -> PACK feeding the RESHAPE.
    def body(x):
        y = k.layers.Flatten()(_conv_branch(k, x, filters=3))
        return k.layers.Dense(6, bias_initializer=_BIAS)(y)

    return _model(k, (4, 4, 2), body, batch_size=None)


def _logistic_only(k):
    return _model(k, (256,), k.layers.Activation("sigmoid"))


def _softmax_only(k):
    return _model(k, (10,), k.layers.Softmax())


def _softmax_rows(k):
    return _model(k, (8, 10), k.layers.Softmax())


def _tanh_only(k):
    return _model(k, (256,), k.layers.Activation("tanh"))


def _pad(k):
    def body(x):
        y = k.layers.ZeroPadding2D(((1, 2), (2, 1)))(x)
        return k.layers.Conv2D(4, 3, padding="valid", bias_initializer=_BIAS)(y)

    return _model(k, (6, 6, 3), body)


def _concat(k):
    def body(x):
        a = _conv_branch(k, x, filters=5)
        b = _conv_branch(k, x, filters=3, act=None)
        return k.layers.Concatenate(axis=-1)([a, b])

    return _model(k, (6, 6, 3), body)


def _softmax(k):
    return _model(k, (20,), k.layers.Dense(10, activation="softmax", bias_initializer=_BIAS))


def _logistic(k):
    return _model(k, (20,), k.layers.Dense(10, activation="sigmoid", bias_initializer=_BIAS))


def _ds_cnn(k):
    """Keyword-spotting-like: conv, two depthwise-separable blocks, global mean, softmax."""

    def body(x):
        y = k.layers.Conv2D(8, (5, 3), strides=2, padding="same", activation="relu")(x)
        for _ in range(2):
            y = k.layers.DepthwiseConv2D(3, padding="same", activation="relu")(y)
            y = k.layers.Conv2D(8, 1, activation="relu")(y)
        y = k.layers.GlobalAveragePooling2D()(y)
        # Large weights: logits with a range of several units, else the softmax is flat.
        init = k.initializers.RandomNormal(stddev=40.0)
        return k.layers.Dense(4, activation="softmax", kernel_initializer=init)(y)

    return _model(k, (20, 10, 1), body)


def _timeseries(k):
    """Sensor time series: two Conv1D layers, a pool, global mean, dense logits. Batch 1, as
    ``edgeladder build`` converts: expand_dims becomes RESHAPE (see ``_conv1d``)."""

    def body(x):
        y = k.layers.Conv1D(8, 5, padding="same", activation="relu")(x)
        y = k.layers.MaxPooling1D(2)(y)
        y = k.layers.Conv1D(12, 3, strides=2, activation="relu")(y)
        y = k.layers.GlobalAveragePooling1D()(y)
        return k.layers.Dense(5, bias_initializer=_BIAS)(y)

    return _model(k, (48, 3), body)


_FC, _CV, _DW = "FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"
_AVG, _MAX = "AVERAGE_POOL_2D", "MAX_POOL_2D"

CASES: dict[str, OpCase] = {
    c.name: c
    for c in (
        OpCase("fc_relu", (24,), (_FC,), _dense(16, "relu")),
        OpCase("fc_relu6", (24,), (_FC,), _dense(16, "relu6")),
        OpCase("fc_none", (24,), (_FC,), _dense(16)),
        OpCase("fc_nobias", (24,), (_FC,), _dense(16, "relu", bias=False)),
        OpCase("fc_wide", (200,), (_FC,), _dense(40, shape=(200,))),
        OpCase("fc_per_tensor", (24,), (_FC,), _dense(16, "relu"), per_channel_dense=False),
        OpCase("conv_3x3_same_s1_relu", (9, 9, 3), (_CV,), _conv(8, 3, act="relu")),
        OpCase("conv_3x3_valid_s2_relu6", (9, 9, 3), (_CV,),
               _conv(6, 3, 2, "valid", act="relu6")),
        OpCase("conv_3x3_same_s2_even", (8, 8, 2), (_CV,), _conv(5, 3, 2, shape=(8, 8, 2))),
        OpCase("conv_1x1", (7, 7, 8), (_CV,), _conv(4, 1, shape=(7, 7, 8))),
        OpCase("conv_5x3_same_s2", (11, 9, 3), (_CV,),
               _conv(7, (5, 3), 2, act="relu", shape=(11, 9, 3))),
        OpCase("conv_3x3_same_dil2", (9, 9, 3), (_CV,), _conv(4, 3, dilation=2)),
        OpCase("conv_3x3_valid_dil2_relu", (9, 9, 3), (_CV,),
               _conv(3, 3, padding="valid", dilation=2, act="relu")),
        OpCase("conv_1ch_16", (8, 8, 1), (_CV,), _conv(16, 3, act="relu", shape=(8, 8, 1))),
        OpCase("dw_m1_same_relu", (9, 9, 4), (_DW,), _dw(act="relu")),
        OpCase("dw_m2_valid", (9, 9, 4), (_DW,), _dw(2, padding="valid")),
        OpCase("dw_m1_same_s2_relu6", (9, 9, 4), (_DW,), _dw(strides=2, act="relu6")),
        OpCase("dw_m2_same_s2", (8, 8, 3), (_DW,), _dw(2, strides=2, shape=(8, 8, 3))),
        OpCase("dw_m1_same_dil2", (9, 9, 4), (_DW,), _dw(dilation=2)),
        OpCase("avgpool_2x2_valid_s2", (9, 9, 5), (_AVG,), _pool("avg", 2, 2, "valid")),
        OpCase("avgpool_3x3_same_s2", (9, 9, 5), (_AVG,), _pool("avg", 3, 2, "same")),
        OpCase("avgpool_3x3_same_s1", (9, 9, 5), (_AVG,), _pool("avg", 3, 1, "same")),
        OpCase("maxpool_2x2_valid_s2", (9, 9, 5), (_MAX,), _pool("max", 2, 2, "valid")),
        OpCase("maxpool_3x3_same_s2", (9, 9, 5), (_MAX,), _pool("max", 3, 2, "same")),
        OpCase("maxpool_3x3_valid_s1", (9, 9, 5), (_MAX,), _pool("max", 3, 1, "valid")),
        OpCase("mean_global", (6, 6, 8), ("MEAN",), _mean),
        OpCase("add_branches", (6, 6, 3), ("ADD",), _add_branches),
        OpCase("add_residual", (6, 6, 4), ("ADD",), _add_residual),
        OpCase("add_relu", (6, 6, 3), ("ADD",), _add_relu),
        OpCase("mul_branches", (6, 6, 3), ("MUL",), _mul),
        OpCase("flatten_dense", (5, 5, 2), ("RESHAPE", _FC), _flatten),
        OpCase("reshape_rows", (16,), ("RESHAPE", _FC), _reshape),
        OpCase("flatten_dynamic_batch", (4, 4, 2), ("SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE"),
               _flatten_dynamic),
        # The converter turns every squeeze into RESHAPE; the case swaps that op for SQUEEZE.
        OpCase("squeeze", (1, 8, 2), (_CV, "SQUEEZE"), _squeeze, edit=_squeeze_axis1),
        OpCase("conv1d_expand_dims", (32, 3), ("EXPAND_DIMS", _CV), _conv1d),
        OpCase("pad_zero", (6, 6, 3), ("PAD", _CV), _pad),
        OpCase("concat_channels", (6, 6, 3), ("CONCATENATION",), _concat),
        OpCase("softmax", (20,), ("SOFTMAX",), _softmax),
        OpCase("logistic", (20,), ("LOGISTIC",), _logistic),
        OpCase("softmax_only", (10,), ("SOFTMAX",), _softmax_only),
        OpCase("softmax_rows", (8, 10), ("SOFTMAX",), _softmax_rows),  # 8 rows of 10
        OpCase("tanh_only", (256,), ("TANH",), _tanh_only),  # a LUT op beyond the list
        OpCase("logistic_only", (256,), ("LOGISTIC",), _logistic_only),  # every int8 code
        OpCase("ds_cnn_kws", (20, 10, 1), (_CV, _DW, "MEAN", "SOFTMAX"), _ds_cnn),
        OpCase("conv1d_timeseries", (48, 3), ("RESHAPE", _CV, _MAX, "MEAN", _FC),
               _timeseries),
    )
}  # fmt: skip


def convert_int8(
    model, input_shape: tuple[int, ...], *, seed: int = 0, per_channel_dense: bool = True
) -> bytes:
    """``model`` as an int8 full-integer ``.tflite`` (the converter ``edgeladder build`` uses),
    calibrated on random normal data."""
    from edgeladder.build.quantize import convert_int8 as convert

    rng = np.random.default_rng(seed)
    rep = rng.normal(size=(64, 1, *input_shape)).astype(np.float32)
    return convert(model, rep, per_channel_dense=per_channel_dense)


@functools.cache
def tflite_bytes(name: str) -> bytes:
    """The int8 ``.tflite`` of case ``name``, built once per process (weights seeded by name)."""
    case = CASES[name]
    k = _keras()
    k.utils.set_random_seed(sum(name.encode()) + 7)
    data = convert_int8(case.build(k), case.input_shape, per_channel_dense=case.per_channel_dense)
    return case.edit(data) if case.edit else data


def graph_ops(tflite: bytes) -> list[str]:
    """The op names of the main subgraph, in order."""
    from edgeladder.model.tflite.reader import read_model

    return [op.op_name for op in read_model(tflite).subgraphs[0].ops]


# --- graph surgery -----------------------------------------------------------------------------
# With the flatbuffer object API of the schema that ships with tflite-micro.


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


def _unpack(tflite: bytes):
    s = _schema()
    return s.ModelT.InitFromObj(s.Model.GetRootAsModel(bytearray(tflite), 0))


def _pack(model) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _opcode_index(model, builtin: int) -> int:
    s = _schema()
    for i, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == builtin:
            return i
    oc = s.OperatorCodeT()
    oc.builtinCode = builtin
    oc.deprecatedBuiltinCode = min(builtin, 127)
    oc.version = 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def reshape_to_squeeze(tflite: bytes, axis: int) -> bytes:
    """Replace the graph's only RESHAPE by the equivalent ``SQUEEZE(squeeze_dims=[axis])``."""
    s = _schema()
    model = _unpack(tflite)
    g = model.subgraphs[0]
    reshape = _opcode_index(model, s.BuiltinOperator.RESHAPE)
    (op,) = [op for op in g.operators if op.opcodeIndex == reshape]
    op.opcodeIndex = _opcode_index(model, s.BuiltinOperator.SQUEEZE)
    op.inputs = [op.inputs[0]]
    op.builtinOptionsType = s.BuiltinOptions.SqueezeOptions
    op.builtinOptions = s.SqueezeOptionsT()
    op.builtinOptions.squeezeDims = [axis]
    return _pack(model)


def truncate(tflite: bytes, n_ops: int) -> bytes:
    """The graph's first ``n_ops`` ops, with the last one's output as the graph's output."""
    model = _unpack(tflite)
    g = model.subgraphs[0]
    if not 0 < n_ops <= len(g.operators):
        raise ValueError(f"cannot keep {n_ops} of {len(g.operators)} ops")
    g.operators = g.operators[:n_ops]
    g.outputs = [g.operators[-1].outputs[0]]
    return _pack(model)
