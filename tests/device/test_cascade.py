"""ladder.cascade under micropython: the board's decision with scripted fake links.

A real ``digits_tiny.ldr`` and a ladder.json built with ``edgeladder.policy.config`` (exp tables
from the tiny tier's LiteRT logit scale; thresholds chosen here) drive ``Cascade`` on the VM at
the ESP32 heap. The link is a fake that the scenario scripts: a RESULT after k polls, a REJECT,
nothing, a RESULT for another model version or another escalation, garbage, the link down, the
tier offline. A fake clock moves only when the fake link waits, so every wait is checked
against the deadline exactly; one scenario runs on the real clock with a link that really
sleeps. Each escalation's bytes are compared with ``ladder.wire.pack_escalate`` of the
expected fields, computed here from the logits and outputs the board's engine reported.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from edgeladder_sim.fixtures.ladder import ldr_bytes, make_ladder_json, quantized_rows, runner
from ladder import gate, wire

DEADLINE_MS = 150
RESERVE_MS = 3  # ladder.cascade stops waiting this early: the answer lands inside the deadline
RTT_MS = 20  # the gateway stage's expected round trip
STEP_MS = 10  # how far the fake clock moves per poll that delivers something
THRESHOLD = 60000  # Q16 on "max" (temperature 1): rows far below it escalate, rows at 1.0 do not
DEVICE = 0x0A0B0C0D

# One scenario per line: (name, frame kind, link script). Link scripts:
#   up/online: the link's state; reply: list of (poll number, message spec) delivered on that
#   poll; a message spec is (kind, fields) built in the VM with ladder.wire.
SCENARIOS = [
    ("confident", "sure", {}),
    ("result_after_3_polls", "unsure", {"reply": [[3, ["result", 0, 7, 50000, 1, 1]]]}),
    ("result_from_cloud", "unsure", {"reply": [[1, ["result", 0, 4, 61000, 2, 2]]]}),
    ("reject", "unsure", {"reply": [[2, ["reject", 0, wire.QUEUE_FULL]]]}),
    ("never", "unsure", {}),
    ("wrong_version", "unsure", {"reply": [[1, ["result_v", 0, 7, 50000, 1, 1]]]}),
    (
        "stale_then_result",
        "unsure",
        {"reply": [[1, ["result", -1, 3, 40000, 1, 1]], [2, ["result", 0, 5, 42000, 1, 1]]]},
    ),
    (
        "garbage_then_result",
        "unsure",
        {"reply": [[1, ["garbage"]], [1, ["hello"]], [2, ["result", 0, 6, 43000, 1, 1]]]},
    ),
    ("link_down", "unsure", {"up": False}),
    ("tier_offline", "unsure", {"online": False}),
    ("no_time", "unsure", {"late_ms": DEADLINE_MS - RTT_MS}),
    ("bad_source", "unsure", {"reply": [[1, ["result", 0, 7, 50000, 0, 1]]]}),
]

_VM_SCRIPT = """\
import gc, json, micropython, struct
from array import array
from ladder import wire
from ladder.cascade import DROPS, SKIPS, Cascade

T = [0]  # the fake clock, in us

def clock():
    return T[0]

def msg(spec, seq, version):
    kind = spec[0]
    b = bytearray(64)
    if kind == "result" or kind == "result_v":
        v = version if kind == "result" else version ^ 1
        n = wire.pack_result(b, 1, 900, seq + spec[1], v, spec[2], spec[3], spec[4], spec[5])
    elif kind == "reject":
        n = wire.pack_reject(b, 1, 900, seq + spec[1], spec[2], 0)
    elif kind == "hello":
        n = wire.pack_hello(b, 1, 900, version, (0, 1, 0), 3, 1000)
    else:
        b[:9] = b"\\x09garbage!"
        n = 9
    return b, n

