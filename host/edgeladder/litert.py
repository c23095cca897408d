"""Run int8 ``.tflite`` models with LiteRT (``ai-edge-litert``): no TensorFlow needed.

Shared by the build's evaluation and, later, the serving tiers on a Pi or Jetson.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ModelFileError
from .quantmath import quantize


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

    @classmethod
    def from_bytes(cls, model: bytes, name: str = "<model>") -> Int8Runner:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        try:
            # The reference kernels: the ones TFLite Micro matches bit for bit (no XNNPACK).
            it = Interpreter(
                model_content=model,
                num_threads=1,
                experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
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
        return cls(
            interpreter=it,
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

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float (normalized) inputs to int8 outputs."""
        return self.run_int8(self.quantize_input(x))
