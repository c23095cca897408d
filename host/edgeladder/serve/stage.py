"""The stage core of a host tier: check a request, queue it, answer it or climb the ladder.

Transport-free: requests come in from links (:mod:`edgeladder.serve.links`: MQTT, serial, a
test's fake), replies go back to the link a request came from (its *sink*), chained escalations
go out on the link that reaches the next tier (the ``upstream``). A request is an ESCALATE from a
board, or from the tier below. Checked before anything else, in this order, each failure counted
in ``edgeladder_requests_total`` as ``dropped_<reason>`` (and answered with a REJECT where the
sender can be trusted to get it):

  malformed        ladder.wire.header raised (short, oversized, bad sizes, unknown type)
  wire_version     another protocol version: we cannot speak it, so no reply either
  unexpected       a message of the wrong type for where it arrived
  topic_mismatch   (MQTT) a topic that ladder.topics refuses (a device id in any spelling but
                   its 8 lower-case hex digits), or a device under another device's id (no reply)
  unknown_device   never said HELLO or HEARTBEAT (off with allow_unknown)         -> REJECT
  duplicate        a (device, seq) seen moments ago (no reply: the first one is answered)
  wrong_version    a model version other than ladder.json's                        -> REJECT
  bad_input        an input of the wrong size for this model                       -> REJECT
  frame_<why>      (serial) a frame ladder.framing dropped: bad_crc, too_long, ...

Then the bounded queue (full -> REJECT queue_full at once) and micro-batches (serve.batcher).
Per request, after the batched invoke: label = argmax of the int8 output, confidence =
``ladder.gate.confidence`` on the int8 logits with the stage's exp table (the board's own gate
code). ``ladder.gate.should_escalate``, the board's own rule without its answer reserve, decides
whether it climbs: forwarded (same device and seq, top-k packed by ``ladder.wire.pack_topk``) on
the upstream link, or answered here with a RESULT.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgeladder.errors import EdgeladderError
from edgeladder.policy.config import LadderConfig, Stage
from edgeladder.serve import EventLog, TierError
from edgeladder.serve.batcher import Batcher
from edgeladder.serve.links import Sink, TierLink
from edgeladder.serve.metrics import Metrics
from edgeladder.serve.runner import BatchRunner
from ladder import gate, wire
from ladder.quant import top_k_into

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
_REPLIES = (wire.RESULT, wire.REJECT)
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_RECENT = 32  # seqs remembered per device, to drop duplicates
_TOPK = 2  # top-k pairs in a chained escalation (what a board sends)
_LOGGED_DEVICES = 20  # new devices named in the log; a big fleet's retained HELLOs are not


@dataclass(slots=True)
class Request:
    device: int
    seq: int
    data: bytes  # the int8 input tensor
    k: int
    arrival: float
    deadline_ms: int  # as the sender gave it
    deadline: float  # arrival + deadline_ms: past it, an answer is useless
    reply: Sink


class StageCore:
    """One remote stage of a ladder, served from one :class:`BatchRunner`, behind its links."""

    def __init__(
        self,
        config: LadderConfig,
        stage: str,
        runner: BatchRunner,
        *,
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
        self.links: list[TierLink] = []
        self.upstream: TierLink | None = None  # the link that reaches the next tier
        self.devices: dict[int, int | None] = {}  # known device -> model version (HELLO)
        self._direct: dict[int, TierLink] = {}  # a board wired to this tier -> its link
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
    def attach(self, link: TierLink) -> TierLink:
        """Serve through ``link`` too; the first one that chains becomes the upstream."""
        self.links.append(link)
        if link.chains and self.upstream is None:
            self.upstream = link
        return link

    def start(self) -> StageCore:
        self.batcher.start()
        self._accepting = True
        self._started = True
        return self

    def ready(self) -> bool:
        """Warmed up (a runner exists only once every bucket ran), serving, every link up."""
        return self._started and self._accepting and all(link.up for link in self.links)

    def stop(self, timeout: float = 5.0) -> None:
        """Refuse new requests (REJECT shutdown), answer or expire what is queued."""
        self._accepting = False
        self.batcher.stop(timeout)

    # ---- input, from the links -------------------------------------------------------------
    def on_device(
        self, msg: bytes, link: TierLink, *, device: int | None = None, expect: int | None = None
    ) -> None:
        """A message from a board on ``link``; ``device``: the id its topic names (MQTT),
        ``expect``: the wire type its topic carries (-1: none)."""
        head = self._header(msg)
        if head is None:
            return
        mtype, sender, _ = head
        if expect is not None and mtype != expect:
            self.drop("unexpected", f"type {mtype} where type {expect} belongs")
            return
        if device is not None and device != sender:
            self.drop("topic_mismatch", f"device {sender:08x} on {device:08x}'s topic")
            return
        if mtype == wire.HELLO:
            self._known(sender, wire.unpack_hello(msg)[0], link, msg)
        elif mtype == wire.HEARTBEAT:
            self._known(sender, self.devices.get(sender), link, msg)
        elif mtype == wire.ESCALATE and (link.direct or self.first_remote):
            self._escalation(msg, head, link)
        else:
            self.drop("unexpected", f"message type {mtype} from device {sender:08x}")

    def on_chained(self, msg: bytes, link: TierLink) -> None:
        """An ESCALATE forwarded by the tier below; replies go to the board through ``link``."""
        self._escalation(msg, None, link)

    def on_relay(self, device: int, msg: bytes) -> None:
        """The next tier's reply for ``device``: passed on, unchanged, if that board is wired
        to this tier (its link cannot hear the next tier itself)."""
        link = self._direct.get(device)
        if link is None:
            return
        try:
            mtype, sender, _ = wire.header(msg)
        except ValueError:
            return
        if sender == device and mtype in _REPLIES:
            link.send(device, mtype, msg)

    def forget(self, device: int) -> None:
        """A device that left (an empty retained HELLO)."""
        if device in self.devices:
            del self.devices[device]
            self.metrics.devices.set(len(self.devices))

    def _escalation(self, msg: bytes, head, sink: Sink) -> None:
        arrival = self.clock()
        head = head or self._header(msg)
        if head is None:
            return
        mtype, device, seq = head
        if mtype != wire.ESCALATE:
            self.drop("unexpected", f"type {mtype} where an ESCALATE belongs")
            return
        version, deadline_ms, _, _, k, n, _, offset = wire.unpack_escalate(msg)
        if not self.allow_unknown and device not in self.devices:
            self._refuse("unknown_device", device, seq, sink, f"device {device:08x}")
            return
        if self._duplicate(device, seq):
            self.drop("duplicate", f"device {device:08x} seq {seq}")
            return
        if version != self.config.model_version:
            self._refuse("wrong_version", device, seq, sink, f"model version {version:#010x}")
            return
        if n != self.runner.input_bytes:
            self._refuse("bad_input", device, seq, sink, f"{n} input bytes")
            return
        req = Request(
            device, seq, bytes(msg[offset : offset + n]), k, arrival, deadline_ms,
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
        nxt, up = self.next, self.upstream
        if nxt is None or up is None:
            return False
        left_ms = gate.should_escalate(
            conf, self.stage.threshold, up.up, up.tier_online(), r.deadline_ms,
            int((now - r.arrival) * 1_000_000), nxt.expected_rtt_ms,
        )  # fmt: skip
        if left_ms < 0:
            return False
        k = max(1, min(r.k or _TOPK, len(out), wire.MAX_TOPK))
        scores = out.tolist()
        idx = [0] * k
        top_k_into(scores, k, idx)
        topk = bytearray(2 * k)
        wire.pack_topk(topk, scores, idx, k)
        buf = bytearray(wire.HEADER_SIZE + wire.ESCALATE_FIXED + 2 * k + len(r.data))
        wire.pack_escalate(
            buf, r.device, r.seq, self.config.model_version, min(left_ms, _U16), min(conf, _U16),
            self.next_index, topk, r.data,
        )  # fmt: skip
        if not up.forward(bytes(buf)):
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
            self.drop(reason, str(e))
            return None

    def _known(self, device: int, version: int | None, link: TierLink, msg: bytes) -> None:
        new = device not in self.devices
        self.devices[device] = version
        if msg[1] == wire.HELLO:
            with self._lock:
                self._recent.pop(device, None)  # a new session: its seqs start again
        self.metrics.devices.set(len(self.devices))
        if link.direct:
            # a board wired to this tier: announced upstream, so that the next tier knows it too
            self._direct[device] = link
            if self.upstream is not None and self.upstream is not link:
                self.upstream.announce(device, msg[1], msg)
        if new and len(self.devices) <= _LOGGED_DEVICES:
            more = (
                "; more are only counted in /metrics"
                if len(self.devices) == _LOGGED_DEVICES
                else ""
            )
            self.log.emit("device", f"device {device:08x} is known{more}", device=f"{device:08x}")

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
        self.drop(reason, detail)
        self._send_reject(device, seq, _REJECT_FOR[reason], sink)

    def _reject(self, r: Request, reason: int, outcome: str, retry_ms: int = 0) -> None:
        self.metrics.count(outcome)
        self._send_reject(r.device, r.seq, reason, r.reply, retry_ms)

    def _send_reject(self, device: int, seq: int, reason: int, sink: Sink, retry_ms=0) -> None:
        buf = bytearray(wire.HEADER_SIZE + wire.REJECT_SIZE)
        wire.pack_reject(buf, device, self._next_seq(), seq, reason, min(retry_ms, _U16))
        sink.send(device, wire.REJECT, bytes(buf))

    def drop(self, reason: str, detail: str) -> None:
        """Count a dropped message by reason; the first of each reason is logged."""
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


__all__ = ["DROP_REASONS", "Request", "StageCore"]
