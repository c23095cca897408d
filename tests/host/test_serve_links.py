"""The host links of a tier (serve.links) and the stage core's transport-free routing, with
fakes: a recording core, a recording paho session, a fake serial port, a runner that answers
without LiteRT. No broker, no model: the real broker and model paths are
tests/sim/test_serve_mqtt.py, tests/sim/test_serve_serial.py and tests/host/test_tiers_server.py.
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest
from wire_corpus import BAD_ID_SPELLINGS

from edgeladder.policy import config as lc
from edgeladder.serve.links import LINKS, LinkError, link_class
from edgeladder.serve.links.mqtt import MqttLink
from edgeladder.serve.links.serial import SerialLink
from edgeladder.serve.stage import StageCore
from edgeladder_sim.fixtures.ladder import escalate_bytes
from ladder import framing, topics, wire

FLEET = "f9"
VERSION = 0x0BADCAFE


def _ladder(medium_threshold: int = 0) -> lc.LadderConfig:
    def stage(name, where, threshold, **kw):
        lut = lc.exp_lut(0.1, 1.0)
        return lc.Stage(name, where, "margin", threshold, 1.0, lut, 50, **kw)

    return lc.LadderConfig(
        task="t", model_version=VERSION, classes=4, deadline_ms=300, input_scale=0.1,
        input_zero_point=0, stages=[
            stage("tiny", "edge", 40000, model="tiny.ldr"),
            stage("medium", "gateway", medium_threshold, tflite="m.tflite", expected_rtt_ms=20),
            stage("large", "cloud", 0, tflite="l.tflite", expected_rtt_ms=30),
        ],
    )  # fmt: skip


class Runner:
    """Answers label (first input byte % 4), as a BatchRunner would; its logits leave a margin
    of about 0.6 (lut 0.1: the top logit 20 codes, 2.0, above the rest)."""

    classes = 4
    batched = True
    input_bytes = 4
    input_shape = (4,)
    max_batch = 8
    sha256 = "0" * 64

    def run(self, x):
        outs = np.full((len(x), 4), -100, np.int8)
        for i, row in enumerate(x):
            outs[i, int(row[0]) % 4] = 100
        return outs, outs // 10


class Session:
    """What paho would be: records publishes; ``connected`` as a test sets it."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []
        self.cond = threading.Condition()

    def publish(self, topic, payload, qos=0, retain=False) -> bool:
        with self.cond:
            self.sent.append((topic, bytes(payload), qos, retain))
            self.cond.notify_all()
        return self.connected

    def wait(self, n: int) -> list[tuple[str, bytes, int, bool]]:
        end = time.monotonic() + 5
        with self.cond:
            while len(self.sent) < n:
                assert self.cond.wait(end - time.monotonic()), self.sent
            return list(self.sent)


class Core:
    """Records what a link hands to the stage core."""

    def __init__(self, first_remote: bool = True) -> None:
        cfg = _ladder()
        self.stage, self.next, self.first_remote = cfg.stages[1], cfg.stages[2], first_remote
        self.calls: list[tuple] = []
        self.log = None

    def __getattr__(self, name):
        return lambda *a, **kw: self.calls.append((name, *a, *sorted(kw.items())))


def _hello(device: int) -> bytes:
    buf = bytearray(64)
    return bytes(buf[: wire.pack_hello(buf, device, 1, VERSION, (0, 1, 0), 3, 1000)])


# ---- MqttLink: topics in -------------------------------------------------------------------
def test_mqtt_link_routes_each_topic_to_the_core():
    core = Core()
    link = MqttLink(core, fleet=FLEET, session=Session())
    esc = escalate_bytes(7, 1, b"\x01\x02\x03\x04", VERSION)
    link.on_message(topics.device_topic(FLEET, 7, topics.UP, "esc"), esc)
    link.on_message(topics.device_topic(FLEET, 7, topics.UP, "hello"), b"")
    link.on_message(topics.device_topic(FLEET, 7, topics.UP, "nonsense"), esc)
    link.on_message(topics.device_topic(FLEET, 7, topics.DOWN, "res"), b"r")
    link.on_message(topics.tier_topic(FLEET, "gateway", topics.IN), esc)
    link.on_message(topics.tier_topic(FLEET, "other", topics.IN), esc)  # not ours: ignored
    link.on_message(topics.device_topic("other-fleet", 7, topics.UP, "esc"), esc)  # ignored
    assert core.calls == [
        ("on_device", esc, link, ("device", 7), ("expect", wire.ESCALATE)),
        ("forget", 7),
        ("on_device", esc, link, ("device", 7), ("expect", -1)),
        ("on_relay", 7, b"r"),
        ("on_chained", esc, link),
    ]
    assert not link.tier_online()
    link.on_message(topics.tier_topic(FLEET, "cloud", topics.STATUS), b"online")
    assert link.tier_online()
    link.on_message(topics.tier_topic(FLEET, "cloud", topics.STATUS), b"offline")
    assert not link.tier_online()


