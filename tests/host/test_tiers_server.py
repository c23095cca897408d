"""The stage core (serve.stage) behind its MQTT link, on the real digits tiers, in-process:
answers are LiteRT's argmax with the board's gate confidence; unsure answers climb to the next
tier (and the cloud answers them); every kind of bad input is counted by reason and dropped,
never a crash, and a device id in any spelling but its one is never served; queue, deadline,
shutdown, hot reload, health and metrics.

The MQTT link's paho session is replaced by a recorder of what the tier publishes (the real
broker path is tests/sim/test_serve_mqtt.py); the link, the model, the gate, the topics and the
wire codec are the real ones.
"""

from __future__ import annotations

import random
import shutil
import struct
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from wire_corpus import BAD_ID_SPELLINGS

from edgeladder.errors import EdgeladderError
from edgeladder.model.litert import Int8Runner
from edgeladder.policy import config as ladderconfig
from edgeladder.serve.http import HttpServer
from edgeladder.serve.links.mqtt import MqttLink
from edgeladder.serve.reload import Reloader
from edgeladder.serve.runner import BatchRunner
from edgeladder.serve.stage import StageCore
from edgeladder_sim.fixtures.ladder import FLEET, digits_inputs, escalate_bytes, write_ladder
from edgeladder_sim.fixtures.ladder import tflite_path as tflite
from ladder import gate, topics, wire


class FakeMqtt:
    """Records what the tier publishes; always connected."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []
        self.cond = threading.Condition()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        with self.cond:
            self.sent.append((topic, bytes(payload), qos))
            self.cond.notify_all()
        return True

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes, int]]:
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.sent) < n:
                left = end - time.monotonic()
                assert left > 0, f"{len(self.sent)} of {n} messages published: {self.sent}"
                self.cond.wait(left)
            return list(self.sent)

    def on(self, suffix: str) -> list[bytes]:
        with self.cond:
            return [p for t, p, _ in self.sent if t.endswith(suffix)]


class Served:
    """A stage core behind a real MqttLink whose session is a FakeMqtt: ``on_mqtt`` is what
    paho would deliver, ``mqtt`` what the tier published; the rest is the core's."""

    def __init__(self, core: StageCore, **link) -> None:
        self.core = core
        self.link = core.attach(MqttLink(core, fleet=FLEET, session=FakeMqtt(), **link))
        self.mqtt = self.link.session

    def on_mqtt(self, topic: str, payload: bytes) -> None:
        self.link.on_message(topic, payload)

    def start(self) -> Served:
        self.core.start()
        return self

    def __getattr__(self, name: str):
        return getattr(self.core, name)


@pytest.fixture(scope="module")
def data(digits_build):
    x, y = digits_inputs(digits_build.out, 120)
    return digits_build.out, x, y


@pytest.fixture
def ladder(data, tmp_path):
    def make(**kw):
        return ladderconfig.load(write_ladder(data[0], tmp_path / "ladder", **kw))

    return make


@pytest.fixture
def make_server(data):
    made: list[Served] = []

    def make(cfg, stage="medium", *, runner=None, start=True, **kw) -> Served:
        runner = runner or BatchRunner.load(tflite(data[0], stage), kw.get("max_batch", 16))
        s = Served(StageCore(cfg, stage, runner, **kw))
        made.append(s)
        return s.start() if start else s

    yield make
    for s in made:
        s.stop()


def esc_topic(device: int) -> str:
    return topics.device_topic(FLEET, device, topics.UP, "esc")


def hello(server: Served, device: int) -> None:
    buf = bytearray(64)
    n = wire.pack_hello(buf, device, 1, server.config.model_version, (0, 1, 0), 3, 1000)
    server.on_mqtt(topics.device_topic(FLEET, device, topics.UP, "hello"), bytes(buf[:n]))


def result(payload: bytes):
    assert wire.header(payload)[0] == wire.RESULT
    return wire.unpack_result(payload)


