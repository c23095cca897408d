"""A host's MQTT 3.1.1 session (paho-mqtt 2.x) for a tier: subscribe, publish, stay connected.

paho's network thread does the work: it connects, retries with ``reconnect_delay_set`` back-off
when the broker goes away, and calls ``on_message(topic, payload)`` for every message. On each
(re)connect this wrapper subscribes again (clean sessions keep nothing) and republishes the
*birth* message: a retained ``online`` must replace the ``offline`` that the broker published
as our last will while we were away.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Sequence
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from edgeladder.serve.links import LinkError

DEFAULT_PORT = 1883
_RECONNECT_MIN_S = 0.5
_RECONNECT_MAX_S = 5
_INFLIGHT = 256  # QoS 1 results in flight at once; paho's default (20) throttles a busy tier


def parse_url(url: str) -> tuple[str, int]:
    """``mqtt://host[:port]`` -> (host, port)."""
    u = urlparse(url)
    if u.scheme != "mqtt" or not u.hostname:
        raise LinkError(f"broker URL {url!r}: use mqtt://host:port")
    try:
        port = u.port or DEFAULT_PORT
    except ValueError as e:
        raise LinkError(f"broker URL {url!r}: {e}") from e
    return u.hostname, port


def nodelay(client: mqtt.Client) -> None:
    """TCP_NODELAY on the client's socket: an MQTT message is one small segment, and Nagle
    would hold it back until the peer ACKs the previous one (~40 ms with delayed ACKs)."""
    sock = client.socket()
    if sock is not None and hasattr(sock, "setsockopt"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttLink:
    """``MqttLink(url, client_id, on_message=...)``; ``start()``, ``publish()``, ``stop()``."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        on_message: Callable[[str, bytes], None],
        subscriptions: Sequence[tuple[str, int]] = (),
        will: tuple[str, bytes] | None = None,
        birth: tuple[str, bytes] | None = None,
        on_state: Callable[[bool], None] | None = None,
        keepalive: int = 30,
    ) -> None:
        self.url = url
        self.host, self.port = parse_url(url)
        self.on_message = on_message
        self.on_state = on_state
        self.keepalive = keepalive
        self.birth = birth
        self._subs: list[tuple[str, int]] = list(subscriptions)
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self.connects = 0
        self.callback_errors = 0  # exceptions out of on_message (paho would stop its thread)
        c = self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if will is not None:
            # retained QoS 1: whoever subscribes later still learns that we died
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.reconnect_delay_set(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
        c.max_inflight_messages_set(_INFLIGHT)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self, timeout: float = 10.0) -> MqttLink:
        """Connect (retrying for up to timeout seconds); LinkError if the broker never answers."""
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self._client.loop_start()  # its thread retries the first connection too
        if not self._connected.wait(timeout):
            self._client.loop_stop()
            raise LinkError(f"cannot reach the broker at {self.url}: start one or pass --mqtt")
        return self

    def subscribe(self, topic: str, qos: int = 0) -> None:
        """Add a subscription now and after every reconnect."""
        with self._lock:
            if (topic, qos) in self._subs:
                return
            self._subs.append((topic, qos))
        if self.connected:
            self._client.subscribe(topic, qos)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Queue a message (paho sends it, and resends QoS 1 after a reconnect)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def stop(self, final: tuple[str, bytes] | None = None, timeout: float = 2.0) -> None:
        """Publish ``final`` (retained, QoS 1) if connected, then disconnect cleanly."""
        self.on_state = None  # this disconnect is ours: no "lost" report
        if final is not None and self.connected:
            info = self._client.publish(final[0], final[1], qos=1, retain=True)
            # if the connection goes meanwhile, the broker publishes our will instead
            with contextlib.suppress(ValueError, RuntimeError):
                info.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    # paho callbacks (its network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        nodelay(client)
        with self._lock:
            subs = list(self._subs)
        if subs:
            client.subscribe(subs)
        if self.birth is not None:
            client.publish(self.birth[0], self.birth[1], qos=1, retain=True)
        self.connects += 1
        self._connected.set()
        if self.on_state is not None:
            self.on_state(True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if self.on_state is not None:
            self.on_state(False)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            self.on_message(msg.topic, msg.payload)
        except Exception:  # an exception here would end paho's network thread: count it
            self.callback_errors += 1
