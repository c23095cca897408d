"""The demo's host tiers: ``edgeladder serve`` child processes that the demo can kill and restart.

A tier runs as its own process, as on a real gateway, so that killing it is real: its socket
closes, the broker publishes its last will (``offline``), and boards stop escalating to it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from edgeladder.errors import EdgeladderError


class TierProcessError(EdgeladderError):
    """A demo tier failed to start or died."""


class TierProcess:
    """One ``edgeladder serve`` child: ``start()``, ``kill()`` (SIGKILL), ``stop()`` (SIGTERM)."""

    def __init__(
        self,
        build_dir: Path,
        stage: str,
        *,
        tier_name: str,
        mqtt_url: str,
        fleet: str,
        log_path: Path,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.build_dir = Path(build_dir)
        self.stage = stage
        self.tier_name = tier_name
        self.mqtt_url = mqtt_url
        self.fleet = fleet
        self.log_path = Path(log_path)
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "edgeladder",
            "serve",
            str(self.build_dir),
            "--stage",
            self.stage,
            "--tier-name",
            self.tier_name,
            "--mqtt",
            self.mqtt_url,
            "--fleet",
            self.fleet,
            "--http",
            "0",
            *self.extra,
        ]

    def start(self) -> None:
        if self.alive:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # A tier must not inherit the demo's terminal: its log goes to a file.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        log.close()
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-800:]
            raise TierProcessError(
                f"the {self.tier_name} tier exited with status {self.proc.returncode}:\n{tail}",
                self.log_path,
            )

    def kill(self) -> None:
        """Cut it dead, like a gateway losing power: no clean goodbye, the broker sends its will."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout=5)
