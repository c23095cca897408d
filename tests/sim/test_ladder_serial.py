"""The ladder over the serial link: a virtual ESP32 runs the application; the test is its gateway.

The board (our firmware, the tiny digits model, a ladder.json and a device.json with a serial
link) reads digits test rows from a sensor feed, answers the ones it is sure of, and escalates
the others on its REPL port in binary mode. The test plays the gateway on the board's pty with
pyserial, ``ladder.framing`` and ``ladder.wire``: it answers some escalations with RESULTs
(source gateway), leaves others unanswered, and once sends garbage, a frame with a bad CRC, a
RESULT for another model version and one for another escalation. Every input must get exactly
one answer, from the expected source, within the deadline, and the board must count and drop
what was bad and keep going.

Then the serial ``Link`` alone on the VM with a scripted stdin: framing on stdout (no 0x03, so
Ctrl-C still works), drops counted by reason, and the back-off after unanswered escalations.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import serial

from edgeladder.boards import registry as boards
from edgeladder_sim.fixtures import ladder as lf
from ladder import framing, gate, wire

DEVICE = 0x00C0FFEE
DEADLINE_MS = 150
RESERVE_MS = 3  # ladder.cascade stops waiting this early: the answer lands inside the deadline
N_SURE, N_UNSURE = 18, 12
SLACK_US = 5000  # the VM's scheduling on a shared machine, past the deadline at most


def _ladder(build: Path) -> dict:
    return lf.max_gated_ladder_json(build, deadline_ms=DEADLINE_MS)


def _pick_rows(build: Path):
    """18 rows the tiny model is sure of and 12 it is not (far from the threshold either way,
    so that the board's logits -- TFLM rounding, one code off LiteRT's now and then -- put them
    on the same side), interleaved."""
    x, y, conf = lf.edge_confidences(build, _ladder(build))
    sure = np.nonzero(conf >= gate.ONE - 64)[0][:N_SURE]
    unsure = np.nonzero(conf <= lf.BOARD_THRESHOLD - 8000)[0][:N_UNSURE]
    assert len(sure) == N_SURE and len(unsure) == N_UNSURE, (len(sure), len(unsure))
    sure_it, unsure_it = iter(sure.tolist()), iter(unsure.tolist())
    idx = np.array([next(unsure_it if i % 5 in (1, 3) else sure_it) for i in range(30)])
    rows = x[idx]
    assert len({r.tobytes() for r in rows}) == len(rows)  # escalations map back to one row each
    return rows, y[idx], {i for i in range(len(idx)) if i % 5 in (1, 3)}


class Gateway:
    """The host end of the board's serial link: decodes frames, answers per a plan."""

    def __init__(self, port: str, version: int) -> None:
        self.ser = serial.Serial(port, 115200, timeout=0.02)
        self.version = version
        self.dec = framing.Decoder(wire.MAX_MESSAGE)
        self.messages: list[tuple[int, int, bytes]] = []  # (type, seq, body)
        self.raw = bytearray()
        self.seq = 0

    def pump(self) -> list[bytes]:
        """Read what is waiting; the whole messages decoded from it."""
        data = self.ser.read(4096)
        self.raw += data
        got: list[bytes] = []
        self.dec.feed(data, len(data), lambda b, n: got.append(bytes(b[:n])))
        for m in got:
            mtype, _, seq = wire.header(m)
            self.messages.append((mtype, seq, m))
        return got

    def send(self, msg: bytes) -> None:
        out = bytearray(2 * len(msg) + 10)
        n = framing.encode_into(out, msg, len(msg))
        self.ser.write(bytes(out[:n]))

    def result(self, ref: int, label: int, *, version: int | None = None) -> bytes:
        self.seq += 1
        buf = bytearray(64)
        v = self.version if version is None else version
        n = wire.pack_result(buf, DEVICE, self.seq, ref, v, label, 61000, wire.GATEWAY, 1)
        return bytes(buf[:n])

    def close(self) -> None:
        self.ser.close()


