"""`edgeladder serve` over a real broker (the embedded amqtt and Mosquitto): a gateway tier
(medium) and a cloud tier (large) as child processes; a paho client plays the boards.

Boards get RESULTs with the right source (gateway, or cloud for the inputs the gateway was
unsure of: chained escalation), the answers are the models' own; /metrics counts them;
readiness waits for the broker; the served file hot-reloads (a corrupt one is refused); a
SIGKILLed tier's status turns "offline" through its last will, a SIGTERMed one says so itself.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from edgeladder.model.litert import Int8Runner
from edgeladder.policy import config as ladderconfig
from edgeladder_sim.broker import AmqttBroker, MosquittoBroker, free_port, mosquitto_binary
from edgeladder_sim.fixtures.ladder import (
    FLEET,
    Devices,
    digits_inputs,
    escalate_bytes,
    write_ladder,
)
from edgeladder_sim.fixtures.ladder import tflite_path as tflite
from ladder import gate, topics, wire

BROKERS = ["amqtt", "mosquitto"]
REQS = 'outcome="{}"'


@pytest.fixture(scope="module")
def inputs(digits_build):
    x, _ = digits_inputs(digits_build.out, 60)
    return x


@pytest.fixture
def serve(serve_tier):
    def start(ladder_dir, stage: str, *args: str):
        return serve_tier(ladder_dir, stage, "--fleet", FLEET, *args)

    return start


def gate_confidences(build, cfg, tier: str, x) -> list[int]:
    _, logits = Int8Runner.from_bytes(tflite(build, tier).read_bytes()).run_int8_logits(x)
    lut = cfg.stage(tier).exp_lut
    return [gate.confidence(gate.MARGIN, row, 10, lut) for row in logits.tolist()]


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_boards_get_answers_from_the_gateway_and_chained_from_the_cloud(
    broker, serve, digits_build, inputs, tmp_path
):
    build = digits_build.out
    probe = ladderconfig.load(write_ladder(build, tmp_path / "probe"))
    confs = gate_confidences(build, probe, "medium", inputs)
    threshold = sorted(confs)[len(confs) // 4]  # about a quarter climb to the cloud
    lad = write_ladder(build, tmp_path / "ladder", thresholds={"medium": threshold})
    cfg = ladderconfig.load(lad)
    cloud = serve(lad.parent, "large", "--mqtt", broker.url)
    gateway = serve(lad.parent, "medium", "--mqtt", broker.url, "--json")
    devices = Devices(broker.url).start()
    try:
        devices.wait_status("cloud", "online")
        devices.wait_status("gateway", "online")
        gateway.wait_ready()
        cloud.wait_ready()
        ids = [0xA0 + i for i in range(4)]
        for d in ids:
            devices.hello(d, cfg.model_version)
        gateway.wait_metric("edgeladder_known_devices", "", 4)
        cloud.wait_metric("edgeladder_known_devices", "", 4)
        sent = []
        for i, row in enumerate(inputs):
            d = ids[i % 4]
            sent.append((d, devices.escalate(d, row.tobytes(), cfg.model_version)))
        replies = [devices.wait(d, seq) for d, seq in sent]

        medium = Int8Runner.from_bytes(tflite(build, "medium").read_bytes()).run_int8(inputs)
        large = Int8Runner.from_bytes(tflite(build, "large").read_bytes()).run_int8(inputs)
        by_source = {wire.GATEWAY: 0, wire.CLOUD: 0}
        for i, (kind, r) in enumerate(replies):
            assert kind == "res", (i, r)
            _, version, label, conf, source, stage = r
            assert version == cfg.model_version
            if confs[i] >= threshold:
                assert (source, stage, label) == (wire.GATEWAY, 1, np.argmax(medium[i])), i
                assert conf == min(confs[i], 65535)
            else:
                assert (source, stage, label) == (wire.CLOUD, 2, np.argmax(large[i])), i
            by_source[source] += 1
        assert by_source[wire.CLOUD] > 0 and by_source[wire.GATEWAY] > 0

        # a device speaking for another, and junk: dropped and counted, nothing answered
        devices.escalate(0xA1, inputs[0].tobytes(), cfg.model_version, topic_device=0xA2)
        devices.publish(topics.device_topic(FLEET, 0xA1, topics.UP, "esc"), b"\x01\x03junk")
        gateway.wait_metric("edgeladder_requests_total", REQS.format("dropped_malformed"), 1)
        gateway.wait_metric("edgeladder_requests_total", REQS.format("dropped_topic_mismatch"), 1)
        # device 0xa1 under another spelling of its id (int(s, 16) would take it): not served
        esc = escalate_bytes(0xA1, 999, inputs[0].tobytes(), cfg.model_version)
        good = topics.device_topic(FLEET, 0xA1, topics.UP, "esc")
        for level in ("0x0000a1", "000000A1", "0000_0a1"):
            devices.publish(good.replace("000000a1", level), esc)
        gateway.wait_metric("edgeladder_requests_total", REQS.format("dropped_topic_mismatch"), 4)
        assert (0xA1, 999) not in devices.replies
        assert (
            gateway.metric("edgeladder_requests_total", REQS.format("answered"))
            == by_source[wire.GATEWAY]
        )
        assert (
            gateway.metric("edgeladder_requests_total", REQS.format("forwarded"))
            == by_source[wire.CLOUD]
        )
        assert (
            cloud.metric("edgeladder_requests_total", REQS.format("answered"))
            == by_source[wire.CLOUD]
        )
        assert gateway.metric("edgeladder_batch_size_count") >= 1
        assert gateway.metric("edgeladder_ready") == 1

        # a tier cut dead: the broker publishes its last will
        gateway.kill()
        devices.wait_status("gateway", "offline")
        # a tier stopped cleanly says so itself and exits 0
        assert cloud.stop() == 0
        devices.wait_status("cloud", "offline")
        assert '"event": "ready"' in gateway.output()
        assert "stopped" in cloud.output()
    finally:
        devices.stop()


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_hot_reload_over_the_broker(broker, serve, digits_build, tmp_path):
    build = digits_build.out
    inputs, _ = digits_inputs(build, 200)  # enough that medium and large disagree on some
    lad = write_ladder(build, tmp_path / "ladder", thresholds={"medium": 0})
    cfg = ladderconfig.load(lad)
    served = lad.parent / "medium" / "digits_medium.tflite"
    medium = Int8Runner.from_bytes(served.read_bytes()).run_int8(inputs).argmax(axis=1)
    large = Int8Runner.from_bytes(tflite(build, "large").read_bytes()).run_int8(inputs)
    large = large.argmax(axis=1)
    differ = np.flatnonzero(medium != large)
    assert len(differ) >= 1
    pick = inputs[differ]
    gateway = serve(lad.parent, "medium", "--mqtt", broker.url, "--allow-unknown")
    devices = Devices(broker.url).start()
    try:
        gateway.wait_ready()

        def labels() -> list[int]:
            seqs = [devices.escalate(0xB0, row.tobytes(), cfg.model_version) for row in pick]
            return [devices.wait(0xB0, s)[1][2] for s in seqs]

        assert labels() == medium[differ].tolist()
        shutil.copyfile(tflite(build, "large"), served)  # another model over the served file
        gateway.wait_metric("edgeladder_model_reloads_total", "", 1)
        assert labels() == large[differ].tolist()
        served.write_bytes(served.read_bytes()[:5000])  # truncated: LiteRT cannot load it
        gateway.wait_metric("edgeladder_model_reload_failures_total", "", 1)
        assert labels() == large[differ].tolist()  # the old model still serves
        assert gateway.output().count("keeping the old one") == 1
        assert gateway.metric("edgeladder_model_reloads_total") == 1
    finally:
        devices.stop()


@pytest.mark.parametrize("kind", BROKERS)
def test_ready_waits_for_the_broker_and_follows_it(kind, serve, digits_build, tmp_path):
    lad = write_ladder(digits_build.out, tmp_path / "ladder")
    port = free_port()
    gateway = serve(lad.parent, "medium", "--mqtt", f"mqtt://127.0.0.1:{port}")
    # no broker yet: the process is live but not ready
    end = time.monotonic() + 20
    while gateway.get("/v2/health/live")[0] != 200:
        assert gateway.alive and time.monotonic() < end, gateway.output()
        time.sleep(0.05)
    assert gateway.get("/v2/health/ready")[0] == 503
    assert gateway.metric("edgeladder_ready") == 0
    broker = start(kind, port, tmp_path / "first")
    try:
        gateway.wait_ready(20)
        assert gateway.metric("edgeladder_ready") == 1
        # the broker goes away: not ready; it comes back on the same port: ready again
        broker.stop()
        end = time.monotonic() + 10
        while gateway.get("/v2/health/ready")[0] != 503:
            assert time.monotonic() < end, "still ready without a broker"
            time.sleep(0.05)
        broker = start(kind, port, tmp_path / "again")
        gateway.wait_ready(20)
        assert gateway.output().count("broker connected") == 2
        assert gateway.stop() == 0
    finally:
        broker.stop()


def start(kind: str, port: int, workdir):
    if kind == "mosquitto":
        binary = mosquitto_binary()
        assert binary, "mosquitto is not installed (apt-get install mosquitto)"
        workdir.mkdir(parents=True, exist_ok=True)
        return MosquittoBroker(binary, port, workdir, own_dir=False)
    return AmqttBroker(port)
