"""Fleets, brokers and sensor feeds: the plugin's sim_fleet, broker and sensor_feed fixtures."""

from __future__ import annotations

import os
import socket
import struct
import time

import numpy as np
import pytest

from edgeladder_sim import broker as broker_mod
from edgeladder_sim.broker import BrokerUnavailable, start_broker
from edgeladder_sim.sensor import SensorFeed

# -- a fleet


def test_sim_fleet_boots_boards_that_each_keep_their_own_files(sim_fleet):
    fleet = sim_fleet(3)
    assert len(fleet) == 3
    assert len({sim.port for sim in fleet}) == 3
    assert len({sim.board.flash.path for sim in fleet}) == 3
    for i, sim in enumerate(fleet):
        sim.mpremote("exec", f"with open('id.txt', 'w') as f:\n    f.write('board-{i}')\n")
    for i, sim in enumerate(fleet):
        got = sim.mpremote("exec", "print(open('id.txt').read())").stdout
        assert got == f"board-{i}\n"


# -- a broker, checked with a raw MQTT 3.1.1 client (no paho)


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(data)) + data


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _remaining_length(len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    first = _recv_exact(sock, 1)[0]
    length, shift = 0, 0
    while True:
        byte = _recv_exact(sock, 1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, _recv_exact(sock, length)


def _mqtt_connect(host: str, port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    # protocol "MQTT", level 4 (3.1.1), clean session, keep-alive 60 s
    body = _string("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 60) + _string(client_id)
    sock.sendall(_packet(0x10, body))
    assert _read_packet(sock) == (0x20, b"\x00\x00")  # CONNACK, accepted
    return sock


def _round_trip(host: str, port: int) -> None:
    topic, payload = "edgeladder/test/board-7", bytes(range(256)) * 3
    sub = _mqtt_connect(host, port, "edgeladder-sub")
    pub = _mqtt_connect(host, port, "edgeladder-pub")
    try:
        sub.sendall(_packet(0x82, struct.pack(">H", 1) + _string(topic) + b"\x00"))
        assert _read_packet(sub) == (0x90, b"\x00\x01\x00")  # SUBACK, id 1, QoS 0 granted
        pub.sendall(_packet(0x30, _string(topic) + payload))  # PUBLISH QoS 0
        kind, body = _read_packet(sub)
        assert kind & 0xF0 == 0x30
        (n,) = struct.unpack(">H", body[:2])
        assert body[2 : 2 + n].decode() == topic
        assert body[2 + n :] == payload
    finally:
        for sock in (pub, sub):
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            sock.close()


def _kind_param(kind: str):
    # installed: always run. Missing: a failure when CI chose this kind, else a visible skip.
    chosen = os.environ.get("EDGELADDER_BROKER") == kind
    missing = not broker_mod.available(kind)
    return pytest.param(
        kind,
        id=kind,
        marks=pytest.mark.skipif(
            missing and not chosen, reason=f"{kind} broker not installed here"
        ),
    )


@pytest.mark.parametrize("broker", [_kind_param(k) for k in broker_mod.KINDS], indirect=True)
def test_broker_round_trips_a_qos0_publish(broker):
    assert broker.host == "127.0.0.1"
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    _round_trip(broker.host, broker.port)


def test_the_default_broker_is_the_chosen_kind(broker):
    assert broker.kind == (os.environ.get("EDGELADDER_BROKER") or "amqtt")
    _round_trip(broker.host, broker.port)


def test_a_missing_mosquitto_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(broker_mod, "mosquitto_binary", lambda: None)
    with pytest.raises(BrokerUnavailable, match="apt-get install mosquitto"):
        start_broker("mosquitto")


def test_stopped_broker_frees_its_port():
    b = start_broker("mosquitto" if broker_mod.available("mosquitto") else "amqtt")
    b.stop()
    with pytest.raises(OSError):
        socket.create_connection((b.host, b.port), timeout=2).close()


# -- a sensor feed

READ_FRAMES = (
    "import time\n"
    "from ladder.hal import Sensor\n"
    "s = Sensor({port})\n"
    "buf = s.frame()\n"
    "t0 = None\n"
    "while s.read_into(buf):\n"
    "    if t0 is None:\n"
    "        t0 = time.ticks_ms()\n"
    "    print(sum(buf))\n"
    "print('ms', time.ticks_diff(time.ticks_ms(), t0), s.typecode, s.n)\n"
    "s.close()\n"
)


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_board_reads_the_frames_the_host_pushes(sim_board_factory, sensor_feed, dtype):
    sim = sim_board_factory(firmware=True)
    sim.board.wait_booted(20)
    info = np.iinfo(dtype)
    rng = np.random.default_rng(4)
    samples = rng.integers(info.min, info.max, size=(25, 48), endpoint=True, dtype=dtype)
    rate = 100.0
    feed = sensor_feed(samples, rate_hz=rate)
    started = time.monotonic()
    lines = sim.mpremote("exec", READ_FRAMES.format(port=feed.port)).stdout.split("\n")
    assert time.monotonic() - started >= (len(samples) - 1) / rate
    sums = [int(x) for x in lines[: len(samples)]]
    assert sums == [int(row.sum(dtype=np.int64)) for row in samples]
    _, ms, typecode, n = lines[len(samples)].split()
    assert (typecode, int(n)) == ("b" if dtype == np.int8 else "h", 48)
    # frame i leaves the host at i / rate: the board saw them spread over ~(N - 1) / rate
    assert int(ms) >= 0.8 * (len(samples) - 1) / rate * 1000
    assert feed.sent == len(samples)


READ_LOCKED = (
    "import gc, micropython\n"
    "from ladder.hal import Sensor\n"
    "s = Sensor({port})\n"
    "buf = s.frame()\n"
    "s.read_into(buf)\n"  # the first read makes the buffer's byte view
    "gc.collect()\n"
    "n = 1\n"
    "micropython.heap_lock()\n"
    "try:\n"
    "    while s.read_into(buf):\n"
    "        n += 1\n"
    "finally:\n"
    "    micropython.heap_unlock()\n"
    "print('frames', n)\n"
    "s.close()\n"
)


def test_reading_frames_allocates_nothing(sim_board_factory, sensor_feed):
    # A frame a sensor delivers must not cost heap: 40 frames with the heap locked.
    sim = sim_board_factory(firmware=True)
    sim.board.wait_booted(20)
    samples = np.arange(40 * 64, dtype=np.int8).reshape(40, 64)
    feed = sensor_feed(samples, rate_hz=200)
    out = sim.mpremote("exec", READ_LOCKED.format(port=feed.port)).stdout
    assert out.strip() == "frames 40", out


def test_feed_rejects_floats():
    with pytest.raises(Exception, match="int8 or int16"):
        SensorFeed(np.zeros((2, 3), np.float32))
