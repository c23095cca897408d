"""The board's MQTT client (ladder.link.mqtt) on the real micropython binary, over a fake socket.

The fake socket is a pair of byte buffers (what the "broker" sent, what the client wrote) with
the stream poll protocol, so select.poll works on it as on a real socket. The client's clock is
a variable the script advances. Expected bytes are written out here by hand from the MQTT 3.1.1
specification, not computed with the client's own helpers.
"""

from __future__ import annotations

import pytest

DEV = 0xABCD
DOWN = b"el/demo/dev/0000abcd/down/"
STATUS = b"el/demo/tier/gateway/status"

# MicroPython: the fake socket, a fake clock, and helpers the snippets below use.
HARNESS = """\
import io, select, gc, micropython
from binascii import hexlify
from ladder import wire
gc.collect()  # compiling the source needs room (a board imports the compiled .mpy)
from ladder.link.mqtt import Link

T = [0]

class FakeSock(io.IOBase):
    def __init__(self, cap=2048):
        self.inbox = bytearray(cap)
        self.in_n = 0
        self.in_pos = 0
        self.out = bytearray(cap)
        self.out_n = 0
        self.max_read = cap  # bytes one readinto returns at most: small = split packets
        self.writable = True  # False: the send buffer is full
        self.eof = False
        self.closed = False

    def ioctl(self, req, arg):
        if req != 3:  # MP_STREAM_POLL
            return 0
        r = 0
        if arg & select.POLLOUT and self.writable:
            r |= select.POLLOUT
        if arg & select.POLLIN and (self.in_pos < self.in_n or self.eof):
            r |= select.POLLIN
        return r

    def feed(self, data):
        i = 0
        while i < len(data):  # no iterator: the allocation test feeds under heap_lock
            self.inbox[self.in_n] = data[i]
            self.in_n += 1
            i += 1

    def readinto(self, buf):
        k = self.in_n - self.in_pos
        if k == 0:
            return 0 if self.eof else None
        if k > len(buf):
            k = len(buf)
        if k > self.max_read:
            k = self.max_read
        i = 0
        while i < k:  # no slices: the allocation test runs this under heap_lock
            buf[i] = self.inbox[self.in_pos + i]
            i += 1
        self.in_pos += k
        return k

    def write(self, buf, off=0, n=-1):
        if not self.writable:
            return None
        if n < 0:
            n = len(buf) - off
        i = 0
        while i < n:
            self.out[self.out_n + i] = buf[off + i]
            i += 1
        self.out_n += n
        return n

    def close(self):
        self.closed = True

socks = []

def opener():
    s = FakeSock()
    socks.append(s)
    return s

CFG = {"fleet": "demo", "gateway": "gateway",
       "link": {"kind": "mqtt", "host": "127.0.0.1", "port": 1883, "keepalive_s": 30}}

def out(tag):
    s = socks[-1]
    print(tag, hexlify(bytes(s.out[:s.out_n])).decode())
    s.out_n = 0

def connect(link):
    # drive the handshake: TCP connect, CONNECT, CONNACK, SUBSCRIBE, SUBACK
    link.service()
    link.service()
    socks[-1].feed(b"\\x20\\x02\\x00\\x00")
    link.service()
    socks[-1].feed(b"\\x90\\x04\\x00\\x01\\x01\\x01")
    link.service()
    socks[-1].out_n = 0

got = []

def on_message(buf, n):
    got.append(bytes(buf[:n]))

link = Link(CFG, 0xABCD, clock_ms=lambda: T[0], opener=opener)
"""


def run(upy, body: str) -> dict[str, list[str]]:
    """Run HARNESS + body; return {first word: [rest of line, ...]} of what it printed."""
    result = upy(HARNESS + body).check()
    lines: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        key, _, rest = line.partition(" ")
        lines.setdefault(key, []).append(rest)
    return lines


def hx(data: bytes) -> str:
    return data.hex()


