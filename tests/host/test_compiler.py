"""The host compiler: .tflite -> the board's model file (issue 3, item 1).

Bit-exactness is proven before the board engine exists: ``ldr_reference.Reference`` runs a
compiled file with the documented arithmetic, and must equal TFLite Micro (the real
interpreter from the ``tflite-micro`` package) on fresh random inputs for every op case and
every digits tier. The SOFTMAX exp table and the LOGISTIC/TANH tables are also checked
directly against TFLM on all 256 int8 inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from edgeladder.cli import main
from edgeladder.errors import ModelFileError
from edgeladder.model.compiler import CompileError, compile_model, planner, write_compiled
from edgeladder.model.compiler.fmt import mformat, opsize
from edgeladder.model.compiler.ops import lut, softmax
from edgeladder.model.fixedpoint import exp_on_negative_values
from edgeladder.model.tflite.reader import read_model

sys.path.insert(0, str(Path(__file__).parent))
from ldr_reference import Reference

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "build" / "digits"
SEED = int.from_bytes(os.urandom(4), "little")
REFUSED = ("leaky_relu", "conv_batch2")


def _op_models():
    import op_models

    return op_models


def _runtime():
    from tflite_micro.python.tflite_micro import runtime

    return runtime


def _tflm(data: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    it = _runtime().Interpreter.from_bytes(data)
    outs = []
    for x in inputs:
        it.set_input(x, 0)
        it.invoke()
        outs.append(it.get_output(0).copy())
    return outs


def _tflm_arena(data: bytes) -> dict[str, int]:
    """TFLM's RecordingMicroAllocator totals (printed on stderr by print_allocations)."""
    it = _runtime().Interpreter.from_bytes(data)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            it.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    out = {}
    for key in ("total", "head", "tail"):
        for line in text.splitlines():
            if f"Arena allocation {key} " in line:
                out[key] = int(line.split()[-2])
    return out


@pytest.fixture(scope="module")
def digits_tiers(request) -> list[Path]:
    paths = sorted(DIGITS.glob("*/*.tflite"))
    if not paths:  # a clean checkout: build them (minutes), as the build tests do
        request.getfixturevalue("digits_build")
        paths = sorted(DIGITS.glob("*/*.tflite"))
    return paths


def _check_file(compiled) -> None:
    data = compiled.data
    h = mformat.read_header(data)
    body = data[mformat.HEADER_SIZE :]
    assert data[:4] == mformat.MAGIC and struct.unpack_from("<H", data, 4)[0] == mformat.VERSION
    assert (h.model_id, h.model_version) == (compiled.model_id, compiled.model_version)
    assert h.body_size == len(body) and h.arena_size == compiled.arena_size
    assert h.n_ops == len(compiled.ops)
    # The sha256 covers every byte after itself: the rest of the header and the body.
    assert h.digest == hashlib.sha256(data[mformat.HASHED_FROM :]).digest()
    assert data[mformat.HASHED_FROM - 32 : mformat.HASHED_FROM] == h.digest
    assert (h.in_zp, h.out_zp) == (compiled.input.zero_point, compiled.output.zero_point)
    assert h.in_scale == pytest.approx(compiled.input.scale, rel=1e-7)
    # Every op's params (4-aligned) and every constant it reads lie inside the body: the
    # board's own load-time check (ladder.opsize.Plan, whose ops() walks mformat.ops) accepts it.
    ops = list(opsize.Plan(data).ops())
    assert [mformat.NAMES[op] for op, _ in ops] == [name for name, _ in compiled.ops]
    # The plan: no two buffers alive together share a byte, and it is no larger than the sum.
    assert planner.conflicts(compiled.buffers) == []
    assert compiled.arena_size <= sum((b.size + 3) // 4 * 4 for b in compiled.buffers)
    for b in compiled.buffers:
        assert b.offset % planner.ALIGN == 0 and b.offset + b.size <= compiled.arena_size


def _random_inputs(compiled, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, compiled.input.shape).astype(np.int8) for _ in range(n)]


def _assert_bitexact(data: bytes, n: int, what: str) -> None:
    compiled = compile_model(data)
    ref = Reference(compiled.data)
    inputs = _random_inputs(compiled, n, SEED)
    for k, (x, want) in enumerate(zip(inputs, _tflm(data, inputs), strict=True)):
        got = ref.run(x).reshape(want.shape)
        assert np.array_equal(got, want), f"{what}: input {k} differs (seed {SEED})"


# --- the digits tiers --------------------------------------------------------------------------


