# ladder.link.mqtt: the board's own MQTT 3.1.1 client (QoS 0 and 1, clean session, no TLS).
#
# Not micropython-lib's umqtt (docs/protocol.md, "The board's MQTT client", says why): umqtt
# blocks while a broker is away and allocates per message, and the ladder must keep answering
# within its deadline whatever the network does. So:
# - one state machine advanced by service(), which never waits: a non-blocking TCP connect
#   (ladder.link.tcp), then CONNECT/CONNACK and SUBSCRIBE/SUBACK, keepalive pings, QoS 1
#   retransmission (DUP), and after any failure the next attempt after an exponential backoff
#   with jitter (100 ms doubling to 5 s, reset by a successful session). Only poll() waits, and
#   only as long as its caller says.
# - every buffer is made in __init__ (a publish buffer for the largest wire message, a copy of
#   the QoS 1 publish in flight, a read chunk, a packet buffer); topics are bytes built once
#   (ladder.topics); incoming packets are reassembled and parsed in place (ladder.link.mqttpkt)
#   and the payload is handed over in the reused packet buffer. Oversized or malformed packets
#   are counted in `dropped` and skipped.

import random
import select

from .. import topics, wire
from . import mqttpkt as pkt
from . import tcp

try:
    from time import sleep_ms, ticks_add, ticks_diff, ticks_ms

    from micropython import const
except ImportError:  # CPython: importable for host tools and linters; boards run MicroPython
    import time as _time

    def const(x):
        return x

    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_add(a, b):
        return a + b

    def ticks_diff(a, b):
        return a - b

    def sleep_ms(ms):
        _time.sleep(ms / 1000)


_T_CONNACK = const(2)
_T_PUBLISH = const(3)
_T_PUBACK = const(4)
_T_SUBACK = const(9)
_T_PINGRESP = const(13)
_SUB_PID = const(1)  # SUBSCRIBE always uses packet id 1; publishes use 2..65535

# Connection states.
_CLOSED = const(0)  # close() was called
_IDLE = const(1)  # no socket; the next attempt is due at self._next
_TCP = const(2)  # non-blocking connect in progress
_CONNACK = const(3)  # CONNECT sent
_SUBACK = const(4)  # SUBSCRIBE sent
_UP = const(5)  # subscribed: send() works

_BACKOFF_MIN_MS = const(100)
_BACKOFF_MAX_MS = const(5000)
_HANDSHAKE_MS = const(5000)  # TCP connect + CONNACK + SUBACK must finish within this
_RETRY_MS = const(2000)  # resend an unacknowledged QoS 1 publish (DUP set) after this
_WAIT_STEP_MS = const(100)  # poll() runs service() at least this often while it waits
_WRITE_TRIES = const(5)  # a full send buffer gets this many 1 ms retries, then counts as broken
_READS = const(16)  # chunks read per service(): bounds its time under a flood
_CHUNK = const(128)
_RX_SIZE = const(512)  # largest incoming packet body (topic + packet id + payload)
_Q1_PAYLOAD = const(64)  # largest QoS 1 payload (a HELLO is 22 bytes)


