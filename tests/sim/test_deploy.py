"""`edgeladder flash` + `edgeladder deploy` on a virtual board, and power cuts during a deploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeladder import cli
from edgeladder_sim.image import boot_check_file, build_image

REPO = Path(__file__).resolve().parents[2]
TASK = REPO / "models" / "digits"
# The same folder as the session's `digits_build` fixture (tests/conftest.py).
BUILD = Path(os.environ.get("EDGELADDER_TEST_BUILD", REPO / "build" / "digits"))
TINY = BUILD / "tiny"
BANNER = b"edgeladder ladder"  # what firmware/main.py prints once ladder imports


@pytest.fixture(autouse=True)
def _digits_built(digits_build):
    """Deploy ships the real digits build: make it (once per session) rather than skip."""
    assert (TINY / "digits_tiny.ldr").is_file() and (TINY / "golden.json").is_file()


def _deploy(port: str, *extra: str) -> tuple[int, str, str]:
    """`edgeladder deploy` in a subprocess (it can be killed mid-copy); rc, stdout, stderr."""
    argv = [sys.executable, "-m", "edgeladder.cli", "deploy", "--port", port, str(TASK)]
    argv += ["--build", str(BUILD), *extra]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
    return r.returncode, r.stdout, r.stderr


def _tflm_output(x: np.ndarray) -> list[int]:
    """TensorFlow Lite Micro's output for one int8 input: the engine-independent oracle."""
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes((TINY / "digits_tiny.tflite").read_bytes())
    it.set_input(x, 0)
    it.invoke()
    return it.get_output(0).reshape(-1).astype(int).tolist()


RUN_ON_BOARD = """\
import json, ladder
c = json.load(open('/ladder.json'))
m = ladder.Model.load(c['model'])
m.set_input(%r)
m.invoke()
print(json.dumps({'out': list(m.output.data), 'labels': c['labels']}))
"""


