"""Op compilers, one small module per op family; ``REGISTRY`` maps a TFLite op name to one.

Adding an op means adding a module with its own ``REGISTRY`` dict and listing it here.
"""

from __future__ import annotations

from collections.abc import Callable

from edgeladder.model.compiler.ir import OpContext, OpRecord
from edgeladder.model.compiler.ops import (
    concat,
    conv,
    elementwise,
    fully_connected,
    lut,
    mean,
    pad,
    pool,
    shape,
    softmax,
)

OpCompiler = Callable[[OpContext], list[OpRecord]]

REGISTRY: dict[str, OpCompiler] = {}
for _module in (fully_connected, conv, pool, mean, elementwise, shape, pad, concat, softmax, lut):
    REGISTRY.update(_module.REGISTRY)

# Float QUANTIZE/DEQUANTIZE at the graph's edges, which graph preparation strips. (Shape
# arithmetic that only feeds RESHAPE's shape operand is dropped whatever its ops are.)
EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")

SUPPORTED = tuple(sorted(set(REGISTRY) | set(EDGE_OPS)))