class FakeLink:
    def __init__(self, plan, version):
        self.up = plan.get("up", True)
        self.online = plan.get("online", True)
        self.reply = plan.get("reply", [])
        self.version = version
        self.sent = []
        self.waits = []
        self.left = []

    def tier_online(self):
        return self.online

    def service(self):
        pass

    def send(self, mtype, m, n):
        self.sent.append((mtype, bytes(m[:n])))
        self.seq = struct.unpack_from("<I", m, 6)[0]
        return True

    def poll(self, timeout_ms, on_message):
        self.waits.append([timeout_ms, T[0] - self.t0])
        k = len(self.waits)
        got = 0
        more = False
        for at, spec in self.reply:
            if at == k:
                b, n = msg(spec, self.seq, self.version)
                on_message(b, n)
                got += 1
            more = more or at > k
        # Something still to come: this poll ends early (STEP_MS, as on bytes of a partial
        # message); else it waits its whole timeout, as a real link does when nothing comes.
        w = STEP_MS if more or got else timeout_ms
        T[0] += (w if w < timeout_ms else timeout_ms) * 1000
        return got

STEP_MS = {step}
print(json.dumps({{"kind": "names", "drops": DROPS, "skips": SKIPS}}))
ladder = json.load(open({ladder!r}))
frames = json.load(open({frames!r}))
scen = json.load(open({scen!r}))
c = Cascade(ladder, None, {device}, {base!r}, clock)
for name, kind, plan in scen:
    link = c.link = FakeLink(plan, ladder["model_version"])
    c.drops = [0] * len(c.drops)
    c.skips = [0] * len(c.skips)
    c.rejected = c.timeouts = c.escalated = 0
    frame = array("b", frames[kind])
    T[0] = 1000000
    t0 = link.t0 = T[0] - plan.get("late_ms", 0) * 1000
    src = c.decide(frame, t0)
    m = c.models[0]
    print(json.dumps({{
        "kind": "scenario", "name": name, "source": src, "label": c.label, "conf": c.conf,
        "stage": c.stage,
        "latency_us": c.latency_us, "elapsed_us": T[0] - t0, "waits": link.waits,
        "sent": [[t, s.hex()] for t, s in link.sent], "drops": c.drops, "skips": c.skips,
        "rejected": c.rejected, "timeouts": c.timeouts, "escalated": c.escalated,
        "logits": list(m.logits()), "output": list(m.output.data),
    }}))
    link = m = None
    gc.collect()

# allocation: the edge path and the escalation path (a link that never answers) allocate
# nothing per frame; heap_lock turns any allocation into MemoryError
def run(c, frame, k):
    for i in range(k):
        T[0] += 1000
        c.decide(frame, T[0])

def locked(c, frame, k):
    micropython.heap_lock()
    try:
        run(c, frame, k)
        ok = True
    except MemoryError:
        ok = False
    micropython.heap_unlock()
    return ok

class Quiet:  # sends, and hears nothing until the deadline (the clock moves by the wait)
    up = True
    def tier_online(self):
        return True
    def send(self, mtype, m, n):
        return True
    def poll(self, timeout_ms, cb):
        T[0] += timeout_ms * 1000
        return 0

c.link = Quiet()
for kind in ("sure", "unsure"):
    c.sources = [0, 0, 0, 0]
    frame = array("b", frames[kind])
    run(c, frame, 3)
    gc.collect()
    print(json.dumps({{"kind": "alloc", "frame": kind, "ok": locked(c, frame, 50),
                      "sources": c.sources}}))
    gc.collect()

# the real clock: a link that really sleeps and never answers; the answer is still on time
import time
class Sleeper(Quiet):  # the same link, but its wait is a real sleep
    def poll(self, timeout_ms, cb):
        time.sleep_ms(timeout_ms)
        return 0
c.link = Sleeper()
c._now = time.ticks_us
frame = array("b", frames["unsure"])
for i in range(5):
    t0 = time.ticks_us()
    src = c.decide(frame, t0)
    print(json.dumps({{"kind": "real", "source": src, "latency_us": c.latency_us,
                      "measured_us": time.ticks_diff(time.ticks_us(), t0)}}))