def test_answers_are_litert_argmax_with_the_boards_gate_confidence(make_server, ladder, data):
    build, x, _ = data
    cfg = ladder(thresholds={"medium": 0})
    s = make_server(cfg, queue=len(x))
    hello(s, 7)
    for i in range(len(x)):
        s.on_mqtt(esc_topic(7), escalate_bytes(7, 100 + i, x[i].tobytes(), cfg.model_version))
    sent = s.mqtt.wait(len(x))
    single = Int8Runner.from_bytes(tflite(build, "medium").read_bytes())
    outs, logits = single.run_int8_logits(x)
    lut = cfg.stage("medium").exp_lut
    by_ref = {}
    for topic, payload, qos in sent:
        assert topic == f"el/{FLEET}/dev/00000007/down/res" and qos == 1
        assert wire.header(payload)[1] == 7
        by_ref[result(payload)[0]] = result(payload)
    for i in range(len(x)):
        _, version, label, conf, source, stage = by_ref[100 + i]
        want = gate.confidence(gate.MARGIN, logits[i].tolist(), 10, lut)
        assert label == int(np.argmax(outs[i]))
        assert conf == min(want, 65535)
        assert (version, source, stage) == (cfg.model_version, wire.GATEWAY, 1)
    assert s.metrics.value("answered") == len(x)
    assert s.metrics.registry.get_sample_value("edgeladder_batch_size_count") < len(x)


