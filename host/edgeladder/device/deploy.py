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
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from edgeladder.boards import registry as boards
from edgeladder.device.mpycross import NATIVE_ARCHES, compile_tree
from edgeladder.errors import EdgeladderError
from edgeladder.util.resources import FIRMWARE_DIR

CONFIG_PATH = "/ladder.json"
DEVICE_PATH = "/device.json"
LADDER_FILE = "ladder.json"  # in the build folder, written by `edgeladder calibrate`
MODELS_DIR = "models"  # on the board, beside /ladder.json
MANAGED_DIRS = ("/ladder", "/models")  # deploy owns these: stale files there are removed
ENTRY_POINTS = ("boot.py", "main.py")
CHUNK_BYTES = 1024  # per raw-REPL exec; raw-paste mode does the flow control
EXEC_TIMEOUT_S = 10.0  # silence on the line for this long: the board stopped answering
BOOT_TIMEOUT_S = 15.0
MPY_VERSION = 6

ProgressFn = Callable[[str, str, int], None]  # (event, board path, bytes)


class DeployError(EdgeladderError):
    """A deploy could not be prepared or finished."""


class BuildMissingError(DeployError):
    """The task has not been built (or not for a device)."""


class DeployPortError(DeployError):
    """The serial port is missing, busy or cannot be opened."""


class BoardNotAnsweringError(DeployError):
    """No MicroPython REPL answers on the port, or it stopped answering."""


class ArchMismatchError(DeployError):
    """The connected board runs code for another architecture than its board file says."""