"""


@pytest.fixture(scope="module")
def case(digits_build, tmp_path_factory):
    """The ladder, two frames (one the tiny model is sure of, one it is not) and the VM run."""
    build = Path(digits_build.out)
    tmp = tmp_path_factory.mktemp("cascade")
    ladder = make_ladder_json(
        build,
        thresholds={"tiny": THRESHOLD},
        measure="max",
        deadline_ms=DEADLINE_MS,
        expected_rtt_ms={"medium": RTT_MS},
    )
    (tmp / "ladder.json").write_text(json.dumps(ladder))
    (tmp / "digits_tiny.ldr").write_bytes(ldr_bytes(build, "tiny"))
    x, _ = quantized_rows(build, "validation")
    r = runner(build, "tiny")
    _, logits = r.run_int8_logits(x.reshape(len(x), *r.input_shape))
    lut = ladder["stages"][0]["exp_lut"]
    conf = np.array([gate.confidence(gate.MAX, lg.tolist(), 10, lut) for lg in logits])
    frames = {
        "sure": x[int(np.argmax(conf))].tolist(),
        "unsure": x[int(np.argmin(conf))].tolist(),
    }
    assert conf.max() == gate.ONE and conf.min() < THRESHOLD - 10000
    (tmp / "frames.json").write_text(json.dumps(frames))
    (tmp / "scen.json").write_text(json.dumps(SCENARIOS))
    return ladder, frames, tmp


@pytest.fixture(scope="module")
def vm(case, esp32_heap):
    from engine_harness import shipped_firmware

    from edgeladder.device.micropython import run_micropython

    tmp = case[2]
    code = _VM_SCRIPT.format(
        step=STEP_MS,
        ladder=str(tmp / "ladder.json"),
        frames=str(tmp / "frames.json"),
        scen=str(tmp / "scen.json"),
        device=DEVICE,
        base=str(tmp) + "/",
    )
    res = run_micropython(
        code, heap_bytes=esp32_heap, path=[shipped_firmware()], timeout=60
    ).check()
    recs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    out = {"scenarios": [r for r in recs if r["kind"] == "scenario"]}
    out["by_name"] = {s["name"]: s for s in out["scenarios"]}
    out["alloc"] = {r["frame"]: r for r in recs if r["kind"] == "alloc"}
    out["real"] = [r for r in recs if r["kind"] == "real"]
    out["names"] = next(r for r in recs if r["kind"] == "names")
    assert len(out["scenarios"]) == len(SCENARIOS) and len(out["real"]) == 5
    return out


EXPECT = {  # name: (source, label or None = the tiny model's top-1, drops, skips)
    "confident": (wire.EDGE, None, {}, {}),
    "result_after_3_polls": (wire.GATEWAY, 7, {}, {}),
    "result_from_cloud": (wire.CLOUD, 4, {}, {}),
    "reject": (wire.EDGE_FALLBACK, None, {}, {}),
    "never": (wire.EDGE_FALLBACK, None, {}, {}),
    "wrong_version": (wire.EDGE_FALLBACK, None, {"wrong_version": 1}, {}),
    "stale_then_result": (wire.GATEWAY, 5, {"stale": 1}, {}),
    "garbage_then_result": (wire.GATEWAY, 6, {"bad_message": 1, "unexpected": 1}, {}),
    "link_down": (wire.EDGE_FALLBACK, None, {}, {"link_down": 1}),
    "tier_offline": (wire.EDGE_FALLBACK, None, {}, {"tier_offline": 1}),
    "no_time": (wire.EDGE_FALLBACK, None, {}, {"no_time": 1}),
    "bad_source": (wire.EDGE_FALLBACK, None, {"bad_message": 1}, {}),
}


@pytest.mark.parametrize("name", list(EXPECT))
def test_every_answer_has_the_expected_source(vm, name):
    DROPS, SKIPS = vm["names"]["drops"], vm["names"]["skips"]
    s = vm["by_name"][name]
    source, label, drops, skips = EXPECT[name]
    assert (wire.SOURCES[s["source"]], s["source"]) == (wire.SOURCES[source], source)
    top1 = int(np.argmax(s["output"]))
    assert s["label"] == (top1 if label is None else label)
    assert dict(zip(DROPS, s["drops"], strict=True)) == {d: drops.get(d, 0) for d in DROPS}
    assert dict(zip(SKIPS, s["skips"], strict=True)) == {k: skips.get(k, 0) for k in SKIPS}
    escalates = name != "confident" and not skips
    assert s["escalated"] == int(escalates) and len(s["sent"]) == int(escalates)
    assert s["stage"] == ({wire.GATEWAY: 1, wire.CLOUD: 2}.get(source, 0))
    assert s["rejected"] == int(name == "reject")
    if name == "result_after_3_polls":
        assert len(s["waits"]) == 3  # two empty polls, then the RESULT
        assert s["latency_us"] == 3 * STEP_MS * 1000
    assert s["timeouts"] == int(name in ("never", "wrong_version", "bad_source"))


@pytest.mark.parametrize("name", list(EXPECT))
def test_no_wait_runs_past_the_deadline(vm, name):
    s = vm["by_name"][name]
    budget = (DEADLINE_MS - RESERVE_MS) * 1000
    assert s["latency_us"] == s["elapsed_us"] <= budget
    for timeout_ms, at_us in s["waits"]:  # each wait fits in what was left when it began
        assert 0 <= timeout_ms * 1000 <= budget - at_us
    if name in ("never", "wrong_version", "bad_source"):
        assert s["latency_us"] == budget  # waited exactly up to the deadline, then answered
    if name == "reject":
        assert s["latency_us"] < budget  # a reject answers at once


def test_answers_on_the_real_clock_are_within_the_deadline(vm):
    for r in vm["real"]:
        src, latency_us, measured_us = r["source"], r["latency_us"], r["measured_us"]
        assert src == wire.EDGE_FALLBACK
        assert (DEADLINE_MS - RESERVE_MS) * 1000 <= latency_us <= measured_us
        assert latency_us <= DEADLINE_MS * 1000  # the answer itself is inside the deadline


def _expected_escalation(case, s, seq: int) -> bytes:
    ladder, frames, _ = case
    lut = ladder["stages"][0]["exp_lut"]
    conf = gate.confidence(gate.MAX, s["logits"], 10, lut)
    out = np.array(s["output"])
    top = np.argsort(-out, kind="stable")[:2]
    topk = bytes(int(v) for c in top for v in (c, out[c] + 128))
    buf = bytearray(wire.MAX_MESSAGE)
    n = wire.pack_escalate(
        buf, DEVICE, seq, ladder["model_version"], DEADLINE_MS - RESERVE_MS, min(conf, 65535), 1,
        topk,
        np.array(frames["unsure"], np.int8).tobytes(),
    )  # fmt: skip
    return bytes(buf[:n])


@pytest.mark.parametrize("name", ["result_after_3_polls", "never", "reject", "wrong_version"])
def test_escalation_bytes_are_pack_escalate_of_the_expected_fields(case, vm, name):
    s = vm["by_name"][name]
    ((mtype, hexed),) = s["sent"]
    got = bytes.fromhex(hexed)
    assert mtype == wire.ESCALATE
    seq = struct.unpack_from(wire.HEADER_FMT, got)[3]
    assert got == _expected_escalation(case, s, seq)
    _, left, conf, stage, k, n, _, _ = wire.unpack_escalate(got)
    # stage 1: the gateway; all the time left but the board's answer reserve
    assert (stage, k, n, left) == (1, 2, 64, DEADLINE_MS - RESERVE_MS)
    assert conf < THRESHOLD
    assert len(got) <= n + 32  # bytes per escalation <= input bytes + 32


def test_board_logits_are_the_tiny_models(case, vm, digits_build):
    """The fields above come from the board's engine: they match LiteRT's within the
    documented FULLY_CONNECTED rounding step (tests/device/test_logits.py)."""
    _, frames, _ = case
    r = runner(Path(digits_build.out), "tiny")
    s = vm["by_name"]["never"]
    x = np.array([frames["unsure"]], np.int8).reshape(1, *r.input_shape)
    out, logits = r.run_int8_logits(x)
    assert np.abs(np.array(s["logits"]) - logits[0]).max() <= 1
    assert np.abs(np.array(s["output"]) - out[0]).max() <= 2


def test_hot_paths_allocate_nothing(vm):
    sure, unsure = vm["alloc"]["sure"], vm["alloc"]["unsure"]
    assert sure["ok"] and sure["sources"][wire.EDGE] == 53
    assert unsure["ok"] and unsure["sources"][wire.EDGE_FALLBACK] == 53


def test_seq_increments_per_message(vm):
    """One Cascade ran every scenario: its ESCALATEs carry seq 1, 2, 3... and the device id."""
    seqs = []
    for s in vm["scenarios"]:
        for _, hexed in s["sent"]:
            _, mtype, device, seq = struct.unpack_from(wire.HEADER_FMT, bytes.fromhex(hexed))
            assert (mtype, device) == (wire.ESCALATE, DEVICE)
            seqs.append(seq)
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 8
