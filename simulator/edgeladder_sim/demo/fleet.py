"""The demo's boards: virtual ESP32s with our firmware, the tiny model and the ladder config.

Each board gets its files in flash before it powers on (firmware sources, ``ladder.json``, its
own ``device.json`` and the compiled tiny model) and a sensor feed of int8 rows on loopback that
also carries its answers back. ``edgeladder deploy`` does the same over the serial port on a real
board (tests/sim/test_deploy_ladder.py); here the flash is written directly so that N boards
start in seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeladder.policy.config import device_json

BOOT_TIMEOUT_S = 30.0
DEVICE_BASE = 0xE1000000  # demo device ids: e1000000, e1000001, ...
# A virtual board runs the MicroPython unix port: native code (viper) for this machine.
_SIM_ARCH = "host"


@dataclass
class DemoBoard:
    device: int
    sim: object  # edgeladder_sim.bridge.VirtualBoard
    feed: object  # _phased_feed_class(): a SensorFeed in two passes
    indices: np.ndarray  # the test rows of the main pass, in order
    pass2: np.ndarray  # the test rows of the second pass, cycled

    def close(self) -> None:
        self.feed.stop()
        self.sim.close()


def _phased_feed_class():
    # Made on first use: the simulator is an optional extra.
    from edgeladder_sim.sensor import SensorFeed

    class _PhasedFeed(SensorFeed):
        """A sensor feed in two passes that the demo starts and ends.

        The main pass sends its rows once at ``rate_hz``; then the feed holds until
        ``start_second()`` and cycles the second pass's rows until ``end_second()``, then ends
        the stream (the board's app sees the end of the data and stops).
        """

        def __init__(self, main: np.ndarray, second: np.ndarray, rate_hz: float) -> None:
            self.second = np.ascontiguousarray(second)
            self._go = threading.Event()
            self._go2 = threading.Event()
            self._end2 = threading.Event()
            super().__init__(main, rate_hz)

        def start_main(self) -> None:
            self._go.set()

        def start_second(self) -> None:
            self._go2.set()

        def end_second(self) -> None:
            self._go2.set()
            self._end2.set()

        def _stream(self, conn) -> None:
            if not self._wait(self._go):
                return
            self._send(conn, self.samples, lambda i: i == len(self.samples))
            if not self._wait(self._go2) or self._end2.is_set():
                return
            self._send(conn, self.second, lambda i: self._end2.is_set())

        def _wait(self, event: threading.Event) -> bool:
            while not event.wait(0.05):
                if self._closing.is_set():
                    return False
            return not self._closing.is_set()

        def _send(self, conn, rows: np.ndarray, done) -> None:
            start = time.monotonic()
            i = 0
            while not self._closing.is_set() and not done(i):
                delay = start + i / self.rate_hz - time.monotonic()
                if delay > 0 and self._closing.wait(delay):
                    return
                conn.sendall(rows[i % len(rows)].tobytes())
                self.sent_at.append(time.monotonic())
                self.sent += 1
                i += 1

    return _PhasedFeed


def board_files(build_dir: Path, task_dir: Path) -> dict[str, bytes]:
    """What ``edgeladder deploy`` would write to a virtual ESP32 (compiled .mpy, models, ladder)."""
    from edgeladder.boards import registry as boards
    from edgeladder.device.deploy import plan_files

    files, _ = plan_files(task_dir, boards.get("esp32"), _SIM_ARCH, build_dir=build_dir)
    return {k.lstrip("/"): v for k, v in files.items()}


def start_fleet(
    build_dir: Path,
    task_dir: Path,
    rows: np.ndarray,
    *,
    boards: int,
    rate_hz: float,
    mqtt_host: str,
    mqtt_port: int,
    fleet: str,
    gateway: str,
    workdir: Path,
    second_pass: int = 120,
) -> list[DemoBoard]:
    """Power on ``boards`` virtual ESP32s; board k gets rows k, k + boards, k + 2*boards, ..."""
    from edgeladder_sim.bridge import VirtualBoard

    feed_class = _phased_feed_class()
    common = board_files(build_dir, task_dir)
    made: list[DemoBoard] = []
    try:
        for k in range(boards):
            idx = np.arange(k, len(rows), boards)
            idx2 = np.roll(np.arange(len(rows)), -k * second_pass)[:second_pass]
            feed = feed_class(rows[idx], rows[idx2], rate_hz)
            device = DEVICE_BASE + k
            files = dict(common)
            files["device.json"] = device_json(
                device,
                fleet=fleet,
                link={"kind": "mqtt", "host": mqtt_host, "port": mqtt_port, "keepalive_s": 10},
                sensor={"kind": "tcp", "host": "127.0.0.1", "port": feed.port},
                gateway=gateway,
            ).encode()
            sim = VirtualBoard("esp32", Path(workdir) / f"board{k}")
            sim.board.flash.write_files(files)
            made.append(DemoBoard(device, sim, feed, idx, idx2))
        for b in made:  # all boot at once: N processes, not N boot times in a row
            b.sim.board.power_on()
        for b in made:
            b.sim.board.wait_booted(BOOT_TIMEOUT_S, ready=False)
    except BaseException:
        for b in made:
            b.close()
        raise
    return made