class Link:
    """The MQTT link of one device: its up/ and down/ topics and the gateway tier's status."""

    def __init__(self, device_cfg, device_id, clock_ms=None, opener=None, rx_size=_RX_SIZE):
        # opener(): a new non-blocking socket, connecting (tests give a fake one)
        link = device_cfg["link"]
        fleet = device_cfg["fleet"]
        self._host, self._port = link.get("host", "127.0.0.1"), link.get("port", 1883)
        ka_s = link.get("keepalive_s", 30)
        self._ka = ka_s * 1000
        self._clock = clock_ms or ticks_ms
        self._open = opener or self._tcp_open
        self._addr = None
        self._up = {}  # wire type -> (topic, first byte); HELLO is QoS 1 and retained
        for mtype in topics.KIND:
            topic = topics.device_topic(fleet, device_id, topics.UP, topics.KIND[mtype]).encode()
            q1 = pkt.QOS1 | pkt.RETAIN if mtype == wire.HELLO else 0
            self._up[mtype] = (topic, pkt.PUBLISH | q1)
        self._down = topics.device_topic(fleet, device_id, topics.DOWN, "").encode()
        gateway = device_cfg.get("gateway", "gateway")
        self._status = topics.tier_topic(fleet, gateway, topics.STATUS).encode()
        self._online = topics.ONLINE.encode()
        # the client id is the id's one topic spelling: the broker's %c ACL then matches it
        self._connect = pkt.connect_packet(topics.device_level(device_id).encode(), ka_s)
        self._subscribe = pkt.subscribe_packet(_SUB_PID, (self._down + b"#", self._status))
        longest = max(len(t) for t, _ in self._up.values())
        self._tx = bytearray(5 + 2 + longest + wire.MAX_MESSAGE)
        self._q1 = bytearray(5 + 2 + longest + 2 + _Q1_PAYLOAD)  # kept for retransmission
        self._q1n = 0  # length of the QoS 1 publish in flight, 0 if none
        self._q1pid = self._q1at = 0
        self._pid = _SUB_PID
        self._ack = bytearray(b"\x40\x02\x00\x00")  # PUBACK, packet id filled in
        self._chunk = bytearray(_CHUNK)
        self._drops = [0] * len(pkt.DROP_REASONS)
        self._parser = pkt.Parser(rx_size, self._packet, self._drops)  # bound method made once
        self._poller = select.poll()
        self._sock = None
        self._st = _IDLE
        self._next = self._clock()  # the first attempt is due now
        self._delay = _BACKOFF_MIN_MS
        self._retry = False
        self._hs_at = self._tx_at = self._rx_at = 0
        self._pinged = self._tier = False
        self._on = None
        self._news = 0
        self.up = False
        self.sessions = 0  # successful sessions (SUBACK seen): a new one means "say HELLO"
        self.attempts = 0  # TCP connects started
        self.reconnects = 0  # attempts that followed a failed or lost connection
        self.delivered = 0  # payloads handed to on_message

    @property
    def dropped(self):
        """Incoming packets skipped, {reason: count} (allocates: for heartbeats and reports)."""
        out = {}
        for i in range(len(pkt.DROP_REASONS)):
            out[pkt.DROP_REASONS[i]] = self._drops[i]
        return out

    def tier_online(self):
        return self.up and self._tier

    # -- connection -------------------------------------------------------------------------
    def _tcp_open(self):
        if self._addr is None:
            self._addr = tcp.resolve(self._host, self._port)
        return tcp.connect(self._addr)

    def _start(self, now):
        self.attempts += 1
        if self._retry:
            self.reconnects += 1
        self._retry = True
        self._hs_at = now
        try:
            s = self._open()
        except OSError:
            self._lost(now)
            return
        self._sock = s
        self._poller.register(s, select.POLLOUT)
        self._parser.reset()
        self._st = _TCP

    def _lost(self, now):
        """Close the socket; the next attempt after the backoff (doubling, with jitter)."""
        s = self._sock
        if s is not None:
            self._sock = None
            self._poller.unregister(s)
            s.close()
        self.up = False
        self._tier = False
        self._q1n = 0  # clean session: the app says HELLO again in the next one
        if self._st == _CLOSED:
            return
        self._st = _IDLE
        d = self._delay
        self._next = ticks_add(now, d // 2 + random.getrandbits(16) % (d // 2 + 1))
        self._delay = min(2 * d, _BACKOFF_MAX_MS)

    def service(self):
        """Advance the connection without waiting: connect, read, ping, retransmit."""
        st = self._st
        if st == _CLOSED:
            return
        now = self._clock()
        if st == _IDLE:
            if ticks_diff(now, self._next) >= 0:
                self._start(now)
            return
        if st != _UP and ticks_diff(now, self._hs_at) > _HANDSHAKE_MS:
            self._lost(now)
            return
        if st == _TCP:
            ev = 0
            for _, e in self._poller.ipoll(0):  # ipoll reuses its tuple: no allocation
                ev |= e
            if ev & (select.POLLERR | select.POLLHUP):
                self._lost(now)  # refused or unreachable
            elif ev & select.POLLOUT:
                self._poller.modify(self._sock, select.POLLIN)
                if self._out(self._connect, len(self._connect), now):
                    self._st = _CONNACK
            return
        if not self._read(now) or st != _UP:
            return
        ka = self._ka
        if ka:
            idle = ticks_diff(now, self._rx_at)
            if idle >= ka + ka // 2:
                self._lost(now)  # no PINGRESP, nor anything else: the broker is gone
                return
            if ticks_diff(now, self._tx_at) >= ka or (idle >= ka and not self._pinged):
                self._pinged = True
                if not self._out(pkt.PINGREQ, 2, now):
                    return
        if self._q1n and ticks_diff(now, self._q1at) >= _RETRY_MS:
            self._q1[0] |= pkt.DUP
            self._q1at = now
            self._out(self._q1, self._q1n, now)

    def _out(self, buf, n, now):
        """Write buf[:n]; a send buffer that stays full counts as a broken connection."""
        s = self._sock
        off = 0
        tries = 0
        while off < n:
            try:
                k = s.write(buf, off, n - off)  # stream write(buf, off, len): no slice
            except OSError:
                k = -1
            if k is None or k == 0:
                tries += 1
                if tries <= _WRITE_TRIES:
                    sleep_ms(1)
                    continue
                k = -1
            if k < 0:
                self._lost(now)
                return False
            off += k
        self._tx_at = now
        return True

    def close(self):
        if self._sock is not None and self.up:
            try:
                self._sock.write(pkt.DISCONNECT)
            except OSError:
                pass  # going away anyway
        self._st = _CLOSED
        self._lost(self._clock())

    # -- sending ----------------------------------------------------------------------------
    def send(self, mtype, msg, n):
        """Publish msg[:n] on up/<kind>. False, and nothing sent, if the link is not up or a
        QoS 1 publish (HELLO) is still unacknowledged and this is another one."""
        if not self.up:
            return False
        if n > len(msg) or n > wire.MAX_MESSAGE:
            raise ValueError("mqtt: bad message length %d" % n)
        topic, first = self._up[mtype]
        now = self._clock()
        pid = 0
        buf = self._tx
        if first & pkt.QOS1:
            if self._q1n or n > _Q1_PAYLOAD:
                return False
            pid = self._pid % 0xFFFF + 1
            if pid == _SUB_PID:
                pid = _SUB_PID + 1
            self._pid = pid
            buf = self._q1
        o = pkt.put_publish(buf, first, topic, pid, n)
        if pid:
            self._q1n = o + n
            self._q1pid = pid
            self._q1at = now
        pkt.copy(buf, o, msg, 0, n)
        return self._out(buf, o + n, now)

    # -- receiving --------------------------------------------------------------------------
    def poll(self, timeout_ms, on_message):
        """Wait up to timeout_ms for messages on down/; on_message(buf, n) gets each payload
        in a reused buffer, valid only during the call. Returns how many were delivered.

        service() delivers to the on_message of the last poll() too."""
        self._on = on_message
        self._news = 0
        start = self._clock()
        while True:
            self.service()
            if self._news:
                return self._news
            now = self._clock()
            left = timeout_ms - ticks_diff(now, start)
            if left <= 0:
                return 0
            if left > _WAIT_STEP_MS:
                left = _WAIT_STEP_MS
            if self._sock is not None:
                for _ in self._poller.ipoll(left):
                    break
            else:
                if self._st == _IDLE:
                    due = ticks_diff(self._next, now)
                    if due < left:
                        left = due if due > 0 else 0
                sleep_ms(left)

    def _read(self, now):
        s = self._sock
        c = self._chunk
        for _ in range(_READS):
            try:
                k = s.readinto(c)
            except OSError:
                k = 0  # reset
            if k is None:
                return True  # nothing more for now
            if k == 0:
                self._lost(now)  # closed by the broker
                return False
            if not self._parser.feed(c, k):
                if self._sock is not None:
                    self._lost(now)  # malformed beyond repair
                return False
        return True

    def _packet(self, b0, p, r):
        """One whole incoming packet, body p[:r]. False once the connection was dropped."""
        t = b0 >> 4
        flags = b0 & 0x0F
        now = self._clock()
        self._rx_at = now
        self._pinged = False
        if t == _T_PUBLISH:
            return self._publish_in(flags, p, r, now)
        if t == _T_PUBACK:
            if flags or r != 2:
                return self._drop(pkt.MALFORMED)
            if self._q1n and (p[0] << 8 | p[1]) == self._q1pid:
                self._q1n = 0
            return True  # (a second PUBACK after a retransmission is ignored)
        if t == _T_PINGRESP:
            return self._drop(pkt.MALFORMED) if flags or r else True
        st = self._st
        if t == _T_CONNACK:
            if flags or r != 2:
                return self._drop(pkt.MALFORMED)
            if st != _CONNACK:
                return self._drop(pkt.UNEXPECTED)
            if p[1]:  # refused: protocol level, client id, server unavailable, ...
                self._lost(now)
                return False
            if not self._out(self._subscribe, len(self._subscribe), now):
                return False
            self._st = _SUBACK
            return True
        if t == _T_SUBACK:
            if flags or r != 4:  # packet id + one return code per filter (two)
                return self._drop(pkt.MALFORMED)
            if st != _SUBACK or p[1] != _SUB_PID or p[0]:
                return self._drop(pkt.UNEXPECTED)
            if (p[2] | p[3]) & 0x80:  # a subscription was refused
                self._lost(now)
                return False
            self._st = _UP
            self._delay = _BACKOFF_MIN_MS
            self._pid = _SUB_PID
            self.sessions += 1
            self.up = True
            return True
        return self._drop(pkt.UNEXPECTED)

    def _drop(self, why):
        self._drops[why] += 1
        return True

    def _publish_in(self, flags, p, r, now):
        o = pkt.publish_payload(flags, p, r)
        if o < 0:
            return self._drop(-1 - o)
        tl = p[0] << 8 | p[1]
        if flags & pkt.QOS1:
            self._ack[2] = p[o - 2]
            self._ack[3] = p[o - 1]
            if not self._out(self._ack, 4, now):
                return False
        n = r - o
        st = self._status
        # find() over a range exactly as long as the needle: a match only at its start
        if tl == len(st) and p.find(st, 2, 2 + tl) == 2:
            self._tier = n == len(self._online) and p.find(self._online, o, r) == o
            return True
        dn = self._down
        if tl <= len(dn) or p.find(dn, 2, 2 + len(dn)) != 2:
            return self._drop(pkt.UNEXPECTED)
        if self._on is None:
            return self._drop(pkt.UNCLAIMED)  # before the first poll(): nobody waits for it
        pkt.copy(p, 0, p, o, n)  # the payload to the start of the buffer, over the topic
        self.delivered += 1
        self._news += 1
        self._on(p, n)
        return True
