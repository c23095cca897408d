"""A tier's MQTT link: :class:`MqttLink` (what the stage core talks to) over
:class:`MqttSession` (paho-mqtt 2.x, MQTT 3.1.1: subscribe, publish, stay connected).

The link reads and builds every topic with ``ladder.topics`` (the board's own module): boards'
``up/`` messages and the tier below's chained escalations in, replies on the board's ``down/``,
chained escalations to the next tier's ``in``, this tier's retained ``status`` (``online``;
``offline`` as its last will). A topic that ``ladder.topics.parse`` refuses (a device id in any
spelling but 8 lower-case hex digits) is dropped as ``topic_mismatch``, never served.

paho's network thread does the work: it connects, retries with ``reconnect_delay_set`` back-off
when the broker goes away, and calls ``on_message(topic, payload)`` for every message. On each
(re)connect this wrapper subscribes again (clean sessions keep nothing) and republishes the
*birth* message: a retained ``online`` must replace the ``offline`` that the broker published
as our last will while we were away.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from edgeladder.serve.links import LinkError
from ladder import topics, wire

if TYPE_CHECKING:
    from edgeladder.serve.stage import StageCore

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


class MqttSession:
    """``MqttSession(url, client_id, on_message=...)``; ``start()``, ``publish()``, ``stop()``."""

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

    def start(self, timeout: float = 10.0) -> MqttSession:
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


_ONLINE, _OFFLINE = topics.ONLINE.encode(), topics.OFFLINE.encode()
_EXPECT = {kind: mtype for mtype, kind in topics.KIND.items()}  # up/<kind> -> its wire type


class MqttLink:
    """The stage core's MQTT link: ``MqttLink(core, url, fleet=...)``, attached, then started.

    ``serve_devices``: boards and the tier below reach this tier over MQTT (the default). False
    when its boards are on another link (serial): then MQTT only chains (the next tier's status,
    forwarding, the next tier's replies relayed to the boards). ``session``: the paho session,
    made by ``start()``; a test may put a recorder with ``publish()`` and ``connected`` there."""

    kind = "mqtt"
    direct = False
    chains = True

    def __init__(
        self,
        core: StageCore,
        url: str | None = None,
        *,
        fleet: str = "demo",
        tier_name: str | None = None,
        next_tier: str | None = None,
        serve_devices: bool = True,
        connect_timeout: float = 10.0,
        session: Any = None,
    ) -> None:
        self.core = core
        self.url = url
        self.fleet = fleet
        self.tier_name = tier_name or core.stage.where
        self.next_tier = next_tier or (core.next.where if core.next else None)
        self.serve_devices = serve_devices
        self.connect_timeout = connect_timeout
        self.session = session
        self.next_online = False  # the next tier's retained status says "online"

    @classmethod
    def from_options(cls, core: StageCore, opts: Any) -> MqttLink:
        return cls(
            core, opts.mqtt, fleet=opts.fleet, tier_name=opts.tier_name, next_tier=opts.next_tier,
            serve_devices=not opts.serial, connect_timeout=opts.connect_timeout,
        )  # fmt: skip

    # ---- the TierLink interface ------------------------------------------------------------
    @property
    def up(self) -> bool:
        return self.session is not None and self.session.connected

    def tier_online(self) -> bool:
        return self.next_online

    def start(self) -> MqttLink:
        if self.session is None:
            status = self.status_topic()
            log = self.core.log
            self.session = MqttSession(
                self.url, f"edgeladder-{self.tier_name}-{os.getpid()}",
                on_message=self.on_message, subscriptions=self.subscriptions(),
                will=(status, _OFFLINE), birth=(status, _ONLINE),
                on_state=lambda up: log.emit(
                    "broker", f"broker {'connected' if up else 'lost; reconnecting'}", up=up
                ),
            )  # fmt: skip
        self.session.start(self.connect_timeout)
        return self

    def send(self, device: int, mtype: int, msg: bytes) -> bool:
        """A reply on the board's ``down/res|rej``, QoS 1."""
        topic = topics.device_topic(self.fleet, device, topics.DOWN, topics.KIND[mtype])
        return self.session.publish(topic, msg, qos=1)

    def forward(self, msg: bytes) -> bool:
        if not self.next_tier:
            return False
        return self.session.publish(topics.tier_topic(self.fleet, self.next_tier, topics.IN), msg)

    def announce(self, device: int, mtype: int, msg: bytes) -> None:
        """A serial board's HELLO (retained, QoS 1) or HEARTBEAT, published as it would."""
        retained = mtype == wire.HELLO
        topic = topics.device_topic(self.fleet, device, topics.UP, topics.KIND[mtype])
        self.session.publish(topic, msg, qos=1 if retained else 0, retain=retained)

    def lost(self) -> str | None:
        return None  # paho reconnects for as long as it takes

    def close(self) -> None:
        if isinstance(self.session, MqttSession):
            self.session.stop(final=(self.status_topic(), _OFFLINE))

    # ---- topics ----------------------------------------------------------------------------
    def status_topic(self) -> str:
        return topics.tier_topic(self.fleet, self.tier_name, topics.STATUS)

    def subscriptions(self) -> list[tuple[str, int]]:
        """What to subscribe to. With boards on another link, MQTT only chains: the next tier's
        status, and the down/ topics to relay the next tier's replies to those boards."""
        f = self.fleet
        subs: list[tuple[str, int]] = []
        if self.next_tier:
            subs.append((topics.tier_topic(f, self.next_tier, topics.STATUS), 1))
        if not self.serve_devices:
            return [*subs, (topics.device_filter(f, topics.DOWN), 1)]
        subs += [
            (topics.tier_topic(f, self.tier_name, topics.IN), 0),
            (topics.device_filter(f, topics.UP, topics.KIND[wire.HELLO]), 1),
            (topics.device_filter(f, topics.UP, topics.KIND[wire.HEARTBEAT]), 0),
        ]
        if self.core.first_remote:
            subs.append((topics.device_filter(f, topics.UP, topics.KIND[wire.ESCALATE]), 0))
        return subs

    def on_message(self, topic: str, payload: bytes) -> None:
        """Every MQTT message (paho's thread). Never raises."""
        try:
            self._route(topic, payload)
        except Exception as e:  # a bug must not take the tier down: count, log once, go on
            self.core.drop("malformed", f"{type(e).__name__}: {e}")

    def _route(self, topic: str, payload: bytes) -> None:
        core = self.core
        try:
            fleet, tree, who, leaf, kind = topics.parse(topic)
        except ValueError as e:
            core.drop("topic_mismatch", str(e))
            return
        if fleet != self.fleet:
            return
        if tree == topics.TIER:
            if who == self.next_tier and leaf == topics.STATUS:
                self.next_online = payload == _ONLINE
            elif who == self.tier_name and leaf == topics.IN:
                core.on_chained(payload, self)
        elif leaf == topics.DOWN:
            core.on_relay(who, payload)
        elif kind == topics.KIND[wire.HELLO] and not payload:
            core.forget(who)  # an empty retained HELLO clears a device
        else:
            core.on_device(payload, self, device=who, expect=_EXPECT.get(kind, -1))
