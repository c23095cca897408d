"""The board application (ladder.app via main.py) on a virtual ESP32, without a gateway.

- Nobody answers on the serial line: every input is still answered, and after two unanswered
  escalations the link backs off, so a missing host costs two deadlines, not one per input.
- A HEARTBEAT every 5 s while the app runs, and a last one at the end of the sensor data.
- Without /ladder.json only the banner is printed; with a sensor that is not there the app
  says why and the board still reaches its REPL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import serial

from edgeladder_sim.fixtures import ladder as lf
from ladder import framing, gate, wire

DEVICE = 0x1234
DEADLINE_MS = 120
RESERVE_MS = 3  # ladder.cascade stops waiting this early: the answer lands inside the deadline


def _ladder(build: Path) -> dict:
    return lf.max_gated_ladder_json(build, deadline_ms=DEADLINE_MS)


def _rows(build: Path, n_sure: int, n_unsure: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, unsure mask): n_sure rows at confidence 1.0, then n_unsure far under the threshold."""
    x, _, conf = lf.edge_confidences(build, _ladder(build))
    sure = np.nonzero(conf >= gate.ONE - 64)[0][:n_sure]
    unsure = np.nonzero(conf <= lf.BOARD_THRESHOLD - 8000)[0][:n_unsure]
    assert len(sure) == n_sure and len(unsure) == n_unsure
    idx = np.concatenate([sure, unsure])
    return x[idx], np.arange(len(idx)) >= n_sure


def _listen(port: str, until, timeout: float) -> list[tuple[int, bytes]]:
    """Read the board's serial line until ``until()``; the wire messages framed on it."""
    got: list[tuple[int, bytes]] = []
    dec = framing.Decoder(wire.MAX_MESSAGE)
    with serial.Serial(port, 115200, timeout=0.05) as ser:
        end = time.monotonic() + timeout
        while not until() and time.monotonic() < end:
            data = ser.read(4096)
            dec.feed(data, len(data), lambda b, n: got.append((b[1], bytes(b[:n]))))
    return got


def _done(sim) -> dict:
    at = sim.board.wait_output(b"edgeladder ladder done ", 10)
    line = sim.board.output()[at:].split(b"\n", 1)[0].decode()
    return json.loads(line)


def test_missing_host_costs_two_deadlines_then_the_link_backs_off(
    digits_build, sim_board_factory, sensor_feed
):
    build = Path(digits_build.out)
    rows, unsure = _rows(build, 10, 14)
    order = np.random.default_rng(3).permutation(len(rows))
    rows, unsure = rows[order], unsure[order]
    feed = sensor_feed(rows, rate_hz=50)  # ~0.5 s of data: inside one 2 s back-off
    dev = lf.device_json(DEVICE, {"kind": "serial"}, feed.port)  # default: 2 misses, 2 s back-off
    sim = sim_board_factory(files=lf.board_files(build, _ladder(build), dev), firmware=True)
    msgs = _listen(sim.port, lambda: b"edgeladder ladder done" in sim.board.output(), 30)
    answers = feed.wait_answers(len(rows), 5)
    done = _done(sim)
    sim.board.wait_booted(10)

    assert [a.ref for a in answers] == list(range(len(rows)))
    for a, u in zip(answers, unsure, strict=True):
        assert a.source == ("edge_fallback" if u else "edge")
    waited = [a for a in answers if a.latency_us >= (DEADLINE_MS - RESERVE_MS) * 1000]
    assert len(waited) == 2  # the two escalations that went unanswered
    assert all(a.latency_us < 20_000 for a in answers if a not in waited)
    assert done["escalated"] == 2 and done["timeouts"] == 2
    assert done["skipped"]["tier_offline"] == int(unsure.sum()) - 2
    kinds = [k for k, _ in msgs]
    assert kinds.count(wire.ESCALATE) == 2
    assert kinds[0] == wire.HELLO and kinds[-1] == wire.HEARTBEAT
    # the answer channel's host timestamps: after the frame left, in order
    assert all(a.t > feed.sent_at[a.ref] for a in answers)
    assert [a.t for a in answers] == sorted(a.t for a in answers)


