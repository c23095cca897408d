"""Benchmark the board engine against TFLite Micro on the same host, inputs and run.

    python bench/engine.py [--json] [--inputs N] [--models a,b,...] [--build DIR] [--no-build]

The digits tiers come from ``build/digits`` (``--build DIR`` for another folder); when they
are missing there the script builds them first (``edgeladder build models/digits``, a few
minutes), or with ``--no-build`` says in one line what to run.

Per model (the digits tiers and a few op cases):

- ``ms_engine``: our engine as shipped: ``firmware/ladder`` compiled by ``mpy-cross
  -march=x64`` (the viper kernels become x64 machine code, as ``-march=xtensawin`` makes
  Xtensa code for a board), under ``micropython`` at the ESP32 heap; time of ``invoke()``.
- ``ms_tflm``: TFLite Micro (C++, the ``tflite-micro`` package) in-process, time of
  ``invoke()``; the same inputs.
- ``ms_bytecode``: the same kernels as plain bytecode: every ``@micropython.viper``
  decorator and type annotation is removed with Python's ``ast``, ``ptr8``/``ptr32`` become
  ``uctypes`` views (``bytearray_at``, a UINT32 array) and ``int(ptr8(x))`` the address
  ``uctypes.addressof(x)``; the package is written to a temp dir that shadows the firmware.
  The run checks that its outputs equal TFLite Micro's, and that no ``viper`` is left.
- ``arena_bytes`` vs ``arena_bytes_tflm`` (TFLite Micro's recording allocator total; its
  ``head`` is the planned activation part, the same thing our arena holds).
- MACs (``edgeladder.model.tflite.summary``) and MACs per second of the engine.
- An ESP32 latency ESTIMATE: x64 instructions per MAC of the engine, counted with valgrind
  (callgrind) over the invoke loop, times MACs, at one Xtensa instruction per x64
  instruction and one cycle per instruction, at 240 MHz. It ignores flash-cache misses and
  the Xtensa code's different instruction mix: a rough, optimistic figure, not a
  measurement. Without valgrind it is left out.

Nothing here asserts a time; ratios come from one run on one machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "device"), str(REPO / "host"), str(REPO / "simulator")]

import engine_harness as H  # noqa: E402
import op_cases  # noqa: E402

from edgeladder.boards import registry as boards  # noqa: E402
from edgeladder.device.micropython import FIRMWARE_DIR, find_micropython, run_micropython  # noqa: E402
from edgeladder.model.tflite.reader import read_model  # noqa: E402
from edgeladder.model.tflite.summary import op_macs  # noqa: E402

ESP32_HZ = 240_000_000
# The bytecode variant's uctypes shims and bigger code leave no 57 KB block for the largest
# digits tier at the ESP32 heap; its timing runs at this heap instead (said in the output).
BYTECODE_HEAP = 512_000
OP_CASES = ("conv_3x3_same_s1_relu", "dw_m1_same_relu", "fc_wide", "ds_cnn_kws",
            "conv1d_timeseries")  # fmt: skip

# Times invoke() alone, input copied in before each call (as tflm_time does).
_TIMING = """\
import time
from ladder import Model
m = Model.load({model!r})
n_in = {n_in}
inp = m.input.data
buf = bytearray(n_in)  # one input at a time: the largest tier leaves little heap
m.invoke()  # warm-up
best = None
with open({inputs!r}, "rb") as f:
    for r in range({repeat}):  # best pass, as tflm_time takes
        f.seek(0)
        total = 0
        for i in range({count}):
            f.readinto(buf)
            inp[:] = buf
            t = time.ticks_us()
            m.invoke()
            total += time.ticks_diff(time.ticks_us(), t)
        best = total if best is None else min(best, total)
