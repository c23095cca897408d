"""The ``serve`` app: one remote stage of a ladder, assembled from its parts and run.

``create(ServeOptions(...))`` checks the options, loads the ladder and the model (warming every
batch bucket), and assembles a :class:`ServeApp`: the stage core, a link per transport asked for
(:data:`edgeladder.serve.links.LINKS`), HTTP health and metrics, the model reloader. ``run()``
serves until ``stop`` is set (or SIGTERM/SIGINT), then stops cleanly: new requests are refused,
queued ones answered (or expired), ``offline`` is published on the tier's status topic, links
close. ``edgeladder serve`` (``commands/serve.py``) is a thin body over these two.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from edgeladder.policy import config as ladderconfig
from edgeladder.serve import EventLog, TierError
from edgeladder.serve.links import LINKS, TierLink, link_class
from edgeladder.serve.metrics import Metrics
from edgeladder.serve.runner import BatchRunner
from edgeladder.serve.stage import StageCore

# Threads hand the GIL over every 5 ms by default: a message waiting in paho's thread while the
# worker computes would wait that long. 0.5 ms keeps the queueing delay near the batching delay
# (measured with bench/tiers.py).
SWITCH_INTERVAL_S = 0.0005


@dataclass
class ServeOptions:
    target: Path  # a build folder holding ladder.json, or the ladder.json itself
    stage: str
    mqtt: str | None = None  # one field per kind in LINKS: where that link goes, or None
    serial: str | None = None
    baud: int = 115200
    fleet: str = "demo"
    tier_name: str | None = None
    next_tier: str | None = None
    max_batch: int = 16
    max_delay_ms: float = 1.0
    queue: int = 64
    http: int = 8080
    http_host: str = "127.0.0.1"
    allow_unknown: bool = False
    connect_timeout: float = 10.0
    reload_interval: float = 0.5
    as_json: bool = False


def create(opts: ServeOptions) -> ServeApp:
    """Check, load and assemble (nothing listens yet); raises EdgeladderError to fail."""
    log = EventLog(opts.as_json)
    path = opts.target / "ladder.json" if opts.target.is_dir() else opts.target
    config = ladderconfig.load(path)
    stage = config.stage(opts.stage)
    if not stage.remote:
        raise TierError(f"stage {stage.name!r} runs on the board (where = edge): serve another")
    kinds = [kind for kind in LINKS if getattr(opts, kind)]
    if not kinds:
        raise TierError("nowhere to listen: pass --mqtt mqtt://HOST:PORT or --serial PORT")
    if opts.queue < 1 or opts.max_delay_ms < 0:
        raise TierError("--queue must be at least 1 and --max-delay-ms at least 0")
    model_path = path.parent / stage.tflite
    runner = BatchRunner.load(model_path, opts.max_batch)  # checks and warms every bucket
    if not runner.batched:
        log.emit("batching_off", f"note: {runner.note}", reason=runner.note)
    core = StageCore(
        config, stage.name, runner, max_batch=opts.max_batch, max_delay_ms=opts.max_delay_ms,
        queue=opts.queue, allow_unknown=opts.allow_unknown, metrics=Metrics(), log=log,
    )  # fmt: skip
    for kind in kinds:
        core.attach(link_class(kind).from_options(core, opts))
    return ServeApp(opts, core, model_path)


class ServeApp:
    """A tier, assembled: ``run(stop)`` serves until ``stop`` is set or a signal arrives."""

    def __init__(self, opts: ServeOptions, core: StageCore, model_path: Path) -> None:
        self.opts = opts
        self.core = core
        self.model_path = model_path
        self.log = core.log
        self.http = None
        self.reloader = None

    def run(self, stop: threading.Event | None = None) -> int:
        from edgeladder.serve.http import HttpServer
        from edgeladder.serve.reload import Reloader

        opts, core = self.opts, self.core
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        stop = stop or threading.Event()
        restore = _on_signals(stop)
        started: list[TierLink] = []
        served = False
        try:
            if opts.http:
                self.http = HttpServer(opts.http_host, opts.http, core.ready, core.metrics).start()
            core.start()  # before any link: a request that arrives finds the worker running
            for link in core.links:
                link.start()
                started.append(link)
            if opts.reload_interval > 0:
                self.reloader = Reloader(
                    self.model_path, core.reload_model, core.reload_failed,
                    interval=opts.reload_interval,
                ).start()  # fmt: skip
            self._ready()
            served = True
            while not stop.wait(0.5):
                for link in core.links:
                    why = link.lost()
                    if why:
                        raise TierError(why)
        finally:
            restore()
            self._stop(started, served)
        return 0

    def _stop(self, started: list[TierLink], served: bool) -> None:
        if served:
            self.log.emit("stopping", "stopping: refusing new requests, finishing queued ones")
        if self.reloader is not None:
            self.reloader.stop()
        self.core.stop()
        for link in reversed(started):  # MQTT says "offline" first, then the port closes
            link.close()
        if self.http is not None:
            self.http.stop()
        if served:
            counts = {k: int(self.core.metrics.value(k)) for k in ("answered", "forwarded")}
            self.log.emit("stopped", f"stopped ({counts['answered']} answered, "
                          f"{counts['forwarded']} forwarded)", **counts)  # fmt: skip

    def _ready(self) -> None:
        opts, core, runner, http = self.opts, self.core, self.core.runner, self.http
        tier_name = opts.tier_name or core.stage.where
        next_tier = opts.next_tier or (core.next.where if core.next else None)
        where = ", ".join(
            w for w in (opts.mqtt and f"{opts.mqtt} (fleet {opts.fleet})", opts.serial) if w
        )
        batching = (
            f"batches of up to {opts.max_batch} within {opts.max_delay_ms:g} ms"
            if runner.batched
            else "one sample per invoke"
        )
        chain = f", forwards to {next_tier}" if next_tier and opts.mqtt else ""
        self.log.emit(
            "ready",
            f"ready: stage {core.stage.name} as {tier_name} on {where}{chain}; "
            f"{batching}, queue {opts.queue}"
            + (f"; health and metrics on {http.url}" if http else ""),
            stage=core.stage.name, tier=tier_name, mqtt=opts.mqtt, serial=opts.serial,
            fleet=opts.fleet, http=http.url if http else None, model=str(self.model_path),
            sha256=runner.sha256, batched=runner.batched, max_batch=opts.max_batch,
            max_delay_ms=opts.max_delay_ms, queue=opts.queue, next_tier=next_tier,
            pid=os.getpid(),
        )  # fmt: skip


def _on_signals(stop: threading.Event):
    """SIGTERM and SIGINT set ``stop`` (main thread only); returns a function that restores."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, handler in old.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(s, handler)

    return restore


__all__ = ["SWITCH_INTERVAL_S", "ServeApp", "ServeOptions", "create"]
