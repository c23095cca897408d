"""Lay out the body: tensor table, op table, op parameters, then constants (all 4-aligned).

Body offsets count from the first byte after the header. Parameters that were symbolic in
the op records become int32s here: :class:`Arena` -> the tensor's planned arena offset,
:class:`Const` -> the body offset of the constant (identical constants are stored once).
"""

from __future__ import annotations

import struct

from edgeladder.model.compiler.fmt import mformat as F
from edgeladder.model.compiler.ir import Arena, CompileError, Const, OpRecord

_INT32 = (-(1 << 31), (1 << 31) - 1)


def _pad4(buf: bytearray) -> None:
    buf.extend(b"\0" * (-len(buf) % 4))


def tensor_record(offset: int, shape: tuple[int, ...], zero_point: int, label: str) -> bytes:
    if len(shape) > 4 or any(not 0 < d <= 0xFFFF for d in shape):
        raise CompileError(f"tensor shape {shape}: the board takes rank <= 4, dims <= 65535", label)
    size = 1
    for d in shape:
        size *= d
    dims = list(shape) + [0] * (4 - len(shape))  # dims past the rank are 0
    return struct.pack(F.TENSOR_FMT, offset, size, len(shape), zero_point, *dims)


def assemble(
    records: list[OpRecord],
    tensor_rows: list[bytes],
    arena_offset,
    label: str,
) -> bytes:
    """The body bytes. ``arena_offset(t)`` gives a tensor's planned arena offset."""
    body = bytearray()
    for row in tensor_rows:
        body += row
    ops_at = len(body)
    params_at = ops_at + len(records) * F.OP_SIZE
    consts_at = params_at + 4 * sum(len(r.params) for r in records)

    # Constants first (their offsets go into the params), deduplicated by content.
    const_offsets: dict[bytes, int] = {}
    consts = bytearray()
    for rec in records:
        for p in rec.params:
            if isinstance(p, Const) and p.data not in const_offsets:
                const_offsets[p.data] = consts_at + len(consts)
                consts += p.data
                _pad4(consts)

    params = bytearray()
    for rec in records:
        body += struct.pack(F.OP_FMT, rec.opcode, len(rec.params), params_at + len(params))
        for p in rec.params:
            if isinstance(p, Arena):
                value = arena_offset(p.tensor)
            elif isinstance(p, Const):
                value = const_offsets[p.data]
            else:
                value = int(p)
            if not _INT32[0] <= value <= _INT32[1]:
                raise CompileError(
                    f"op {rec.source} ({rec.name}): parameter {value} overflows int32", label
                )
            params += struct.pack("<i", value)
    body += params
    assert len(body) == consts_at  # params are int32s: the constants start 4-aligned
    body += consts
    return bytes(body)