def publish_in(topic: bytes, payload: bytes, qos: int = 0, pid: int = 0, first=None) -> bytes:
    """An incoming PUBLISH, by the spec: header, remaining length, topic, packet id, payload."""
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += pid.to_bytes(2, "big")
    body += payload
    assert len(body) < 128  # one remaining-length byte in these tests
    return bytes([first if first is not None else 0x30 | qos << 1, len(body)]) + body


def test_handshake_bytes_and_up_only_after_suback(upy):
    out = run(
        upy,
        """
print("state", link.up, link.sessions, len(socks))
link.service()  # attempt: the socket is opened, the connect is pending
print("state", link.up, link.sessions, len(socks))
link.service()  # writable: CONNECT
out("connect")
socks[-1].feed(b"\\x20\\x02\\x00\\x00")  # CONNACK, accepted
link.service()
out("subscribe")
print("state", link.up, link.sessions, len(socks))
socks[-1].feed(b"\\x90\\x04\\x00\\x01\\x01\\x01")  # SUBACK, pid 1, QoS 1 granted twice
link.service()
print("state", link.up, link.sessions, len(socks))
print("tier", link.tier_online())
""",
    )
    assert out["state"] == ["False 0 0", "False 0 1", "False 0 1", "True 1 1"]
    # CONNECT: remaining length 20; "MQTT", level 4, clean session, keepalive 30 s, client id
    assert out["connect"] == [hx(b"\x10\x14\x00\x04MQTT\x04\x02\x00\x1e\x00\x080000abcd")]
    # SUBSCRIBE (flags 0010), pid 1: down/# QoS 1, the gateway's status QoS 1
    sub = b"\x00\x01" + b"\x00\x1b" + DOWN + b"#\x01" + b"\x00\x1b" + STATUS + b"\x01"
    assert out["subscribe"] == [hx(b"\x82" + bytes([len(sub)]) + sub)]
    assert out["tier"] == ["False"]  # no retained status seen yet


def test_publish_bytes_qos0_qos1_retained_puback_and_retransmission(upy):
    out = run(
        upy,
        """
msg = bytearray(wire.MAX_MESSAGE)
print("down", link.send(wire.ESCALATE, msg, 10))  # not up yet: nothing sent
connect(link)
n = wire.pack_escalate(msg, 0xABCD, 7, 3, 150, 1000, 0, b"\\x05\\x90", b"\\x01\\x02\\x03")
print("esc", link.send(wire.ESCALATE, msg, n), hexlify(bytes(msg[:n])).decode())
out("esc_wire")
n = wire.pack_hello(msg, 0xABCD, 8, 3, (0, 1, 0), 3, 5000)
print("hello", link.send(wire.HELLO, msg, n), hexlify(bytes(msg[:n])).decode())
out("hello_wire")
print("second", link.send(wire.HELLO, msg, n))  # a QoS 1 publish is in flight
out("second_wire")
print("hb", link.send(wire.HEARTBEAT, msg, 34))  # QoS 0 goes out meanwhile
socks[-1].out_n = 0
T[0] += 1999
link.service()
out("early")
T[0] += 1
link.service()  # 2 s without PUBACK: sent again with DUP
out("dup")
socks[-1].feed(b"\\x40\\x02\\x00\\x02")  # PUBACK for packet id 2
link.service()
print("third", link.send(wire.HELLO, msg, n))
out("third_wire")
""",
    )
    assert out["down"] == ["False"]
    ok, payload = out["esc"][0].split()
    assert ok == "True"
    topic = b"el/demo/dev/0000abcd/up/esc"
    body = len(topic).to_bytes(2, "big") + topic + bytes.fromhex(payload)
    assert out["esc_wire"] == [hx(bytes([0x30, len(body)]) + body)]  # QoS 0, no packet id

    ok, payload = out["hello"][0].split()
    assert ok == "True"
    topic = b"el/demo/dev/0000abcd/up/hello"
    body = len(topic).to_bytes(2, "big") + topic + b"\x00\x02" + bytes.fromhex(payload)
    hello = bytes([0x33, len(body)]) + body  # QoS 1, retained, packet id 2
    assert out["hello_wire"] == [hx(hello)]
    assert out["second"] == ["False"] and out["second_wire"] == [""]
    assert out["hb"] == ["True"]
    assert out["early"] == [""]
    assert out["dup"] == [hx(bytes([0x3B]) + hello[1:])]  # DUP flag set, same packet id
    assert out["third"] == ["True"]
    third = bytes([0x33]) + hello[1:]
    third = third.replace(topic + b"\x00\x02", topic + b"\x00\x03")  # the next packet id
    assert out["third_wire"] == [hx(third)]


