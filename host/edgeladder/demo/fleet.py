"""The demo's boards: virtual ESP32s with our firmware, the tiny model and the ladder config.

Each board gets its files in flash before it powers on (firmware sources, ``ladder.json``, its
own ``device.json`` and the compiled tiny model) and a sensor feed of int8 rows on loopback that
also carries its answers back. ``edgeladder deploy`` does the same over the serial port on a real
board (tests/sim/test_deploy_ladder.py); here the flash is written directly so that N boards
start in seconds.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..ladderconfig import LadderConfig, device_json, save

FIRMWARE = Path(__file__).resolve().parents[3] / "firmware"
BOOT_TIMEOUT_S = 30.0


@dataclass
class DemoBoard:
    device: int
    sim: object  # edgeladder_sim.bridge.VirtualBoard
    feed: object  # edgeladder_sim.sensor.SensorFeed
    rows: np.ndarray  # the int8 frames it is fed, in order
    indices: np.ndarray  # each frame's row in the demo's input list

    def close(self) -> None:
        self.feed.stop()
        self.sim.close()


def firmware_files() -> dict[str, bytes]:
    from edgeladder_sim.plugin import firmware_files as files

    return files(_firmware_dir())


def _firmware_dir() -> Path:
    # Installed in development mode the firmware sits beside host/; the simulator knows where.
    from edgeladder_sim.vm import FIRMWARE_DIR

    return FIRMWARE_DIR


def start_fleet(
    cfg: LadderConfig,
    build_dir: Path,
    rows: np.ndarray,
    *,
    boards: int,
    rate_hz: float,
    mqtt_host: str,
    mqtt_port: int,
    fleet: str,
    gateway: str,
    workdir: Path | None = None,
) -> list[DemoBoard]:
    """Power on ``boards`` virtual ESP32s; board k is fed rows k, k + boards, k + 2*boards, ..."""
    from edgeladder_sim.bridge import VirtualBoard
    from edgeladder_sim.sensor import SensorFeed

    workdir = Path(workdir or tempfile.mkdtemp(prefix="edgeladder-demo-"))
    ladder_file = save(workdir / "ladder.json", cfg)
    common = dict(firmware_files())
    common["ladder.json"] = ladder_file.read_bytes()
    for stage in cfg.stages:
        if not stage.remote:
            common[stage.model] = _find_model(build_dir, stage.model).read_bytes()

    made: list[DemoBoard] = []
    try:
        for k in range(boards):
            idx = np.arange(k, len(rows), boards)
            feed = SensorFeed(rows[idx], rate_hz)
            device = 0xE1000000 + k
            files = dict(common)
            files["device.json"] = device_json(
                device,
                fleet=fleet,
                link={"kind": "mqtt", "host": mqtt_host, "port": mqtt_port, "keepalive_s": 10},
                sensor={"kind": "tcp", "host": "127.0.0.1", "port": feed.port},
                gateway=gateway,
            ).encode()
            sim = VirtualBoard("esp32", workdir / f"board{k}")
            sim.board.flash.write_files(files)
            made.append(DemoBoard(device, sim, feed, rows[idx], idx))
        for b in made:  # all boot at once: N processes, not N boot times in a row
            b.sim.board.power_on()
        for b in made:
            b.sim.board.wait_booted(BOOT_TIMEOUT_S, ready=False)
    except BaseException:
        for b in made:
            b.close()
        raise
    return made


def _find_model(build_dir: Path, name: str) -> Path:
    hits = sorted(Path(build_dir).rglob(name))
    if not hits:
        from ..errors import ModelFileError

        raise ModelFileError(f"no {name} in the build; run `edgeladder build`", build_dir)
    return hits[0]
