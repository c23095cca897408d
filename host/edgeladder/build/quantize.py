"""int8 full-integer post-training quantization with TensorFlow's converter.

Inputs and outputs are int8, weights int8 per channel (Dense layers too), activations int8
calibrated on a representative sample of the training data. The converter rounds to
nearest and clamps; it never truncates.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from edgeladder.errors import BuildError
from edgeladder.util.quiet import quiet_native

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def with_softmax(logits_model, batch_size: int | None = None):
    """The deployable model: logits followed by a softmax, so outputs are probabilities."""
    import keras

    inp = keras.Input(shape=logits_model.input_shape[1:], batch_size=batch_size)
    out = keras.layers.Softmax(name="probabilities")(logits_model(inp))
    return keras.Model(inp, out, name=logits_model.name)


def to_int8_tflite(
    logits_model, representative: np.ndarray, *, samples: int = 300, seed: int = 0
) -> bytes:
    """Convert ``logits_model`` (+ softmax) to an int8 full-integer ``.tflite``."""
    # Batch 1 gives static shapes in the graph (no SHAPE/PACK ops around reshapes), which
    # the board compiler can lay out offline.
    model = with_softmax(logits_model, batch_size=1)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(representative))[:samples]
    rep = representative[pick].astype(np.float32)
    return convert_int8(model, (row[None, ...] for row in rep), name=logits_model.name)


def convert_int8(
    model,
    representative: Iterable[np.ndarray],
    *,
    name: str | None = None,
    per_channel_dense: bool = True,
    int8_io: bool = True,
) -> bytes:
    """Any Keras model to an int8 full-integer ``.tflite``, calibrated on ``representative``
    (batches shaped like the model's input). Raises :class:`BuildError` naming the model."""
    import tensorflow as tf

    batches = list(representative)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([b] for b in batches)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    # The default quantizes Dense weights per tensor; per channel keeps small int8 MLPs
    # accurate, and TFLite Micro's FULLY_CONNECTED supports it.
    conv._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel_dense
    with quiet_native() as log:
        try:
            return bytes(conv.convert())
        except Exception as e:  # the converter raises many unrelated types
            err = e
    last = log.text.strip().splitlines()[-3:]
    label = name or getattr(model, "name", "model")
    raise BuildError(f"int8 conversion of {label!r} failed: {err} {' | '.join(last)}")