def test_digits_tiers_compile_and_match_tflm(digits_tiers, capsys):
    print(f"\nseed {SEED}")
    rows = []
    for path in digits_tiers:
        compiled = compile_model(path)
        _check_file(compiled)
        _assert_bitexact(path.read_bytes(), 100, path.name)
        tflm = _tflm_arena(path.read_bytes())
        rows.append((path.stem, compiled.arena_size, tflm.get("head"), tflm.get("total"),
                     len(compiled.data), path.stat().st_size))  # fmt: skip
    with capsys.disabled():
        print("\nmodel            arena  tflm_tensors  tflm_total  ldr_bytes  tflite_bytes")
        for r in rows:
            print(f"{r[0]:<16} {r[1]:>5}  {r[2]!s:>12}  {r[3]!s:>10}  {r[4]:>9}  {r[5]:>12}")
    for r in rows:
        assert r[2] is None or r[1] <= r[2], f"{r[0]}: our arena exceeds TFLM's tensor arena"


def test_compile_from_bytes_equals_from_path(digits_tiers):
    path = digits_tiers[0]
    a = compile_model(path)
    b = compile_model(path.read_bytes())
    assert a.data == b.data
    c = compile_model(path, model_id=7, model_version=3)
    h = mformat.read_header(c.data)
    assert (h.model_id, h.model_version) == (7, 3)
    assert c.data[mformat.HEADER_SIZE :] == a.data[mformat.HEADER_SIZE :]
    assert c.sha256 != a.sha256  # the header's own fields are hashed too


# --- one model per op and option ---------------------------------------------------------------


def _ok_cases():
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        return []
    sys.path.insert(0, str(Path(__file__).parent))
    import op_models

    return [n for n in op_models.CASES if n not in REFUSED]


@pytest.mark.parametrize("case", _ok_cases())
def test_op_case_matches_tflm(case):
    data = _op_models().tflite_bytes(case)
    compiled = compile_model(data)
    _check_file(compiled)
    _assert_bitexact(data, 25, case)


def test_float_edges_are_stripped():
    op_models = _op_models()
    data = op_models.tflite_bytes("dense", int8_io=False)
    model = read_model(data)
    assert [o.op_name for o in model.ops] == ["QUANTIZE", "FULLY_CONNECTED", "DEQUANTIZE"]
    compiled = compile_model(data)
    assert compiled.ops == [("FULLY_CONNECTED", 1)]
    q = model.tensors[model.ops[0].outputs[0]]
    d = model.tensors[model.ops[2].inputs[0]]
    assert (compiled.input.scale, compiled.input.zero_point) == (q.scales[0], q.zero_points[0])
    assert (compiled.output.scale, compiled.output.zero_point) == (d.scales[0], d.zero_points[0])


def test_shape_arithmetic_is_folded_and_reshape_aliased():
    compiled = compile_model(_op_models().tflite_bytes("flatten_dynamic"))
    assert [name for name, _ in compiled.ops] == ["FULLY_CONNECTED"]
    assert compiled.dropped == [0, 1, 2]  # SHAPE, STRIDED_SLICE, PACK
    # The FC reads the graph input's bytes directly: the reshape costs nothing.
    fc = Reference(compiled.data).ops[0][1]
    assert fc["in"] == compiled.input.offset


def test_unsupported_op_names_op_index_and_supported_list():
    with pytest.raises(CompileError) as e:
        compile_model(_op_models().tflite_bytes("leaky_relu"))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("model bytes: op 0 (LEAKY_RELU) is not supported on the board;")
    assert "supported: ADD, AVERAGE_POOL_2D," in msg and "SOFTMAX" in msg


def test_unsupported_option_names_op_and_what_is_supported(tmp_path):
    path = tmp_path / "batch2.tflite"
    path.write_bytes(_op_models().tflite_bytes("conv_batch2"))
    with pytest.raises(CompileError) as e:
        compile_model(path)
    assert str(e.value) == (f"{path}: op 0 (CONV_2D): batch 2 is not supported; supported: batch 1")


def test_corrupt_and_truncated_tflite_give_model_file_error(digits_tiers, tmp_path):
    good = digits_tiers[0].read_bytes()
    for bad in (b"not a model at all", good[: len(good) // 3], b"\0" * 4 + b"TFL3" + b"\xff" * 64):
        with pytest.raises(ModelFileError):
            compile_model(bad)
    with pytest.raises(ModelFileError):
        compile_model(tmp_path / "missing.tflite")


# --- tables against TFLM on every int8 input ----------------------------------------------------


@pytest.mark.parametrize("name", ["logistic", "tanh"])
def test_activation_table_equals_tflm_on_all_256_inputs(name):
    data = _op_models().tflite_bytes(name)
    model = read_model(data)
    t = model.tensors[model.inputs[0]]
    table = {"logistic": lut.logistic_table, "tanh": lut.tanh_table}[name](
        t.scales[0], t.zero_points[0]
    )
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    (want,) = _tflm(data, [x])
    assert np.array_equal(np.array(table, dtype=np.int8), want.reshape(-1))


def test_softmax_exp_table_equals_tflm():
    data = _op_models().tflite_bytes("softmax")
    model = read_model(data)
    t = model.tensors[model.inputs[0]]
    table = softmax.exp_table(1.0, t.scales[0])
    rng = np.random.default_rng(SEED)
    inputs = []
    for spread in (3, 20, 80, 255):  # narrow rows use the table's head, wide rows diff_min
        lo = rng.integers(-128, 128 - spread, (1, 64, 1))
        inputs.append((lo + rng.integers(0, spread + 1, (1, 64, 10))).astype(np.int8))
    for x, want in zip(inputs, _tflm(data, inputs), strict=True):
        got = np.stack([softmax.softmax_row(row, table) for row in x[0]])
        assert np.array_equal(got, want[0]), f"seed {SEED}"


def test_exp_replica_is_close_to_exp():
    for v in (-0.01, -0.3, -1.0, -2.5, -7.0):
        got = exp_on_negative_values(round(v * (1 << 26)), 5) / 2**31
        assert got == pytest.approx(np.exp(v), rel=1e-6, abs=1e-9)


# --- planner ------------------------------------------------------------------------------------


def test_planner_reuses_memory_of_dead_buffers():
    # A chain a -> b -> c: a and c never live together, so c reuses a's bytes.
    bufs = [
        planner.Buffer(0, 100, -1, 0),
        planner.Buffer(1, 40, 0, 1),
        planner.Buffer(2, 100, 1, 2),
    ]
    size = planner.plan(bufs)
    assert planner.conflicts(bufs) == []
    assert size == 140 and bufs[0].offset == bufs[2].offset == 0 and bufs[1].offset == 100


def test_conflict_checker_finds_overlap():
    bufs = [planner.Buffer(0, 8, 0, 2, offset=0), planner.Buffer(1, 8, 1, 3, offset=4)]
    assert planner.conflicts(bufs) == [(0, 1)]


# --- writing and the command ------------------------------------------------------------------


def test_write_is_atomic(digits_tiers, tmp_path, monkeypatch):
    compiled = compile_model(digits_tiers[0])
    out = tmp_path / "m.ldr"
    out.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_compiled(compiled, out)
    assert out.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [out]
    monkeypatch.undo()
    write_compiled(compiled, out)
    assert out.read_bytes() == compiled.data and sorted(tmp_path.iterdir()) == [out]


def test_cli_compile_default_output_and_json(digits_tiers, tmp_path, capsys):
    src = tmp_path / "tiny.tflite"
    src.write_bytes(digits_tiers[0].read_bytes())
    assert main(["compile", str(src)]) == 0
    text = capsys.readouterr().out
    assert (tmp_path / "tiny.ldr").exists() and "arena" in text and "sha256" in text
    assert main(["compile", str(src), "-o", str(tmp_path / "x.ldr"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    data = (tmp_path / "x.ldr").read_bytes()
    assert summary["file_bytes"] == len(data)
    assert summary["sha256"] == hashlib.sha256(data[mformat.HASHED_FROM :]).hexdigest()


def test_cli_compile_bad_model_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"garbage" * 10)
    assert main(["compile", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(bad) in err and "\n" not in err
    assert not (tmp_path / "bad.ldr").exists()


def test_board_support_marks_each_op(digits_tiers):
    from edgeladder.model.compiler import board_support
    from edgeladder.model.tflite.reader import read_model

    tiny = read_model(digits_tiers[0])
    verdict = board_support(tiny)
    assert verdict["runs_on_board"] and verdict["error"] is None
    assert verdict["arena_bytes"] == compile_model(digits_tiers[0]).arena_size
    names = {op.index: op.op_name for op in tiny.ops}
    assert {names[i] for i, v in verdict["ops"].items() if v == "compiled"} >= {
        "FULLY_CONNECTED",
        "SOFTMAX",
    }
    assert all(v in ("compiled", "folded") for v in verdict["ops"].values())

    leaky = read_model(_op_models().tflite_bytes("leaky_relu"))
    verdict = board_support(leaky)
    assert not verdict["runs_on_board"]
    assert "LEAKY_RELU" in verdict["error"]
    assert verdict["ops"][0] == "unsupported"
