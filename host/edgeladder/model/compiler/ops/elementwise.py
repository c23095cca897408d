"""ADD and MUL of two int8 tensors of the same shape, or of a tensor and a one-element tensor.

ADD is TFLite's quantized add (TFLM add_common.cc): both inputs move to a common scale with
20 bits of headroom, are summed, and the sum is rescaled to the output::

    a = MBQM((x1 - zp1) << 20, m1, s1);  b = MBQM((x2 - zp2) << 20, m2, s2)
    out = clamp(MBQM(a + b, m_out, s_out) + out_zp, act_min, act_max)

with ``twice_max = 2 * max(scale1, scale2)``, ``m1/s1 = QM(scale1 / twice_max)``,
``m2/s2 = QM(scale2 / twice_max)``, ``m_out/s_out = QM(twice_max / (2**20 * out_scale))``.
MUL: ``out = clamp(MBQM((x1 - zp1) * (x2 - zp2), m, s) + out_zp)``, ``m/s = QM(s1 * s2 / s_out)``.
Both are symmetric in their inputs, so a one-element first input is swapped to second place.
"""

from __future__ import annotations

from edgeladder.model.compiler.fmt import mformat as F
from edgeladder.model.compiler.ir import (
    Arena,
    OpContext,
    OpError,
    OpRecord,
    activation_range,
    count,
    require_int8,
)
from edgeladder.model.quantmath import quantize_multiplier

ADD_LEFT_SHIFT = 20


def _operands(ctx: OpContext):
    op = ctx.op
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    for t in (a, b):
        if t.data is not None:
            raise OpError(
                f"constant operand {t.name!r} is not supported; both inputs must be activations"
            )
    qa, qb = require_int8(a, "input 1"), require_int8(b, "input 2")
    qo = require_int8(out, "output")
    n_a, n_b, n_out = count(a.shape), count(b.shape), count(out.shape)
    ia, ib = op.inputs[0], op.inputs[1]
    if n_a == 1 and n_b > 1:  # put the scalar second
        a, b, qa, qb, n_a, n_b, ia, ib = b, a, qb, qa, n_b, n_a, ib, ia
    if not (n_b in (1, n_a) and (tuple(a.shape) == tuple(b.shape) or n_b == 1)) or n_out != n_a:
        raise OpError(
            f"broadcast of {a.shape} and {b.shape} is not supported; supported: equal shapes "
            "or a one-element operand"
        )
    act = activation_range(op.options.get("fused_activation_function", "NONE"), *qo)
    return ia, ib, n_a, n_b, qa, qb, qo, act


def add_params(s1: float, s2: float, s_out: float) -> tuple[int, ...]:
    """(m1, s1, m2, s2, m_out, s_out) exactly as TFLM's CalculateOpDataAdd for int8."""
    twice_max = 2 * max(s1, s2)
    reals = (s1 / twice_max, s2 / twice_max, twice_max / ((1 << ADD_LEFT_SHIFT) * s_out))
    out: list[int] = []
    for r in reals:
        if not 0 < r < 1:  # QuantizeMultiplierSmallerThanOneExp's precondition
            raise OpError(f"scales give an add multiplier of {r}, outside (0, 1)")
        out.extend(quantize_multiplier(r))
    return tuple(out)


def compile_add(ctx: OpContext) -> list[OpRecord]:
    ia, ib, n, n2, (s1, z1), (s2, z2), (so, zo), act = _operands(ctx)
    op = ctx.op
    params = [Arena(ia), Arena(ib), Arena(op.outputs[0]), n, n2, -z1, -z2, zo, ADD_LEFT_SHIFT,
              *add_params(s1, s2, so), *act]  # fmt: skip
    return [OpRecord(F.ADD, params, (ia, ib), (op.outputs[0],), op.index)]


def compile_mul(ctx: OpContext) -> list[OpRecord]:
    ia, ib, n, n2, (s1, z1), (s2, z2), (so, zo), act = _operands(ctx)
    op = ctx.op
    mult, shift = quantize_multiplier(s1 * s2 / so)
    params = [Arena(ia), Arena(ib), Arena(op.outputs[0]), n, n2, -z1, -z2, zo, mult, shift, *act]
    return [OpRecord(F.MUL, params, (ia, ib), (op.outputs[0],), op.index)]


REGISTRY = {"ADD": compile_add, "MUL": compile_mul}
