"""``Model.logits()``: the int8 input of the final SOFTMAX, read from the board's arena.

The gate scores these logits on the board; the host tiers and ``edgeladder calibrate`` score
the same tensor from LiteRT (``Int8Runner.run_int8_logits``). For each digits tier, 200
random inputs run through the engine under micropython at the ESP32 heap (the firmware as x64
``.mpy``, as in test_bitexact.py), and the logits after each invoke are compared with:

- TFLite Micro on the same graph cut just before its SOFTMAX: byte for byte (the engine's
  oracle; the cut graph's output is exactly the tensor ``logits()`` views);
- LiteRT's ``run_int8_logits``: byte for byte except the documented rounding step of
  FULLY_CONNECTED (LiteRT's reference kernel rounds once, TFLM twice; test_bitexact.py), so at
  most one code apart, on a small share of the bytes.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import engine_harness as H
import numpy as np
import op_cases
import pytest

from edgeladder.device.micropython import run_micropython
from edgeladder.model.litert import Int8Runner

N_INPUTS = 200
SEED = H.seed_from_env()

# One process per tier: load, then readinto -> copy -> invoke -> write the logits view.
# The view is taken once, before the loop, and must stay valid (the same object) across invokes.
_SCRIPT = """\
from ladder import Model
m = Model.load({model!r})
lg = m.logits()
inp = m.input.data
buf = bytearray(len(inp))
same = True
with open({inputs!r}, "rb") as fi, open({outputs!r}, "wb") as fo:
    while fi.readinto(buf) == len(buf):
        inp[:] = buf
        m.invoke()
        same = same and m.logits() is lg
        fo.write(lg)
print("classes", len(lg), "same_view", same)
"""


def _ldr(build_dir: Path, tier: str) -> bytes:
    """The tier's board model: the build's .ldr if it made one, else compiled here."""
    ldr = build_dir / tier / f"digits_{tier}.ldr"
    if ldr.is_file():
        return ldr.read_bytes()
    from edgeladder.model.compiler import compile_model

    tflite = (build_dir / tier / f"digits_{tier}.tflite").read_bytes()
    return bytes(compile_model(tflite).data)


def _engine_logits(ldr: bytes, x: np.ndarray, heap: int, tmp: Path) -> np.ndarray:
    (tmp / "m.ldr").write_bytes(ldr)
    (tmp / "in.bin").write_bytes(np.ascontiguousarray(x, np.int8).tobytes())
    code = _SCRIPT.format(
        model=str(tmp / "m.ldr"), inputs=str(tmp / "in.bin"), outputs=str(tmp / "out.bin")
    )
    res = run_micropython(code, heap_bytes=heap, path=[H.shipped_firmware()], timeout=120).check()
    assert "same_view True" in res.stdout, res.stdout
    return np.frombuffer((tmp / "out.bin").read_bytes(), np.int8).reshape(len(x), -1)


@pytest.mark.parametrize("tier", H.TIERS)
def test_logits_equal_the_softmax_input(tier, digits_build, esp32_heap, tmp_path):
    build_dir = Path(digits_build.out)
    tflite = (build_dir / tier / f"digits_{tier}.tflite").read_bytes()
    runner = Int8Runner.from_bytes(tflite)
    rng = np.random.default_rng([SEED, zlib.crc32(tier.encode())])
    x = H.random_inputs(rng, N_INPUTS, runner.input_shape)
    where = f"digits_{tier}, {N_INPUTS} inputs, EDGELADDER_SEED={SEED}"

    got = _engine_logits(_ldr(build_dir, tier), x, esp32_heap, tmp_path)

    ops = op_cases.graph_ops(tflite)
    assert ops[-1] == "SOFTMAX"
    tflm = H.tflm_run(op_cases.truncate(tflite, len(ops) - 1), x).reshape(len(x), -1)
    assert got.shape == tflm.shape == (N_INPUTS, 10)
    assert np.array_equal(got, tflm), f"{where}: engine logits vs TFLite Micro\n" + (
        H.mismatch_report(got, tflm, x)
    )

    _, lite = runner.run_int8_logits(x)
    diff = np.abs(got.astype(np.int16) - lite)
    assert int(diff.max()) <= 1, f"{where}: vs LiteRT\n{H.mismatch_report(got, lite, x)}"
    assert np.count_nonzero(diff) <= 0.05 * diff.size, f"{where}: {np.count_nonzero(diff)} differ"
    # Not vacuous: the logits vary from input to input and use the int8 range.
    assert len({r.tobytes() for r in got}) > N_INPUTS // 2
    assert int(got.max()) - int(got.min()) > 64


def test_no_logits_without_a_final_softmax(esp32_heap, tmp_path):
    """A graph that does not end with SOFTMAX has no logits to gate on: logits() is None."""
    from edgeladder.model.compiler import compile_model

    name = next(n for n, c in op_cases.CASES.items() if "SOFTMAX" not in c.ops)
    tflite = op_cases.tflite_bytes(name)
    assert op_cases.graph_ops(tflite)[-1] != "SOFTMAX"
    (tmp_path / "m.ldr").write_bytes(bytes(compile_model(tflite).data))
    res = run_micropython(
        f"from ladder import Model\nprint(Model.load({str(tmp_path / 'm.ldr')!r}).logits())\n",
        heap_bytes=esp32_heap,
    ).check()
    assert res.stdout.strip() == "None"
