"""Train one tier: plain cross-entropy, or knowledge distillation from a teacher.

Distillation loss (Hinton et al.), per sample::

    alpha * T² * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(y, student)

The T² factor keeps the soft term's gradients the same size whatever the temperature, so
``alpha`` means what it says. The teacher's softened probabilities are computed once and
packed next to the one-hot labels, so training is an ordinary ``model.fit``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class FitResult:
    epochs_run: int
    best_val_loss: float


def softened(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T), computed stably in float64."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def distillation_loss(classes: int, alpha: float, temperature: float):
    """A Keras loss over ``y_true = [one-hot | teacher soft targets]`` and student logits."""
    from keras import ops

    t = float(temperature)

    def loss(y_true, logits):
        hard, soft = y_true[:, :classes], y_true[:, classes:]
        log_p = ops.log_softmax(logits, axis=-1)
        ce = -ops.sum(hard * log_p, axis=-1)
        if y_true.shape[-1] == classes:  # labels only: plain cross-entropy
            return ce
        log_q = ops.log_softmax(logits / t, axis=-1)
        kl = ops.sum(soft * (ops.log(ops.maximum(soft, 1e-8)) - log_q), axis=-1)
        return alpha * t * t * kl + (1.0 - alpha) * ce

    return loss


def hard_accuracy(classes: int):
    """Accuracy against the one-hot half of a packed target."""
    from keras import ops

    def accuracy(y_true, logits):
        same = ops.argmax(y_true[:, :classes], axis=-1) == ops.argmax(logits, axis=-1)
        return ops.cast(same, "float32")

    return accuracy


def pack_targets(y: np.ndarray, classes: int, soft: np.ndarray | None) -> np.ndarray:
    onehot = np.eye(classes, dtype=np.float32)[y]
    return onehot if soft is None else np.concatenate([onehot, soft], axis=1)


def fit(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    classes: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
    teacher_logits: tuple[np.ndarray, np.ndarray] | None = None,
    alpha: float = 0.7,
    temperature: float = 3.0,
    on_epoch: Callable[[int, dict], None] | None = None,
    extra_callbacks: list | None = None,
    restore_best: bool = True,
    augment: str | None = None,
) -> FitResult:
    """Train ``model`` (logits out) in place, restoring the weights with the best val loss.

    With ``teacher_logits`` (train, val) the student learns by distillation; without, from
    labels alone (alpha = 0 reduces to the same cross-entropy). ``restore_best=False`` keeps
    the last weights (pruning must end at its final sparsity, not at an earlier best epoch).
    ``augment="shift"`` trains on inputs randomly shifted by up to one step per spatial axis;
    the augmentation wraps ``model`` only while training, so the exported graph is untouched.
    """
    import keras

    if teacher_logits is None:
        soft_tr = soft_va = None
        a = 0.0
    else:
        soft_tr, soft_va = (softened(t, temperature) for t in teacher_logits)
        a = alpha
    yt = pack_targets(y_train, classes, soft_tr)
    yv = pack_targets(y_val, classes, soft_va)
    trained = _augmented(model, augment)
    trained.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=distillation_loss(classes, a, temperature),
        metrics=[hard_accuracy(classes)],
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=restore_best
    )
    callbacks = [stop, *(extra_callbacks or [])]
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch))
    history = trained.fit(
        x_train,
        yt,
        validation_data=(x_val, yv),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    losses = history.history["val_loss"]
    return FitResult(epochs_run=len(losses), best_val_loss=float(min(losses)))


def _augmented(model, augment: str | None):
    import keras

    if augment is None:
        return model
    if augment != "shift":
        raise ValueError(f"unknown augmentation {augment!r}; known: shift")
    shape = model.input_shape[1:]
    spatial = len(shape) - 1
    if spatial == 2:
        h, w = shape[0], shape[1]
        layer = keras.layers.RandomTranslation(1 / h, 1 / w, fill_mode="constant")
    elif spatial == 1:
        # Time series: a shift of up to one step, as a 2-D translation over (T, 1).
        return _augmented_1d(model, shape)
    else:
        return model
    return keras.Sequential([keras.Input(shape=shape), layer, model])


def _augmented_1d(model, shape):
    import keras

    t, c = shape
    return keras.Sequential(
        [
            keras.Input(shape=shape),
            keras.layers.Reshape((t, 1, c)),
            keras.layers.RandomTranslation(1 / t, 0, fill_mode="nearest"),
            keras.layers.Reshape((t, c)),
            model,
        ]
    )