def test_pingreq_per_keepalive_and_drop_without_answer(upy):
    out = run(
        upy,
        """
connect(link)
T[0] += 29999
link.service()
out("quiet")
T[0] += 1
link.service()  # 30 s without sending anything: PINGREQ
out("ping")
socks[-1].feed(b"\\xd0\\x00")  # PINGRESP
T[0] += 100
link.service()
print("after_pong", link.up, link.dropped["malformed"])
T[0] += 29900
link.service()  # 30 s after the last PINGREQ
out("ping2")
T[0] += 15099  # 44.999 s since the PINGRESP
link.service()
print("alive", link.up, socks[-1].closed)
T[0] += 1  # 1.5 keepalives without a packet from the broker: gone
link.service()
print("dead", link.up, socks[-1].closed, link.attempts, link.reconnects)
T[0] += 100  # the first backoff is 50..100 ms
link.service()
print("retry", len(socks), link.attempts, link.reconnects)
""",
    )
    assert out["quiet"] == [""]
    assert out["ping"] == ["c000"]
    assert out["after_pong"] == ["True 0"]
    assert out["ping2"] == ["c000"]
    assert out["alive"] == ["True False"]
    assert out["dead"] == ["False True 1 0"]
    assert out["retry"] == ["2 2 1"]


def test_incoming_publish_delivered_acked_and_tier_status(upy):
    res = bytes(range(24))  # any payload: the client does not look inside
    packets = (
        publish_in(DOWN + b"res", res, qos=1, pid=0x0107)
        + publish_in(DOWN + b"rej", b"\x01\x02\x03", qos=0)
        + publish_in(STATUS, b"online", qos=1, pid=9, first=0x33)  # retained
    )
    out = run(
        upy,
        f"""
connect(link)
socks[-1].max_read = 5  # every packet split over several reads
socks[-1].feed({packets!r})
k = 0
while socks[-1].in_pos < socks[-1].in_n:
    k += link.poll(0, on_message)
print("n", k)
for p in got:
    print("got", hexlify(p).decode())
out("acks")
print("tier", link.tier_online(), link.delivered)
socks[-1].feed({publish_in(STATUS, b"offline", qos=0)!r})
link.poll(0, on_message)
print("tier", link.tier_online(), link.delivered)
socks[-1].feed({publish_in(STATUS, b"online", qos=0)!r})
link.poll(0, on_message)
print("tier", link.tier_online(), link.delivered)
socks[-1].feed({publish_in(STATUS, b"onl1ne", qos=0)!r})  # six bytes, not "online"
link.poll(0, on_message)
print("tier", link.tier_online(), link.delivered)
socks[-1].feed({publish_in(STATUS, b"online", qos=0)!r})
link.poll(0, on_message)
socks[-1].eof = True  # the broker went away: not connected, so no tier either
link.service()
print("tier", link.tier_online(), link.up)
print("dropped", sorted(link.dropped.items()))
""",
    )
    assert out["n"] == ["2"]
    assert out["got"] == [hx(res), "010203"]
    assert out["acks"] == ["40020107" + "40020009"]  # PUBACK for each QoS 1 PUBLISH, by pid
    assert out["tier"] == ["True 2", "False 2", "True 2", "False 2", "False False"]
    assert out["dropped"] == [
        "[('malformed', 0), ('oversized', 0), ('unclaimed', 0), ('unexpected', 0)]"
    ]


