"""``edgeladder serve`` as a child process: the one wrapper that the demo, the tests and the
bench start tiers with.

A tier in its own process is what runs on a gateway, and makes killing it real: its socket
closes, the broker publishes its last will (``offline``), boards stop escalating to it. Its
output goes to a log file (appended across restarts); health and metrics are read over its
HTTP port when it has one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from edgeladder.errors import EdgeladderError

_LOG_TAIL = 800  # characters of the log quoted when the process died


class ServeProcessError(EdgeladderError):
    """A tier process failed to start, to get ready, or died."""


class ServeProcess:
    """``ServeProcess(target, stage, *args, log=..., http_port=...)``; ``start()``, ``stop()``.

    ``args`` are more ``edgeladder serve`` options (``--mqtt URL``, ``--serial PORT``, ...);
    ``http_port`` 0 turns HTTP off (then there is no ``wait_ready`` or ``metric``)."""

    def __init__(
        self,
        target: Path | str,
        stage: str,
        *args: str,
        log: Path,
        http_port: int = 0,
        name: str | None = None,
    ) -> None:
        self.argv = [
            sys.executable, "-m", "edgeladder", "serve", str(target), "--stage", stage, *args,
            "--http", str(http_port),
        ]  # fmt: skip
        self.log = Path(log)
        self.http_port = http_port
        self.url = f"http://127.0.0.1:{http_port}" if http_port else None
        self.name = name or stage
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    # ---- the process -----------------------------------------------------------------------
    def start(self) -> ServeProcess:
        if self.alive:
            return self
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # A tier must not inherit the caller's terminal: its output goes to the log.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """ServeProcessError, with the log's tail, if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ServeProcessError(
                f"the {self.name} tier exited with status {self.proc.returncode}:\n"
                f"{self.output()[-_LOG_TAIL:]}",
                self.log,
            )

    def kill(self) -> None:
        """Cut it dead, like a gateway losing power: no goodbye, the broker sends its will."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a clean stop: queued requests answered, ``offline`` published), SIGKILL if
        it takes longer than timeout; the exit status."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=5)
        return None if self.proc is None else self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # ---- over HTTP -------------------------------------------------------------------------
    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of GET path; (0, "") while nothing listens."""
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 30.0) -> ServeProcess:
        """Until /v2/health/ready says 200; ServeProcessError if it exits or times out."""
        end = time.monotonic() + timeout
        while self.get("/v2/health/ready")[0] != 200:
            if not self.alive or time.monotonic() > end:
                code = None if self.proc is None else self.proc.poll()
                raise ServeProcessError(f"serve not ready (exit {code}):\n{self.output()}")
            time.sleep(0.05)
        return self

    def metrics(self) -> dict[str, float]:
        """Every ``edgeladder_*`` sample of /metrics: ``{'name{labels}': value}``."""
        out = {}
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith("edgeladder_") and " " in line:
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def metric(self, name: str, labels: str = "") -> float:
        """One sample (0 if absent), e.g. ``metric("edgeladder_requests_total",
        'outcome="answered"')``."""
        return self.metrics().get(f"{name}{{{labels}}}" if labels else name, 0.0)

    def wait_metric(self, name: str, labels: str, want: float, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while (got := self.metric(name, labels)) != want:
            if time.monotonic() > end:
                raise ServeProcessError(f"{name}{{{labels}}} = {got}, not {want}")
            time.sleep(0.05)


__all__ = ["ServeProcess", "ServeProcessError"]