print("us_per_invoke", best / {count})
"""


def macs(tflite: bytes) -> int:
    model = read_model(tflite)
    return sum(op_macs(model, op) for op in model.subgraphs[0].ops)


def tflm_time(tflite: bytes, x: np.ndarray, repeat: int) -> float:
    """Milliseconds per TFLite Micro invoke(), best of ``repeat`` passes over ``x``."""
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(tflite)
    shape = tuple(it.get_input_details(0)["shape"])
    rows = [r.reshape(shape) for r in x]
    it.set_input(rows[0], 0)
    it.invoke()
    best = float("inf")
    for _ in range(repeat):
        total = 0
        for r in rows:
            it.set_input(r, 0)
            t = time.perf_counter_ns()
            it.invoke()
            total += time.perf_counter_ns() - t
        best = min(best, total / len(rows) / 1e6)
    return best


def engine_time(compiled: bytes, x: np.ndarray, heap: int, path=(), repeat: int = 1) -> float:
    """Milliseconds per engine invoke() under micropython, best of ``repeat`` passes over
    ``x`` (``path`` shadows the firmware)."""
    with tempfile.TemporaryDirectory(prefix="edgeladder-bench-") as tmp:
        d = Path(tmp)
        (d / "model.bin").write_bytes(compiled)
        (d / "in.bin").write_bytes(np.ascontiguousarray(x, np.int8).tobytes())
        code = _TIMING.format(
            model=str(d / "model.bin"), inputs=str(d / "in.bin"), n_in=x[0].size,
            count=len(x), repeat=repeat,
        )  # fmt: skip
        out = run_micropython(code, heap_bytes=heap, path=path, timeout=1800).check().stdout
    return float(re.search(r"us_per_invoke (\S+)", out).group(1)) / 1000


# --- the same kernels as bytecode -------------------------------------------------------------

_SHIMS = """\
import uctypes as _uc
_BIG = 1 << 24
_D32 = {"v": (_uc.ARRAY | 0, _uc.UINT32 | _BIG)}


def _addr(x):
    return x if isinstance(x, int) else _uc.addressof(x)


def _p8(x):
    return _uc.bytearray_at(_addr(x), _BIG)


def _p32(x):
    return _uc.struct(_addr(x), _D32, _uc.LITTLE_ENDIAN).v
"""

_PTR = {"ptr8": "_p8", "ptr32": "_p32"}


class _Debyte(ast.NodeTransformer):
    """viper -> bytecode: drop decorators and annotations, pointers through uctypes."""

    def __init__(self) -> None:
        self.pointers: set[str] = set()  # names that hold a pointer in the current function

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        self.pointers = {
            a.arg for a in node.args.args if a.annotation and ast.unparse(a.annotation) in _PTR
        }
        for n in ast.walk(node):
            if (
                isinstance(n, ast.Assign)
                and isinstance(n.value, ast.Call)
                and getattr(n.value.func, "id", None) in _PTR
            ):
                self.pointers |= {t.id for t in n.targets if isinstance(t, ast.Name)}
        self.generic_visit(node)
        node.decorator_list = [
            d for d in node.decorator_list if ast.unparse(d) != "micropython.viper"
        ]
        node.returns = None
        prologue = []
        for a in node.args.args:
            kind = ast.unparse(a.annotation) if a.annotation else None
            if kind in _PTR:  # a pointer argument: make it a view once, at entry
                prologue.append(ast.parse(f"{a.arg} = {_PTR[kind]}({a.arg})").body[0])
            a.annotation = None
        node.body = prologue + node.body
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name == "int" and len(node.args) == 1:
            inner = node.args[0]
            if isinstance(inner, ast.Call) and getattr(inner.func, "id", None) in _PTR.values():
                # int(ptr8(x)) is an address in viper
                return ast.Call(ast.Name("_addr", ast.Load()), inner.args, [])
            if isinstance(inner, ast.Name) and inner.id in self.pointers:
                return ast.Call(ast.Name("_addr", ast.Load()), [inner], [])  # int(pointer)
        if name in _PTR:
            node.func = ast.Name(_PTR[name], ast.Load())
        return node


def bytecode_firmware(dest: Path) -> Path:
    """A copy of ``firmware/ladder`` whose viper functions are plain bytecode, compiled to
    ``.mpy`` like the shipped form; returns the folder to put first on the module path."""
    from edgeladder.device.mpycross import compile_tree

    src = FIRMWARE_DIR / "ladder"
    for path in src.rglob("*.py"):
        out = dest / "src" / "ladder" / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text()
        if "micropython.viper" in text:
            tree = _Debyte().visit(ast.parse(text))
            text = _SHIMS + "\n" + ast.unparse(ast.fix_missing_locations(tree)) + "\n"
            if "viper" in text or re.search(r"\bptr(8|16|32)\(", text):
                raise RuntimeError(f"{path.name}: viper left after the transformation")
        out.write_text(text)
    compile_tree(dest / "src", "x64", dest / "mpy")  # no viper left: all of it is bytecode
    return dest / "mpy"


# --- ESP32 estimate ------------------------------------------------------------------------------

_COUNT = """\
from ladder import Model
m = Model.load({model!r})
for i in range({n}):
    m.invoke()
