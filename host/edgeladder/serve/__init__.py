"""Host tiers: ``edgeladder serve`` runs one remote stage of the ladder (gateway or cloud).

An int8 ``.tflite`` under LiteRT (no TensorFlow on a Pi), fed with escalations over MQTT or a
serial port, answered in dynamic micro-batches (docs/serving.md). One job per module:

``app``      ``ServeOptions``, ``create(opts)`` and ``ServeApp.run()``: the assembled tier
``stage``    the stage core, transport-free: check, queue, answer or forward, reply to a sink
``links``    one link per transport (``mqtt``, ``serial``) behind one ``TierLink`` interface
``runner``   the model: batch-capable copy of the .tflite, one interpreter per batch bucket
``batcher``  a bounded queue and a worker that forms micro-batches
``metrics``  the Prometheus registry of one tier
``http``     ``/v2/health/live``, ``/v2/health/ready``, ``/metrics``
``reload``   watch the model file and swap in a new runner between batches
``process``  ``edgeladder serve`` as a child process (the demo, the tests, the bench)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

from edgeladder.errors import EdgeladderError


class TierError(EdgeladderError):
    """A tier cannot start or serve: bad stage, model, port or broker."""


class EventLog:
    """What a tier tells its operator: one JSON object per line (``--json``) or short text.

    Events are rare (start, ready, reload, connection changes, stop): per-request outcomes go to
    /metrics, so that a flood of bad input cannot flood the log too.
    """

    def __init__(self, as_json: bool = False, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def emit(self, event: str, text: str = "", **fields: Any) -> None:
        if self.as_json:
            line = json.dumps({"event": event, "t": round(time.time(), 3), **fields})
        else:
            line = f"serve: {text or event}"
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


__all__ = ["EventLog", "TierError"]
