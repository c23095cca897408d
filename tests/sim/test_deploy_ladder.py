"""`edgeladder deploy` ships the calibrated ladder (and a device.json) to a virtual board."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgeladder import cli
from edgeladder.device.deploy import deploy
from edgeladder.policy import config as ladderconfig
from edgeladder.policy.calibrate import Options, calibrate

REPO = Path(__file__).resolve().parents[2]
TASK = REPO / "models" / "digits"

# The board opens an edge stage's model relative to /ladder.json's folder (ladder.app).
READ_BACK = """\
import json, ladder
c = json.load(open('/ladder.json'))
d = json.load(open('/device.json'))
m = ladder.Model.load('/' + c['stages'][0]['model'])
print(json.dumps({'ladder': c, 'device': d, 'inputs': len(m.input.data)}))
"""
# No sensor: main.py starts the ladder app, which stops at once (the test needs the REPL).
DEVICE = {"kind": "mqtt", "host": "127.0.0.1", "port": 1}


@pytest.fixture
def calibrated(digits_build, tmp_path) -> Path:
    """A copy of the digits build with a ladder.json in it (the shared build stays as it is)."""
    build = tmp_path / "digits"
    shutil.copytree(digits_build.out, build, ignore=shutil.ignore_patterns("*.keras", "c"))
    calibrate(build, Options(plot=False))
    assert (build / "ladder.json").is_file()
    return build


def test_deploy_ships_the_ladder_and_the_device_json(sim_board_factory, calibrated):
    sim = sim_board_factory()  # a blank board: this deploy brings everything
    sim.board.wait_booted(20)
    device = ladderconfig.device_json(0x1234ABCD, fleet="demo", link=DEVICE)
    first = deploy(sim.port, TASK, "esp32", build_dir=calibrated, device_json=device)
    copied = {p for p, _ in first.copied}
    assert {"/ladder.json", "/device.json", "/models/digits_tiny.ldr"} <= copied

    # read back on the board, with MicroPython's own json
    got = json.loads(sim.mpremote("exec", READ_BACK).stdout)
    on_board = ladderconfig.parse(got["ladder"], "/ladder.json")
    want = ladderconfig.load(calibrated / "ladder.json")
    assert on_board.stages[0].model == "models/digits_tiny.ldr"  # where deploy put it
    on_board.stages[0].model = want.stages[0].model
    assert on_board == want  # the calibrated stages, thresholds, tables and budgets
    assert got["device"]["device"] == 0x1234ABCD and got["device"]["link"] == DEVICE
    assert got["inputs"] == 64  # the board loaded the edge stage's model from that path
    # the deploy's own board keys are still there: the model path and the labels
    assert got["ladder"]["model"] == "/models/digits_tiny.ldr"
    assert got["ladder"]["labels"][:3] == ["0", "1", "2"]

    # (firmware files are left out of these checks: the firmware tree may change meanwhile)
    shipped = ("/ladder.json", "/device.json", "/models/digits_tiny.ldr")
    again = deploy(sim.port, TASK, "esp32", build_dir=calibrated, device_json=device)
    assert not {p for p, _ in again.copied} & set(shipped)  # unchanged: not copied again
    assert set(shipped) <= set(again.unchanged)

    # a new calibration changes /ladder.json alone
    calibrate(calibrated, Options(max_escalation=0.02, plot=False))
    third = deploy(sim.port, TASK, "esp32", build_dir=calibrated, device_json=device)
    assert {p for p, _ in third.copied} & set(shipped) == {"/ladder.json"}


def test_a_ladder_from_another_build_is_refused_before_the_port(calibrated, capsys):
    path = calibrated / "ladder.json"
    raw = json.loads(path.read_text())
    raw["model_version"] = (raw["model_version"] + 1) % 2**32
    path.write_text(json.dumps(raw))
    argv = ["deploy", "--port", "/dev/does-not-exist", str(TASK), "--build", str(calibrated)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "calibrated for another build" in err and "edgeladder calibrate" in err
    assert err.count("\n") == 1

    path.write_text("{}")
    assert cli.main(argv) == 1
    assert "not a ladder config" in capsys.readouterr().err

    path.unlink()  # no ladder: a bad --device-json is still caught before the port
    bad = calibrated / "device.json"
    bad.write_text('{"fleet": "demo"}')
    assert cli.main([*argv, "--device-json", str(bad)]) == 1
    assert 'needs a "device" id' in capsys.readouterr().err
