"""pytest plugin: virtual boards as fixtures, so firmware is tested without hardware.

Enable it in a ``conftest.py`` with ``pytest_plugins = ["edgeladder_sim.plugin"]``.

``sim_board``
    A running virtual ESP32 with the firmware deployed by ``edgeladder deploy`` (the function
    :func:`edgeladder.device.deploy.deploy`, as for a real board: ``boot.py``, ``main.py``, the
    ``ladder`` package as ``.mpy``, the task's model and ``/ladder.json``), booted. Its serial
    port is ``sim_board.port``; ``sim_board.mpremote("exec", "print(1)")`` runs the real mpremote
    against it; ``sim_board.board`` is the :class:`~edgeladder_sim.board.Board` (power cuts,
    resets, output).
``sim_board_factory``
    ``make(board="esp32", files={"main.py": b"..."}, firmware=False, boot=True)``: more boards,
    or boards with other files. Every board is powered off at the end of the test.
    ``firmware=True`` boards start from one flash image per board file, made once per session by
    deploying to a virtual board (then copied, as a production line clones a golden image);
    ``files`` are written after it (test-only files that no deploy writes, or that replace what
    it wrote).
``sim_deploy_task``
    ``(task folder, build folder)`` that ``firmware=True`` deploys: a session fixture to
    override in your ``conftest.py`` (there is no default; a board with ``firmware=True`` is an
    error without it).
``sim_fleet``
    ``sim_fleet(n, files=None, firmware=True)``: ``n`` virtual boards, powered on together and
    booted (``boot.py``/``main.py`` done), each with its own flash file and serial port; a list
    of :class:`SimBoard`. All are stopped at the end of the test.
``broker``
    An MQTT 3.1.1 broker on a free loopback port (:mod:`edgeladder_sim.broker`): ``.host``,
    ``.port``, ``.url``. The kind is ``$EDGELADDER_BROKER`` (``amqtt``, the default, in-process;
    or ``mosquitto``, Debian's binary, as in CI); a kind that is not installed is an error, never
    a silent switch. Parametrize it indirectly to pick the kind:
    ``@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)``.
``sensor_feed``
    ``sensor_feed(samples, rate_hz=100.0, loop=False)``: a
    :class:`~edgeladder_sim.sensor.SensorFeed` serving int8/int16 rows on a loopback port
    (``.port``); firmware reads it with ``ladder.hal.Sensor(port)``. Stopped at the end of the test.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from .bridge import VirtualBoard
from .broker import Broker, default_kind, start_broker
from .sensor import SensorFeed

MPREMOTE_TIMEOUT_S = 60
BOOT_TIMEOUT_S = 30.0


def mpremote_command() -> list[str]:
    """How to run mpremote with this interpreter's packages."""
    beside = Path(sys.executable).parent / "mpremote"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "mpremote"]


class SimBoard(VirtualBoard):
    """A virtual board for tests: :class:`VirtualBoard` plus a way to run mpremote on it."""

    def mpremote(
        self, *args: str, timeout: float = MPREMOTE_TIMEOUT_S, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run the real ``mpremote connect PORT ARGS...``; output is text."""
        argv = [*mpremote_command(), "connect", self.port, *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"mpremote {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}\n"
                f"board output (tail): {self.board.output()[-600:]!r}"
            )
        return result


class FirmwareImages:
    """Flash images with the firmware deployed, one per (board file, task, build), made once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[tuple[str, Path, Path], Path] = {}

    def get(self, board: str, task: Path, build: Path) -> Path:
        key = (board, Path(task), Path(build))
        if key not in self._made:
            self._made[key] = self._deploy(
                board, *key[1:], self.root / f"{board}-{len(self._made)}"
            )
        return self._made[key]

    @staticmethod
    def _deploy(board: str, task: Path, build: Path, workdir: Path) -> Path:
        from edgeladder.device.deploy import deploy

        with VirtualBoard(board, workdir) as vb:
            vb.board.power_on()
            vb.board.wait_booted(BOOT_TIMEOUT_S)
            deploy(vb.port, task, board, build_dir=build)  # then it soft-resets and boots
            vb.board.power_off()
            return vb.board.flash.path


@pytest.fixture(scope="session")
def sim_deploy_task() -> tuple[Path, Path] | None:
    """``(task folder, build folder)`` for ``firmware=True`` boards: override it in conftest.py."""
    return None


@pytest.fixture(scope="session")
def sim_firmware_images(tmp_path_factory) -> FirmwareImages:
    return FirmwareImages(tmp_path_factory.mktemp("sim-firmware"))


@pytest.fixture
def sim_board_factory(request, tmp_path_factory, sim_firmware_images) -> Callable[..., SimBoard]:
    made: list[SimBoard] = []
    count = itertools.count()

    def firmware_image(board: str) -> Path:
        task = request.getfixturevalue("sim_deploy_task")
        if task is None:
            raise pytest.UsageError(
                "a virtual board with firmware=True needs a task to deploy: define a session "
                "fixture `sim_deploy_task` returning (task folder, build folder) in conftest.py"
            )
        return sim_firmware_images.get(board, *task)

    def make(
        board: str = "esp32",
        files: Mapping[str, bytes] | None = None,
        *,
        firmware: bool = False,
        boot: bool = True,
        timeout: float = 20.0,
    ) -> SimBoard:
        workdir = tmp_path_factory.mktemp(f"sim-{board}-{next(count)}")
        sim = SimBoard(board, workdir)
        made.append(sim)
        if firmware:
            shutil.copyfile(firmware_image(board), sim.board.flash.path)
        if files:
            sim.board.flash.write_files(files)
        if boot:
            sim.board.power_on()
            sim.board.wait_booted(timeout, ready=False)
        return sim

    yield make
    for sim in made:
        sim.close()


@pytest.fixture
def sim_board(sim_board_factory) -> SimBoard:
    """A booted virtual ESP32 with the firmware in flash (see the module docstring)."""
    sim = sim_board_factory(firmware=True)
    sim.board.wait_booted(20.0)
    return sim


@pytest.fixture
def sim_fleet(sim_board_factory) -> Callable[..., list[SimBoard]]:
    """``sim_fleet(n)``: ``n`` booted boards (see the module docstring)."""

    def make(
        n: int,
        files: Mapping[str, bytes] | None = None,
        *,
        board: str = "esp32",
        firmware: bool = True,
        timeout: float = 30.0,
    ) -> list[SimBoard]:
        fleet = [sim_board_factory(board, files, firmware=firmware, boot=False) for _ in range(n)]
        for sim in fleet:  # all boot at once: n processes, not n boot times in a row
            sim.board.power_on()
        for sim in fleet:
            sim.board.wait_booted(timeout)
        return fleet

    return make


@pytest.fixture
def broker(request, tmp_path_factory) -> Broker:
    """A broker on a free loopback port (see the module docstring)."""
    kind = getattr(request, "param", None) or default_kind()
    started = start_broker(kind, workdir=tmp_path_factory.mktemp(f"broker-{kind}"))
    yield started
    started.stop()


@pytest.fixture
def sensor_feed() -> Callable[..., SensorFeed]:
    """``sensor_feed(samples, rate_hz=100.0)``: a feed on loopback (see the module docstring)."""
    feeds: list[SensorFeed] = []

    def make(samples, rate_hz: float | None = 100.0, *, loop: bool = False) -> SensorFeed:
        feed = SensorFeed(samples, rate_hz, loop=loop)
        feeds.append(feed)
        return feed

    yield make
    for feed in feeds:
        feed.stop()