def test_unsure_answers_climb_to_the_next_tier_and_the_cloud_answers(make_server, ladder, data):
    build, x, _ = data
    medium = BatchRunner.load(tflite(build, "medium"))
    _, logits = medium.run(x)
    lut0 = ladder().stage("medium").exp_lut
    confs = [gate.confidence(gate.MARGIN, row, 10, lut0) for row in logits.tolist()]
    threshold = sorted(confs)[len(confs) // 3]  # about a third are under it
    cfg = ladder(thresholds={"medium": threshold}, rtt_ms={"large": 30})
    gw = make_server(cfg, runner=medium, queue=len(x))
    cloud = make_server(cfg, "large", queue=len(x))
    hello(gw, 9)
    hello(cloud, 9)
    gw.on_mqtt(topics.tier_topic(FLEET, "cloud", "status"), b"online")
    for i in range(len(x)):
        gw.on_mqtt(esc_topic(9), escalate_bytes(9, 1 + i, x[i].tobytes(), cfg.model_version))
    gw.mqtt.wait(len(x))
    unsure = {i for i in range(len(x)) if confs[i] < threshold}
    assert 0 < len(unsure) < len(x)
    forwarded = gw.mqtt.on("/tier/cloud/in")
    assert len(forwarded) == len(unsure) == gw.metrics.value("forwarded")
    assert gw.metrics.value("answered") == len(x) - len(unsure)
    for msg in forwarded:
        mtype, device, seq = wire.header(msg)
        version, left, conf, stage, _, n, _, at = wire.unpack_escalate(msg)
        i = seq - 1
        assert (mtype, device, i in unsure) == (wire.ESCALATE, 9, True)
        assert (version, stage, conf, n) == (cfg.model_version, 2, confs[i], 64)
        assert 30 < left <= 300
        assert msg[at : at + n] == x[i].tobytes()
        # the cloud answers it, straight to the board: same device, ref = the board's seq
        cloud.on_mqtt(topics.tier_topic(FLEET, "cloud", "in"), msg)
    answers = cloud.mqtt.wait(len(forwarded))
    large = Int8Runner.from_bytes(tflite(build, "large").read_bytes())
    want = large.run_int8(x).argmax(axis=1)
    refs = set()
    for topic, payload, _ in answers:
        assert topic == f"el/{FLEET}/dev/00000009/down/res"
        ref, _, label, _, source, stage = result(payload)
        assert (source, stage, label) == (wire.CLOUD, 2, want[ref - 1])
        refs.add(ref - 1)
    assert refs == unsure


def test_no_forward_when_the_next_tier_is_offline_or_too_far(make_server, ladder, data):
    _, x, _ = data
    cfg = ladder(thresholds={"medium": 65536}, rtt_ms={"large": 50})  # never sure: always climb
    s = make_server(cfg)
    hello(s, 3)
    s.on_mqtt(topics.tier_topic(FLEET, "cloud", "status"), b"offline")
    s.on_mqtt(esc_topic(3), escalate_bytes(3, 1, x[0].tobytes(), cfg.model_version))
    s.mqtt.wait(1)
    s.on_mqtt(topics.tier_topic(FLEET, "cloud", "status"), b"online")
    s.on_mqtt(esc_topic(3), escalate_bytes(3, 2, x[1].tobytes(), cfg.model_version))
    s.on_mqtt(
        esc_topic(3), escalate_bytes(3, 3, x[2].tobytes(), cfg.model_version, deadline_ms=40)
    )  # 40 ms left < the cloud's 50 ms round trip: answer here
    s.mqtt.wait(3)
    assert len(s.mqtt.on("/tier/cloud/in")) == 1
    assert wire.header(s.mqtt.on("/tier/cloud/in")[0])[2] == 2
    assert sorted(result(p)[0] for p in s.mqtt.on("/down/res")) == [1, 3]


def test_every_bad_input_is_counted_by_reason_and_dropped(make_server, ladder, data):
    _, x, _ = data
    cfg = ladder(thresholds={"medium": 0})
    s = make_server(cfg)
    mv = cfg.model_version
    good = x[0].tobytes()
    other = f"el/{FLEET}/dev/zz/up/esc"
    unknown, wrong, bad = wire.UNKNOWN_DEVICE, wire.WRONG_VERSION, wire.BAD_INPUT
    hello(s, 1)
    hello(s, 2)
    cases = [  # (outcome, topic, payload, reply reason or None)
        ("dropped_malformed", esc_topic(1), b"\x01\x03\x01", None),  # short
        ("dropped_malformed", esc_topic(1), escalate_bytes(1, 5, good, mv) + b"\x00", None),
        ("dropped_malformed", esc_topic(1), b"\x01\x03" + bytes(5000), None),  # oversized
        ("dropped_malformed", esc_topic(1), b"\x01\x77" + bytes(20), None),  # unknown type
        ("dropped_wire_version", esc_topic(1), b"\x02" + escalate_bytes(1, 6, good, mv)[1:], None),
        ("dropped_unexpected", esc_topic(1), _result_msg(1), None),  # a RESULT on up/esc
        ("dropped_topic_mismatch", esc_topic(2), escalate_bytes(1, 7, good, mv), None),
        ("dropped_topic_mismatch", other, escalate_bytes(1, 8, good, mv), None),
        ("dropped_unknown_device", esc_topic(99), escalate_bytes(99, 9, good, mv), unknown),
        ("dropped_wrong_version", esc_topic(1), escalate_bytes(1, 10, good, mv ^ 1), wrong),
        ("dropped_bad_input", esc_topic(1), escalate_bytes(1, 11, good[:63], mv), bad),
        ("dropped_bad_input", esc_topic(1), escalate_bytes(1, 12, good + good, mv), bad),
    ]  # fmt: skip
    for outcome, topic, payload, reason in cases:
        before = s.metrics.value(outcome)
        n_sent = len(s.mqtt.sent)
        s.on_mqtt(topic, payload)
        assert s.metrics.value(outcome) == before + 1, outcome
        if reason is None:
            assert len(s.mqtt.sent) == n_sent, outcome  # nothing to say to an untrusted sender
        else:
            topic_out, msg, qos = s.mqtt.sent[-1]
            ref, got, _ = wire.unpack_reject(msg)
            assert topic_out.endswith("/down/rej") and qos == 1
            assert (got, ref) == (reason, wire.header(payload)[2]), outcome
    # a duplicate (same device and seq) is answered once (count before sending: the worker
    # may answer before the wait starts)
    n_sent = len(s.mqtt.sent)
    s.on_mqtt(esc_topic(2), escalate_bytes(2, 50, good, mv))
    s.on_mqtt(esc_topic(2), escalate_bytes(2, 50, good, mv))
    s.mqtt.wait(n_sent + 1)
    assert s.metrics.value("dropped_duplicate") == 1
    # and the tier still answers good requests
    n_sent = len(s.mqtt.sent)
    s.on_mqtt(esc_topic(1), escalate_bytes(1, 60, good, mv))
    sent = s.mqtt.wait(n_sent + 1)
    assert result(sent[-1][1])[0] == 60
    assert s.metrics.value("answered") == 2


def test_a_device_id_in_any_other_spelling_is_dropped_never_served(make_server, ladder, data):
    # int(s, 16) would read each of these as device 1 (or 10, ...): a client with such an id
    # could speak as device 1, answer for it, forget it, or pre-send its sequence numbers.
    _, x, _ = data
    cfg = ladder(thresholds={"medium": 0})
    s = make_server(cfg)
    hello(s, 1)
    good = topics.device_topic(FLEET, 1, topics.UP, "esc")
    for i, level in enumerate(BAD_ID_SPELLINGS):
        for kind, payload in (
            ("esc", escalate_bytes(1, 100 + i, x[0].tobytes(), cfg.model_version)),
            ("hello", b""),  # would make the tier forget device 1
        ):
            before = s.metrics.value("dropped_topic_mismatch")
            s.on_mqtt(good.replace("00000001", level).replace("/esc", "/" + kind), payload)
            assert s.metrics.value("dropped_topic_mismatch") == before + 1, repr(level)
    assert 1 in s.devices  # not forgotten
    assert s.mqtt.sent == [] and s.metrics.value("answered") == 0
    # the seqs it tried were not remembered: device 1's own requests are served
    s.on_mqtt(good, escalate_bytes(1, 100, x[0].tobytes(), cfg.model_version))
    assert result(s.mqtt.wait(1)[0][1])[0] == 100


def _result_msg(device: int) -> bytes:
    buf = bytearray(wire.HEADER_SIZE + wire.RESULT_SIZE)
    wire.pack_result(buf, device, 1, 1, 1, 1, 1, wire.GATEWAY, 1)
    return bytes(buf)


def test_random_and_mutated_messages_never_crash_the_tier(make_server, ladder, data):
    _, x, _ = data
    cfg = ladder(thresholds={"medium": 0})
    s = make_server(cfg, allow_unknown=True)
    rng = random.Random(5)
    base = escalate_bytes(4, 1, x[0].tobytes(), cfg.model_version)
    for i in range(3000):
        if i % 2:
            msg = bytearray(base)
            for _ in range(rng.randint(1, 6)):
                msg[rng.randrange(len(msg))] = rng.randrange(256)
            msg = bytes(msg[: rng.randint(0, len(msg) + 3)])
        else:
            msg = bytes(rng.randrange(256) for _ in range(rng.randint(0, 120)))
        s.on_mqtt(esc_topic(4), msg)
    time.sleep(0.3)
    s.stop()
    outcomes = {
        smp.labels["outcome"]: smp.value
        for metric in s.metrics.registry.collect()
        if metric.name == "edgeladder_requests"
        for smp in metric.samples
        if smp.name.endswith("_total")
    }
    assert sum(outcomes.values()) == 3000, outcomes  # every message accounted for
    assert outcomes.get("dropped_malformed", 0) > 1000
    # a good request still gets its answer afterwards
    s2 = make_server(cfg, allow_unknown=True)
    s2.on_mqtt(esc_topic(4), escalate_bytes(4, 77, x[1].tobytes(), cfg.model_version))
    assert result(s2.mqtt.wait(1)[0][1])[0] == 77


def test_a_full_queue_rejects_at_once_and_a_late_request_is_rejected(make_server, ladder, data):
    _, x, _ = data
    cfg = ladder(thresholds={"medium": 0})
    s = make_server(cfg, queue=2, max_batch=1, start=False, allow_unknown=True)
    release = threading.Event()
    real = s.runner.run

    def held(batch):
        release.wait(10)
        return real(batch)

    s.runner.run = held
    s.start()
    mv = cfg.model_version
    s.on_mqtt(esc_topic(5), escalate_bytes(5, 1, x[0].tobytes(), mv))  # the worker holds it
    time.sleep(0.05)
    s.on_mqtt(esc_topic(5), escalate_bytes(5, 2, x[1].tobytes(), mv, deadline_ms=30))
    s.on_mqtt(esc_topic(5), escalate_bytes(5, 3, x[2].tobytes(), mv))
    t0 = time.perf_counter()
    s.on_mqtt(esc_topic(5), escalate_bytes(5, 4, x[3].tobytes(), mv))  # the queue is full
    took = time.perf_counter() - t0
    rej = s.mqtt.wait(1)[0][1]
    assert wire.unpack_reject(rej)[:2] == (4, wire.QUEUE_FULL)
    assert took < 0.01
    time.sleep(0.1)  # seq 2's deadline passes while it waits
    release.set()
    s.mqtt.wait(4)
    rejects = {wire.unpack_reject(p)[0]: wire.unpack_reject(p)[1] for p in s.mqtt.on("/rej")}
    assert rejects == {4: wire.QUEUE_FULL, 2: wire.DEADLINE}
    assert sorted(result(p)[0] for p in s.mqtt.on("/res")) == [1, 3]
    assert s.metrics.value("rejected_queue_full") == 1
    assert s.metrics.value("rejected_deadline") == 1


def test_stop_answers_the_queue_then_rejects_with_shutdown(make_server, ladder, data):
    _, x, _ = data
    cfg = ladder(thresholds={"medium": 0})
    s = make_server(cfg, allow_unknown=True)
    for i in range(10):
        s.on_mqtt(esc_topic(6), escalate_bytes(6, i + 1, x[i].tobytes(), cfg.model_version))
    s.stop()
    assert len(s.mqtt.on("/res")) == 10
    s.on_mqtt(esc_topic(6), escalate_bytes(6, 11, x[0].tobytes(), cfg.model_version))
    assert wire.unpack_reject(s.mqtt.on("/rej")[0])[:2] == (11, wire.SHUTTING_DOWN)
    assert not s.ready()


def test_hot_reload_swaps_the_model_and_a_corrupt_file_keeps_the_old(
    make_server, ladder, data, tmp_path
):
    build, x, _ = data
    cfg = ladder(thresholds={"medium": 0})
    s = make_server(cfg, allow_unknown=True)
    watched = tmp_path / "model.tflite"  # a copy: the build itself is never touched
    shutil.copyfile(tflite(build, "medium"), watched)
    reloader = Reloader(watched, s.reload_model, s.reload_failed, interval=60)  # polled by hand
    want_large = Int8Runner.from_bytes(tflite(build, "large").read_bytes()).run_int8(x)
    want_medium = Int8Runner.from_bytes(tflite(build, "medium").read_bytes()).run_int8(x)
    differ = np.flatnonzero(want_large.argmax(axis=1) != want_medium.argmax(axis=1))
    assert len(differ), "medium and large agree on every input: use more inputs"
    i = int(differ[0])

    def ask(seq: int) -> int:
        n = len(s.mqtt.sent)
        s.on_mqtt(esc_topic(8), escalate_bytes(8, seq, x[i].tobytes(), cfg.model_version))
        return result(s.mqtt.wait(n + 1)[-1][1])[2]

    def count(name: str) -> float:
        return s.metrics.registry.get_sample_value(name) or 0.0

    assert ask(1) == want_medium[i].argmax()
    shutil.copyfile(tflite(build, "large"), watched)
    reloader.poll()
    assert count("edgeladder_model_reloads_total") == 1
    assert ask(2) == want_large[i].argmax()
    watched.write_bytes(b"TFL3 but not a model" * 10)
    reloader.poll()
    assert count("edgeladder_model_reload_failures_total") == 1
    assert ask(3) == want_large[i].argmax()  # the old (large) model still serves
    reloader.poll()  # the same broken file is not tried again
    assert count("edgeladder_model_reload_failures_total") == 1
    assert count("edgeladder_model_reloads_total") == 1


def test_a_model_with_other_classes_or_input_is_refused_on_reload(make_server, ladder, data):
    cfg = ladder(thresholds={"medium": 0})
    s = make_server(cfg)
    with pytest.raises(EdgeladderError):
        s.reload_model(b"\x00" * 64)
    assert s.runner.sha256 == BatchRunner.load(tflite(data[0], "medium")).sha256


def test_health_and_metrics_over_http(make_server, ladder, data):
    cfg = ladder(thresholds={"medium": 0})
    s = make_server(cfg, start=False, allow_unknown=True)
    http = HttpServer("127.0.0.1", 0, s.ready, s.metrics).start()
    try:
        assert _get(http.url + "/v2/health/live")[0] == 200
        assert _get(http.url + "/v2/health/ready")[0] == 503
        s.start()
        assert _get(http.url + "/v2/health/ready")[0] == 200
        s.mqtt.connected = False  # the broker went away: not ready
        assert _get(http.url + "/v2/health/ready")[0] == 503
        s.mqtt.connected = True
        s.on_mqtt(esc_topic(1), escalate_bytes(1, 1, data[1][0].tobytes(), cfg.model_version))
        s.on_mqtt(esc_topic(1), b"junk")
        s.mqtt.wait(1)
        status, body = _get(http.url + "/metrics")
        text = body.decode()
        assert status == 200
        assert 'edgeladder_requests_total{outcome="answered"} 1.0' in text
        assert 'edgeladder_requests_total{outcome="dropped_malformed"} 1.0' in text
        for name in (
            "edgeladder_queue_seconds_bucket",
            "edgeladder_compute_seconds_count",
            "edgeladder_batch_size_sum",
            "edgeladder_ready 1.0",
            "edgeladder_batched_invoke 1.0",
            "edgeladder_model_reloads_total 0.0",
        ):
            assert name in text, name  # fmt: skip
        assert _get(http.url + "/nothing")[0] == 404
    finally:
        http.stop()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_batching_fallback_shows_in_metrics(make_server, ladder, data):
    raw = bytearray(tflite(data[0], "medium").read_bytes())
    from edgeladder.serve.runner import batch_patch

    patched, _ = batch_patch(bytes(raw))
    spot = next(i for i in range(0, len(raw), 4) if raw[i : i + 4] != patched[i : i + 4])
    struct.pack_into("<i", raw, spot + 4, -1)  # RESHAPE to [1, -1]: cannot be batch-patched
    cfg = ladder(thresholds={"medium": 0})
    s = make_server(cfg, runner=BatchRunner.load(bytes(raw)))
    assert b"edgeladder_batched_invoke 0.0" in s.metrics.text()
