"""The board's MQTT client (ladder.link.mqtt) under the real micropython binary, against a real
broker (the embedded amqtt and Mosquitto), with paho-mqtt on the host side.

A small driver script runs the client the way the board application does (service, send, poll
in a loop) and prints what happens as lines: `session N`, `esc SEQ` (an ESCALATE published),
`rx HEX` (a payload delivered from down/), and every 100 ms a `stat` line with the loop counter,
the link's state and counters, and the longest single service(), send() and poll() call since
the previous stat line.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edgeladder.boards import registry as boards
from edgeladder.device.micropython import find_micropython, micropython_path
from edgeladder_sim.broker import Broker, start_broker
from ladder import topics, wire

DEV = 0x00C0FFEE
FLEET = "demo"
POLL_MS = 10
TOPK = bytes([5, 0x90, 3, 0x10])
DATA = bytes((i * 7) & 0xFF for i in range(64))
UP_ESC = topics.device_topic(FLEET, DEV, topics.UP, "esc")
UP_HELLO = topics.device_topic(FLEET, DEV, topics.UP, "hello")
DOWN_RES = topics.device_topic(FLEET, DEV, topics.DOWN, "res")
STATUS = topics.tier_topic(FLEET, "gateway", topics.STATUS)
SLOW_CALL_US = 30_000  # "never blocks": every single call returns within this (typically < 1 ms)

DRIVER = """\
import sys, json, gc
from time import ticks_ms, ticks_us, ticks_diff, ticks_add
from binascii import hexlify
from ladder import wire
gc.collect()
from ladder.link.mqtt import Link

with open(sys.argv[1]) as f:
    cfg = json.load(f)
DEV = cfg["device"]
TOPK = bytes(cfg["topk"])
DATA = bytes(cfg["data"])
link = Link(cfg, DEV)
esc = bytearray(wire.MAX_MESSAGE)
hello = bytearray(wire.HEADER_SIZE + wire.HELLO_SIZE)

def on_msg(buf, n):
    print("rx", hexlify(bytes(buf[:n])).decode())

seq = 0
loops = 0
session = 0
ws = wsend = wpoll = 0
stat_at = esc_at = ticks_ms()
end = ticks_add(stat_at, cfg["run_ms"])
while ticks_diff(end, ticks_ms()) > 0:
    t = ticks_us()
    link.service()
    ws = max(ws, ticks_diff(ticks_us(), t))
    if link.sessions != session:
        session = link.sessions
        n = wire.pack_hello(hello, DEV, 0, 7, (0, 1, 0), 3, gc.mem_free())
        link.send(wire.HELLO, hello, n)
        print("session", session)
    now = ticks_ms()
    if ticks_diff(now, esc_at) >= cfg["esc_every_ms"]:
        esc_at = now
        n = wire.pack_escalate(esc, DEV, seq, 7, 150, 1000, 0, TOPK, DATA)
        t = ticks_us()
        ok = link.send(wire.ESCALATE, esc, n)
        wsend = max(wsend, ticks_diff(ticks_us(), t))
        if ok:
            print("esc", seq)
            seq += 1
    t = ticks_us()
    link.poll(cfg["poll_ms"], on_msg)
    wpoll = max(wpoll, ticks_diff(ticks_us(), t))
    loops += 1
    if ticks_diff(now, stat_at) >= 100:
        stat_at = now
        print("stat", loops, int(link.up), int(link.tier_online()), link.sessions,
              link.attempts, link.reconnects, ws, wsend, wpoll)
        ws = wsend = wpoll = 0
