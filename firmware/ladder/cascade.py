# ladder.cascade: one input through the ladder, as the board decides it. No I/O of its own: the
# link (ladder.link: serial, MQTT, or a test's fake) and the clock come in from outside, so the
# whole decision runs under micropython in tests.
#
# The ladder (ladder.json): edge stages first, each a model (.ldr) and a gate; the board runs
# them in order and answers at the first confident one. If none is, the input goes to the first
# remote stage -- only when the link is up, the tier is online, and the time left before the
# deadline exceeds that stage's expected round trip. The board then waits for the RESULT of
# this very ESCALATE (ref = its seq) made by this model version, or a REJECT, but never past
# the deadline; else it answers with its own best guess, tagged edge_fallback. Replies that do
# not match are counted by reason and dropped. With no remote stage the last edge stage answers.
#
# Integer-only; the hot path allocates nothing: every buffer is made here once (escalation
# message, top-k), the answer is left in attributes, and the reply handler is bound once. What
# a link's poll hands over (a received message) is the only allocation, and only on escalation.

import gc
import json
from array import array
from time import ticks_diff, ticks_us

from micropython import const

from . import gate, wire
from .engine import Model
from .quant import top_k_into

_K = const(2)  # top-k pairs an escalation carries
_RESERVE_MS = const(3)  # of the deadline, kept for writing the answer after a wait
_RESULT = const(1)
_REJECTED = const(2)
_UNSENT = const(3)  # Cascade.skips: after the escalation rule's three reasons (SKIPS)
_U16 = const(65535)
_SEQ_MASK = const(0x3FFFFFFF)  # seq stays a small int on a 32-bit board

# Counters (indexes into Cascade.skips, .drops); the names are what reports show. Skips are the
# escalation rule's reasons (gate.should_escalate: -2, -3, -4 at 0, 1, 2), then a failed send.
SKIPS = gate.STAYS[1:] + ("unsent",)
DROPS = ("stale", "wrong_version", "bad_message", "unexpected")
_STALE = const(0)
_WRONG_VERSION = const(1)
_BAD = const(2)
_UNEXPECTED = const(3)


def _load(path):
    with open(path) as f:
        return json.load(f)


