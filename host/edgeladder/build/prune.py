"""Magnitude pruning with fine-tuning.

Each Dense/Conv kernel keeps its largest-magnitude weights; the rest are set to zero and
held there while the model fine-tunes. Sparsity rises along a cubic schedule (fast at
first, gentle at the end, as in Zhu & Gupta 2017) to the target, which it then holds for the
last epochs of the fine-tuning.

What it buys, honestly: zero weights compress well (a smaller download and flash image when
the model is stored compressed), but the int8 kernels of LiteRT, TFLite Micro and our board
engine are dense — they multiply the zeros too, so no MACs are skipped.
"""

from __future__ import annotations

import numpy as np

_PRUNABLE = ("Dense", "Conv1D", "Conv2D", "DepthwiseConv2D")


def prunable_layers(model) -> list:
    return [layer for layer in _walk(model) if type(layer).__name__ in _PRUNABLE]


def _walk(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _walk(layer)
        else:
            yield layer


def _kernel(layer):
    return layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """A 0/1 mask that zeroes the ``sparsity`` fraction of ``w`` with the smallest |w|."""
    n = round(sparsity * w.size)
    if n <= 0:
        return np.ones_like(w)
    order = np.argsort(np.abs(w), axis=None, kind="stable")
    mask = np.ones(w.size, dtype=w.dtype)
    mask[order[:n]] = 0
    return mask.reshape(w.shape)


RAMP = 0.6  # share of the fine-tuning epochs over which sparsity rises; the rest recover


def schedule(epoch: int, epochs: int, target: float) -> float:
    """Sparsity during ``epoch`` (0-based): a cubic ramp reaching ``target`` after the first
    RAMP of the epochs, then held while the remaining epochs recover the accuracy (pruning
    that ends on its last epoch leaves no time to heal the final cut)."""
    ramp = max(1, round(RAMP * epochs))
    t = min(1.0, (epoch + 1) / ramp)
    return target * (1.0 - (1.0 - t) ** 3)


def pruning_callback(model, target: float, epochs: int):
    """A Keras callback that re-masks kernels after every batch and raises sparsity per epoch."""
    import keras

    layers = prunable_layers(model)

    class _Prune(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.masks: list[np.ndarray] = []

        def on_epoch_begin(self, epoch, logs=None):
            s = schedule(epoch, epochs, target)
            self.masks = [magnitude_mask(np.asarray(_kernel(lay).numpy()), s) for lay in layers]
            self._apply()

        def on_train_batch_end(self, batch, logs=None):
            self._apply()

        def _apply(self) -> None:
            for lay, m in zip(layers, self.masks, strict=True):
                k = _kernel(lay)
                k.assign(k.numpy() * m)

    return _Prune()


def finalize(model, target: float) -> float:
    """Enforce the target sparsity exactly and return the sparsity reached."""
    for lay in prunable_layers(model):
        k = _kernel(lay)
        w = np.asarray(k.numpy())
        k.assign(w * magnitude_mask(w, target))
    return kernel_sparsity(model)


def kernel_sparsity(model) -> float:
    """Fraction of exactly-zero weights over all prunable kernels."""
    zeros = total = 0
    for lay in prunable_layers(model):
        w = np.asarray(_kernel(lay).numpy())
        zeros += int(np.count_nonzero(w == 0))
        total += w.size
    return zeros / total if total else 0.0
