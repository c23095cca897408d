"""Model.load on corrupt files, the public API and the allocation-free invoke(), on MicroPython."""

from __future__ import annotations

import struct

import engine_ref as R
import pytest

from edgeladder.boards.fit import fit
from edgeladder.errors import ModelFileError
from edgeladder.model.compiler import fmt
from ladder import mformat as F

N_IN, N_OUT = 8, 4


def fc_model(**over):
    """A 1-op FC model: input int8[1, 8] at arena 0, output int8[1, 4] at arena 8."""
    p = [0, N_IN, "w", "b", "m", "s", 1, N_IN, N_OUT, -3, -128, 127]
    for k, v in over.get("params", {}).items():
        p[F.fields(F.FULLY_CONNECTED).index(k)] = v
    consts = {
        "w": R.i8([(i * 37) % 255 - 127 for i in range(N_IN * N_OUT)]),
        "b": R.i32([100, -2000, 30000, -5]),
        "m": R.i32([1 << 30, (1 << 31) - 1, 1500000000, 1 << 30]),
        "s": R.i32([-6, -8, -7, -5]),
    }
    tensors = over.get("tensors", [(0, (1, N_IN), -1), (N_IN, (1, N_OUT), -3)])
    return R.pack(
        [(over.get("opcode", F.FULLY_CONNECTED), p)],
        consts,
        over.get("arena", N_IN + N_OUT),
        tensors,
    )


def rehash(data):
    """Fix the header's sha256 after an edit (to reach the checks behind it)."""
    h = F.read_header(data)
    return fmt.pack(h, data[F.HEADER_SIZE : F.HEADER_SIZE + h.body_size])


LOAD = """
from ladder import Model
try:
    Model.load({src})
    print("LOADED")
except ValueError as e:
    print("ValueError:", e)
"""


def load_error(upy, tmp_path, data):
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    out = upy(LOAD.format(src=repr(str(path))), timeout=20).check().stdout.strip()
    assert out.startswith("ValueError: model:"), out
    return out


# One micropython process for many files: prints one line per file, LOADED or the exception.
LOAD_ALL = """
import gc
from ladder import Model
for i in range({n}):
    try:
        m = Model.load("{d}/%d.ldr" % i)
        m.invoke()
        print("LOADED")
    except Exception as e:
        print("%s: %s" % (type(e).__name__, e))
    m = None
    gc.collect()
"""


def engine_refusals(upy, tmp_path, files, timeout=120):
    """What the engine says to each file: "LOADED" or "<exception type>: <message>"."""
    d = tmp_path / "files"
    d.mkdir(exist_ok=True)
    for i, data in enumerate(files):
        (d / f"{i}.ldr").write_bytes(data)
    out = upy(LOAD_ALL.format(n=len(files), d=d), timeout=timeout).check().stdout
    lines = out.splitlines()
    assert len(lines) == len(files), out[-2000:]
    return lines


def fit_refuses(path, data, engine):
    """Whether `fit` refuses ``data`` as the engine did (``engine``: its refusal line)."""
    path.write_bytes(data)
    try:
        report = fit(path, "esp32")
    except ModelFileError as e:
        reason = engine.removeprefix("ValueError: model: ")
        return "corrupt or invalid board model" in str(e) and str(e).endswith(reason)
    # A file the checks allow but this heap cannot hold: fit's heap budget says so.
    return "free heap" in engine and not report.budget("heap").fits


def test_good_model_loads_from_path_bytes_and_memoryview(upy, tmp_path):
    path = tmp_path / "m.bin"
    data = fc_model()
    path.write_bytes(data)
    code = f"""
from ladder import Model
from array import array
src = open({str(path)!r}, "rb").read()
x = [(i * 29) % 256 - 128 for i in range({N_IN})]
outs = []
for m in (Model.load({str(path)!r}), Model.load(src), Model.load(memoryview(src))):
    m.set_input(x)
    m.invoke()
    outs.append(list(m.output.data))
print(outs[0] == outs[1] == outs[2], outs[0])
m = Model.load(src)
print(m.input.shape, m.output.shape, m.input.zero_point, m.output.zero_point, m.output.scale)
m.set_input(x)
m.invoke()
print(list(m.top_k(2, array("B", [0, 0]))))
"""
    lines = upy(code).check().stdout.splitlines()
    x = [(i * 29) % 256 - 128 for i in range(N_IN)]
    p = [0, N_IN, "w", "b", "m", "s", 1, N_IN, N_OUT, -3, -128, 127]
    c = {
        "w": [(i * 37) % 255 - 127 for i in range(N_IN * N_OUT)],
        "b": [100, -2000, 30000, -5],
        "m": [1 << 30, (1 << 31) - 1, 1500000000, 1 << 30],
        "s": [-6, -8, -7, -5],
    }
    want = R.ref_fc(x + [0] * N_OUT, c, p)[1]
    assert lines[0] == f"True {want}"
    assert lines[1] == "(1, 8) (1, 4) -1 -3 0.25"
    best = sorted(range(N_OUT), key=lambda i: (-want[i], i))[:2]
    assert lines[2] == str(best)


