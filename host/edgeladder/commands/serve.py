"""`edgeladder serve BUILD --stage medium (--mqtt URL | --serial PORT)`: run a host tier.

The command parses; :func:`edgeladder.serve.app.create` assembles the tier (runner, stage core,
links, HTTP, reload) and its ``run()`` serves until SIGTERM or SIGINT, then stops cleanly.
"""

from __future__ import annotations

import threading
from pathlib import Path

import click


def run(opts, stop: threading.Event | None = None) -> int:
    """Serve ``opts`` (a :class:`edgeladder.serve.app.ServeOptions`) until ``stop`` is set."""
    from edgeladder.serve import app

    return app.create(opts).run(stop)


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
    from edgeladder.serve.app import ServeOptions

    return run(
        ServeOptions(
            target=target, stage=stage, mqtt=mqtt_url, serial=serial_port, baud=baud,
            fleet=fleet, tier_name=tier_name, next_tier=next_tier, max_batch=max_batch,
            max_delay_ms=max_delay_ms, queue=queue, http=http_port, http_host=http_host,
            allow_unknown=allow_unknown, connect_timeout=connect_timeout,
            reload_interval=reload_interval, as_json=as_json,
        )
    )  # fmt: skip
