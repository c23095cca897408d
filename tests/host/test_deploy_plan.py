"""The pure parts of a deploy: what it plans to write, the arch it picks, and the sync order.

No board and no port: the plan is a function of the build folder and the firmware tree, and
the sync runs against a recording stand-in for the raw REPL.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import tflite_models

from edgeladder.boards import registry as boards
from edgeladder.device.deploy import (
    CONFIG_PATH,
    BuildMissingError,
    DeployError,
    board_arch,
    plan_files,
)
from edgeladder.device.deploy.plan import check_build
from edgeladder.device.deploy.sync import DeployResult, sync
from edgeladder.device.mpycross import MPY_VERSION, NATIVE_ARCHES

ESP32 = boards.get("esp32")
TASK = Path("models/whatever")  # named in messages only


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """A build folder with one esp32 tier (a real compiled model) and one gateway tier."""
    from edgeladder.model.compiler import compile_model

    out = tmp_path_factory.mktemp("build")
    (out / "tiny").mkdir()
    (out / "tiny" / "m.ldr").write_bytes(compile_model(tflite_models.mlp_int8()).data)
    task = {
        "task": "t",
        "labels": ["a", "b", "c", "d"],
        "input_shape": [20],
        "normalize": {"mode": "none"},
        "tiers": {
            "tiny": {"board": "esp32", "tflite": "tiny/m.tflite"},
            "large": {"board": "rpi5", "tflite": "large/l.tflite"},
        },
    }
    (out / "task.json").write_text(json.dumps(task))
    return out


def test_the_plan_holds_firmware_model_and_config(build):
    files, tiers = plan_files(TASK, ESP32, "xtensawin", build_dir=build)
    assert tiers == ["tiny"]
    assert {"/boot.py", "/main.py", "/ladder/__init__.mpy", "/models/m.ldr", CONFIG_PATH} <= set(
        files
    )
    assert not any(p.startswith("/ladder/") and p.endswith(".py") for p in files)
    assert all(files[p][:2] == bytes([ord("M"), MPY_VERSION]) for p in files if p.endswith(".mpy"))
    config = json.loads(files[CONFIG_PATH])
    model = files["/models/m.ldr"]
    assert config["model"] == "/models/m.ldr" and config["tier"] == "tiny"
    assert config["model_sha256"] == hashlib.sha256(model).hexdigest()
    assert config["labels"] == ["a", "b", "c", "d"] and "/device.json" not in files


def test_the_same_build_plans_the_same_bytes(build):
    first, _ = plan_files(TASK, ESP32, "x64", build_dir=build)
    again, _ = plan_files(TASK, ESP32, "x64", build_dir=build)
    assert first == again  # so that a second deploy copies nothing


def test_a_board_without_a_tier_names_the_tiers_there_are(build):
    with pytest.raises(BuildMissingError, match=r"no tier for board 'esp32s3'.*tiny \(esp32\)"):
        plan_files(TASK, boards.get("esp32s3"), "xtensawin", build_dir=build)


def test_device_json_is_checked_and_written_compact(build):
    files, _ = plan_files(
        TASK, ESP32, "x64", build_dir=build, device_json='{"fleet": 1, "device": 7}'
    )
    assert files["/device.json"] == b'{"device":7,"fleet":1}'
    for bad, says in (("{", "not JSON"), ('{"device": -1}', "needs a"), ("[]", "needs a")):
        with pytest.raises(DeployError, match=says):
            check_build(TASK, build, bad)


def test_a_missing_build_names_the_folder_given(tmp_path):
    with pytest.raises(BuildMissingError, match=f"no build in {tmp_path}/: run `edgeladder build"):
        check_build(TASK, tmp_path, None)
    (tmp_path / "task.json").write_text("{not json")
    with pytest.raises(BuildMissingError, match="unreadable build file"):
        check_build(TASK, tmp_path, None)


def _mpy(version: int, arch: str | None) -> int:
    return version | (NATIVE_ARCHES.index(arch) << 10)


def test_the_arch_comes_from_what_the_board_reports():
    assert board_arch(_mpy(MPY_VERSION, "xtensawin"), "esp32", ESP32) == ("xtensawin", False, [])
    with pytest.raises(DeployError, match=r"flash MicroPython 1\.23 or newer"):
        board_arch(_mpy(5, "xtensawin"), "esp32", ESP32)
    with pytest.raises(DeployError, match="no native code emitter"):
        board_arch(_mpy(MPY_VERSION, None), "esp32", ESP32)


class _Recorder:
    """Stands in for the raw REPL: a board holding ``held`` ({path: bytes}), logging writes."""

    def __init__(self, held: dict[str, bytes], extra_paths: list[str]) -> None:
        self.held = held
        self.extra = extra_paths
        self.log: list[tuple[str, str]] = []

    def scan(self, dirs=(), wanted=()):
        paths = [*self.extra, *self.held]
        sha = {
            p: hashlib.sha256(self.held[p]).hexdigest() if p in self.held else None for p in wanted
        }
        return {"mpy": 0, "platform": "esp32", "paths": paths, "sha": sha}

    def exec(self, code: str) -> str:
        self.log.append(("exec", code.split("(", 1)[0].strip()))
        return ""

    def write_atomic(self, path: str, data: bytes) -> None:
        self.log.append(("write", path))


def test_sync_copies_what_differs_removes_stale_and_writes_the_config_last():
    files = {"/ladder/a.mpy": b"new", "/ladder/b.mpy": b"same", CONFIG_PATH: b"{}"}
    board = _Recorder(
        {"/ladder/b.mpy": b"same", "/ladder/old.mpy": b"x"}, ["/ladder/", "/ladder.json.tmp"]
    )
    result = DeployResult("P", "esp32", "xtensawin", "esp32", False, ["tiny"])
    events = []
    sync(board, files, result, lambda e, p, n: events.append((e, p)))
    assert result.unchanged == ["/ladder/b.mpy"]
    assert [p for p, _ in result.copied] == ["/ladder/a.mpy", CONFIG_PATH]
    assert result.removed == ["/ladder.json.tmp", "/ladder/old.mpy"]
    # a cut deploy's .tmp first, the new files, the stale ones, the config last
    assert events == [
        ("removed", "/ladder.json.tmp"),
        ("copied", "/ladder/a.mpy"),
        ("removed", "/ladder/old.mpy"),
        ("copied", CONFIG_PATH),
    ]
