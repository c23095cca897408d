"""Watches the demo's MQTT traffic: escalation sizes on the wire and the tiers' status.

A plain MQTT client subscribed to the fleet's whole tree (``el/<fleet>/#``): what it counts is
what really crossed the broker, not what the code meant to send.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

from edgeladder.errors import EdgeladderError
from ladder import topics, wire

_HEAP_KINDS = (topics.KIND[wire.HELLO], topics.KIND[wire.HEARTBEAT])  # they carry free heap


class MonitorError(EdgeladderError):
    """The demo's monitor could not reach the broker."""


@dataclass
class Traffic:
    escalations: list[tuple[float, int, int]] = field(default_factory=list)  # (t, device, bytes)
    escalation_packets: list[int] = field(default_factory=list)  # whole MQTT PUBLISH sizes
    results: int = 0
    rejects: int = 0
    status: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # tier -> events
    heap_free: dict[int, int] = field(default_factory=dict)  # device -> lowest reported
    bad: int = 0  # device messages that did not decode, topics that ladder.topics refuses


class Monitor:
    """``Monitor(url, fleet)``: start(), then read ``traffic``; ``wait_status(tier, "online")``."""

    def __init__(self, url: str, fleet: str) -> None:
        import paho.mqtt.client as mqtt

        u = urlparse(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 1883
        self.fleet = fleet
        self.traffic = Traffic()
        self._lock = threading.Condition()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgeladder-demo-monitor-{id(self):x}"
        )
        self._client.on_message = self._on_message
        self._client.on_connect = self._on_connect

    def start(self, timeout: float = 10.0) -> Monitor:
        try:
            self._client.connect(self.host, self.port, keepalive=30)
        except OSError as e:
            raise MonitorError(f"cannot reach the broker at {self.host}:{self.port} ({e})") from e
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        client.subscribe(topics.fleet_filter(self.fleet), qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        now = time.monotonic()
        with self._lock:
            t = self.traffic
            try:
                _, tree, who, leaf, kind = topics.parse(msg.topic)
            except ValueError:  # not a topic of the tree (an id in another spelling, ...)
                t.bad += 1
                self._lock.notify_all()
                return
            if tree == topics.TIER:
                if leaf == topics.STATUS:
                    text = msg.payload.decode(errors="replace")
                    t.status.setdefault(who, []).append((now, text))
            elif leaf == topics.UP and kind == topics.KIND[wire.ESCALATE]:
                t.escalations.append((now, who, len(msg.payload)))
                # fixed header (2) + topic length (2) + topic + payload; QoS 0: no packet id
                t.escalation_packets.append(2 + 2 + len(msg.topic) + len(msg.payload))
            elif leaf == topics.UP and kind in _HEAP_KINDS:
                self._heap(who, msg.payload)
            elif leaf == topics.DOWN and kind == topics.KIND[wire.RESULT]:
                t.results += 1
            elif leaf == topics.DOWN and kind == topics.KIND[wire.REJECT]:
                t.rejects += 1
            self._lock.notify_all()

    def _heap(self, device: int, payload: bytes) -> None:
        # HELLO and HEARTBEAT carry the board's free heap: the lowest one seen is the figure.
        try:
            mtype = wire.header(payload)[0]
            fields = (wire.unpack_hello if mtype == wire.HELLO else wire.unpack_heartbeat)(payload)
        except ValueError:
            self.traffic.bad += 1
            return
        free = fields[5] if mtype == wire.HELLO else fields[1]
        known = self.traffic.heap_free.get(device)
        self.traffic.heap_free[device] = free if known is None else min(known, free)

    def status(self, tier: str) -> str | None:
        with self._lock:
            events = self.traffic.status.get(tier)
            return events[-1][1] if events else None

    def wait_status(self, tier: str, value: str, timeout: float, *, since: float = 0.0) -> float:
        """Wait until ``tier`` reports ``value`` at or after ``since``; when it did."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for t, v in self.traffic.status.get(tier, []):
                    if v == value and t >= since:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MonitorError(f"tier {tier!r} did not report {value!r} in {timeout:.0f} s")
                self._lock.wait(left)