"""


def x64_instructions_per_invoke(compiled: bytes, heap: int, n: int = 5) -> float | None:
    """x64 instructions of one invoke(), counted by valgrind: (run n) - (run 0), over n."""
    if not shutil.which("valgrind"):
        return None
    counts = []
    with tempfile.TemporaryDirectory(prefix="edgeladder-vg-") as tmp:
        d = Path(tmp)
        (d / "model.bin").write_bytes(compiled)
        for k in (0, n):
            (d / "run.py").write_text(_COUNT.format(model=str(d / "model.bin"), n=k))
            argv = [
                "valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.out",
                str(find_micropython()), "-X", f"heapsize={heap}", str(d / "run.py"),
            ]  # fmt: skip
            mpy = H.shipped_firmware()
            env = {"MICROPYPATH": f".frozen:{mpy}:{FIRMWARE_DIR}", "PATH": "/usr/bin:/bin"}
            p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
            found = re.search(r"Collected\s*:\s*(\d+)", p.stderr)
            if p.returncode or not found:
                return None
            counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / n


# --- the run -------------------------------------------------------------------------------------


def bench(names: list[str], n_inputs: int, seed: int, digits: Path | None = None) -> dict:
    from edgeladder.model.compiler import compile_model

    heap = boards.get("esp32").heap_bytes
    tiers = {f"digits_{t}": p for t, p in H.digits_paths(digits).items()}
    results = {}
    with tempfile.TemporaryDirectory(prefix="edgeladder-bytecode-") as tmp:
        bc_path = bytecode_firmware(Path(tmp))
        for name in names:
            tflite = tiers[name].read_bytes() if name in tiers else op_cases.tflite_bytes(name)
            cm = compile_model(tflite)
            compiled, arena = bytes(cm.data), int(cm.arena_size)
            rng = np.random.default_rng([seed, len(name)])
            x = H.random_inputs(rng, n_inputs, _in_shape(tflite))
            want = H.tflm_run(tflite, x)
            bc = H.engine_run_full(compiled, x[:20], want.shape[1:], heap_bytes=BYTECODE_HEAP,
                                   path=[bc_path])  # fmt: skip
            bytecode_ok = bool(np.array_equal(bc.outputs, want[:20]))
            ms_engine = engine_time(compiled, x, heap, path=[H.shipped_firmware()], repeat=5)
            ms_tflm = tflm_time(tflite, x, repeat=5)
            ms_bc = engine_time(
                compiled, x[: max(5, n_inputs // 10)], BYTECODE_HEAP, path=[bc_path]
            )
            n_macs = macs(tflite)
            tflm_arena = H.tflm_arena(tflite)
            ins = x64_instructions_per_invoke(compiled, heap)
            row = {
                "ms_engine": round(ms_engine, 4),
                "ms_tflm": round(ms_tflm, 4),
                "ratio_vs_tflm": round(ms_engine / ms_tflm, 2),
                "ms_bytecode": round(ms_bc, 4),
                "ratio_vs_bytecode": round(ms_engine / ms_bc, 4),
                "bytecode_speedup": round(ms_bc / ms_engine, 1),
                "bytecode_outputs_match_tflm": bytecode_ok,
                "arena_bytes": arena,
                "arena_bytes_tflm": tflm_arena["total"],
                "arena_bytes_tflm_head": tflm_arena["head"],
                "model_file_bytes": len(compiled),
                "macs": n_macs,
                "macs_per_s_engine": round(n_macs / (ms_engine / 1000)) if n_macs else 0,
                "macs_per_s_tflm": round(n_macs / (ms_tflm / 1000)) if n_macs else 0,
            }
            if ins is not None:
                row["x64_instructions_per_invoke"] = round(ins)
                row["x64_instructions_per_mac"] = round(ins / n_macs, 2) if n_macs else None
                row["esp32_ms_estimate"] = round(ins / ESP32_HZ * 1000, 3)
            results[name] = row
            print(f"  {name}: done", file=sys.stderr)
    return results


def _in_shape(tflite: bytes) -> tuple[int, ...]:
    g = read_model(tflite).subgraphs[0]
    return tuple(max(d, 1) for d in g.tensors[g.inputs[0]].shape[1:])


def render(results: dict, meta: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"board engine vs TFLite Micro ({meta['inputs']} inputs, seed {meta['seed']})")
    cols = ("model", "MACs", "engine ms", "TFLM ms", "× TFLM", "bytecode ms", "viper speedup",
            "arena", "TFLM arena", "MMAC/s", "x64 ins/MAC", "ESP32 ms (est.)")  # fmt: skip
    for c in cols:
        t.add_column(c, justify="left" if c == "model" else "right")
    for name, r in results.items():
        t.add_row(
            name, f"{r['macs']:,}", f"{r['ms_engine']:.3f}", f"{r['ms_tflm']:.4f}",
            f"{r['ratio_vs_tflm']:.1f}", f"{r['ms_bytecode']:.2f}", f"{r['bytecode_speedup']:.0f}×",
            f"{r['arena_bytes']:,}", f"{r['arena_bytes_tflm']:,} ({r['arena_bytes_tflm_head']:,})",
            f"{r['macs_per_s_engine'] / 1e6:.1f}", str(r.get("x64_instructions_per_mac", "n/a")),
            str(r.get("esp32_ms_estimate", "n/a")),
        )  # fmt: skip
    c = Console(width=max(Console().width, 180))
    c.print(t)
    c.print(meta["notes"])


NOTES = (
    "engine: viper as shipped (firmware as mpy-cross -march=x64 .mpy);"
    " bytecode: the same kernels with viper removed by an AST rewrite (ptr8/ptr32 -> uctypes),"
    f" as .mpy, at a {BYTECODE_HEAP} B heap (outputs checked against TFLM);"
    " TFLM arena: recording allocator total (planned head in parentheses);"
    " ESP32 ms is an ESTIMATE: valgrind x64 instructions per invoke at 1 instruction/cycle,"
    " 240 MHz, no cache misses."
)


def ensure_digits(names: list[str], root: Path, *, build: bool) -> None:
    """Make the digits tiers that ``names`` ask for exist under ``root`` (through the build
    API), or exit with one line that says what to run."""
    paths = {f"digits_{t}": p for t, p in H.digits_paths(root).items()}
    if all(paths[n].is_file() for n in names if n in paths):
        return
    run = f"run `edgeladder build models/digits --out {root}` first"
    if not build:
        raise SystemExit(f"error: the digits tiers are not built in {root}/: {run}")
    print(f"building models/digits into {root}/ first (a few minutes)", file=sys.stderr)
    from edgeladder.build.pipeline import build as build_task
    from edgeladder.build.recipe import load_recipe
    from edgeladder.errors import EdgeladderError

    try:
        build_task(load_recipe(REPO / "models" / "digits"), root)
    except (EdgeladderError, ImportError) as e:
        raise SystemExit(f"error: building the digits tiers failed ({e}): {run}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--inputs", type=int, default=100, help="random inputs per model")
    ap.add_argument("--models", help="comma-separated names (digits_tiny, ..., op cases)")
    ap.add_argument(
        "--build", type=Path, default=REPO / "build" / "digits", help="the digits build folder"
    )
    ap.add_argument(
        "--no-build", action="store_true", help="if the digits tiers are missing, say so and stop"
    )
    args = ap.parse_args(argv)
    names = args.models.split(",") if args.models else [
        "digits_tiny", "digits_medium", "digits_large", *OP_CASES
    ]  # fmt: skip
    ensure_digits(names, args.build, build=not args.no_build)
    seed = H.seed_from_env()
    results = bench(names, args.inputs, seed, args.build)
    meta = {
        "inputs": args.inputs, "seed": seed, "esp32_hz": ESP32_HZ,
        "heap_bytes": boards.get("esp32").heap_bytes, "bytecode_heap_bytes": BYTECODE_HEAP,
        "notes": NOTES,
    }  # fmt: skip
    if args.json:
        print(json.dumps({"models": results, **meta}, indent=2))
    else:
        render(results, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