def test_flash_then_deploy_runs_the_tiny_model(sim_board_factory, tmp_path, capsys):
    sim = sim_board_factory()
    # the board's ROM checks the image in flash at every hard boot, as an ESP32's does
    sim.board.boot_check = lambda b: (
        None if (r := boot_check_file(b.flash.path, "esp32")).ok else r.message
    )
    image = tmp_path / "micropython.bin"
    image.write_bytes(build_image([(0x3FFB0000, os.urandom(4096)), (0x40080000, bytes(4096))]))
    assert (
        cli.main(["flash", "--board", "esp32", "--port", sim.port, "--firmware", str(image)]) == 0
    )
    sim.board.reset()  # a pty has no reset lines: press EN, as on a board without auto-reset
    sim.board.wait_booted(20)
    assert sim.board.mode == "repl"

    capsys.readouterr()
    argv = ["deploy", "--board", "esp32", "--port", sim.port, str(TASK), "--build", str(BUILD)]
    assert cli.main([*argv, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["arch"] == "x64" and first["simulated"]  # the unix port, said in a note
    assert any("virtual board" in n for n in first["notes"])
    paths = {c["path"] for c in first["copied"]}
    assert {"/main.py", "/ladder/engine.mpy", "/models/digits_tiny.ldr", "/ladder.json"} <= paths
    assert "edgeladder ladder" in first["boot_log"]  # main.py ran after the soft reset

    golden = json.loads((TINY / "golden.json").read_text())
    x = np.asarray(golden["inputs"][0], dtype=np.int8).reshape(1, *golden["input_shape"])
    want = _tflm_output(x)
    run = RUN_ON_BOARD % (x.reshape(-1).astype(int).tolist(),)
    got = json.loads(sim.mpremote("exec", run).stdout)
    assert got["out"] == want
    litert = np.asarray(golden["outputs"][0]).reshape(-1)
    assert int(np.argmax(got["out"])) == int(np.argmax(litert))
    assert got["labels"][int(np.argmax(got["out"]))] == str(np.argmax(litert))

    assert cli.main(argv) == 0
    second = capsys.readouterr().out
    assert " 0 copied (0 bytes)" in second and "0 removed" in second, second


def _firmware_sources() -> dict[str, bytes]:
    """The firmware as sources (every ``.py``), as ``mpremote cp -r firmware/ :`` would leave it:
    an older board state, from before this deploy, that the deploy replaces file by file."""
    from edgeladder.util.resources import FIRMWARE_DIR

    return {
        p.relative_to(FIRMWARE_DIR).as_posix(): p.read_bytes()
        for p in sorted(FIRMWARE_DIR.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def _whole_files_only(flash) -> None:
    """Every file the deploy manages is the old one or the new one, never a part of one."""
    from edgeladder.boards import registry as boards
    from edgeladder.device.deploy import plan_files

    new, _ = plan_files(TASK, boards.get("esp32"), "x64", build_dir=BUILD)
    old = {"/" + k: v for k, v in _firmware_sources().items()}
    for folder in ("", "ladder", "ladder/kernels", "ladder/link", "models"):
        try:
            names = flash.listdir(folder)
        except Exception:  # a folder the cut came before
            continue
        for name in names:
            path = f"/{folder}/{name}" if folder else f"/{name}"
            if name.endswith(".tmp") or name in ("ladder", "models", "kernels", "link"):
                continue  # a cut write's leftover (never renamed into place), or a folder
            data = flash.read_file(path)
            assert data in (new.get(path), old.get(path)), f"{path}: {len(data)} bytes, torn"


@pytest.mark.parametrize("delay_s", [0.0, 0.25, 0.5])
def test_power_cut_during_deploy_leaves_a_bootable_board(sim_board_factory, delay_s):
    sim = sim_board_factory(files=_firmware_sources())  # an older firmware, as sources
    sim.board.wait_booted(20)
    argv = [sys.executable, "-m", "edgeladder.cli", "deploy", "--port", sim.port, str(TASK)]
    argv += ["--build", str(BUILD)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # readline blocks: the deploy prints per file
            line = proc.stdout.readline()
            if "copied" in line or not line:
                break
        assert "copied" in line, "the deploy copied nothing"
        time.sleep(delay_s)
        sim.board.power_off()  # SIGKILL mid-deploy: no flush, no unmount
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert sim.board.flash.mountable()
    _whole_files_only(sim.board.flash)

    start = len(sim.board.output())
    sim.board.power_on()
    sim.board.wait_output(BANNER, 20, start=start)  # boot.py and main.py ran: it boots
    sim.board.wait_booted(20)

    rc, out, err = _deploy(sim.port)
    assert rc == 0, err
    assert "Deployed tiny" in out and "edgeladder ladder" in out
    rc, out, err = _deploy(sim.port)
    assert rc == 0 and " 0 copied" in out, out + err


def test_deploy_errors_are_one_line(tmp_path, capsys):
    argv = ["deploy", "--port", "/dev/does-not-exist", str(TASK)]
    assert cli.main([*argv, "--build", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: no build in {tmp_path}/: run `edgeladder build {TASK}` first"
    if (BUILD / "task.json").is_file():
        assert cli.main([*argv, "--build", str(BUILD)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: serial port /dev/does-not-exist does not exist")
        assert "\n" not in err


def test_arch_comes_from_the_board_and_is_checked_on_hardware():
    from edgeladder.boards import registry as boards
    from edgeladder.device.deploy import ArchMismatchError, board_arch

    esp32 = boards.get("esp32")
    xtensawin, x64 = 6 | (3 << 8) | (10 << 10), 6 | (3 << 8) | (2 << 10)
    assert board_arch(xtensawin, "esp32", esp32) == ("xtensawin", False, [])
    arch, simulated, notes = board_arch(x64, "linux", esp32)
    assert (arch, simulated) == ("x64", True) and "virtual board" in notes[0]
    with pytest.raises(ArchMismatchError, match="reports arch x64"):
        board_arch(x64, "esp32", esp32)
