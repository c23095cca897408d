"""The stage logic of a host tier: check a request, queue it, answer it or climb the ladder.

A request is an ESCALATE from a board (``el/<fleet>/dev/<id>/up/esc``, or a frame on a serial
port) or from the tier below (``el/<fleet>/tier/<name>/in``). Checked before anything else, in
this order, each failure counted in ``edgeladder_requests_total`` as ``dropped_<reason>`` (and
answered with a REJECT where the sender can be trusted to get it):

  malformed        ladder.wire.header raised (short, oversized, bad sizes, unknown type)
  wire_version     another protocol version: we cannot speak it, so no reply either
  unexpected       a message of the wrong type for where it arrived
  topic_mismatch   a device publishing under another device's id (no reply)
  unknown_device   never said HELLO or HEARTBEAT (off with allow_unknown)         -> REJECT
  duplicate        a (device, seq) seen moments ago (no reply: the first one is answered)
  wrong_version    a model version other than ladder.json's                        -> REJECT
  bad_input        an input of the wrong size for this model                       -> REJECT
  frame_<why>      (serial) a frame ladder.framing dropped: bad_crc, too_long, ...

Then the bounded queue (full -> REJECT queue_full at once) and micro-batches (tiers.batcher).
Per request, after the batched invoke: label = argmax of the int8 output, confidence =
``ladder.gate.confidence`` on the int8 logits with the stage's exp table (the board's own gate
code). Under the stage's threshold, with a next stage whose tier is online and whose expected
round trip fits in the time left, the request is forwarded (chained escalation, same device
and seq) to ``el/<fleet>/tier/<next>/in``; otherwise this tier answers with a RESULT.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgeladder.errors import EdgeladderError
from edgeladder.policy.config import LadderConfig, Stage
from edgeladder.serve import EventLog, TierError
from edgeladder.serve.batcher import Batcher
from edgeladder.serve.metrics import Metrics
from edgeladder.serve.runner import BatchRunner
from ladder import gate, wire

DROP_REASONS = (
    "malformed", "wire_version", "unexpected", "topic_mismatch", "unknown_device", "duplicate",
    "wrong_version", "bad_input",
)  # fmt: skip
_REJECT_FOR = {
    "unknown_device": wire.UNKNOWN_DEVICE,
    "wrong_version": wire.WRONG_VERSION,
    "bad_input": wire.BAD_INPUT,
}
_SOURCE = {"gateway": wire.GATEWAY, "cloud": wire.CLOUD}
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_RECENT = 32  # seqs remembered per device, to drop duplicates
_TOPK = 2  # top-k pairs in a chained escalation (what a board sends)
_LOGGED_DEVICES = 20  # new devices named in the log; a big fleet's retained HELLOs are not


class Sink(Protocol):
    """Where replies for one request go: ``send(device, wire type, message)``."""

    def send(self, device: int, mtype: int, msg: bytes) -> None: ...


class MqttSink:
    """Replies to ``el/<fleet>/dev/<id>/down/res|rej``, QoS 1."""

    def __init__(self, link, fleet: str) -> None:
        self.link, self.fleet = link, fleet

    def send(self, device: int, mtype: int, msg: bytes) -> None:
        topic = wire.device_topic(self.fleet, device, wire.DOWN, wire.KIND[mtype])
        self.link.publish(topic, msg, qos=1)


class SerialSink:
    """Replies as frames on the serial port the request came in on."""

    def __init__(self, link) -> None:
        self.link = link

    def send(self, device: int, mtype: int, msg: bytes) -> None:
        self.link.send(msg)


@dataclass(slots=True)
class Request:
    device: int
    seq: int
    data: bytes  # the int8 input tensor
    k: int
    arrival: float
    deadline: float
    reply: Sink


class TierServer:
    """One remote stage of a ladder, served from one :class:`BatchRunner`."""

    def __init__(
        self,
        config: LadderConfig,
        stage: str,
        runner: BatchRunner,
        *,
        fleet: str = "demo",
        tier_name: str | None = None,
        next_tier: str | None = None,
        max_batch: int = 16,
        max_delay_ms: float = 1.0,
        queue: int = 64,
        allow_unknown: bool = False,
        metrics: Metrics | None = None,
        log: EventLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.stage: Stage = config.stage(stage)
        if not self.stage.remote:
            raise TierError(f"stage {stage!r} runs on the board (where = edge): serve a remote one")
        self.stage_index = config.stages.index(self.stage)
        self.first_remote = next(s for s in config.stages if s.remote) is self.stage
        self.next: Stage | None = config.next_stage(stage)
        self.next_index = self.stage_index + 1
        self.fleet = fleet
        self.tier_name = tier_name or self.stage.where
        self.next_tier = next_tier or (self.next.where if self.next else None)
        self.source = _SOURCE[self.stage.where]
        self.measure = gate.measure_id(self.stage.measure)
        self.lut = list(self.stage.exp_lut)
        self.allow_unknown = allow_unknown
        self.metrics = metrics or Metrics()
        self.log = log or EventLog()
        self.clock = clock
        self.runner = runner
        self._check_runner(runner)
        self.batcher = Batcher(
            self._process, self._expire, max_batch=max_batch, max_delay_s=max_delay_ms / 1000,
            capacity=queue, clock=clock,
        )  # fmt: skip
        self.mqtt = None  # MqttLink: escalations in, replies out, chained escalations
        self.serial = None  # SerialLink: a board's requests in, replies out
        self.next_online = False  # the next tier's retained status says "online"
        self.devices: dict[int, int | None] = {}  # known device -> model version (HELLO)
        self._serial_devices: set[int] = set()
        self._recent: dict[int, deque[int]] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._accepting = False
        self._started = False
        self._logged: set[str] = set()
        self._last_batch_s = 0.0
        self.metrics.bind(self.ready, lambda: len(self.batcher))
        self.metrics.batched.set(1 if runner.batched else 0)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> TierServer:
        self.batcher.start()
        self._accepting = True
        self._started = True
        return self

    def ready(self) -> bool:
        """Warmed up (a runner exists only once every bucket ran), serving, and connected."""
        if not (self._started and self._accepting):
            return False
        return self.mqtt is None or self.mqtt.connected

    def stop(self, timeout: float = 5.0) -> None:
        """Refuse new requests (REJECT shutdown), answer or expire what is queued."""
        self._accepting = False
        self.batcher.stop(timeout)

    # ---- wiring ----------------------------------------------------------------------------
    def mqtt_subscriptions(self) -> list[tuple[str, int]]:
        """What to subscribe to. With a serial board, MQTT only chains: the next tier's status,
        and the down/ topics to relay the next tier's replies to the board on the port."""
        f = self.fleet
        subs: list[tuple[str, int]] = []
        if self.next_tier:
            subs.append((wire.tier_topic(f, self.next_tier, "status"), 1))
        if self.serial is not None:
            return [*subs, (f"el/{f}/dev/+/down/+", 1)]
        subs += [
            (wire.tier_topic(f, self.tier_name, "in"), 0),
            (f"el/{f}/dev/+/up/hello", 1),
            (f"el/{f}/dev/+/up/hb", 0),
        ]
        if self.first_remote:
            subs.append((f"el/{f}/dev/+/up/esc", 0))
        return subs

    def status_topic(self) -> str:
        return wire.tier_topic(self.fleet, self.tier_name, "status")

    # ---- input -----------------------------------------------------------------------------
    def on_mqtt(self, topic: str, payload: bytes) -> None:
        """Every MQTT message (paho's thread). Never raises."""
        try:
            self._route_mqtt(topic, payload)
        except Exception as e:  # a bug must not take the tier down: count, log once, go on
            self._drop("malformed", f"{type(e).__name__}: {e}")

    def on_serial(self, msg: bytes) -> None:
        """Every whole frame from the serial port (its reader thread). Never raises."""
        try:
            self._device_message(msg, None, None, SerialSink(self.serial), serial=True)
        except Exception as e:
            self._drop("malformed", f"{type(e).__name__}: {e}")

    def on_frame_dropped(self, reason: str) -> None:
        """A serial frame the framing dropped: ``dropped_frame_<reason>`` (ladder.framing's
        too_long, bad_escape, bad_crc, too_short). REPL text before a frame counts as bad_crc."""
        self._drop("frame_" + reason, "serial frame dropped by the framing")

    def _route_mqtt(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) < 5 or parts[0] != "el" or parts[1] != self.fleet:
            return
        if parts[2] == "tier" and len(parts) == 5:
            if parts[3] == self.next_tier and parts[4] == "status":
                self.next_online = payload == b"online"
            elif parts[3] == self.tier_name and parts[4] == "in":
                self._escalation(payload, None, MqttSink(self.mqtt, self.fleet))
            return
        if parts[2] != "dev" or len(parts) != 6:
            return
        device = _hex_id(parts[3])
        if device is None:
            self._drop("topic_mismatch", f"topic {topic!r} has no 8-hex-digit device id")
            return
        if parts[4] == wire.DOWN:
            self._relay_down(device, payload)
            return
        if parts[4] == wire.UP:
            self._device_message(payload, device, parts[5], MqttSink(self.mqtt, self.fleet))

    def _device_message(
        self, msg: bytes, topic_device: int | None, kind: str | None, sink: Sink, serial=False
    ) -> None:
        if kind == "hello" and not msg:
            self._forget(topic_device)  # an empty retained HELLO clears a device
            return
        head = self._header(msg)
        if head is None:
            return
        mtype, device, _ = head
        if kind is not None and wire.KIND.get(mtype) != kind:
            self._drop("unexpected", f"type {mtype} on up/{kind}")
            return
        if topic_device is not None and topic_device != device:
            self._drop("topic_mismatch", f"device {device:08x} on {topic_device:08x}'s topic")
            return
        if mtype == wire.HELLO:
            self._known(device, wire.unpack_hello(msg)[0], serial, msg)
        elif mtype == wire.HEARTBEAT:
            self._known(device, self.devices.get(device), serial, msg)
        elif mtype == wire.ESCALATE and (serial or self.first_remote):
            self._escalation(msg, head, sink)
        else:
            self._drop("unexpected", f"message type {mtype} from device {device:08x}")

    def _escalation(self, msg: bytes, head, sink: Sink) -> None:
        arrival = self.clock()
        head = head or self._header(msg)
        if head is None:
            return
        mtype, device, seq = head
        if mtype != wire.ESCALATE:
            self._drop("unexpected", f"type {mtype} where an ESCALATE belongs")
            return
        version, deadline_ms, _, _, k, n, _, offset = wire.unpack_escalate(msg)
        if not self.allow_unknown and device not in self.devices:
            self._refuse("unknown_device", device, seq, sink, f"device {device:08x}")
            return
        if self._duplicate(device, seq):
            self._drop("duplicate", f"device {device:08x} seq {seq}")
            return
        if version != self.config.model_version:
            self._refuse("wrong_version", device, seq, sink, f"model version {version:#010x}")
            return
        if n != self.runner.input_bytes:
            self._refuse("bad_input", device, seq, sink, f"{n} input bytes")
            return
        req = Request(
            device, seq, bytes(msg[offset : offset + n]), k, arrival,
            arrival + deadline_ms / 1000, sink,
        )  # fmt: skip
        if not self._accepting:
            self._reject(req, wire.SHUTTING_DOWN, "rejected_shutdown")
        elif not self.batcher.submit(req):
            self._reject(req, wire.QUEUE_FULL, "rejected_queue_full", self._retry_ms())

    # ---- batches ---------------------------------------------------------------------------
    def _process(self, batch: Sequence[Request]) -> None:
        runner = self.runner  # one model per batch: a hot reload swaps between batches
        t0 = self.clock()
        for r in batch:
            self.metrics.queue_seconds.observe(t0 - r.arrival)
        x = np.frombuffer(b"".join(r.data for r in batch), np.int8)
        try:
            outs, logits = runner.run(x.reshape(len(batch), *runner.input_shape))
        except (EdgeladderError, ValueError, RuntimeError) as e:
            # LiteRT failed on this batch: no answer (the boards fall back), keep serving
            self.metrics.count("failed", len(batch))
            self.log.emit("error", f"error: inference failed: {e}", error=str(e))
            return
        labels = outs.argmax(axis=1).tolist()
        classes = runner.classes
        confs = [gate.confidence(self.measure, row, classes, self.lut) for row in logits.tolist()]
        t1 = self.clock()
        self._last_batch_s = t1 - t0
        self.metrics.compute_seconds.observe(t1 - t0)
        self.metrics.batch_size.observe(len(batch))
        for i, r in enumerate(batch):
            if not self._forward(r, outs[i], confs[i], t1):
                self._answer(r, labels[i], confs[i])

    def _forward(self, r: Request, out: np.ndarray, conf: int, now: float) -> bool:
        nxt = self.next
        if nxt is None or conf >= self.stage.threshold or not self.next_online:
            return False
        left_ms = int((r.deadline - now) * 1000)
        if left_ms <= nxt.expected_rtt_ms or self.mqtt is None:
            return False
        k = max(1, min(r.k or _TOPK, len(out), wire.MAX_TOPK))
        order = np.argsort(-out.astype(np.int16), kind="stable")[:k]
        topk = bytes(v for c in order.tolist() for v in (c, int(out[c]) + 128))
        buf = bytearray(wire.HEADER_SIZE + wire.ESCALATE_FIXED + 2 * k + len(r.data))
        wire.pack_escalate(
            buf, r.device, r.seq, self.config.model_version, min(left_ms, _U16), min(conf, _U16),
            self.next_index, topk, r.data,
        )  # fmt: skip
        if not self.mqtt.publish(wire.tier_topic(self.fleet, self.next_tier, "in"), bytes(buf)):
            return False  # not connected right now: better our answer than none
        self.metrics.count("forwarded")
        return True

    def _answer(self, r: Request, label: int, conf: int) -> None:
        buf = bytearray(wire.HEADER_SIZE + wire.RESULT_SIZE)
        wire.pack_result(
            buf, r.device, self._next_seq(), r.seq, self.config.model_version, label,
            min(conf, _U16), self.source, self.stage_index,
        )  # fmt: skip
        r.reply.send(r.device, wire.RESULT, bytes(buf))
        self.metrics.count("answered")

    def _expire(self, r: Request) -> None:
        self._reject(r, wire.DEADLINE, "rejected_deadline")

    # ---- hot reload ------------------------------------------------------------------------
    def reload_model(self, model: bytes) -> BatchRunner:
        """Load, check and warm a new runner (caller's thread), then swap it in between batches.

        Raises EdgeladderError (the old runner stays) if it does not load or does not fit."""
        runner = BatchRunner.load(model, self.runner.max_batch)
        self._check_runner(runner, against=self.runner)
        self.runner = runner
        self.metrics.reloads.inc()
        self.metrics.batched.set(1 if runner.batched else 0)
        self.log.emit(
            "reloaded", f"model reloaded (sha256 {runner.sha256[:12]})", sha256=runner.sha256,
            batched=runner.batched,
        )  # fmt: skip
        return runner

    def reload_failed(self, why: str) -> None:
        self.metrics.reload_failures.inc()
        self.log.emit("reload_failed", f"error: new model not loaded, keeping the old one: {why}",
                      error=why)  # fmt: skip

    def _check_runner(self, runner: BatchRunner, against: BatchRunner | None = None) -> None:
        if runner.classes != self.config.classes:
            raise TierError(
                f"the model has {runner.classes} outputs, ladder.json says {self.config.classes}"
            )
        if against is not None and runner.input_shape != against.input_shape:
            raise TierError(
                f"input shape {runner.input_shape} differs from the served {against.input_shape}"
            )

    # ---- helpers ---------------------------------------------------------------------------
    def _header(self, msg: bytes) -> tuple[int, int, int] | None:
        try:
            return wire.header(msg)
        except ValueError as e:
            versioned = len(msg) >= wire.HEADER_SIZE and msg[0] != wire.VERSION
            reason = "wire_version" if versioned else "malformed"
            self._drop(reason, str(e))
            return None

    def _known(self, device: int, version: int | None, serial: bool, msg: bytes) -> None:
        new = device not in self.devices
        self.devices[device] = version
        if msg[1] == wire.HELLO:
            with self._lock:
                self._recent.pop(device, None)  # a new session: its seqs start again
        self.metrics.devices.set(len(self.devices))
        if serial:
            self._serial_devices.add(device)
            self._bridge_up(device, msg)
        if new and len(self.devices) <= _LOGGED_DEVICES:
            more = (
                "; more are only counted in /metrics"
                if len(self.devices) == _LOGGED_DEVICES
                else ""
            )
            self.log.emit("device", f"device {device:08x} is known{more}", device=f"{device:08x}")

    def _forget(self, device: int | None) -> None:
        if device is not None and device in self.devices:
            del self.devices[device]
            self.metrics.devices.set(len(self.devices))

    def _bridge_up(self, device: int, msg: bytes) -> None:
        # A serial board's HELLO/HB, published for it so that the next tier knows it too.
        if self.mqtt is None:
            return
        kind = wire.KIND[msg[1]]
        retained = msg[1] == wire.HELLO
        topic = wire.device_topic(self.fleet, device, wire.UP, kind)
        self.mqtt.publish(topic, msg, qos=1 if retained else 0, retain=retained)

    def _relay_down(self, device: int, payload: bytes) -> None:
        # The next tier's answer for a board on our serial port: pass it on, unchanged.
        if device not in self._serial_devices or self.serial is None:
            return
        try:
            mtype, dev, _ = wire.header(payload)
        except ValueError:
            return
        if dev == device and mtype in (wire.RESULT, wire.REJECT):
            self.serial.send(payload)

    def _duplicate(self, device: int, seq: int) -> bool:
        with self._lock:
            recent = self._recent.get(device)
            if recent is None:
                recent = self._recent[device] = deque(maxlen=_RECENT)
            if seq in recent:
                return True
            recent.append(seq)
        return False

    def _refuse(self, reason: str, device: int, seq: int, sink: Sink, detail: str) -> None:
        self._drop(reason, detail)
        self._send_reject(device, seq, _REJECT_FOR[reason], sink)

    def _reject(self, r: Request, reason: int, outcome: str, retry_ms: int = 0) -> None:
        self.metrics.count(outcome)
        self._send_reject(r.device, r.seq, reason, r.reply, retry_ms)

    def _send_reject(self, device: int, seq: int, reason: int, sink: Sink, retry_ms=0) -> None:
        buf = bytearray(wire.HEADER_SIZE + wire.REJECT_SIZE)
        wire.pack_reject(buf, device, self._next_seq(), seq, reason, min(retry_ms, _U16))
        sink.send(device, wire.REJECT, bytes(buf))

    def _drop(self, reason: str, detail: str) -> None:
        self.metrics.count("dropped_" + reason)
        if reason not in self._logged:  # once per reason: a flood must not flood the log
            self._logged.add(reason)
            self.log.emit(
                "dropped", f"dropped a message ({reason}: {detail}); more are counted in /metrics",
                reason=reason, detail=detail,
            )  # fmt: skip

    def _retry_ms(self) -> int:
        # roughly how long the queue takes to drain: when it is worth trying again
        batches = -(-self.batcher.capacity // self.batcher.max_batch)
        return int(batches * self._last_batch_s * 1000) + 1

    def _next_seq(self) -> int:
        return next(self._seq) & _U32


def _hex_id(text: str) -> int | None:
    if len(text) != 8:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


__all__ = ["DROP_REASONS", "MqttSink", "Request", "SerialSink", "TierServer"]
