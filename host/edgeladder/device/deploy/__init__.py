"""Deploy a task's device tier to a board: firmware as ``.mpy``, model files, a config.

The same code serves a real ESP32 and a virtual board (``edgeladder sim board``): both are a
serial port with MicroPython's raw REPL, driven through mpremote's ``SerialTransport``.

What lands on the board::

    /boot.py, /main.py        firmware entry points, as source (MicroPython runs only .py there)
    /ladder/**.mpy            the engine, compiled by mpy-cross for the arch the board reports
    /models/<tier file>.ldr   each device tier's compiled model
    /ladder.json              the board config: model path, labels, input quantization, and
                              when ``edgeladder calibrate`` has run, the ladder (stages, gates,
                              thresholds, budgets: build/<task>/ladder.json, merged in; an edge
                              stage's model becomes ``models/<file>``, relative to /)
    /device.json              the board's identity and link, if the caller gives one

Only what changed is copied: the board hashes its own files (``hashlib.sha256``) and a file
whose hash equals the local one is skipped. Each file is written to ``<path>.tmp``, hashed on
the board again, and renamed over the old one only when the hash matches; littlefs commits a
rename atomically, so a power cut leaves the old file or the new one, never half of one.
Leftover ``.tmp`` files and files under ``/ladder`` and ``/models`` that the deploy does not
name are removed. Then the board soft-resets and boots the firmware.

In three parts: :mod:`.plan` (what to copy: pure, host side only), :mod:`.transport` (the raw
REPL over the port) and :mod:`.sync` (compare hashes, copy, remove stale).
"""

from __future__ import annotations

import time
from pathlib import Path

from edgeladder.boards import registry as boards
from edgeladder.device.deploy.errors import (
    ArchMismatchError,
    BoardNotAnsweringError,
    BuildMissingError,
    DeployError,
    DeployPortError,
)
from edgeladder.device.deploy.plan import (
    CONFIG_PATH,
    DEVICE_PATH,
    ENTRY_POINTS,
    LADDER_FILE,
    MANAGED_DIRS,
    MODELS_DIR,
    board_arch,
    check_build,
    load_task,
    plan_files,
)
from edgeladder.device.deploy.sync import DeployResult, ProgressFn, sync
from edgeladder.device.deploy.transport import Board
from edgeladder.device.mpycross import MPY_VERSION
from edgeladder.util.resources import FIRMWARE_DIR

__all__ = [
    "CONFIG_PATH",
    "DEVICE_PATH",
    "ENTRY_POINTS",
    "LADDER_FILE",
    "MANAGED_DIRS",
    "MODELS_DIR",
    "MPY_VERSION",
    "ArchMismatchError",
    "BoardNotAnsweringError",
    "BuildMissingError",
    "DeployError",
    "DeployPortError",
    "DeployResult",
    "ProgressFn",
    "board_arch",
    "deploy",
    "load_task",
    "plan_files",
]


def deploy(
    port: str,
    task_dir: str | Path,
    board: str | boards.Board = "esp32",
    *,
    build_dir: str | Path | None = None,
    firmware_dir: str | Path = FIRMWARE_DIR,
    progress: ProgressFn | None = None,
    reset: bool = True,
    device_json: str | None = None,
) -> DeployResult:
    """Copy what changed of the firmware and the task's device model(s) to ``port``; reset.

    With ``build/<task>/ladder.json`` (``edgeladder calibrate``) the ladder goes into the
    board's /ladder.json; ``device_json`` (its text) is written to /device.json.
    """
    spec = boards.get(board) if isinstance(board, str) else board
    if not spec.is_device or not spec.mpy_arch:
        raise DeployError(f"board {spec.name!r} is a {spec.role}, not a MicroPython device")
    report = progress or (lambda event, path, size: None)
    task_dir = Path(task_dir)
    build = Path(build_dir) if build_dir is not None else None
    check_build(task_dir, build, device_json)  # a bad build fails before the port is touched
    started = time.monotonic()
    conn = Board(port)
    try:
        conn.enter()
        probe = conn.scan()
        arch, simulated, notes = board_arch(probe["mpy"], probe["platform"], spec)
        files, tiers = plan_files(
            task_dir,
            spec,
            arch,
            build_dir=build,
            firmware_dir=Path(firmware_dir),
            device_json=device_json,
        )
        result = DeployResult(port, spec.name, arch, probe["platform"], simulated, tiers)
        result.notes = notes
        sync(conn, files, result, report)
        if reset:
            result.boot_log = conn.soft_reset()
    finally:
        conn.close()
    result.seconds = time.monotonic() - started
    return result
