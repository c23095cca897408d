"""Train one tier: plain cross-entropy, or knowledge distillation from a teacher.

Distillation loss (Hinton et al.), per sample::

    alpha * T² * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(y, student)

The T² factor keeps the soft term's gradients the same size whatever the temperature, so
``alpha`` means what it says. The teacher runs *online*, frozen, on the very batch the
student sees — after augmentation — so a student trained on shifted inputs learns the
teacher's answer for the shifted input, not for the original. Training stays an ordinary
``model.fit`` on a wrapper whose output is ``[student logits | teacher logits]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class FitResult:
    epochs_run: int
    best_val_loss: float | None  # None when trained without a validation set
    best_epoch: int  # 1-based: the epoch whose weights were kept (the last without validation)


def distillation_loss(classes: int, alpha: float, temperature: float):
    """A Keras loss over one-hot ``y_true`` and ``y_pred = [student | teacher]`` logits.

    With student logits only (no teacher) it is plain cross-entropy.
    """
    from keras import ops

    t = float(temperature)

    def loss(y_true, y_pred):
        student = y_pred[:, :classes]
        ce = -ops.sum(y_true * ops.log_softmax(student, axis=-1), axis=-1)
        if y_pred.shape[-1] == classes:
            return ce
        teacher = y_pred[:, classes:]
        log_p_t = ops.log_softmax(teacher / t, axis=-1)
        log_p_s = ops.log_softmax(student / t, axis=-1)
        kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
        return alpha * t * t * kl + (1.0 - alpha) * ce

    return loss


def student_accuracy(classes: int):
    """Accuracy of the student half of ``y_pred`` against one-hot labels."""
    from keras import ops

    def accuracy(y_true, y_pred):
        same = ops.argmax(y_true, axis=-1) == ops.argmax(y_pred[:, :classes], axis=-1)
        return ops.cast(same, "float32")

    return accuracy


def fit(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    *,
    classes: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
    teacher=None,
    alpha: float = 0.7,
    temperature: float = 3.0,
    on_epoch: Callable[[int, dict], None] | None = None,
    extra_callbacks: list | None = None,
    restore_best: bool = True,
    augment: str | None = None,
) -> FitResult:
    """Train ``model`` (logits out) in place, restoring the weights with the best val loss.

    With a ``teacher`` (a logits model, kept frozen) the student learns by distillation;
    without, from labels alone. ``restore_best=False`` keeps the last weights (pruning must
    end at its final sparsity, not at an earlier best epoch). ``augment="shift"`` trains on
    inputs randomly shifted by up to one step per spatial axis; the augmentation lives in
    the training wrapper only, so the exported graph is untouched.

    Without ``x_val`` (the cross-fitted final model, trained on every input) it runs exactly
    ``epochs`` epochs: the count the folds' early stopping chose.
    """
    import keras

    onehot = np.eye(classes, dtype=np.float32)
    trained = _training_wrapper(model, teacher, augment)
    trained.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=distillation_loss(classes, alpha if teacher is not None else 0.0, temperature),
        metrics=[student_accuracy(classes)],
    )
    validate = x_val is not None
    callbacks = list(extra_callbacks or [])
    if validate:
        stop = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=restore_best
        )
        callbacks.insert(0, stop)
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch))
    frozen = teacher is not None and teacher.trainable
    if frozen:
        teacher.trainable = False
    try:
        history = trained.fit(
            _dataset(x_train, onehot[y_train], batch_size, shuffle=True),
            validation_data=_dataset(x_val, onehot[y_val], 256) if validate else None,
            epochs=epochs,
            shuffle=False,  # the dataset shuffles, seeded
            verbose=0,
            callbacks=callbacks,
        )
    finally:
        if frozen:
            teacher.trainable = True
    if not validate:
        n = len(history.history["loss"])
        return FitResult(epochs_run=n, best_val_loss=None, best_epoch=n)
    losses = history.history["val_loss"]
    best = int(np.argmin(losses))
    kept = best + 1 if restore_best else len(losses)
    return FitResult(
        epochs_run=len(losses),
        best_val_loss=float(losses[best]),
        best_epoch=kept,
    )


def _dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool = False):
    """A tf.data pipeline over in-memory arrays. Keras rebuilds its adapter for numpy inputs on
    every epoch, which costs more than the epoch itself on a small set (about 6x here); the
    shuffle is seeded from numpy's generator, which the build seeds per tier."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        seed = int(np.random.randint(0, 2**31 - 1))
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _training_wrapper(model, teacher, augment: str | None):
    """``input → [augment] → model`` and, with a teacher, ``→ [student | teacher]``."""
    import keras

    shape = model.input_shape[1:]
    inp = keras.Input(shape=shape)
    x = _augmentation(shape, augment)(inp)
    out = model(x)
    if teacher is not None:
        out = keras.layers.Concatenate()([out, teacher(x, training=False)])
    return keras.Model(inp, out)


def _augmentation(shape, augment: str | None):
    import keras

    if augment is None:
        return keras.layers.Identity()
    if augment != "shift":
        raise ValueError(f"unknown augmentation {augment!r}; known: shift")
    spatial = len(shape) - 1
    if spatial == 2:  # images: up to one pixel in each direction
        h, w = shape[0], shape[1]
        return keras.layers.RandomTranslation(1 / h, 1 / w, fill_mode="constant")
    if spatial == 1:  # time series: up to one step, as a 2-D translation over (T, 1)
        t, c = shape
        return keras.Sequential(
            [
                keras.layers.Reshape((t, 1, c)),
                keras.layers.RandomTranslation(1 / t, 0, fill_mode="nearest"),
                keras.layers.Reshape((t, c)),
            ]
        )
    return keras.layers.Identity()  # tabular: nothing sensible to shift