link.close()
print("end", json.dumps(link.dropped))
"""


class Stat:
    """One `stat` line of the driver."""

    def __init__(self, fields: list[str]) -> None:
        v = [int(f) for f in fields]
        self.loops, up, tier, self.sessions, self.attempts, self.reconnects = v[:6]
        self.up, self.tier = bool(up), bool(tier)
        self.service_us, self.send_us, self.poll_us = v[6:9]
        self.at = time.monotonic()


class Board:
    """The driver under micropython at the ESP32's heap; its output lines in a queue."""

    def __init__(self, tmp: Path, port: int, run_ms: int, esc_every_ms: int = 100) -> None:
        script = tmp / "mqtt_driver.py"
        script.write_text(DRIVER)
        cfg = {
            "device": DEV,
            "fleet": FLEET,
            "gateway": "gateway",
            "link": {"kind": "mqtt", "host": "127.0.0.1", "port": port, "keepalive_s": 2},
            "topk": list(TOPK),
            "data": list(DATA),
            "run_ms": run_ms,
            "esc_every_ms": esc_every_ms,
            "poll_ms": POLL_MS,
        }
        # a file, not argv: the unix port dies ("uncaught NLR") on an argument of 256+ bytes
        (tmp / "mqtt_driver.json").write_text(json.dumps(cfg))
        heap = boards.get("esp32").heap_bytes
        self.proc = subprocess.Popen(
            [
                str(find_micropython()),
                "-X",
                f"heapsize={heap}",
                str(script),
                str(tmp / "mqtt_driver.json"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, MICROPYPATH=micropython_path()),
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.stats: list[Stat] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("")  # end of output

    def wait(self, match: Callable[[str, list[str]], bool], timeout: float = 10.0) -> list[str]:
        """Read lines until match(kind, fields) is true; return that line's fields."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, left))
            except queue.Empty:
                line = None
            if line is None or (line == "" and self.proc.poll() is not None):
                tail = "\n".join(self.seen[-15:])
                raise AssertionError(f"the board did not print what was awaited:\n{tail}")
            self.seen.append(line)
            kind, *fields = line.split()
            if kind == "stat":
                self.stats.append(Stat(fields))
            if match(kind, fields):
                return fields

    def stat(self, pred: Callable[[Stat], bool], timeout: float = 10.0) -> Stat:
        self.wait(lambda k, f: k == "stat" and pred(Stat(f)), timeout)
        return self.stats[-1]

    def run_for(self, seconds: float) -> list[Stat]:
        """The stat lines of the next `seconds`."""
        first = len(self.stats)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.wait(lambda k, f: k == "stat")
        return self.stats[first:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class Host:
    """A paho-mqtt client on the host: collects what the board publishes under up/."""

    def __init__(self, broker: Broker) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="host-test")
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(topics.device_topic(FLEET, DEV, topics.UP, "#"), qos=1)
        self.publish(STATUS, b"online", retain=True)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(timeout=5)

    def next(self, topic: str, timeout: float = 5.0) -> mqtt.MQTTMessage:
        deadline = time.monotonic() + timeout
        while True:
            m = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if m.topic == topic:
                return m

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def escalate_bytes(seq: int) -> bytes:
    buf = bytearray(wire.MAX_MESSAGE)
    n = wire.pack_escalate(buf, DEV, seq, 7, 150, 1000, 0, TOPK, DATA)
    return bytes(buf[:n])


def result_bytes(ref: int) -> bytes:
    buf = bytearray(wire.HEADER_SIZE + wire.RESULT_SIZE)
    n = wire.pack_result(buf, 0x47, ref + 1000, ref, 7, 3, 60000, wire.GATEWAY, 1)
    return bytes(buf[:n])


class Tap:
    """A TCP relay between the board and the broker that keeps both byte streams, so that the
    test sees the packets on the wire (the PUBACK the board sends for the broker's packet id)."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.to_broker = bytearray()
        self.to_board = bytearray()
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                board, _ = self.srv.accept()
            except OSError:
                return
            broker = socket.create_connection(("127.0.0.1", self.upstream))
            self.socks += [board, broker]
            threading.Thread(target=self._pump, args=(board, broker, self.to_broker)).start()
            threading.Thread(target=self._pump, args=(broker, board, self.to_board)).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, copy: bytearray) -> None:
        try:
            while data := src.recv(4096):
                copy += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.srv.close()
        for s in self.socks:
            s.close()


def packets(stream: bytes) -> list[tuple[int, bytes]]:
    """(first byte, body) of each MQTT packet in a byte stream (remaining length by the spec)."""
    out, i = [], 0
    while i < len(stream):
        first, n, shift = stream[i], 0, 0
        i += 1
        while True:
            b = stream[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out.append((first, bytes(stream[i : i + n])))
        i += n
    return out


def sent(stream: bytearray, topic: str) -> list[tuple[int, bytes]]:
    """The PUBLISH packets on `topic` in a tapped stream: (first byte, body)."""
    t = topic.encode()
    head = len(t).to_bytes(2, "big") + t
    return [(f, b) for f, b in packets(bytes(stream)) if f >> 4 == 3 and b.startswith(head)]


@pytest.mark.parametrize("broker", ["amqtt", "mosquitto"], indirect=True)
def test_round_trip_qos1_and_tier_status(broker, tmp_path):
    host = Host(broker)
    tap = Tap(broker.port)
    board = Board(tmp_path, tap.port, run_ms=20_000)
    try:
        first = board.stat(lambda s: s.up and s.tier)  # the retained "online" came in
        assert first.sessions == 1

        # HELLO: QoS 1, and retained: a client that subscribes later still gets it
        hello = host.next(UP_HELLO)
        assert wire.header(hello.payload)[:2] == (wire.HELLO, DEV)
        assert {f for f, _ in sent(tap.to_broker, UP_HELLO)} == {0x33}  # QoS 1, retain
        late = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="host-late")
        retained: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        late.on_message = lambda c, u, m: retained.put(m)
        late.connect(broker.host, broker.port)
        late.loop_start()
        late.subscribe(UP_HELLO, qos=1)
        kept = retained.get(timeout=5)
        late.loop_stop()
        late.disconnect()
        assert kept.retain and kept.payload == hello.payload

        # ESCALATE: QoS 0, the exact bytes ladder.wire packs, on the device's up/esc
        esc = host.next(UP_ESC)
        seq = wire.header(esc.payload)[2]
        assert esc.payload == escalate_bytes(seq)
        # (the QoS the board used, on the wire: amqtt upgrades deliveries to the subscriber's)
        assert {f for f, _ in sent(tap.to_broker, UP_ESC)} == {0x30}

        # RESULT: QoS 1 on down/res; the board delivers the exact payload and PUBACKs it
        res = result_bytes(seq)
        host.publish(DOWN_RES, res, qos=1)
        fields = board.wait(lambda k, f: k == "rx")
        assert bytes.fromhex(fields[0]) == res
        time.sleep(0.2)  # let the PUBACK pass the tap
        down = sent(tap.to_board, DOWN_RES)
        assert len(down) == 1 and (down[0][0] >> 1) & 3 == 1  # delivered with QoS 1
        n = len(DOWN_RES)
        pid = down[0][1][2 + n : 4 + n]
        assert (0x40, pid) in packets(bytes(tap.to_broker))  # PUBACK with the broker's id

        # the gateway's retained status: offline, then online again
        host.publish(STATUS, b"offline", retain=True)
        assert board.stat(lambda s: not s.tier).up  # still connected: only the tier is away
        host.publish(STATUS, b"online", retain=True)
        assert board.stat(lambda s: s.tier).sessions == 1
    finally:
        board.stop()
        tap.close()
        host.close()


def _quick(stats: list[Stat]) -> None:
    """The loop kept running and no single call blocked."""
    assert stats[-1].loops - stats[0].loops >= 20 * (stats[-1].at - stats[0].at)
    for s in stats:
        assert s.service_us < SLOW_CALL_US and s.send_us < SLOW_CALL_US, vars(s)
        assert s.poll_us < POLL_MS * 1000 + SLOW_CALL_US, vars(s)


@pytest.mark.parametrize("broker", ["amqtt", "mosquitto"], indirect=True)
def test_broker_away_never_blocks_and_reconnect_with_backoff(broker, tmp_path):
    host = Host(broker)
    board = Board(tmp_path, broker.port, run_ms=40_000)
    restarted = None
    try:
        board.stat(lambda s: s.up and s.tier)
        before = board.wait(lambda k, f: k == "esc")
        host.close()

        # 1. the broker stops: connections refused
        broker.stop()
        board.stat(lambda s: not s.up, timeout=5)
        refused = board.run_for(1.5)
        assert not any(s.up or s.tier for s in refused)
        _quick(refused)
        attempts = refused[-1].attempts - refused[0].attempts
        # backoff 100, 200, 400, 800 ms (with jitter): a handful of attempts, not one a loop
        assert 2 <= attempts <= 6, [s.attempts for s in refused]

        # 2. something on the port accepts and never answers (a hung broker): the handshake
        # waits in the background, the loop goes on
        silent = socket.create_server(("127.0.0.1", broker.port))
        held: list[socket.socket] = []
        threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
        hung = board.run_for(2.5)
        assert held, "the board never tried the silent port"
        assert not any(s.up for s in hung)
        _quick(hung)
        silent.close()
        for s in held:
            s.close()

        # 3. the broker comes back on the same port: the board reconnects by itself
        restarted = start_broker(broker.kind, port=broker.port, workdir=tmp_path / "again")
        host = Host(restarted)  # retained status again: this broker keeps no state
        board.wait(lambda k, f: k == "session" and f == ["2"], timeout=10)
        up = board.stat(lambda s: s.up and s.tier)
        assert up.reconnects > hung[-1].reconnects > refused[0].reconnects

        worst = max(max(s.service_us, s.send_us) for s in refused + hung)
        rate = (hung[-1].loops - refused[0].loops) / (hung[-1].at - refused[0].at)
        print(
            f"\n{broker.kind}: broker away for {hung[-1].at - refused[0].at:.1f} s: longest "
            f"service/send {worst} us, {rate:.0f} loops/s, {attempts} attempts while refused, "
            f"reconnects {up.reconnects}"
        )

        # traffic flows again, both ways
        esc = host.next(UP_ESC)
        seq = wire.header(esc.payload)[2]
        assert seq > int(before[0]) and esc.payload == escalate_bytes(seq)
        host.publish(DOWN_RES, result_bytes(seq), qos=1)
        fields = board.wait(lambda k, f: k == "rx")
        assert bytes.fromhex(fields[0]) == result_bytes(seq)
    finally:
        board.stop()
        host.close()
        if restarted is not None:
            restarted.stop()