def test_malformed_and_oversized_packets_are_counted_and_skipped(upy):
    good = publish_in(DOWN + b"res", b"GOOD", qos=1, pid=5)
    topic = DOWN + b"res"
    big_body = len(topic).to_bytes(2, "big") + topic + b"\x00\x06" + bytes(600)  # > 512 bytes
    oversized = b"\x32" + bytes([len(big_body) & 0x7F | 0x80, len(big_body) >> 7]) + big_body
    stream = (
        oversized
        + good
        + b"\x32\x05\x00\x40abc"  # topic length 64 in a 5-byte body
        + b"\x36\x05\x00\x01a\x00\x01"  # QoS 3
        + b"\x34\x05\x00\x01a\x00\x01"  # QoS 2: never granted
        + publish_in(b"el/demo/dev/00001234/down/res", b"x")  # another device's topic
        + b"\x40\x03\x00\x02\x00"  # PUBACK with 3 bytes
        + b"\xd0\x01\x00"  # PINGRESP with a body
        + b"\x20\x02\x00\x00"  # CONNACK while connected
        + b"\xf0\x00"  # reserved packet type 15
        + b"\x30\x01"  # PUBLISH too short for its topic length
        + b"\x00"
        + good
    )
    out = run(
        upy,
        f"""
connect(link)
socks[-1].max_read = 7
socks[-1].feed({stream!r})
while socks[-1].in_pos < socks[-1].in_n:
    link.poll(0, on_message)
print("got", got)
print("dropped", sorted(link.dropped.items()))
print("up", link.up)
socks[-1].feed(b"\\x30\\xff\\xff\\xff\\xff\\x01")  # a fifth remaining-length byte
link.poll(0, on_message)
print("dropped", sorted(link.dropped.items()))
print("up", link.up, socks[-1].closed)
""",
    )
    assert out["got"] == ["[b'GOOD', b'GOOD']"]
    assert out["dropped"][0] == (
        "[('malformed', 5), ('oversized', 1), ('unclaimed', 0), ('unexpected', 4)]"
    )
    assert out["up"][0] == "True"
    # a broken remaining length cannot be resynchronised: counted, then a new connection
    assert out["dropped"][1] == (
        "[('malformed', 6), ('oversized', 1), ('unclaimed', 0), ('unexpected', 4)]"
    )
    assert out["up"][1] == "False True"


def test_publish_before_any_poll_is_counted_unclaimed(upy):
    out = run(
        upy,
        f"""
connect(link)
socks[-1].feed({publish_in(DOWN + b"res", b"late", qos=1, pid=3)!r})
link.service()
out("ack")
print("dropped", link.dropped["unclaimed"], link.delivered)
""",
    )
    assert out["ack"] == ["40020003"]
    assert out["dropped"] == ["1 0"]


def test_full_send_buffer_breaks_the_connection_without_blocking(upy):
    out = run(
        upy,
        """
import time
connect(link)
msg = bytearray(30)
socks[-1].writable = False
t0 = time.ticks_ms()
print("sent", link.send(wire.ESCALATE, msg, 30))
print("took_ms", time.ticks_diff(time.ticks_ms(), t0))
print("up", link.up, socks[-1].closed)
""",
    )
    assert out["sent"] == ["False"]
    assert int(out["took_ms"][0]) < 50
    assert out["up"] == ["False True"]


