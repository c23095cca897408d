"""Run int8 ``.tflite`` models with LiteRT (``ai-edge-litert``): no TensorFlow needed.

Shared by the build's evaluation and, later, the serving tiers on a Pi or Jetson.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeladder.errors import ModelFileError
from edgeladder.model.quantmath import quantize


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - zero_point) * scale


@dataclass
class Int8Runner:
    """A LiteRT interpreter for one int8 model, run one sample at a time or in batches."""

    interpreter: object
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    input_shape: tuple[int, ...]
    # The int8 input of the final SOFTMAX (the logits), if the model ends with one: the ladder's
    # gate reads it, as the board reads the same tensor from its arena (ladder.Model.logits()).
    logits_index: int | None = None
    logits_scale: float = 0.0
    logits_zero_point: int = 0

    @classmethod
    def from_bytes(cls, model: bytes, name: str = "<model>") -> Int8Runner:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        try:
            # The reference kernels: the ones TFLite Micro matches bit for bit (no XNNPACK).
            it = Interpreter(
                model_content=model,
                num_threads=1,
                experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                # Keeps intermediate tensors readable after invoke: the logits, for the gate.
                experimental_preserve_all_tensors=True,
            )
            it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelFileError(f"LiteRT cannot load the model: {e}", name) from e
        (inp,), (out,) = it.get_input_details(), it.get_output_details()
        if inp["dtype"] != np.int8 or out["dtype"] != np.int8:
            raise ModelFileError(
                f"input is {np.dtype(inp['dtype']).name} and output"
                f" {np.dtype(out['dtype']).name}; an int8 full-integer model is required",
                name,
            )
        logits = _softmax_input(it)
        return cls(
            interpreter=it,
            logits_index=None if logits is None else logits["index"],
            logits_scale=0.0 if logits is None else float(logits["quantization"][0]),
            logits_zero_point=0 if logits is None else int(logits["quantization"][1]),
            input_scale=float(inp["quantization"][0]),
            input_zero_point=int(inp["quantization"][1]),
            output_scale=float(out["quantization"][0]),
            output_zero_point=int(out["quantization"][1]),
            input_shape=tuple(int(d) for d in inp["shape"][1:]),
        )

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return quantize(x, self.input_scale, self.input_zero_point)

    def run_int8(self, xq: np.ndarray) -> np.ndarray:
        """int8 inputs (N, ...) to int8 outputs (N, classes), one invoke per sample."""
        it = self.interpreter
        i = it.get_input_details()[0]["index"]
        o = it.get_output_details()[0]["index"]
        outs = []
        for row in xq:
            it.set_tensor(i, row[None, ...].astype(np.int8))
            it.invoke()
            outs.append(it.get_tensor(o)[0].copy())
        return np.stack(outs)

    def run_int8_logits(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int8 inputs (N, ...) to (int8 outputs, int8 logits), both (N, classes)."""
        if self.logits_index is None:
            raise ModelFileError("the model does not end with SOFTMAX: it has no logits to gate on")
        it = self.interpreter
        i = it.get_input_details()[0]["index"]
        o = it.get_output_details()[0]["index"]
        outs, logits = [], []
        for row in xq:
            it.set_tensor(i, row[None, ...].astype(np.int8))
            it.invoke()
            outs.append(it.get_tensor(o)[0].copy())
            logits.append(it.get_tensor(self.logits_index).reshape(-1).copy())
        return np.stack(outs), np.stack(logits)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float (normalized) inputs to int8 outputs."""
        return self.run_int8(self.quantize_input(x))


def _softmax_input(it) -> dict | None:
    """Details of the input tensor of the graph's last op if that op is SOFTMAX, else None."""
    ops = it._get_ops_details()  # LiteRT's only op listing; stable across 1.x and 2.x
    if not ops or ops[-1]["op_name"] != "SOFTMAX":
        return None
    index = int(ops[-1]["inputs"][0])
    return next(t for t in it.get_tensor_details() if t["index"] == index)
