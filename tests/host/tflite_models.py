"""Small real TFLite models built with TensorFlow at test time (cached per process).

Not a conftest: test files import what they need. Each builder converts a tiny Keras model
with the same recipe as ``edgeladder build`` (full-integer int8, int8 graph inputs/outputs)
and returns the path of the written .tflite file.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


@functools.cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="edgeladder-tflite-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _tf():  # imported lazily: TensorFlow takes seconds to load
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def _convert(
    model, input_shape: tuple[int, ...], name: str, int8: bool = True, buffer_offset: bool = False
) -> Path:
    tf = _tf()
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(32):
            yield [rng.uniform(-1, 1, (1, *input_shape)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # Weights outside the flatbuffer, addressed by Buffer.offset/size (the >2 GB layout).
    converter._experimental_use_buffer_offset = buffer_offset
    path = _workdir() / f"{name}.tflite"
    path.write_bytes(converter.convert())
    return path


def _mlp(tf, inputs: int, hidden: int, outputs: int, head: str | None):
    dense = tf.keras.layers.Dense
    # Random biases: the converter drops all-zero biases, and we want them in the graph.
    bias = "random_normal"
    return tf.keras.Sequential(
        [
            tf.keras.Input((inputs,), name="features"),
            dense(hidden, activation="relu", bias_initializer=bias),
            dense(outputs, activation=head, bias_initializer=bias),
        ]
    )


@functools.cache
def mlp_int8() -> Path:
    """Dense 20 -> 16 (relu) -> 4 (softmax), int8."""
    tf = _tf()
    tf.keras.utils.set_random_seed(1)
    return _convert(_mlp(tf, 20, 16, 4, "softmax"), (20,), "mlp_int8")


# The conv model's input, so that tests can hand-compute its MACs.
CONV_INPUT = (12, 12, 1)


@functools.cache
def conv_int8() -> Path:
    """Conv2D(8, 3x3, valid, relu) -> DepthwiseConv2D(3x3, same, x2) -> MaxPool 2 | AvgPool 2
    -> Concatenate(max, max + avg) -> Flatten -> Dense 3, int8."""
    tf = _tf()
    tf.keras.utils.set_random_seed(2)
    layers = tf.keras.layers
    image = tf.keras.Input(CONV_INPUT, name="image")
    x = layers.Conv2D(8, 3, activation="relu", bias_initializer="random_normal")(image)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)  # 10x10x16
    a = layers.MaxPooling2D(2)(x)  # 5x5x16
    b = layers.AveragePooling2D(2)(x)  # 5x5x16
    x = layers.Concatenate()([a, layers.Add()([a, b])])  # 5x5x32
    x = layers.Flatten()(x)  # 800
    out = layers.Dense(3, bias_initializer="random_normal")(x)
    return _convert(tf.keras.Model(image, out), CONV_INPUT, "conv_int8")


@functools.cache
def mlp_float() -> Path:
    """The MLP without quantization: float32 everywhere."""
    tf = _tf()
    tf.keras.utils.set_random_seed(3)
    return _convert(_mlp(tf, 6, 5, 2, None), (6,), "mlp_float", int8=False)


@functools.cache
def mlp_float_buffer_offset() -> Path:
    """mlp_float with its weights stored after the flatbuffer (Buffer.offset/size). Only a
    float model: the int8 calibration step rewrites the buffers inline again."""
    tf = _tf()
    tf.keras.utils.set_random_seed(3)
    model = _mlp(tf, 6, 5, 2, None)
    return _convert(model, (6,), "mlp_float_offset", int8=False, buffer_offset=True)
