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


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "not found"), (b"noise", "not a TFLite model")],
    ids=["missing", "noise"],
)
def test_inspect_bad_file(capsys, tmp_path, content, says):
    model = tmp_path / "model.tflite"
    if content is not None:
        model.write_bytes(np.random.default_rng(2).bytes(256))
    code, out, err = _run(capsys, "inspect", model)
    assert code == 1 and out == ""
    _one_error(err, model, says)


def test_convert_random_bytes_writes_nothing(capsys, tmp_path):
    model = tmp_path / "noise.tflite"
    model.write_bytes(np.random.default_rng(3).bytes(256))
    c_dir, py_dir = tmp_path / "c", tmp_path / "py"
    code, out, err = _run(capsys, "convert", model, "--c-array", c_dir, "--micropython", py_dir)
    assert code == 1 and out == ""
    _one_error(err, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.tflite"]


# --- a dataset whose values float32 training cannot take ----------------------------------


@pytest.mark.parametrize(
    ("x", "says"),
    [
        (
            np.full((30, 4), 1e39),
            "x contains values beyond float32's range, which training uses (|v| > 3.4e+38): 120 of",
        ),
        (np.where(np.eye(30, 4) > 0, np.inf, 0.0), "x contains NaN or infinite values: 4 of 120"),
        (np.where(np.eye(30, 4) > 0, np.nan, 0.0), "x contains NaN or infinite values: 4"),
        (np.full((30, 4), -3.5e38), "beyond float32's range"),
    ],
    ids=["1e39", "inf", "nan", "-3.5e38"],
)
def test_build_refuses_values_beyond_float32_up_front(capsys, tmp_path, x, says):
    data = _npz(tmp_path / "big.npz", x=x, y=np.arange(30) % 3)
    _one_error(_build_fails(capsys, tmp_path, "--dataset", data), data, says)


def test_build_refuses_data_that_overflows_after_normalization(tmp_path):
    """Values that fit float32 but overflow training: the std, or raw values, too large."""
    from edgeladder.build.dataset import check_normalized, normalize_stats, split_dataset
    from edgeladder.build.dataset import load_dataset as load
    from edgeladder.build.pipeline import _normalized
    from edgeladder.errors import DatasetError

    x = (np.random.default_rng(0).normal(size=(60, 4)) * 1e37).astype(np.float32)
    path = _npz(tmp_path / "huge.npz", x=x, y=np.arange(60) % 2)
    split = split_dataset(load(path), seed=0, validation=0.2, test=0.2)
    cases = [("standard", "scale is not finite in 4 channel"), ("none", "beyond ±1e\\+12")]
    for mode, says in [*cases, ("minmax", None)]:
        off, sc = normalize_stats(split.x_train, mode)
        norm = _normalized(split, off, sc)
        if says is None:  # [0, 1]: trainable
            check_normalized(norm, off, sc, mode, path)
            continue
        with pytest.raises(DatasetError, match=f"huge.npz: .*{mode!r} normalization.*{says}"):
            check_normalized(norm, off, sc, mode, path)


# --- calibrate on a folder that is not a build ----------------------------------------------


@pytest.mark.parametrize("spelling", ["{p}", "./{p}", "{p}/", "{abs}"])
def test_calibrate_names_the_folder_given(capsys, tmp_path, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notabuild").mkdir()
    arg = spelling.format(p="notabuild", abs=tmp_path / "notabuild")
    code, _, err = _run(capsys, "calibrate", arg)
    assert code == 1
    line = _one_error(err, "notabuild", "neither a build", "edgeladder build")
    assert "build/notabuild" not in line  # a path the user never gave


@pytest.mark.parametrize("arg", ["missing/x", "afile"])
def test_calibrate_on_a_path_that_is_no_folder(capsys, tmp_path, monkeypatch, arg):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    code, _, err = _run(capsys, "calibrate", arg)
    assert code == 1
    line = _one_error(err, arg, "edgeladder build")
    assert f"build/{Path(arg).name}" not in line


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