@pytest.mark.parametrize("level", BAD_ID_SPELLINGS)
def test_mqtt_link_drops_every_other_spelling_of_a_device_id(level):
    core = Core()
    link = MqttLink(core, fleet=FLEET, session=Session())
    topic = topics.device_topic(FLEET, 1, topics.UP, "esc").replace("00000001", level)
    link.on_message(topic, escalate_bytes(1, 1, b"\x00" * 4, VERSION))
    assert [c[:2] for c in core.calls] == [("drop", "topic_mismatch")]


def test_mqtt_link_never_raises_into_paho():
    class Broken(Core):
        def on_device(self, *a, **kw):
            raise RuntimeError("a bug")

    core = Broken()
    link = MqttLink(core, fleet=FLEET, session=Session())
    link.on_message(topics.device_topic(FLEET, 2, topics.UP, "hb"), b"x")
    assert core.calls == [("drop", "malformed", "RuntimeError: a bug")]


def test_mqtt_link_subscriptions_in_each_role():
    core = Core()
    serving = MqttLink(core, fleet=FLEET, session=Session()).subscriptions()
    assert serving == [
        (topics.tier_topic(FLEET, "cloud", topics.STATUS), 1),
        (topics.tier_topic(FLEET, "gateway", topics.IN), 0),
        (topics.device_filter(FLEET, topics.UP, "hello"), 1),
        (topics.device_filter(FLEET, topics.UP, "hb"), 0),
        (topics.device_filter(FLEET, topics.UP, "esc"), 0),
    ]
    later = MqttLink(Core(first_remote=False), fleet=FLEET, tier_name="gw2", next_tier="sky")
    assert [t for t, _ in later.subscriptions()] == [
        topics.tier_topic(FLEET, "sky", topics.STATUS),
        topics.tier_topic(FLEET, "gw2", topics.IN),
        topics.device_filter(FLEET, topics.UP, "hello"),
        topics.device_filter(FLEET, topics.UP, "hb"),
    ]  # not the boards' escalations: they go to the first remote tier
    relay = MqttLink(core, fleet=FLEET, serve_devices=False).subscriptions()
    assert relay == [
        (topics.tier_topic(FLEET, "cloud", topics.STATUS), 1),
        (topics.device_filter(FLEET, topics.DOWN), 1),
    ]


# ---- MqttLink: topics out ------------------------------------------------------------------
def test_mqtt_link_publishes_where_the_tree_says():
    s = Session()
    link = MqttLink(Core(), fleet=FLEET, session=s)
    assert link.up
    assert link.send(0xAB, wire.RESULT, b"res") and link.send(0xAB, wire.REJECT, b"rej")
    assert link.forward(b"esc")
    link.announce(0xAB, wire.HELLO, b"hi")
    link.announce(0xAB, wire.HEARTBEAT, b"hb")
    assert s.sent == [
        (topics.device_topic(FLEET, 0xAB, topics.DOWN, "res"), b"res", 1, False),
        (topics.device_topic(FLEET, 0xAB, topics.DOWN, "rej"), b"rej", 1, False),
        (topics.tier_topic(FLEET, "cloud", topics.IN), b"esc", 0, False),
        (topics.device_topic(FLEET, 0xAB, topics.UP, "hello"), b"hi", 1, True),
        (topics.device_topic(FLEET, 0xAB, topics.UP, "hb"), b"hb", 0, False),
    ]
    s.connected = False
    assert not link.up and not link.send(1, wire.RESULT, b"x")
    assert link.status_topic() == topics.tier_topic(FLEET, "gateway", topics.STATUS)