@dataclass
class DeployResult:
    port: str
    board: str
    arch: str
    platform: str
    simulated: bool
    tiers: list[str]
    copied: list[tuple[str, int]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    boot_log: str = ""
    seconds: float = 0.0

    @property
    def bytes_copied(self) -> int:
        return sum(n for _, n in self.copied)

    def as_dict(self) -> dict:
        return {
            "port": self.port,
            "board": self.board,
            "arch": self.arch,
            "platform": self.platform,
            "simulated": self.simulated,
            "tiers": self.tiers,
            "copied": [{"path": p, "bytes": n} for p, n in self.copied],
            "unchanged": self.unchanged,
            "removed": self.removed,
            "bytes_copied": self.bytes_copied,
            "notes": self.notes,
            "boot_log": self.boot_log,
            "seconds": round(self.seconds, 2),
        }


# -- what to deploy (host side only)


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
        h = F.unpack_header(data)
    except ValueError as e:
        raise BuildMissingError(f"{e}: rebuild the task", ldr) from None
    return {
        "model": path,
        "model_sha256": hashlib.sha256(data).hexdigest(),
        "input_quantization": [h[11], h[12]],
        "output_quantization": [h[13], h[14]],
    }


# -- on the board (sent as source over the raw REPL; MicroPython)

_SCAN = """\
import os, sys, hashlib, binascii, json
def _el_sha(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(1024)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
def _el_walk(d, out):
    try:
        es = list(os.ilistdir(d))
    except OSError:
        return
    for e in es:
        p = (d if d != '/' else '') + '/' + e[0]
        if e[1] & 0x4000:
            out.append(p + '/')
            _el_walk(p, out)
        else:
            out.append(p)
_el_l = []
for _d in %(dirs)r:
    try:
        os.stat(_d)
        _el_l.append(_d + '/')
    except OSError:
        continue
    _el_walk(_d, _el_l)
for _n in os.listdir('/'):
    if _n.endswith('.tmp'):
        _el_l.append('/' + _n)
print(json.dumps({'mpy': getattr(sys.implementation, '_mpy', 0), 'platform': sys.platform,
    'paths': _el_l, 'sha': dict((p, _el_sha(p)) for p in %(wanted)r)}))
"""


class _Board:
    """The raw REPL of the board on ``port`` (mpremote's SerialTransport), with timeouts."""

    def __init__(self, port: str) -> None:
        try:
            from mpremote.transport import TransportError
            from mpremote.transport_serial import SerialTransport
        except ImportError as e:
            raise DeployError("mpremote is not installed: pip install mpremote") from e
        self.TransportError = TransportError
        self.port = port
        if "://" not in port and not os.path.exists(port):
            raise DeployPortError(
                f"serial port {port} does not exist: plug the board in and check the port name "
                "(ls /dev/ttyUSB* /dev/ttyACM*), or start a virtual board with "
                "`edgeladder sim board`"
            )
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.t = SerialTransport(port, baudrate=115200)
        except (TransportError, OSError) as e:
            raise DeployPortError(
                f"cannot open {port} ({e}): close the program that holds it (a serial monitor, "
                "mpremote) and check the port name"
            ) from e

    def enter(self) -> None:
        try:
            # prints what it read when it fails; the error below says it in one line
            with contextlib.redirect_stdout(io.StringIO()):
                self.t.enter_raw_repl(soft_reset=True, timeout_overall=EXEC_TIMEOUT_S)
        except (self.TransportError, OSError) as e:
            raise BoardNotAnsweringError(
                f"no MicroPython REPL answers on {self.port}: press the board's reset button, or "
                "flash MicroPython with `edgeladder flash`, then retry"
            ) from e

    def exec(self, code: str) -> str:
        try:
            self.t.exec_raw_no_follow(code)
            out, err = self.t.follow(EXEC_TIMEOUT_S)
        except (self.TransportError, OSError) as e:
            raise BoardNotAnsweringError(
                f"the board on {self.port} stopped answering ({e}): was it unplugged or reset? "
                "Run the deploy again; files already copied are kept"
            ) from e
        if err:
            last = err.decode("utf-8", "replace").strip().splitlines()[-1]
            raise DeployError(f"the board on {self.port} failed: {last}")
        return out.decode("utf-8", "replace")

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write ``path.tmp``, check its sha256 on the board, rename it over ``path``."""
        tmp = path + ".tmp"
        self.exec(f"_el_f = open({tmp!r}, 'wb')\n_el_w = _el_f.write")
        for at in range(0, len(data), CHUNK_BYTES):
            self.exec(f"_el_w({data[at : at + CHUNK_BYTES]!r})")
        want = hashlib.sha256(data).hexdigest()
        got = self.exec(
            f"_el_f.close()\n_el_s = _el_sha({tmp!r})\n"
            f"if _el_s == {want!r}:\n    os.rename({tmp!r}, {path!r})\nprint(_el_s)"
        ).strip()
        if got != want:
            raise DeployError(f"{path}: the board read back sha256 {got}, expected {want}; retry")

    def soft_reset(self) -> str:
        """Leave the raw REPL and soft-reset from the friendly one: boot.py, then main.py."""
        self.t.exit_raw_repl()
        self.t.read_until(1, b">>> ", timeout=2, timeout_overall=5)  # the friendly banner
        self.t.serial.write(b"\x04")  # ctrl-D at the friendly REPL: soft reset
        self.t.read_until(1, b"soft reboot\r\n", timeout=5, timeout_overall=BOOT_TIMEOUT_S)
        # boot.py and main.py print, then the REPL prompts (or main.py runs on: time out)
        out = self.t.read_until(1, b">>> ", timeout=5, timeout_overall=BOOT_TIMEOUT_S)
        return out.decode("utf-8", "replace")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.t.close()


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
    task, build_path = load_task(task_dir, build)  # a missing build fails before the port is
    _ladder(task, build_path, task_dir)  # touched, and so does a stale or broken ladder.json
    if device_json is not None:
        _device_json(device_json)
    started = time.monotonic()
    conn = _Board(port)
    try:
        conn.enter()
        probe = json.loads(conn.exec(_SCAN % {"dirs": (), "wanted": ()}))
        arch, simulated, notes = board_arch(probe["mpy"], probe["platform"], spec)
        files, tiers = plan_files(
            task_dir,
            spec,
            arch,
            build_dir=build,
            firmware_dir=Path(firmware_dir),
            device_json=device_json,
        )
        state = json.loads(conn.exec(_SCAN % {"dirs": MANAGED_DIRS, "wanted": tuple(files)}))
        result = DeployResult(port, spec.name, arch, probe["platform"], simulated, tiers)
        result.notes = notes
        on_board = set(state["paths"])
        for d in sorted({p.rsplit("/", 1)[0] for p in files if p.count("/") > 1}):
            if d + "/" not in on_board:
                conn.exec(f"os.mkdir({d!r})")
                on_board.add(d + "/")
        # New files first, stale ones next, the config last: a cut at any point leaves a
        # board that boots (old .py files would shadow the new .mpy only until removed).
        leftovers = [p for p in state["paths"] if p.endswith(".tmp")]  # a cut deploy's
        _remove_stale(conn, leftovers, files, result, report)
        for path in sorted(files, key=lambda p: (p == CONFIG_PATH, p)):
            if path == CONFIG_PATH:
                rest = [p for p in state["paths"] if p not in leftovers]
                _remove_stale(conn, rest, files, result, report)
            data = files[path]
            if state["sha"].get(path) == hashlib.sha256(data).hexdigest():
                result.unchanged.append(path)
                continue
            conn.write_atomic(path, data)
            result.copied.append((path, len(data)))
            report("copied", path, len(data))
        if reset:
            result.boot_log = conn.soft_reset()
    finally:
        conn.close()
    result.seconds = time.monotonic() - started
    return result


def _remove_stale(
    conn: _Board, paths: list[str], files: dict[str, bytes], result: DeployResult, report
) -> None:
    """Remove files in the managed folders that the deploy does not name, and empty folders."""
    for path in paths:
        if not path.endswith("/") and path not in files:
            conn.exec(f"try:\n    os.remove({path!r})\nexcept OSError:\n    pass")
            result.removed.append(path)
            report("removed", path, 0)
    wanted_dirs = {p.rsplit("/", 1)[0] + "/" for p in files}
    for d in sorted((p for p in paths if p.endswith("/")), key=len, reverse=True):
        if not any(w.startswith(d) for w in wanted_dirs):
            with contextlib.suppress(DeployError):
                conn.exec(f"os.rmdir({d[:-1]!r})")
                result.removed.append(d)