def test_heartbeat_every_five_seconds(digits_build, sim_board_factory, sensor_feed):
    build = Path(digits_build.out)
    rows, _ = _rows(build, 14, 0)
    feed = sensor_feed(rows, rate_hz=2.0)  # 6.5 s of data
    dev = lf.device_json(DEVICE, {"kind": "serial"}, feed.port)
    sim = sim_board_factory(files=lf.board_files(build, _ladder(build), dev), firmware=True)
    stamps: list[tuple[float, int, bytes]] = []
    dec = framing.Decoder(wire.MAX_MESSAGE)
    with serial.Serial(sim.port, 115200, timeout=0.05) as ser:
        end = time.monotonic() + 30
        while b"edgeladder ladder done" not in sim.board.output() and time.monotonic() < end:
            data = ser.read(4096)
            t = time.monotonic()
            dec.feed(data, len(data), lambda b, n, t=t: stamps.append((t, b[1], bytes(b[:n]))))
    feed.wait_answers(len(rows), 5)
    beats = [(t, wire.unpack_heartbeat(m)) for t, k, m in stamps if k == wire.HEARTBEAT]
    assert len(beats) == 2  # one at ~5 s, one at the end of the data
    first_t = next(t for t, k, _ in stamps if k == wire.HELLO)
    assert 4.5 <= beats[0][0] - first_t <= 6.0
    assert beats[0][1][0] in (4, 5)  # uptime, whole seconds
    assert beats[-1][1][2] == len(rows)  # answered, at the end
    assert beats[0][1][1] > 10_000  # heap free, reported


def test_without_a_ladder_only_the_banner(sim_board_factory):
    sim = sim_board_factory(firmware=True)
    sim.board.wait_booted(20)
    out = sim.board.output()
    assert b"edgeladder ladder " in out and b"bytes free" in out
    assert b"ladder done" not in out and b"ladder stopped" not in out
    assert sim.mpremote("exec", "print(6 * 7)").stdout == "42\n"


def test_a_missing_sensor_is_reported_and_the_board_reaches_its_repl(
    digits_build, sim_board_factory
):
    import socket

    build = Path(digits_build.out)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dev = lf.device_json(DEVICE, {"kind": "serial"}, port)
    sim = sim_board_factory(files=lf.board_files(build, _ladder(build), dev), firmware=True)
    sim.board.wait_booted(20)
    out = sim.board.output()
    assert b"edgeladder ladder stopped" in out and b"OSError" in out
    assert sim.mpremote("exec", "print(6 * 7)").stdout == "42\n"


def test_a_tier_that_does_not_know_the_board_gets_a_hello_again(
    digits_build, sim_board_factory, sensor_feed
):
    # A tier that started after the board (or lost its HELLO) rejects with unknown_device: the
    # board answers that input at once (edge_fallback) and says HELLO again, so the next
    # escalation is served.
    build = Path(digits_build.out)
    rows, unsure = _rows(build, 2, 4)
    feed = sensor_feed(rows, rate_hz=10)
    dev = lf.device_json(DEVICE, {"kind": "serial"}, feed.port)
    sim = sim_board_factory(files=lf.board_files(build, _ladder(build), dev), firmware=True)
    seen: list[int] = []  # message types from the board, in order
    answered = rejected = 0
    dec = framing.Decoder(wire.MAX_MESSAGE)
    with serial.Serial(sim.port, 115200, timeout=0.05) as ser:
        end = time.monotonic() + 30
        got: list[bytes] = []
        while len(feed.answers) < len(rows) and time.monotonic() < end:
            got.clear()
            data = ser.read(4096)
            dec.feed(data, len(data), lambda b, n: got.append(bytes(b[:n])))
            for m in list(got):
                mtype, _, seq = wire.header(m)
                seen.append(mtype)
                if mtype != wire.ESCALATE:
                    continue
                buf = bytearray(64)
                if not rejected:
                    n = wire.pack_reject(buf, DEVICE, 1, seq, wire.UNKNOWN_DEVICE)
                    rejected += 1
                else:
                    version = wire.unpack_escalate(m)[0]
                    n = wire.pack_result(buf, DEVICE, 2 + answered, seq, version, 7, 61000, 1, 1)
                    answered += 1
                out = bytearray(2 * n + 10)
                ser.write(bytes(out[: framing.encode_into(out, buf, n)]))
    answers = feed.wait_answers(len(rows), 5)
    first = seen.index(wire.ESCALATE)
    assert wire.HELLO in seen[first + 1 :], seen  # said HELLO again after the reject
    fallbacks = [a for a in answers if a.source == "edge_fallback"]
    assert len(fallbacks) == 1 and fallbacks[0].latency_us < DEADLINE_MS * 1000 // 2
    assert answered == int(unsure.sum()) - 1
    assert sum(a.source == "gateway" for a in answers) == answered
