"""The CLI on bad input: exit status 1, exactly one `error: ...` line naming the file, nothing
written; usage errors exit 2; `--help` lists the commands without importing TensorFlow.

Every case fails before training, so nothing here needs TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeladder.cli import main


def _run(capsys, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error(err: str, *fragments: str | Path) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("error: ")
    for f in fragments:
        assert str(f) in lines[0], f"{f!r} not in {lines[0]!r}"
    return lines[0]


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


# --- build --------------------------------------------------------------------------------


def _build_fails(capsys, tmp_path: Path, *argv: str | Path) -> str:
    out_dir = tmp_path / "out"
    code, _, err = _run(capsys, "build", *argv, "--out", out_dir)
    assert code == 1
    assert not out_dir.exists()
    return err


def test_build_missing_dataset(capsys, tmp_path):
    data = tmp_path / "missing.npz"
    _one_error(_build_fails(capsys, tmp_path, "--dataset", data), data, "not found")


def test_build_corrupt_dataset(capsys, tmp_path):
    data = _npz(tmp_path / "bad.npz", x=np.zeros((30, 4)), y=np.arange(30) % 3)
    data.write_bytes(data.read_bytes()[:-40])  # cut off the zip's central directory
    _one_error(_build_fails(capsys, tmp_path, "--dataset", data), data, "not a .npz file")


def test_build_label_out_of_range(capsys, tmp_path):
    y = np.arange(30) % 3
    y[11] = 7
    data = _npz(tmp_path / "labels.npz", x=np.zeros((30, 4)), y=y, labels=["a", "b", "c"])
    err = _build_fails(capsys, tmp_path, "--dataset", data)
    _one_error(err, data, "label 7 at y[11] is out of range")


def test_build_missing_recipe_folder(capsys, tmp_path):
    task = tmp_path / "no-such-task"
    _one_error(_build_fails(capsys, tmp_path, task), task, "recipe not found")


def test_build_bad_recipe(capsys, tmp_path):
    task = tmp_path / "task"
    task.mkdir()
    (task / "recipe.toml").write_text("[data]\nsource = \n")
    _one_error(_build_fails(capsys, tmp_path, task), task / "recipe.toml", "cannot parse recipe")


def test_build_unknown_board(capsys, tmp_path):
    task = tmp_path / "task"
    task.mkdir()
    recipe = task / "recipe.toml"
    recipe.write_text(
        '[data]\nsource = "sklearn:digits"\n[tiers.a]\narch = "dense"\nboard = "nope"\n'
    )
    _one_error(_build_fails(capsys, tmp_path, task), recipe, "unknown board 'nope'", "esp32")


@pytest.mark.parametrize("both", [False, True], ids=["neither", "both"])
def test_build_needs_task_or_dataset(capsys, tmp_path, both):
    argv = [tmp_path, "--dataset", tmp_path / "d.npz"] if both else []
    code, _, err = _run(capsys, "build", *argv, "--out", tmp_path / "out")
    assert code == 2
    assert "give a TASK folder or --dataset FILE.npz" in err
    assert not (tmp_path / "out").exists()


# --- inspect and convert ------------------------------------------------------------------


def test_inspect_missing_file(capsys, tmp_path):
    model = tmp_path / "missing.tflite"
    code, out, err = _run(capsys, "inspect", model)
    assert code == 1 and out == ""
    _one_error(err, model, "not found")


def test_inspect_corrupt_file(capsys, tmp_path):
    model = tmp_path / "noise.tflite"
    model.write_bytes(np.random.default_rng(2).bytes(256))
    code, out, err = _run(capsys, "inspect", model)
    assert code == 1 and out == ""
    _one_error(err, model, "not a TFLite model")


def test_convert_random_bytes_writes_nothing(capsys, tmp_path):
    model = tmp_path / "noise.tflite"
    model.write_bytes(np.random.default_rng(3).bytes(256))
    c_dir, py_dir = tmp_path / "c", tmp_path / "py"
    code, out, err = _run(capsys, "convert", model, "--c-array", c_dir, "--micropython", py_dir)
    assert code == 1 and out == ""
    _one_error(err, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.tflite"]


# --- help ---------------------------------------------------------------------------------


def test_help_lists_commands(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    for name in ("build", "inspect", "convert"):
        assert f"\n  {name} " in out


def test_help_does_not_import_tensorflow():
    code = (
        "import sys; from edgeladder.cli import main; main(['--help']);"
        " print('tensorflow' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = proc.stdout.splitlines()
    assert lines[-1] == "False"
    assert all(f"  {name} " in proc.stdout for name in ("build", "inspect", "convert"))
