"""What op compilers produce: parameter lists with symbolic references, resolved at layout.

An op compiler does not know where its tensors will live in the arena or where its weights
will sit in the body; both are decided after every op is compiled (the arena plan needs
the whole graph). So parameters are ints, :class:`Arena` (a tensor's arena offset) or
:class:`Const` (a constant blob's body offset), and :mod:`.layout` turns them into int32s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgeladder.errors import EdgeladderError
from edgeladder.model.quantmath import round_half_away
from edgeladder.model.tflite.reader import Operator, Tensor


class OpError(Exception):
    """One op cannot be compiled; the compiler adds the file, op index and op name."""


@dataclass(frozen=True)
class Arena:
    """The arena byte offset of an activation tensor (by TFLite tensor index)."""

    tensor: int


@dataclass(frozen=True)
class Const:
    """A constant blob stored in the body; the parameter becomes its body offset."""

    data: bytes


Param = int | Arena | Const


@dataclass
class OpRecord:
    opcode: int
    params: list[Param]
    inputs: tuple[int, ...]  # activation tensors read (TFLite indices)
    outputs: tuple[int, ...]  # activation tensors written
    source: int  # index of the TFLite op it came from
    name: str = ""


@dataclass
class OpContext:
    """What an op compiler may look at: the op, tensors (after graph preparation)."""

    op: Operator
    tensors: dict[int, Tensor]  # every tensor, constants folded by graph preparation
    extra: dict[str, object] = field(default_factory=dict)

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    def input(self, i: int) -> Tensor:
        if i >= len(self.op.inputs) or self.op.inputs[i] < 0:
            raise OpError(f"input {i} is missing")
        return self.tensors[self.op.inputs[i]]

    def optional_input(self, i: int) -> Tensor | None:
        if i >= len(self.op.inputs) or self.op.inputs[i] < 0:
            return None
        return self.tensors[self.op.inputs[i]]

    def output(self, i: int = 0) -> Tensor:
        return self.tensors[self.op.outputs[i]]


# --- checks and quantization helpers shared by the op families ------------------------------

ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def require_int8(t: Tensor, what: str) -> tuple[float, int]:
    """An int8 activation with one (per-tensor) scale and zero point: (scale, zero point)."""
    if t.dtype != "INT8":
        raise OpError(f"{what} tensor {t.name!r} is {t.dtype}; the board runs int8 tensors only")
    if len(t.scales) != 1 or len(t.zero_points) != 1:
        raise OpError(f"{what} tensor {t.name!r} needs per-tensor int8 quantization")
    scale = float(t.scales[0])
    if not (math.isfinite(scale) and scale > 0):
        raise OpError(f"{what} tensor {t.name!r} has scale {scale}")
    return scale, int(t.zero_points[0])


def require_const(t: Tensor, what: str) -> np.ndarray:
    if t.data is None:
        raise OpError(f"{what} tensor {t.name!r} must be a constant")
    return t.numpy()


def activation_range(activation: str, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8: (act_min, act_max).

    ``quantize(f) = zero_point + round(f / scale)`` with the division in float32 (``f`` and
    ``scale`` are floats in TFLite) and ``TfLiteRound`` (halves away from zero).
    """
    if activation not in ACTIVATIONS:
        raise OpError(
            f"fused activation {activation} is not supported; supported: {', '.join(ACTIVATIONS)}"
        )

    def quantize(f: float) -> int:
        q = np.float32(f) / np.float32(scale)
        return zero_point + round_half_away(float(q))

    lo, hi = -128, 127
    if activation == "RELU":
        return max(lo, quantize(0.0)), hi
    if activation == "RELU6":
        return max(lo, quantize(0.0)), min(hi, quantize(6.0))
    if activation == "RELU_N1_TO_1":
        return max(lo, quantize(-1.0)), min(hi, quantize(1.0))
    return lo, hi


def count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def int32_blob(values) -> Const:
    arr = np.asarray(values, dtype=np.int64)
    if arr.size and (arr.min() < -(1 << 31) or arr.max() >= 1 << 31):
        raise OpError("a precomputed int32 parameter overflows int32")
    return Const(arr.astype("<i4").tobytes())


def int8_blob(values) -> Const:
    return Const(np.asarray(values, dtype=np.int8).tobytes())


def channel_multipliers(
    input_scale: float, filter_scales: tuple[float, ...], output_scale: float, channels: int
) -> tuple[Const, Const]:
    """Per-channel (multiplier, shift) int32 arrays, as TFLM's conv/FC Prepare computes them.

    ``effective_scale[c] = input_scale * filter_scale[c] / output_scale`` in double, then
    QuantizeMultiplier. A per-tensor filter scale is broadcast to every channel, which gives
    the per-tensor kernels' arithmetic exactly.
    """
    from edgeladder.model.quantmath import quantize_multiplier

    if len(filter_scales) not in (1, channels):
        raise OpError(f"filter has {len(filter_scales)} scales for {channels} output channels")
    scales = filter_scales if len(filter_scales) == channels else filter_scales * channels
    mults, shifts = [], []
    for s in scales:
        m, sh = quantize_multiplier(float(input_scale) * float(s) / float(output_scale))
        mults.append(m)
        shifts.append(sh)
    return int32_blob(mults), int32_blob(shifts)


class CompileError(EdgeladderError):
    """A model the board cannot run: names the file, the op, its index and what is supported."""
