"""Model architectures by name: each builder returns a Keras model that outputs *logits*.

The softmax is appended only for export, so distillation can soften logits with a
temperature. Builders use only layers whose int8 kernels the board engine runs
(Dense, Conv1D/2D, pooling, Flatten): a Conv1D lowers to EXPAND_DIMS + CONV_2D.
Adding an architecture means adding a function and a registry entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgeladder.errors import RecipeError


def _keras():
    import keras

    return keras


def dense(
    input_shape: Sequence[int], classes: int, *, units: Sequence[int] = (32,), dropout: float = 0.0
) -> Any:
    """A multilayer perceptron; inputs of any rank are flattened first."""
    k = _keras()
    layers = [k.Input(shape=tuple(input_shape))]
    if len(input_shape) > 1:
        layers.append(k.layers.Flatten())
    for u in units:
        layers.append(k.layers.Dense(int(u), activation="relu"))
        if dropout:
            layers.append(k.layers.Dropout(dropout))
    layers.append(k.layers.Dense(classes, name="logits"))
    return k.Sequential(layers)


def _conv(
    rank: int,
    input_shape: Sequence[int],
    classes: int,
    layers: tuple[Sequence[int], int, int, Sequence[int], float, str, int],
) -> Any:
    """``layers``: (filters, kernel, pool, dense units, dropout, head, downsample), as the
    recipe says. ``downsample`` > 1 averages that many steps (pixels per axis) before the first
    convolution: a long series costs the board that factor fewer MACs and activations."""
    filters, kernel, pool, dense_units, dropout, head, downsample = layers
    k = _keras()
    conv = k.layers.Conv1D if rank == 1 else k.layers.Conv2D
    pooling = k.layers.MaxPooling1D if rank == 1 else k.layers.MaxPooling2D
    averaging = k.layers.AveragePooling1D if rank == 1 else k.layers.AveragePooling2D
    gap = k.layers.GlobalAveragePooling1D if rank == 1 else k.layers.GlobalAveragePooling2D
    layers = [k.Input(shape=tuple(input_shape))]
    size = min(input_shape[:-1])
    if downsample > 1:
        if downsample > size:
            raise RecipeError(f"downsample {downsample} is longer than the input ({size})")
        layers.append(averaging(int(downsample)))
        size //= int(downsample)
    for f in filters:
        layers.append(conv(int(f), kernel, padding="same", activation="relu"))
        # Pool only while the feature map stays at least 2 wide afterwards.
        if size >= 2 * pool:
            layers.append(pooling(pool))
            size //= pool
    layers.append(gap() if head == "gap" else k.layers.Flatten())
    for u in dense_units:
        if dropout:
            layers.append(k.layers.Dropout(dropout))
        layers.append(k.layers.Dense(int(u), activation="relu"))
    if dropout:
        layers.append(k.layers.Dropout(dropout))
    layers.append(k.layers.Dense(classes, name="logits"))
    return k.Sequential(layers)


def _conv_arch(dims: int, layout: str, doc: str) -> Callable[..., Any]:
    """The ``conv{dims}d`` architecture: samples shaped ``layout``, layers from :func:`_conv`."""
    name = f"conv{dims}d"

    def arch(
        input_shape: Sequence[int],
        classes: int,
        *,
        filters: Sequence[int] = (16,),
        kernel: int = 3,
        pool: int = 2,
        dense: Sequence[int] = (),
        dropout: float = 0.0,
        head: str = "flatten",
        downsample: int = 1,
    ) -> Any:
        if len(input_shape) != dims + 1:
            raise RecipeError(f"{name} needs samples shaped {layout}, got {tuple(input_shape)}")
        spec = (filters, kernel, pool, dense, dropout, head, int(downsample))
        return _conv(dims, input_shape, classes, spec)

    # the name shows in a bad parameter's TypeError ("conv1d() got an unexpected keyword ...")
    arch.__name__ = arch.__qualname__ = name
    arch.__doc__ = doc
    return arch


conv1d = _conv_arch(1, "(T, C)", "1-D convolutions over time series (T, C).")
conv2d = _conv_arch(2, "(H, W, C)", "2-D convolutions over images (H, W, C).")


ARCHITECTURES: dict[str, Callable[..., Any]] = {
    "dense": dense,
    "conv1d": conv1d,
    "conv2d": conv2d,
}


def build_model(arch: str, input_shape: Sequence[int], classes: int, params: dict[str, Any]):
    """Build the logits model for ``arch``; bad parameters become a :class:`RecipeError`."""
    try:
        return ARCHITECTURES[arch](input_shape, classes, **params)
    except TypeError as e:
        raise RecipeError(f"arch {arch!r}: {e}") from e
