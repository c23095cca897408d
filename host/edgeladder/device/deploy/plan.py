"""What a deploy writes to a board, computed on the host alone (no port is opened here).

:func:`plan_files` turns a build folder into ``{board path: bytes}``: the firmware compiled to
``.mpy`` for the board's arch, the entry points as source, each device tier's model under
``/models``, ``/ladder.json`` (the board config, with the calibrated ladder merged in) and
``/device.json`` if the caller gives one. :func:`board_arch` decides the arch from what the
board reports. Both are pure functions of their inputs and the files they read.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgeladder.boards import registry as boards
from edgeladder.device.deploy.errors import ArchMismatchError, BuildMissingError, DeployError
from edgeladder.device.mpycross import MPY_VERSION, NATIVE_ARCHES, compile_tree
from edgeladder.errors import EdgeladderError
from edgeladder.util.resources import FIRMWARE_DIR

CONFIG_PATH = "/ladder.json"
DEVICE_PATH = "/device.json"
LADDER_FILE = "ladder.json"  # in the build folder, written by `edgeladder calibrate`
MODELS_DIR = "models"  # on the board, beside /ladder.json
MANAGED_DIRS = ("/ladder", "/models")  # deploy owns these: stale files there are removed
ENTRY_POINTS = ("boot.py", "main.py")


@dataclass
class _Tier:
    name: str
    ldr: Path


def load_task(task_dir: Path, build_dir: Path | None) -> tuple[dict, Path]:
    """The build's ``task.json`` and its folder; :class:`BuildMissingError` if there is none."""
    from edgeladder.build.recipe import load_recipe

    task_dir = Path(task_dir)
    if build_dir is None:
        recipe = load_recipe(task_dir)
        build_dir = Path("build") / recipe.task
    task_json = Path(build_dir) / "task.json"
    if not task_json.is_file():
        raise BuildMissingError(
            f"no build in {build_dir}/: run `edgeladder build {task_dir}` first"
        )
    try:
        task = json.loads(task_json.read_text())
    except (OSError, ValueError) as e:
        raise BuildMissingError(f"unreadable build file ({e}): rebuild", task_json) from e
    return task, Path(build_dir)


def plan_files(
    task_dir: Path,
    board: boards.Board,
    arch: str,
    *,
    build_dir: Path | None = None,
    firmware_dir: Path = FIRMWARE_DIR,
    device_json: str | None = None,
) -> tuple[dict[str, bytes], list[str]]:
    """``({board path: contents}, [tier names])`` for everything a deploy writes."""
    task, build_dir = load_task(task_dir, build_dir)
    ladder = _ladder(task, build_dir, task_dir)
    tiers = _pick_tiers(task, build_dir, board, task_dir)
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="edgeladder-deploy-") as tmp:
        for mpy in compile_tree(firmware_dir, arch, Path(tmp)):
            files["/" + mpy.relative_to(tmp).as_posix()] = mpy.read_bytes()
    for name in ENTRY_POINTS:
        src = Path(firmware_dir) / name
        if src.is_file():
            files["/" + name] = src.read_bytes()
    config_tiers = {}
    for t in tiers:
        data = t.ldr.read_bytes()
        path = f"/models/{t.ldr.name}"
        files[path] = data
        config_tiers[t.name] = _tier_config(path, data, t.ldr)
    ladder_json, ladder_models = ladder if ladder is not None else ({}, {})
    for name, ldr in ladder_models.items():
        if name not in config_tiers:  # an edge stage on a tier of another board file
            data = ldr.read_bytes()
            files[f"/models/{ldr.name}"] = data
            config_tiers[name] = _tier_config(f"/models/{ldr.name}", data, ldr)
    first = config_tiers[tiers[0].name]
    config = {
        "task": task.get("task"),
        "tier": tiers[0].name,
        **first,
        "labels": task.get("labels", []),
        "input_shape": task.get("input_shape"),
        "normalize": task.get("normalize"),
        "tiers": config_tiers,
    }
    if ladder_json:
        # The calibrated ladder's keys (format, model_version, deadline_ms, input, stages) join
        # the board keys above: one file, so the board's thresholds are the calibrated ones.
        # The board opens an edge stage's "model" relative to /ladder.json's folder (ladder.app),
        # and the deploy keeps models under /models/ (a managed folder: stale ones are removed).
        stages = [dict(s) for s in ladder_json["stages"]]
        for s in stages:
            if s.get("where") == "edge":
                s["model"] = MODELS_DIR + "/" + PurePosixPath(s["model"]).name
        config.update(ladder_json, stages=stages)
    if device_json is not None:
        files[DEVICE_PATH] = _device_json(device_json)
    # sorted and compact: the same build gives the same bytes, so a re-deploy skips it
    files[CONFIG_PATH] = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return files, [t.name for t in tiers]


def _ladder(task: dict, build_dir: Path, task_dir: Path) -> tuple[dict, dict[str, Path]] | None:
    """The build's calibrated ladder.json (validated), and ``{tier: .ldr}`` of its edge stages."""
    from edgeladder.policy import config as ladderconfig

    path = Path(build_dir) / LADDER_FILE
    if not path.is_file():
        return None
    cfg = ladderconfig.load(path)
    if cfg.model_version != ladderconfig.model_version(build_dir):
        raise DeployError(
            f"it was calibrated for another build of the task: run `edgeladder calibrate "
            f"{build_dir}` again",
            path,
        )
    by_file = {
        (Path(build_dir) / info["tflite"]).with_suffix(".ldr").name: name
        for name, info in task.get("tiers", {}).items()
        if "tflite" in info
    }
    ldr = {}
    for s in cfg.stages:
        if s.remote:
            continue
        name = by_file.get(s.model or "")
        f = (Path(build_dir) / task["tiers"][name]["tflite"]).with_suffix(".ldr") if name else None
        if f is None or not f.is_file():
            raise BuildMissingError(
                f"stage {s.name!r} runs {s.model}, which the build does not have: "
                f"run `edgeladder build {task_dir}` and `edgeladder calibrate` again",
                path,
            )
        ldr[name] = f
    return json.loads(path.read_text()), ldr


def _device_json(text: str) -> bytes:
    """A board's /device.json, checked to be a JSON object with a u32 device id."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise DeployError(f"device.json is not JSON ({e})") from e
    dev = raw.get("device") if isinstance(raw, dict) else None
    if not isinstance(dev, int) or not 0 <= dev < 2**32:
        raise DeployError('device.json needs a "device" id (an integer 0..2**32-1)')
    return json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()


def _pick_tiers(task: dict, build_dir: Path, board: boards.Board, task_dir: Path) -> list[_Tier]:
    tiers, other_devices = [], []
    for name, info in task.get("tiers", {}).items():
        try:
            spec = boards.get(info.get("board", ""))
        except EdgeladderError:
            continue
        if not spec.is_device:
            continue
        if spec.name != board.name:
            other_devices.append(f"{name} ({spec.name})")
            continue
        ldr = (build_dir / info["tflite"]).with_suffix(".ldr")
        if not ldr.is_file():
            raise BuildMissingError(
                f"tier {name!r} has no compiled model {ldr}: "
                f"run `edgeladder build {task_dir}` first"
            )
        tiers.append(_Tier(name, ldr))
    if not tiers:
        where = f"; its device tiers are {', '.join(other_devices)}" if other_devices else ""
        raise BuildMissingError(f"task in {build_dir}/ has no tier for board {board.name!r}{where}")
    return tiers


def _tier_config(path: str, data: bytes, ldr: Path) -> dict:
    from edgeladder.model.compiler.fmt import mformat as F

    try:
        h = F.read_header(data)
    except ValueError as e:
        raise BuildMissingError(f"{e}: rebuild the task", ldr) from None
    return {
        "model": path,
        "model_sha256": hashlib.sha256(data).hexdigest(),
        "input_quantization": [h.in_scale, h.in_zp],
        "output_quantization": [h.out_scale, h.out_zp],
    }


def board_arch(mpy: int, platform: str, board: boards.Board) -> tuple[str, bool, list[str]]:
    """``(arch to compile for, simulated, notes)`` from what the board reports.

    A virtual board runs the MicroPython unix port, so it reports the host's arch (``x64``)
    and ``sys.platform == 'linux'``; that is accepted and said. On hardware the reported arch
    must equal the board file's ``mpy_arch``.
    """
    version, index = mpy & 0xFF, mpy >> 10
    if not mpy or version != MPY_VERSION:
        raise DeployError(
            f"the board runs MicroPython with .mpy version {version}, this deploy makes "
            f"{MPY_VERSION}: flash MicroPython 1.23 or newer with `edgeladder flash`"
        )
    arch = NATIVE_ARCHES[index] if index < len(NATIVE_ARCHES) else None
    if arch is None:
        raise DeployError(
            "the board's MicroPython has no native code emitter; the ladder engine needs viper"
        )
    simulated = platform in ("linux", "darwin")
    notes = []
    if arch != board.mpy_arch:
        if not simulated:
            raise ArchMismatchError(
                f"the board reports arch {arch}, but board {board.name!r} is {board.mpy_arch}: "
                "pick the matching --board"
            )
        notes.append(
            f"virtual board: it runs the MicroPython unix port ({platform}, {arch}), so the "
            f"firmware is compiled for {arch}, not {board.name}'s {board.mpy_arch}"
        )
    return arch, simulated, notes


def check_build(task_dir: Path, build_dir: Path | None, device_json: str | None) -> None:
    """Fail before any port is touched: a missing build, a stale or broken ladder.json, or a
    device.json that is not a device's."""
    task, build_path = load_task(task_dir, build_dir)
    _ladder(task, build_path, task_dir)
    if device_json is not None:
        _device_json(device_json)