def test_board_ladder_over_serial(digits_build, sim_board_factory, sensor_feed):
    build = Path(digits_build.out)
    rows, labels, unsure_rows = _pick_rows(build)
    ladder = _ladder(build)
    feed = sensor_feed(rows, rate_hz=25)
    dev = lf.device_json(DEVICE, {"kind": "serial", "miss_limit": 2}, feed.port)
    sim = sim_board_factory(files=lf.board_files(build, ladder, dev), firmware=True, boot=False)
    gw = Gateway(sim.port, ladder["model_version"])
    by_input = {r.tobytes(): i for i, r in enumerate(rows)}
    plan: dict[int, str] = {}  # row -> what the gateway did with its escalation
    escalations: list[bytes] = []
    try:
        sim.board.power_on()
        end = time.monotonic() + 40
        while len(feed.answers) < len(rows) and time.monotonic() < end:
            for m in gw.pump():
                mtype, _, seq = wire.header(m)
                if mtype != wire.ESCALATE:
                    continue
                escalations.append(m)
                mv, *_, n, _, o_in = wire.unpack_escalate(m)
                row = by_input[m[o_in : o_in + n]]
                e = len(escalations) - 1
                if e % 3 == 2:
                    plan[row] = "ignored"  # never answered: the board falls back at its deadline
                    continue
                if e == 1:  # everything a board must survive, before the real answer
                    gw.ser.write(b"\x01\x02 junk \xdb\x41 more junk")  # bad escape, no END
                    bad = bytearray(64)
                    nb = framing.encode_into(bad, gw.result(seq, 1), wire.HEADER_SIZE + 14)
                    bad[nb - 2] ^= 0x55  # inside the CRC (0x55 flips no byte into END/ESC/ETX)
                    gw.ser.write(bytes(bad[:nb]))
                    gw.send(gw.result(seq, 2, version=mv ^ 0x5A5A))  # another model version
                    gw.send(gw.result(seq - 1, 3))  # another escalation's result
                gw.send(gw.result(seq, int(labels[row])))
                plan[row] = "answered"
        answers = feed.wait_answers(len(rows), 5)
        done_at = sim.board.wait_output(b"edgeladder ladder done ", 10)
        sim.board.wait_booted(10)  # main.py returned: the board is at its REPL
        gw.pump()
    finally:
        gw.close()

    # exactly one answer per input, in order
    assert [a.ref for a in answers] == list(range(len(rows)))
    assert len(feed.answers) == len(rows) and feed.bad_answers == 0
    assert {a.device for a in answers} == {DEVICE}
    # the sources: edge for sure rows; gateway / edge_fallback as the gateway chose
    assert set(plan) == unsure_rows
    for i, a in enumerate(answers):
        want = {"answered": "gateway", "ignored": "edge_fallback"}.get(plan.get(i), "edge")
        assert a.source == want, (i, a)
        if want == "gateway":
            assert a.label == labels[i] and a.stage == 1 and a.confidence == 61000
            assert a.latency_us < DEADLINE_MS * 1000
        elif want == "edge_fallback":
            assert (
                (DEADLINE_MS - RESERVE_MS) * 1000 <= a.latency_us <= DEADLINE_MS * 1000 + SLACK_US
            )
        else:
            assert a.stage == 0 and a.confidence >= lf.BOARD_THRESHOLD and a.latency_us < 20_000
    assert list(plan.values()).count("ignored") == 4

    # escalation bytes: header + fixed fields + top-2 + the 64 int8 inputs
    sizes = {len(m) for m in escalations}
    assert sizes == {wire.HEADER_SIZE + wire.ESCALATE_FIXED + 4 + 64}
    assert max(sizes) <= 64 + 32

    # the board's own count of what it dropped, and its HELLO / last HEARTBEAT
    line = sim.board.output()[done_at:].split(b"\n", 1)[0].decode()
    done = json.loads(line)
    assert done["frames"] == len(rows)
    assert done["dropped"]["wrong_version"] == 1 and done["dropped"]["stale"] == 1
    assert done["link_dropped"]["bad_escape"] == 1 and done["link_dropped"]["bad_crc"] == 1
    assert done["escalated"] == N_UNSURE and done["timeouts"] == 4
    assert done["skipped"] == {"link_down": 0, "tier_offline": 0, "no_time": 0, "unsent": 0}
    kinds = [t for t, _, _ in gw.messages]
    assert kinds[0] == wire.HELLO and kinds[-1] == wire.HEARTBEAT
    hello = wire.unpack_hello(gw.messages[0][2])
    assert hello[0] == ladder["model_version"] and hello[4] == 3 and hello[5] > 10_000
    hb = wire.unpack_heartbeat(gw.messages[-1][2])
    assert hb[2:5] == (len(rows), N_UNSURE, 4)  # answered, escalated, fallbacks
    assert hb[5] == 4  # dropped: bad escape, bad CRC, wrong version, stale
    seqs = [s for _, s, _ in gw.messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # one counter, increasing
    assert b"\x03" not in gw.raw[gw.raw.find(b"\xc0") :]  # no Ctrl-C in anything framed

    edge = [a.latency_us for a in answers if a.source == "edge"]
    host = [(a.t - feed.sent_at[a.ref]) * 1000 for a in answers if a.source == "edge"]
    print(
        f"\nedge answers: board latency median {np.median(edge):.0f} us (max {max(edge)}),"
        f" host round trip median {np.median(host):.2f} ms; escalation {max(sizes)} bytes"
    )


# -- the serial Link on the VM, stdin scripted ------------------------------------------------

_LINK_SCRIPT = """\
import time
from ladder import wire
from ladder.link import make

link = make({"link": {"kind": "serial", "miss_limit": 2, "backoff_ms": 300}}, 7)
got = []

def on_message(buf, n):
    got.append(bytes(buf[:n]))

def esc(seq, payload):
    buf = bytearray(200)
    n = wire.pack_escalate(buf, 7, seq, 99, 100, 1000, 1, bytes([1, 200, 3, 4]), payload)
    return link.send(wire.ESCALATE, buf, n)

def report(what):
    print("@", what, link.tier_online(), len(got), link.dropped)

t = time.ticks_ms()
esc(1, bytes(range(64)))
link.poll(200, on_message)  # the RESULT waiting on stdin (after garbage and a bad CRC)
report("answered")
esc(2, bytes([3, 0xC0, 0xDB, 3] * 16))
t = time.ticks_ms()
link.poll(60, on_message)
report("miss1 %d" % time.ticks_diff(time.ticks_ms(), t))
esc(3, bytes(64))
link.poll(60, on_message)
report("miss2")
time.sleep_ms(320)
report("backoff_over")
esc(4, bytes(64))
link.poll(20, on_message)
report("probe_missed")
link.service()
link.close()
report("closed")
"""


def _frame(msg: bytes) -> bytes:
    out = bytearray(2 * len(msg) + 10)
    return bytes(out[: framing.encode_into(out, msg, len(msg))])


def test_serial_link_framing_drops_and_back_off(tmp_path):
    buf = bytearray(64)
    n = wire.pack_result(buf, 7, 1, 1, 99, 5, 60000, wire.GATEWAY, 1)
    good = _frame(bytes(buf[:n]))
    bad = bytearray(good)
    bad[-2] ^= 0x55  # inside the CRC
    stdin = b"noise \xdb\x01 noise" + bytes(bad) + good
    raw = _raw_stdout(_LINK_SCRIPT, stdin, boards.get("esp32").heap_bytes, tmp_path)
    # the reports follow the frames on the same line: a frame ends with END (0xC0), not "\n"
    reports = [r.decode() for r in re.findall(rb"@ [^\n]*", raw)]
    assert len(reports) == 6, raw
    answered, miss1, miss2, over, probe, closed = reports
    assert answered.startswith("@ answered True 1 ")
    assert "'bad_escape': 1" in answered and "'bad_crc': 1" in answered
    waited = int(miss1.split()[2])
    assert miss1.startswith("@ miss1 ") and " True 1 " in miss1 and 60 <= waited < 200
    assert miss2.startswith("@ miss2 False 1 ")  # two unanswered in a row: back off
    assert over.startswith("@ backoff_over True 1 ")  # the back-off is over: one probe
    assert probe.startswith("@ probe_missed False 1 ")  # the probe missed: back off again
    assert closed.startswith("@ closed False 1 ")

    # stdout: the four ESCALATEs, framed; no 0x03 anywhere although payload 2 is full of them
    dec = framing.Decoder(wire.MAX_MESSAGE)
    msgs: list[bytes] = []
    dec.feed(raw, len(raw), lambda b, n: msgs.append(bytes(b[:n])))
    assert [wire.header(m)[:3:2] for m in msgs] == [(wire.ESCALATE, s) for s in (1, 2, 3, 4)]
    assert msgs[1][-64:] == bytes([3, 0xC0, 0xDB, 3] * 16)
    assert b"\x03" not in raw


def _frame(msg: bytes) -> bytes:
    out = bytearray(2 * len(msg) + 10)
    return bytes(out[: framing.encode_into(out, msg, len(msg))])


def _raw_stdout(code: str, stdin: bytes, heap: int, tmp: Path) -> bytes:
    """The script's stdout as bytes (VMResult holds decoded text, which would mangle frames)."""
    from edgeladder.device.micropython import find_micropython, micropython_path

    script = tmp / "link_script.py"
    script.write_text(code)
    proc = subprocess.run(
        [str(find_micropython()), "-X", f"heapsize={heap}", str(script)],
        input=stdin,
        capture_output=True,
        timeout=30,
        env=dict(os.environ, MICROPYPATH=micropython_path()),
    )
    assert proc.returncode == 0, proc.stdout[-800:] + proc.stderr[-800:]
    return proc.stdout