# ---- SerialLink ----------------------------------------------------------------------------
class Port:
    """pyserial's side of SerialPort.send: collects what is written."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data) -> int:
        self.written += bytes(data)
        return len(data)


def test_serial_link_frames_replies_and_hands_frames_and_drops_to_the_core():
    core = Core()
    link = SerialLink(core, "/dev/null-board")
    link.port._serial = Port()
    msg = escalate_bytes(3, 9, b"\x03\xc0\xdb\x01", VERSION)  # bytes the framing must escape
    assert link.send(3, wire.RESULT, msg)
    got = []
    dec = framing.Decoder(wire.MAX_MESSAGE)
    raw = link.port._serial.written
    dec.feed(raw, len(raw), lambda b, n: got.append(bytes(b[:n])))
    assert got == [msg] and 0x03 not in raw
    link.port._deliver(bytearray(msg), len(msg))  # what the reader thread does per frame
    link.on_drop("bad_crc")
    assert core.calls == [
        ("on_device", msg, link),
        ("drop", "frame_bad_crc", "serial frame dropped by the framing"),
    ]
    assert link.up and not link.tier_online() and not link.forward(msg)
    assert link.lost() == "serial port /dev/null-board closed"  # never started


def test_links_registry():
    assert list(LINKS) == ["serial", "mqtt"]
    assert link_class("mqtt") is MqttLink and link_class("serial") is SerialLink
    with pytest.raises(LinkError, match="no link 'carrier-pigeon'"):
        link_class("carrier-pigeon")


# ---- StageCore with fake links -------------------------------------------------------------
class Wire:
    """A fake link: records sends; direct (serial-like) or chaining (MQTT-like)."""

    def __init__(self, kind: str, *, online: bool = True) -> None:
        self.kind = kind
        self.direct, self.chains = kind == "serial", kind == "mqtt"
        self.up = True
        self.online = online
        self.sent: list[tuple] = []
        self.cond = threading.Condition()

    def tier_online(self) -> bool:
        return self.online

    def _record(self, *item) -> bool:
        with self.cond:
            self.sent.append(item)
            self.cond.notify_all()
        return True

    def send(self, device, mtype, msg) -> bool:
        return self._record("send", device, mtype, msg)

    def forward(self, msg) -> bool:
        return self._record("forward", msg)

    def announce(self, device, mtype, msg) -> None:
        self._record("announce", device, mtype, msg)

    def wait(self, n: int) -> list[tuple]:
        end = time.monotonic() + 5
        with self.cond:
            while len(self.sent) < n:
                assert self.cond.wait(end - time.monotonic()), self.sent
            return list(self.sent)


@pytest.fixture
def core():
    """``core(threshold, stage)``: a StageCore over Runner, stopped at the end."""
    with contextlib.ExitStack() as cleanup:

        def make(threshold: int = 0, stage: str = "medium") -> StageCore:
            c = StageCore(_ladder(threshold), stage, Runner(), max_delay_ms=0)
            cleanup.callback(c.stop)
            return c

        yield make


def test_a_serial_board_is_announced_upstream_and_gets_the_next_tiers_replies(core):
    c = core()
    serial, mqtt = Wire("serial"), Wire("mqtt")
    c.attach(serial)
    assert c.attach(mqtt) is c.upstream
    c.start()
    c.on_device(_hello(5), serial)
    assert mqtt.sent == [("announce", 5, wire.HELLO, _hello(5))]
    reply = bytearray(wire.HEADER_SIZE + wire.RESULT_SIZE)
    wire.pack_result(reply, 5, 1, 1, VERSION, 2, 1000, wire.CLOUD, 2)
    c.on_relay(5, bytes(reply))
    c.on_relay(6, bytes(reply))  # not a board of ours
    c.on_relay(5, b"junk")
    assert serial.sent == [("send", 5, wire.RESULT, bytes(reply))]


def test_a_direct_board_is_served_by_a_later_stage_too(core):
    c = core(stage="large")  # not the first remote stage: boards on MQTT do not reach it
    serial, mqtt = Wire("serial"), Wire("mqtt")
    c.attach(serial)
    c.attach(mqtt)
    c.start()
    c.on_device(_hello(8), mqtt)
    c.on_device(escalate_bytes(8, 1, b"\x02\x00\x00\x00", VERSION), mqtt)
    assert c.metrics.value("dropped_unexpected") == 1
    c.on_device(_hello(8), serial)
    c.on_device(escalate_bytes(8, 2, b"\x02\x00\x00\x00", VERSION), serial)
    (_, device, mtype, msg), *_ = serial.wait(1)
    assert (device, mtype) == (8, wire.RESULT)
    assert wire.unpack_result(msg)[:3] == (2, VERSION, 2)  # ref 2, label 2


def test_unsure_requests_climb_only_when_should_escalate_says_so(core):
    c = core(threshold=65536)  # never sure
    mqtt = Wire("mqtt", online=False)
    c.attach(mqtt)
    c.start()
    c.on_device(_hello(4), mqtt)
    c.on_device(escalate_bytes(4, 1, b"\x01\x00\x00\x00", VERSION), mqtt)
    assert mqtt.wait(1)[0][:3] == ("send", 4, wire.RESULT)  # the next tier is offline
    mqtt.online = True
    c.on_device(escalate_bytes(4, 2, b"\x01\x00\x00\x00", VERSION, deadline_ms=30), mqtt)
    assert mqtt.wait(2)[1][:3] == ("send", 4, wire.RESULT)  # 30 ms left: the cloud needs 30
    c.on_device(escalate_bytes(4, 3, b"\x01\x00\x00\x00", VERSION, deadline_ms=300), mqtt)
    kind, msg = mqtt.wait(3)[2]
    assert kind == "forward"
    version, left, _, stage, k, n, at_topk, at = wire.unpack_escalate(msg)
    assert (version, stage, k, n, wire.header(msg)[1:]) == (VERSION, 2, 2, 4, (4, 3))
    assert 270 < left <= 300
    # top-k as the board packs it: label 1 (int8 100 -> 228), then label 0 (-100 -> 28)
    assert msg[at_topk:at] == bytes([1, 228, 0, 28])
    assert c.metrics.value("forwarded") == 1
