"""Corrupted copies of the digits tiny model, swept: the engine refuses each bad one with a
``ValueError("model: …")`` (never a ``MemoryError``, never a crash), a copy it loads also runs,
and ``edgeladder fit`` refuses exactly the files the engine refuses, with the engine's reason.

The copies: truncations, bit flips (some with the sha256 made to match again, to reach the
checks behind it) and field edits (header, tensor table, op table and every op parameter, set
to edge values: 0, -1, 2**31 - 1, 2**30, ...; sha256 made to match). They all run in one
``micropython`` process at the ESP32's heap, as a board would load them.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from engine_harness import digits_tflite  # noqa: F401  (a fixture)
from test_engine_load import engine_refusals, fit_refuses

from edgeladder.boards.fit import fit
from edgeladder.errors import ModelFileError
from ladder import mformat as F

SEED = 20260
EDGES = (0, 1, -1, 2, 3, 255, 1 << 16, (1 << 30) - 1, 1 << 30, (1 << 31) - 1, -(1 << 31))
_BODY_SIZE_AT = F.HASHED_FROM + 4 * F.HEADER_FIELDS.index("body_size")  # 4 u32s lead


def reseal(data: bytes) -> bytes:
    """``data`` with the sha256 the header needs, over whatever body size it now claims."""
    (body_size,) = struct.unpack_from("<I", data, _BODY_SIZE_AT)
    digest = hashlib.sha256(data[F.HASHED_FROM : F.HEADER_SIZE + body_size]).digest()
    return data[: F.HASHED_FROM - 32] + digest + data[F.HASHED_FROM :]


def _put(data: bytes, at: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    if not isinstance(value, float):  # wrap to the field's width, as a file would hold it
        width = struct.calcsize(fmt) * 8
        value %= 1 << width
        if fmt[-1].islower() and value >= 1 << (width - 1):
            value -= 1 << width
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def _field_edits(good: bytes) -> list[tuple[str, bytes]]:
    h = F.read_header(good)
    edits = []
    at = F.HASHED_FROM
    for name, code in zip(F.HEADER_FIELDS, F.REST_FMT[1:], strict=True):
        for v in EDGES:
            value = float(v) if code == "f" else v
            edits.append((f"header {name}={v}", _put(good, at, "<" + code, value)))
        at += struct.calcsize("<" + code)
    body = F.HEADER_SIZE
    for i in range(h.n_tensors):
        row = body + i * F.TENSOR_SIZE
        for off, code, name in ((0, "I", "offset"), (4, "I", "size"), (8, "B", "rank"),
                                (12, "H", "d0"), (14, "H", "d1"), (18, "H", "d3")):  # fmt: skip
            for v in (0, 1, 5, 255, 65535, (1 << 31) - 1):
                edits.append((f"tensor {i} {name}={v}", _put(good, row + off, "<" + code, v)))
    table = body + h.n_tensors * F.TENSOR_SIZE
    for k in range(h.n_ops):
        row = table + k * F.OP_SIZE
        op, n, off = struct.unpack_from(F.OP_FMT, good, row)
        for v in (0, 2, 99, n - 1, n + 1, 65535):
            edits.append((f"op {k} count={v}", _put(good, row + 2, "<H", v)))
        for v in (0, 1, 2, op + 1, 65535):
            edits.append((f"op {k} opcode={v}", _put(good, row, "<H", v)))
        for v in (1, 2, off + 4, 1 << 20):
            edits.append((f"op {k} params at {v}", _put(good, row + 4, "<I", v)))
        names = F.fields(op)
        for j in range(n):
            where = body + off + 4 * j
            (value,) = struct.unpack_from("<i", good, where)
            for v in {*EDGES, value + 1, value - 1, 2 * value, value + (1 << 20)}:
                label = f"op {k} ({F.NAMES[op]}) {names[j] if j < len(names) else j}={v}"
                edits.append((label, _put(good, where, "<i", v)))
    return [(name, reseal(data)) for name, data in edits]


def _joint_edits(good: bytes) -> list[tuple[str, bytes]]:
    """Convolution and pool geometry edited two fields at a time (each one alone may pass)."""
    h = F.read_header(good)
    table = F.HEADER_SIZE + h.n_tensors * F.TENSOR_SIZE
    big = (1 << 31) - 1
    edits = []
    for k in range(h.n_ops):
        op, _, off = struct.unpack_from(F.OP_FMT, good, table + k * F.OP_SIZE)
        names = F.fields(op)
        if "out_h" not in names:
            continue
        pairs = [
            ("out_h", 0, "out_w", big),
            ("out_h", 0, "out_w", 1 << 20),
            ("out_w", 0, "out_h", big),
        ]
        pairs += [("stride_h", big, "out_h", 2), ("stride_w", 1 << 29, "out_w", 3)]
        if "dil_h" in names:
            pairs += [("dil_h", big, "k_h", 2), ("k_w", 1 << 16, "dil_w", 1 << 16)]
            pairs += [("out_h", 0, "out_c", big), ("in_c", 1 << 20, "in_w", 1 << 11)]
        for a, va, b, vb in pairs:
            data = _put(good, F.HEADER_SIZE + off + 4 * names.index(a), "<i", va)
            data = _put(data, F.HEADER_SIZE + off + 4 * names.index(b), "<i", vb)
            edits.append((f"op {k} ({F.NAMES[op]}) {a}={va} {b}={vb}", reseal(data)))
    return edits


def corruptions(good: bytes, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    n = len(good)
    cuts = {0, 1, F.HASHED_FROM, F.HEADER_SIZE - 1, F.HEADER_SIZE, n - 4, n - 1}
    cuts |= {int(c) for c in rng.integers(0, n, 300)}
    files = [(f"truncated to {c}", good[:c]) for c in sorted(cuts)]
    for resealed in (False, True):
        low = F.HASHED_FROM if resealed else 0  # past the sha256 when it is made to match
        for _ in range(500):
            at, bit = int(rng.integers(low, n)), int(rng.integers(0, 8))
            data = bytearray(good)
            data[at] ^= 1 << bit
            data = reseal(bytes(data)) if resealed else bytes(data)
            files.append((f"bit {bit} of byte {at} flipped{' (resealed)' * resealed}", data))
    return files + _field_edits(good) + _joint_edits(good)


@pytest.fixture(scope="module")
def compiled(digits_tflite) -> dict[str, bytes]:  # noqa: F811
    from edgeladder.model.compiler import compile_model

    return {t: bytes(compile_model(digits_tflite[t]).data) for t in ("tiny", "medium")}


def _sweep(upy, tmp_path, good: bytes, files: list[tuple[str, bytes]]) -> int:
    """Runs ``files`` through the engine and fit; returns how many the engine refused."""
    said = engine_refusals(upy, tmp_path, [data for _, data in files], timeout=900)
    bad = [(n, s) for (n, _), s in zip(files, said, strict=True)
           if s != "LOADED" and not s.startswith("ValueError: model: ")]  # fmt: skip
    assert not bad, f"{len(bad)} refusals that are not ValueError('model: ...'): {bad[:10]}"
    # fit agrees with the engine on every file: refuses what it refuses, with its reason, and
    # accepts what it loads.
    disagree = []
    for (name, data), s in zip(files, said, strict=True):
        path = tmp_path / "m.ldr"
        if s != "LOADED":
            ok = fit_refuses(path, data, s)
        else:
            path.write_bytes(data)
            try:
                ok = fit(path, "esp32").model.file_bytes == len(data)
            except ModelFileError:
                ok = False
        if not ok:
            disagree.append((name, s))
    assert not disagree, f"fit and the engine disagree on {len(disagree)}: {disagree[:10]}"
    return sum(s != "LOADED" for s in said)


def test_every_corrupted_file_is_refused_with_a_model_value_error(upy, tmp_path, compiled):
    good = compiled["tiny"]
    files = corruptions(good, np.random.default_rng(SEED))
    assert len(files) >= 2000
    refused = _sweep(upy, tmp_path, good, files)
    print(
        f"\nsweep of {len(files)} corrupted copies of digits_tiny ({len(good)} bytes):"
        f" {refused} refused, all with ValueError('model: ...'), {len(files) - refused}"
        f" loaded and ran; fit refused {refused}/{refused} of the engine's refusals"
    )


def test_convolution_fields_edited_are_refused_or_run(upy, tmp_path, compiled):
    """The digits medium tier (CONV_2D, MAX_POOL_2D, FULLY_CONNECTED, SOFTMAX): every op
    field set to edge values, and geometry pairs such as out_h = 0 with a huge out_w (once an
    unbounded scratch request, a MemoryError)."""
    good = compiled["medium"]
    files = _field_edits(good) + _joint_edits(good)
    refused = _sweep(upy, tmp_path, good, files)
    print(
        f"\nsweep of {len(files)} edited copies of digits_medium: {refused} refused, all with"
        f" ValueError('model: ...'), {len(files) - refused} loaded and ran; fit refused"
        f" {refused}/{refused}"
    )
