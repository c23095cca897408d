"""`edgeladder serve BUILD --stage medium (--mqtt URL | --serial PORT)`: run a host tier.

The command parses; :func:`run` assembles the parts (runner, server, links, HTTP, reload) and
serves until SIGTERM or SIGINT, then stops cleanly: new requests are refused, queued ones
answered (or expired), ``offline`` is published on the tier's status topic, links close.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import click

SWITCH_INTERVAL_S = 0.0005


@dataclass
class ServeOptions:
    target: Path  # a build folder holding ladder.json, or the ladder.json itself
    stage: str
    mqtt: str | None = None
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


def run(opts: ServeOptions, stop: threading.Event | None = None) -> int:
    """Serve until ``stop`` is set (or a signal arrives); raises EdgeladderError to fail."""
    from edgeladder.policy import config as ladderconfig
    from edgeladder.serve import EventLog, TierError
    from edgeladder.serve.http import HttpServer
    from edgeladder.serve.links.mqtt import MqttLink
    from edgeladder.serve.links.serial import SerialLink
    from edgeladder.serve.metrics import Metrics
    from edgeladder.serve.reload import Reloader
    from edgeladder.serve.runner import BatchRunner
    from edgeladder.serve.server import TierServer

    log = EventLog(opts.as_json)
    # Threads hand the GIL over every 5 ms by default: a message waiting in paho's thread while
    # the worker computes would wait that long. 0.5 ms keeps the queueing delay near the
    # batching delay (measured with bench/tiers.py).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    path = opts.target / "ladder.json" if opts.target.is_dir() else opts.target
    config = ladderconfig.load(path)
    stage = config.stage(opts.stage)
    if not stage.remote:
        raise TierError(f"stage {stage.name!r} runs on the board (where = edge): serve another")
    if not opts.mqtt and not opts.serial:
        raise TierError("nowhere to listen: pass --mqtt mqtt://HOST:PORT or --serial PORT")
    if opts.queue < 1 or opts.max_delay_ms < 0:
        raise TierError("--queue must be at least 1 and --max-delay-ms at least 0")
    model_path = path.parent / stage.tflite
    runner = BatchRunner.load(model_path, opts.max_batch)  # checks and warms every bucket
    if not runner.batched:
        log.emit("batching_off", f"note: {runner.note}", reason=runner.note)
    metrics = Metrics()
    server = TierServer(
        config, stage.name, runner, fleet=opts.fleet, tier_name=opts.tier_name,
        next_tier=opts.next_tier, max_batch=opts.max_batch, max_delay_ms=opts.max_delay_ms,
        queue=opts.queue, allow_unknown=opts.allow_unknown, metrics=metrics, log=log,
    )  # fmt: skip
    stop = stop or threading.Event()
    restore = _on_signals(stop)
    http = mqtt = serial = reloader = None
    served = False
    try:
        if opts.http:
            http = HttpServer(opts.http_host, opts.http, server.ready, metrics).start()
        server.start()  # before any link: a request that arrives finds the worker running
        if opts.serial:
            serial = server.serial = SerialLink(
                opts.serial, server.on_serial, baudrate=opts.baud,
                on_drop=server.on_frame_dropped,
            ).start()  # fmt: skip
        if opts.mqtt:
            status = server.status_topic()
            mqtt = server.mqtt = MqttLink(
                opts.mqtt, f"edgeladder-{server.tier_name}-{os.getpid()}",
                on_message=server.on_mqtt, subscriptions=server.mqtt_subscriptions(),
                will=(status, b"offline"), birth=(status, b"online"),
                on_state=lambda up: log.emit(
                    "broker", f"broker {'connected' if up else 'lost; reconnecting'}", up=up
                ),
            )  # fmt: skip
            mqtt.start(opts.connect_timeout)
        if opts.reload_interval > 0:
            reloader = Reloader(
                model_path, server.reload_model, server.reload_failed,
                interval=opts.reload_interval,
            ).start()  # fmt: skip
        _ready(log, opts, server, runner, model_path, http)
        served = True
        while not stop.wait(0.5):
            if serial is not None and not serial.open:
                raise TierError(f"serial port {opts.serial} closed")
    finally:
        restore()
        if served:
            log.emit("stopping", "stopping: refusing new requests, finishing queued ones")
        if reloader is not None:
            reloader.stop()
        server.stop()
        if mqtt is not None:
            mqtt.stop(final=(server.status_topic(), b"offline"))
        if serial is not None:
            serial.stop()
        if http is not None:
            http.stop()
        if served:
            counts = {k: int(metrics.value(k)) for k in ("answered", "forwarded")}
            log.emit("stopped", f"stopped ({counts['answered']} answered, "
                     f"{counts['forwarded']} forwarded)", **counts)  # fmt: skip
    return 0


def _ready(log, opts: ServeOptions, server, runner, model_path: Path, http) -> None:
    where = ", ".join(
        w for w in (opts.mqtt and f"{opts.mqtt} (fleet {opts.fleet})", opts.serial) if w
    )
    batching = (
        f"batches of up to {opts.max_batch} within {opts.max_delay_ms:g} ms"
        if runner.batched
        else "one sample per invoke"
    )
    chain = f", forwards to {server.next_tier}" if server.next_tier and opts.mqtt else ""
    log.emit(
        "ready",
        f"ready: stage {server.stage.name} as {server.tier_name} on {where}{chain}; "
        f"{batching}, queue {opts.queue}"
        + (f"; health and metrics on {http.url}" if http else ""),
        stage=server.stage.name, tier=server.tier_name, mqtt=opts.mqtt, serial=opts.serial,
        fleet=opts.fleet, http=http.url if http else None, model=str(model_path),
        sha256=runner.sha256, batched=runner.batched, max_batch=opts.max_batch,
        max_delay_ms=opts.max_delay_ms, queue=opts.queue, next_tier=server.next_tier,
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


@click.command("serve")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--stage", required=True, help="The ladder.json stage to serve (e.g. medium).")
@click.option("--mqtt", "mqtt_url", metavar="URL", help="Broker, mqtt://host:port.")
@click.option("--serial", "serial_port", metavar="PORT", help="A board's serial port (or pty).")
@click.option("--baud", default=115200, show_default=True, help="Serial speed.")
@click.option("--fleet", default="demo", show_default=True, help="MQTT topic tree: el/<fleet>/.")
@click.option("--tier-name", help="This tier's name in topics (default: the stage's where).")
@click.option("--next-tier", help="The next stage's tier name (default: its where).")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(1, 32))
@click.option("--max-delay-ms", default=1.0, show_default=True, help="Batch gathering time.")
@click.option("--queue", default=64, show_default=True, help="Requests waiting at most.")
@click.option("--http", "http_port", default=8080, show_default=True, help="0 turns HTTP off.")
@click.option("--http-host", default="127.0.0.1", show_default=True)
@click.option("--allow-unknown", is_flag=True, help="Serve devices that never said HELLO.")
@click.option("--connect-timeout", default=10.0, show_default=True, help="Seconds.")
@click.option("--reload-interval", default=0.5, show_default=True, help="0 turns reload off.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event on stdout.")
def serve(
    target: Path, stage: str, mqtt_url: str | None, serial_port: str | None, baud: int,
    fleet: str, tier_name: str | None, next_tier: str | None, max_batch: int,
    max_delay_ms: float, queue: int, http_port: int, http_host: str, allow_unknown: bool,
    connect_timeout: float, reload_interval: float, as_json: bool,
) -> int:  # fmt: skip
    """Serve one remote STAGE of TARGET's ladder (a build folder or its ladder.json).

    Escalations arrive over MQTT (from boards, or chained from the tier below) or from a
    board on a serial port; answers go back to the board, or up to the next tier when this
    one is unsure. Health and Prometheus metrics over HTTP; the model reloads when its file
    changes.
    """
    return run(
        ServeOptions(
            target=target, stage=stage, mqtt=mqtt_url, serial=serial_port, baud=baud,
            fleet=fleet, tier_name=tier_name, next_tier=next_tier, max_batch=max_batch,
            max_delay_ms=max_delay_ms, queue=queue, http=http_port, http_host=http_host,
            allow_unknown=allow_unknown, connect_timeout=connect_timeout,
            reload_interval=reload_interval, as_json=as_json,
        )
    )  # fmt: skip
