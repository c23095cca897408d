"""Model.load on corrupt files, the public API and the allocation-free invoke(), on MicroPython."""

from __future__ import annotations

import hashlib
import struct

import engine_ref as R
import pytest

from ladder import mformat as F

N_IN, N_OUT = 8, 4


def fc_model(**over):
    """A 1-op FC model: input int8[1, 8] at arena 0, output int8[1, 4] at arena 8."""
    p = [0, N_IN, "w", "b", "m", "s", 1, N_IN, N_OUT, -3, -128, 127]
    for k, v in over.get("params", {}).items():
        p[F.FIELDS[F.FULLY_CONNECTED].index(k)] = v
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
    """Fix the header's sha256 after editing the body (to reach the checks behind it)."""
    body = data[F.HEADER_SIZE :]
    return data[: F.HEADER_SIZE - 32] + hashlib.sha256(body).digest() + body


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


@pytest.mark.parametrize(
    "name, mutate, message",
    [
        ("bad magic", lambda d: b"XXXX" + d[4:], "bad magic"),
        ("unknown version", lambda d: d[:4] + struct.pack("<H", 9) + d[6:], "format version 9"),
        ("hash mismatch", lambda d: d[:-1] + bytes([d[-1] ^ 1]), "sha256 mismatch"),
        ("short file", lambda d: d[:40], "too short"),
        ("truncated body", lambda d: d[:-10], "truncated"),
        ("empty file", lambda d: b"", "too short"),
    ],
)
def test_corrupt_file_is_a_clear_value_error(upy, tmp_path, name, mutate, message):
    assert message in load_error(upy, tmp_path, mutate(fc_model()))


@pytest.mark.parametrize(
    "over, message",
    [
        ({"params": {"out": 9}}, "reaches arena"),  # output runs past the 12-byte arena
        ({"params": {"n_in": 13}}, "reaches arena"),
        ({"params": {"fc_w": 1 << 20}}, "reaches body"),
        ({"params": {"fc_b": 2}}, "reaches body"),  # misaligned int32 table
        ({"params": {"n_out": -4}}, "field n_out is -4"),
        ({"params": {"batches": 1 << 28}}, "reaches arena"),
        ({"opcode": 99}, "opcode 99"),
        ({"arena": 4}, "tensor"),
        ({"tensors": [(0, (1, N_IN), 0), (N_IN, (1, 5), 0)]}, "tensor 1"),
    ],
)
def test_out_of_range_fields_are_rejected(upy, tmp_path, over, message):
    assert message in load_error(upy, tmp_path, fc_model(**over))


def test_op_table_past_the_body(upy, tmp_path):
    data = bytearray(fc_model())
    struct.pack_into("<H", data, 26, 5000)  # n_ops in the header: the table runs past the body
    assert "do not fit" in load_error(upy, tmp_path, rehash(bytes(data)))


def test_params_offset_past_the_body(upy, tmp_path):
    data = bytearray(fc_model())
    at = F.HEADER_SIZE + 2 * F.TENSOR_SIZE
    struct.pack_into("<I", data, at + 4, 1 << 24)
    assert "run past the body" in load_error(upy, tmp_path, rehash(bytes(data)))


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
