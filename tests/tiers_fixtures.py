"""A ladder.json over the real digits build, for the serving tests (until `edgeladder calibrate`
writes one, and independent of what it chooses: each test picks its own thresholds).

``make_ladder(build_dir, dest)`` copies the medium and large ``.tflite`` into ``dest`` (tests
overwrite the served file for hot reload: never the real build) and writes ``dest/ladder.json``
with exp tables from each model's own logit scale (temperature 1).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from edgeladder.model.litert import Int8Runner
from edgeladder.policy import config as ladderconfig
from edgeladder.policy.config import LadderConfig, Stage
from edgeladder.serve.links.mqtt import nodelay, parse_url
from ladder import wire

TIERS = ("tiny", "medium", "large")
WHERE = {"tiny": "edge", "medium": "gateway", "large": "cloud"}
FLEET = "t5"


def tflite(build_dir: Path, tier: str) -> Path:
    return Path(build_dir) / tier / f"digits_{tier}.tflite"


def make_ladder(
    build_dir: Path,
    dest: Path,
    *,
    thresholds: dict[str, int] | None = None,
    measure: str = "margin",
    deadline_ms: int = 300,
    rtt_ms: dict[str, int] | None = None,
) -> Path:
    """Write dest/ladder.json (and the remote tiers' models beside it); return its path."""
    build_dir, dest = Path(build_dir), Path(dest)
    thresholds = {"tiny": 40000, "medium": 30000, "large": 0, **(thresholds or {})}
    rtt_ms = {"medium": 20, "large": 30, **(rtt_ms or {})}
    stages = []
    scale = 0.0
    for tier in TIERS:
        runner = Int8Runner.from_bytes(tflite(build_dir, tier).read_bytes(), tier)
        scale = runner.input_scale
        zero = runner.input_zero_point
        stage = Stage(
            name=tier,
            where=WHERE[tier],
            measure=measure,
            threshold=thresholds[tier],
            temperature=1.0,
            exp_lut=ladderconfig.exp_lut(runner.logits_scale, 1.0),
            budget_ms=100,
        )
        if tier == "tiny":
            stage.model = "tiny/digits_tiny.ldr"
        else:
            rel = f"{tier}/digits_{tier}.tflite"
            (dest / tier).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tflite(build_dir, tier), dest / rel)
            stage.tflite = rel
            stage.expected_rtt_ms = rtt_ms[tier]
        stages.append(stage)
    cfg = LadderConfig(
        task="digits",
        model_version=ladderconfig.model_version(build_dir),
        classes=10,
        deadline_ms=deadline_ms,
        input_scale=scale,
        input_zero_point=zero,
        stages=stages,
    )
    return ladderconfig.save(dest / "ladder.json", cfg)