class Cascade:
    """The ladder's decision for one frame at a time.

    ladder: the parsed ladder.json, or its path. From a path, only what the board needs is
    kept (the edge stages' gates, the remote stage's round trip), and the parsed file is freed
    before the models load: their buffers then find room in a heap the JSON fragmented."""

    def __init__(self, ladder, link, device_id, base="", clock_us=ticks_us):
        if isinstance(ladder, str):
            ladder = _load(ladder)
        self.version = ladder["model_version"]
        self.classes = ladder["classes"]
        self.deadline_ms = ladder["deadline_ms"]
        self.link = link
        self.device = device_id
        self._now = clock_us
        stages = ladder["stages"]
        self.stage_count = len(stages)
        paths = []
        gates = []
        self.remote = -1  # index in stages of the first remote stage
        self.rtt_ms = 0
        for i in range(len(stages)):
            s = stages[i]
            if s["where"] != "edge":
                if self.remote < 0:
                    self.remote = i
                    self.rtt_ms = s.get("expected_rtt_ms", 0)
                continue
            if self.remote >= 0:
                raise ValueError("cascade: edge stage %s after a remote one" % s["name"])
            paths.append(base + s["model"])
            gates.append(gate.Gate(s["measure"], s["threshold"], array("H", s["exp_lut"])))
        if not paths:
            raise ValueError("cascade: ladder.json has no edge stage")
        ladder = stages = s = None
        gc.collect()
        models = []
        for p in paths:
            m = Model.load(p)
            if m.logits() is None:
                raise ValueError("cascade: %s has no final SOFTMAX to gate on" % p)
            if len(m.output.data) != self.classes:
                raise ValueError("cascade: %s has %d outputs" % (p, len(m.output.data)))
            models.append(m)
            gc.collect()
        self.models = tuple(models)
        self.gates = tuple(gates)
        self.n_in = len(models[0].input.data)
        for m in models:
            if len(m.input.data) != self.n_in:
                raise ValueError("cascade: edge models take different input sizes")
        self._idx = bytearray(_K)
        self._topk = bytearray(2 * _K)
        self.esc = bytearray(wire.HEADER_SIZE + wire.ESCALATE_FIXED + 2 * _K + self.n_in)
        self.esc_bytes = 0  # size of the last ESCALATE
        self._on_reply = self._reply
        self._want = -1
        self._got = 0
        self.seq = 0
        # the last answer
        self.label = 0
        self.conf = 0
        self.source = 0
        self.stage = 0
        self.latency_us = 0
        self.reject_reason = 0
        # counters
        self.sources = [0, 0, 0, 0]  # answers per source (wire.EDGE ... wire.EDGE_FALLBACK)
        self.escalated = 0
        self.timeouts = 0
        self.rejected = 0
        self.skips = [0] * len(SKIPS)
        self.drops = [0] * len(DROPS)

    def next_seq(self):
        """The sequence number of the next message this device sends (any kind)."""
        self.seq = (self.seq + 1) & _SEQ_MASK
        return self.seq

    def decide(self, frame, t0):
        """Answer one int8 frame read at ticks_us() == t0; return the source (wire.EDGE...).

        The answer is left in .label, .conf (Q16), .source, .stage, .latency_us."""
        last = len(self.models) - 1
        for i in range(last + 1):
            m = self.models[i]
            m.input.data[:] = frame
            m.invoke()
            g = self.gates[i]
            lg = m.logits()
            score = g.score(lg, self.classes)
            if g.confident(score) or (i == last and self.remote < 0):
                top_k_into(m.output.data, 1, self._idx)
                return self._answer(self._idx[0], score, wire.EDGE, i, t0)
        # every edge stage was unsure: the last one's guess is the fallback
        m = self.models[last]
        top_k_into(m.output.data, _K, self._idx)
        if self._escalate(m.output.data, frame, score, t0) == _RESULT:
            return self._answer(self.label, self.conf, self.source, self.stage, t0)
        return self._answer(self._idx[0], score, wire.EDGE_FALLBACK, last, t0)

    def _answer(self, label, conf, source, stage, t0):
        self.label = label
        self.conf = conf if conf < _U16 else _U16
        self.source = source
        self.stage = stage
        self.sources[source] += 1
        self.latency_us = ticks_diff(self._now(), t0)
        return source

    def _escalate(self, out, frame, score, t0):
        link = self.link
        up = link.up
        # whole ms left, less the answer reserve: a tier is never promised time the board lacks
        left_ms = gate.should_escalate(
            score, self.gates[-1].threshold, up, up and link.tier_online(), self.deadline_ms,
            ticks_diff(self._now(), t0), self.rtt_ms, _RESERVE_MS,
        )  # fmt: skip
        if left_ms < 0:
            self.skips[-2 - left_ms] += 1
            return 0
        wire.pack_topk(self._topk, out, self._idx, _K)
        seq = self.next_seq()
        n = wire.pack_escalate(
            self.esc, self.device, seq, self.version, left_ms, score if score < _U16 else _U16,
            self.remote, self._topk, frame,
        )  # fmt: skip
        if not link.send(wire.ESCALATE, self.esc, n):
            self.skips[_UNSENT] += 1
            return 0
        self.escalated += 1
        self.esc_bytes = n
        self._want = seq
        self._got = 0
        # Stop waiting _RESERVE_MS early: the fallback answer itself (pack, write) must land
        # inside the deadline, not just start before it.
        budget = (self.deadline_ms - _RESERVE_MS) * 1000
        while not self._got:
            left_us = budget - ticks_diff(self._now(), t0)
            if left_us <= 0:
                break
            link.poll(left_us // 1000, self._on_reply)
        self._want = -1
        if not self._got:
            self.timeouts += 1
        return self._got

    def _reply(self, buf, n):
        # One whole message from the link while an escalation waits. Checked before use; a bad
        # one is counted and dropped, never raised: the board keeps answering.
        msg = memoryview(buf)[:n]
        try:
            mtype = wire.header(msg)[0]
        except ValueError:
            self.drops[_BAD] += 1
            return
        if mtype == wire.RESULT:
            ref, version, label, conf, source, stage = wire.unpack_result(msg)
            if ref != self._want or self._got:
                self.drops[_STALE] += 1
            elif version != self.version:
                self.drops[_WRONG_VERSION] += 1
            elif (source != wire.GATEWAY and source != wire.CLOUD) or label >= self.classes:
                self.drops[_BAD] += 1
            else:
                self.label = label
                self.conf = conf
                self.source = source
                self.stage = stage
                self._got = _RESULT
        elif mtype == wire.REJECT:
            ref, reason, _ = wire.unpack_reject(msg)
            if ref != self._want or self._got:
                self.drops[_STALE] += 1
            else:
                self.rejected += 1
                self.reject_reason = reason
                self._got = _REJECTED
        else:
            self.drops[_UNEXPECTED] += 1