# Corrupt copies of fc_model(): (name, how to corrupt it, what the refusal says).
CORRUPT = [
    ("bad magic", lambda d: b"XXXX" + d[4:], "bad magic"),
    ("unknown version", lambda d: d[:4] + struct.pack("<H", 9) + d[6:], "format version 9"),
    ("hash mismatch", lambda d: d[:-1] + bytes([d[-1] ^ 1]), "sha256 mismatch"),
    ("arena edited", lambda d: d[:52] + bytes([d[52] ^ 1]) + d[53:], "sha256 mismatch"),
    ("short file", lambda d: d[:40], "too short"),
    ("truncated body", lambda d: d[:-10], "truncated"),
    ("empty file", lambda d: b"", "too short"),
]
# fc_model() with one thing out of range (the sha256 made to match): (changes, message).
OUT_OF_RANGE = [
    ({"params": {"out": 9}}, "reaches arena"),  # output runs past the 12-byte arena
    ({"params": {"n_in": 13}}, "reaches arena"),
    ({"params": {"fc_w": 1 << 20}}, "reaches body"),
    ({"params": {"fc_b": 2}}, "reaches body"),  # misaligned int32 table
    ({"params": {"n_out": -4}}, "field n_out is -4"),
    ({"params": {"batches": 1 << 28}}, "reaches arena"),
    ({"params": {"batches": 0}}, "batches is 0"),  # no work: a corrupt field, not a model
    ({"opcode": 99}, "opcode 99"),
    ({"arena": 4}, "tensor"),
    ({"arena": 1 << 30}, "32-bit board"),
    ({"arena": (1 << 30) - 4}, "free heap"),  # allowed by the format, not by this heap
    ({"tensors": [(0, (1, N_IN), 0), (N_IN, (1, 5), 0)]}, "tensor 1"),
]


@pytest.mark.parametrize("name, mutate, message", CORRUPT)
def test_corrupt_file_is_a_clear_value_error(upy, tmp_path, name, mutate, message):
    assert message in load_error(upy, tmp_path, mutate(fc_model()))


@pytest.mark.parametrize("over, message", OUT_OF_RANGE)
def test_out_of_range_fields_are_rejected(upy, tmp_path, over, message):
    assert message in load_error(upy, tmp_path, fc_model(**over))


def op_table_past_the_body():
    data = fc_model()
    h = F.read_header(data)
    h.n_ops = 5000  # the op table runs past the body
    return fmt.pack(h, data[F.HEADER_SIZE :])


def params_offset_past_the_body():
    data = bytearray(fc_model())
    at = F.HEADER_SIZE + 2 * F.TENSOR_SIZE
    struct.pack_into("<I", data, at + 4, 1 << 24)
    return rehash(bytes(data))


def test_op_table_past_the_body(upy, tmp_path):
    assert "do not fit" in load_error(upy, tmp_path, op_table_past_the_body())


def test_params_offset_past_the_body(upy, tmp_path):
    assert "run past the body" in load_error(upy, tmp_path, params_offset_past_the_body())


def malformed_files():
    """Every malformed file of this module: [(name, data, what the refusal says)]."""
    files = [(name, mutate(fc_model()), message) for name, mutate, message in CORRUPT]
    files += [(repr(over), fc_model(**over), message) for over, message in OUT_OF_RANGE]
    files.append(("op table past the body", op_table_past_the_body(), "do not fit"))
    files.append(("params past the body", params_offset_past_the_body(), "run past the body"))
    return files


def test_fit_refuses_every_file_the_engine_refuses(upy, tmp_path):
    """`edgeladder fit` runs the board's own checks (ladder.opsize): each file the engine
    refuses, fit refuses too, with the same reason (or, for a file too large for the heap,
    says that it does not fit)."""
    files = malformed_files()
    refusals = engine_refusals(upy, tmp_path, [data for _, data, _ in files])
    for (name, data, message), engine in zip(files, refusals, strict=True):
        assert engine.startswith("ValueError: model: ") and message in engine, (name, engine)
        assert fit_refuses(tmp_path / "m.ldr", data, engine), name
    print(f"fit refused {len(files)}/{len(files)} files the engine refuses")


def test_wrong_input_size(upy, tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(fc_model())
    out = (
        upy(
            f"from ladder import Model\nm = Model.load({str(path)!r})\n"
            "try:\n    m.set_input([1, 2, 3])\nexcept ValueError as e:\n    print(e)\n"
        )
        .check()
        .stdout.strip()
    )
    assert out == "input needs 8 values, got 3"


def test_invoke_allocates_nothing(upy, tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(fc_model())
    code = f"""
import gc, micropython, time
from ladder import Model
m = Model.load({str(path)!r})
m.set_input([(i * 29) % 256 - 128 for i in range({N_IN})])
m.invoke()


def run(m, n):
    t0 = time.ticks_us()
    for _ in range(n):
        m.invoke()
    return time.ticks_diff(time.ticks_us(), t0)


def measure(m):
    run(m, 1)
    gc.collect()
    before = gc.mem_alloc()
    micropython.heap_lock()  # any allocation inside raises MemoryError
    dt = run(m, 1000)
    micropython.heap_unlock()
    after = gc.mem_alloc()
    print(before == after, before, after, dt / 1000)


measure(m)
"""
    out = upy(code).check().stdout.split()
    assert out[0] == "True", out
    print(f"FC {N_IN}x{N_OUT}: {out[3]} us per invoke (unix port)")