def digits_inputs(build_dir: Path, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """n real digits images as the models' int8 input (n, 8, 8, 1), and their labels."""
    from edgeladder.build.dataset import load_dataset

    ds = load_dataset("sklearn:digits")
    runner = Int8Runner.from_bytes(tflite(build_dir, "medium").read_bytes(), "medium")
    norm = json.loads((Path(build_dir) / "task.json").read_text())["normalize"]
    x = (ds.x[-n:] - np.float32(norm["offset"])) / np.float32(norm["scale"])
    return runner.quantize_input(x).astype(np.int8), ds.y[-n:]


class Devices:
    """One paho client playing many boards: HELLO, ESCALATE, and every reply they get.

    ``replies[(device, ref)]`` is ``("res", unpack_result(...))`` or ``("rej", unpack_reject)``;
    ``status[tier]`` is the tier's last retained status."""

    def __init__(self, url: str, fleet: str = FLEET) -> None:
        self.fleet = fleet
        self.host, self.port = parse_url(url)
        self.replies: dict[tuple[int, int], tuple[str, tuple]] = {}
        self.status: dict[str, str] = {}
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"devices-{id(self)}")
        self.client.on_message = self._on_message
        self._seq = 0

    def start(self) -> Devices:
        self.client.connect(self.host, self.port, keepalive=30)
        nodelay(self.client)  # as a board should: no Nagle wait before an escalation
        self.client.subscribe(
            [(f"el/{self.fleet}/dev/+/down/+", 1), (f"el/{self.fleet}/tier/+/status", 1)]
        )
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_message(self, client, userdata, msg) -> None:
        parts = msg.topic.split("/")
        with self.cond:
            if parts[2] == "tier":
                self.status[parts[3]] = msg.payload.decode()
            elif parts[5] == "res":
                r = wire.unpack_result(msg.payload)
                self.replies[(wire.header(msg.payload)[1], r[0])] = ("res", r)
            elif parts[5] == "rej":
                r = wire.unpack_reject(msg.payload)
                self.replies[(wire.header(msg.payload)[1], r[0])] = ("rej", r)
            self.cond.notify_all()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def hello(self, device: int, version: int) -> None:
        buf = bytearray(64)
        n = wire.pack_hello(buf, device, self.next_seq(), version, (0, 1, 0), 3, 50000)
        topic = wire.device_topic(self.fleet, device, wire.UP, "hello")
        self.publish(topic, bytes(buf[:n]), qos=1, retain=True)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def escalate(
        self, device: int, data: bytes, version: int, *, deadline_ms: int = 300, stage: int = 1,
        seq: int | None = None, topic_device: int | None = None,
    ) -> int:  # fmt: skip
        """Publish an ESCALATE as device (on topic_device's topic if given); return its seq."""
        seq = self.next_seq() if seq is None else seq
        msg = escalate_bytes(device, seq, data, version, deadline_ms=deadline_ms, stage=stage)
        topic = wire.device_topic(self.fleet, device if topic_device is None else topic_device,
                                  wire.UP, "esc")  # fmt: skip
        self.publish(topic, msg)
        return seq

    def wait(self, device: int, ref: int, timeout: float = 10.0) -> tuple[str, tuple]:
        end = time.monotonic() + timeout
        with self.cond:
            while (device, ref) not in self.replies:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no reply for device {device:08x} seq {ref}")
                self.cond.wait(left)
            return self.replies[(device, ref)]

    def wait_status(self, tier: str, want: str, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        with self.cond:
            while self.status.get(tier) != want:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"tier {tier} status {self.status.get(tier)!r}, not {want}"
                    )
                self.cond.wait(left)


def escalate_bytes(
    device: int, seq: int, data: bytes, version: int, *, deadline_ms: int = 300, stage: int = 1,
    confidence: int = 1000, topk: bytes = bytes([3, 200, 5, 100]),
) -> bytes:  # fmt: skip
    buf = bytearray(wire.MAX_MESSAGE)
    n = wire.pack_escalate(buf, device, seq, version, deadline_ms, confidence, stage, topk, data)
    return bytes(buf[:n])


class ServeProcess:
    """``edgeladder serve`` as a child process, as on a gateway: output to a log file."""

    def __init__(self, args: list[str], log: Path, http_port: int) -> None:
        self.log = Path(log)
        self.http_port = http_port
        self.url = f"http://127.0.0.1:{http_port}"
        argv = [sys.executable, "-m", "edgeladder.cli", "serve", *args, "--http", str(http_port)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of GET path; (0, "") while nothing listens."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while self.get("/v2/health/ready")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"serve not ready (exit {self.proc.poll()}):\n{self.output()}")
            time.sleep(0.05)

    def metric(self, name: str, labels: str = "") -> float:
        """One sample from /metrics (0 if absent), e.g. metric("edgeladder_requests_total",
        'outcome="answered"')."""
        key = f"{name}{{{labels}}}" if labels else name
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(key + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def wait_metric(self, name: str, labels: str, want: float, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while self.metric(name, labels) != want:
            if time.monotonic() > end:
                raise AssertionError(
                    f"{name}{{{labels}}} = {self.metric(name, labels)}, not {want}"
                )
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode
