# ruff: noqa: F821  (ptr8 is a viper builtin)
# ladder.link.mqttpkt: MQTT 3.1.1 packet bytes for ladder.link.mqtt, without allocating per packet.
#
# Building: publishes are written into the caller's preallocated buffer (put_len, put_str, copy);
# the fixed packets (CONNECT, SUBSCRIBE) are made once at start-up.
# Parsing: Parser is fed whatever bytes a non-blocking read returned and reassembles packets in
# one buffer made at start-up, byte by byte through the fixed header (remaining length decoded
# by hand), in bulk through the body. A packet larger than the buffer is read and discarded, and
# counted; a remaining length with a fifth byte is malformed and the stream cannot be resynced.

try:
    import micropython
    from micropython import const
except ImportError:  # CPython
    micropython = None

    def const(x):
        return x


# The two packets without a body, and first bytes of the fixed header (type << 4 | flags).
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
PUBLISH = const(0x30)
QOS1 = const(0x02)
RETAIN = const(0x01)
DUP = const(0x08)

# Parser states.
_TYPE = const(0)
_LEN = const(1)
_BODY = const(2)
_SKIP = const(3)  # oversized: discard the body

# Why an incoming packet was dropped: index into the drops list the Parser shares with its owner.
OVERSIZED = const(0)
MALFORMED = const(1)
UNEXPECTED = const(2)
UNCLAIMED = const(3)
DROP_REASONS = ("oversized", "malformed", "unexpected", "unclaimed")

if micropython is not None:

    @micropython.viper
    def copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):
        """dst[doff:doff+n] = src[soff:soff+n], without the memoryview a slice would allocate.

        Ascending: also right for moving bytes towards the start of the same buffer."""
        i = 0
        while i < n:
            dst[doff + i] = src[soff + i]
            i += 1

else:

    def copy(dst, doff, src, soff, n):
        dst[doff : doff + n] = src[soff : soff + n]


def put_len(buf, o, n):
    """The remaining length n at buf[o] (7 bits a byte, high bit = more follow); returns the end."""
    while True:
        b = n & 0x7F
        n >>= 7
        if not n:
            buf[o] = b
            return o + 1
        buf[o] = b | 0x80
        o += 1


def put_str(buf, o, s):
    """A length-prefixed string (2 bytes, big-endian) at buf[o]; returns the end."""
    n = len(s)
    buf[o] = n >> 8
    buf[o + 1] = n & 0xFF
    buf[o + 2 : o + 2 + n] = s  # same length on both sides: copies in place, no allocation
    return o + 2 + n


def put_publish(buf, first, topic, pid, n):
    """A PUBLISH up to its payload at buf[0]: fixed header (first byte, the length of an n-byte
    payload), topic, packet id (pid 0: QoS 0, none). Returns where the payload goes."""
    buf[0] = first
    o = put_len(buf, 1, 2 + len(topic) + (2 if pid else 0) + n)
    o = put_str(buf, o, topic)
    if pid:
        buf[o] = pid >> 8
        buf[o + 1] = pid & 0xFF
        o += 2
    return o


def publish_payload(flags, p, r):
    """Where the payload of an incoming PUBLISH starts in its body p[:r] (after the topic and,
    at QoS 1, the packet id), or -1 - why it is dropped (MALFORMED; UNEXPECTED for QoS 2,
    which a board never asks for)."""
    qos = (flags >> 1) & 3
    if qos == 3 or r < 2:
        return -1 - MALFORMED
    if qos == 2:
        return -1 - UNEXPECTED
    o = 2 + (p[0] << 8 | p[1]) + (2 if qos else 0)
    return -1 - MALFORMED if o > r else o


def _lp(s):
    return bytes((len(s) >> 8, len(s) & 0xFF)) + s


def _packet(first, body):
    head = bytearray(5)
    head[0] = first
    return bytes(head[: put_len(head, 1, len(body))]) + body


def connect_packet(client_id, keepalive_s):
    """CONNECT (made once): protocol name, level 4 (3.1.1), flags 0x02 = clean session and
    nothing else (no will: a device is not a tier; no credentials), keepalive; the client id."""
    ka = bytes((4, 0x02, keepalive_s >> 8, keepalive_s & 0xFF))
    return _packet(0x10, _lp(b"MQTT") + ka + _lp(client_id))


def subscribe_packet(pid, filters):
    """SUBSCRIBE (made once; its flags 0010 are fixed by the spec): every filter at QoS 1."""
    body = bytes((pid >> 8, pid & 0xFF))
    for f in filters:
        body += _lp(f) + b"\x01"
    return _packet(0x82, body)


class Parser:
    """Reassembles packets from a byte stream into one buffer of `size` bytes.

    feed() calls on_packet(first byte, buf, body length) for each whole packet; the body is
    buf[:length] and is only valid during the call. on_packet is kept here once: a bound method
    passed on every call would be a new object each time."""

    def __init__(self, size, on_packet, drops):
        self.buf = bytearray(size)
        self._on = on_packet
        self.drops = drops  # counts by reason (DROP_REASONS); the owner counts there too
        self.reset()

    def reset(self):
        """Forget a partial packet (a new connection starts a new stream)."""
        self._st = _TYPE
        self._b0 = self._rem = self._shift = self._got = 0

    def feed(self, c, k):
        """Parse c[:k]. False if on_packet returned False or the stream is malformed beyond
        repair (the caller then drops the connection); the rest of c is not parsed."""
        i = 0
        while i < k:
            st = self._st
            if st >= _BODY:
                m = self._rem - self._got
                if k - i < m:
                    m = k - i
                if st == _BODY:
                    copy(self.buf, self._got, c, i, m)
                self._got += m
                i += m
                if self._got == self._rem:
                    self._st = _TYPE
                    if st == _SKIP:
                        self.drops[OVERSIZED] += 1
                    elif not self._on(self._b0, self.buf, self._rem):
                        return False
            elif st == _TYPE:
                self._b0 = c[i]
                self._rem = self._shift = self._got = 0
                self._st = _LEN
                i += 1
            else:
                b = c[i]
                i += 1
                self._rem |= (b & 0x7F) << self._shift
                self._shift += 7
                if b & 0x80:
                    if self._shift >= 28:  # a fifth length byte
                        self.drops[MALFORMED] += 1
                        self.reset()
                        return False
                elif self._rem == 0:
                    self._st = _TYPE
                    if not self._on(self._b0, self.buf, 0):
                        return False
                else:
                    self._st = _BODY if self._rem <= len(self.buf) else _SKIP
        return True