def test_backoff_doubles_with_jitter_to_5_s_and_resets_on_success(upy):
    out = run(
        upy,
        """
fail = [True]

def refusing():
    if fail[0]:
        raise OSError(111)  # ECONNREFUSED at once
    return opener()

link = Link(CFG, 0xABCD, clock_ms=lambda: T[0], opener=refusing)
last = None
while link.attempts < 12:
    a = link.attempts
    link.service()
    if link.attempts != a:
        if last is not None:
            print("gap", T[0] - last)
        last = T[0]
    T[0] += 1
fail[0] = False
while not link.up:  # the next attempt succeeds
    link.service()
    if len(socks) and socks[-1].out_n and not socks[-1].in_n:
        socks[-1].feed(b"\\x20\\x02\\x00\\x00\\x90\\x04\\x00\\x01\\x01\\x01")
    T[0] += 1
socks[-1].eof = True  # lost again: the backoff starts from 100 ms
link.service()
a = link.attempts
t0 = T[0]
while link.attempts == a:
    T[0] += 1
    link.service()
print("after_success", T[0] - t0)
print("counts", link.attempts, link.reconnects, link.sessions)
""",
    )
    gaps = [int(g) for g in out["gap"]]
    assert len(gaps) == 11
    delay = 100
    for gap in gaps:
        # equal jitter: half the delay, plus up to the other half (1 ms clock steps)
        assert delay // 2 <= gap <= delay + 1, (gap, delay, gaps)
        delay = min(2 * delay, 5000)
    assert gaps[-1] >= 2500  # capped at 5 s: about 2.5..5 s
    assert len(set(gaps[-4:])) > 1  # jitter: not all the same
    assert 50 <= int(out["after_success"][0]) <= 101
    assert out["counts"] == ["14 13 1"]


ALLOC_ROUNDS = 100


def test_no_allocation_per_message(upy):
    res = publish_in(DOWN + b"res", bytes(range(24)), qos=1, pid=0x0203)
    out = run(
        upy,
        f"""
connect(link)
msg = bytearray(wire.MAX_MESSAGE)
n = wire.pack_escalate(msg, 0xABCD, 1, 3, 150, 1000, 0, b"\\x05\\x90", bytes(64))
s = socks[-1]
res = {res!r}
count = [0]

def on_msg(buf, n):
    count[0] += n  # small ints only: the handler itself allocates nothing

def rounds(k):
    for i in range(k):
        if not link.send(wire.ESCALATE, msg, n):
            raise OSError(0)
        s.feed(res)  # one RESULT-sized QoS 1 PUBLISH from the broker
        if link.poll(0, on_msg) != 1:
            raise OSError(1)
        s.out_n = s.in_n = s.in_pos = 0

rounds(2)  # warm-up
gc.collect()
gc.disable()
before = gc.mem_alloc()
micropython.heap_lock()
try:
    rounds({ALLOC_ROUNDS})
    locked = "ok"
except MemoryError:
    locked = "MemoryError"
micropython.heap_unlock()
after = gc.mem_alloc()
print("locked", locked)
print("alloc", before, after)
print("count", count[0], link.delivered, link.up)
""",
    )
    assert out["locked"] == ["ok"]
    before, after = (int(x) for x in out["alloc"][0].split())
    assert after == before
    assert out["count"] == [f"{24 * (ALLOC_ROUNDS + 2)} {ALLOC_ROUNDS + 2} True"]


@pytest.mark.parametrize("kind", [1, 2, 3, 6])
def test_every_wire_kind_has_its_own_up_topic(upy, kind):
    out = run(
        upy,
        f"""
connect(link)
msg = bytearray(4)
link.send({kind}, msg, 4)
out("wire")
""",
    )
    kinds = {1: b"hello", 2: b"hb", 3: b"esc", 6: b"ans"}
    topic = b"el/demo/dev/0000abcd/up/" + kinds[kind]
    raw = bytes.fromhex(out["wire"][0])
    assert raw[0] == (0x33 if kind == 1 else 0x30)  # only HELLO is QoS 1 and retained
    assert raw[2:4] == len(topic).to_bytes(2, "big")
    assert raw[4 : 4 + len(topic)] == topic
