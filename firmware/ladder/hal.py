# ladder.hal: the board's sensor as firmware reads it. On a virtual board the "sensor" is a
# loopback TCP stream from the host (edgeladder_sim.sensor.SensorFeed); on hardware a driver with
# the same two calls (read_into, close) takes its place.
#
# Wire format (little-endian): a 8-byte header b"ELSF", dtype (b"b" int8 or b"h" int16), 0,
# values per frame (uint16); then fixed-size frames of that many values, nothing between them.
# The stream closing is the end of the data. Nothing is allocated per frame: read_into fills
# the caller's preallocated array with socket.readinto.
#
# Answers go back on the same stream (the actuator side of a virtual board): write(buf, n)
# sends a u16 little-endian length, then the first n bytes of buf (a ladder.wire ANSWER),
# in one write so that Nagle's algorithm cannot hold the second half back.

import array
import select
import socket
import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


MAGIC = b"ELSF"
_IPPROTO_TCP = const(6)  # the same numbers on Linux and lwIP; MicroPython names neither
_TCP_NODELAY = const(1)


class Sensor:
    def __init__(self, port, host="127.0.0.1"):
        self._s = socket.socket()
        self._s.connect(socket.getaddrinfo(host, port)[0][-1])
        self._buf = None  # the last buffer read into, and its byte view
        self._mv = None
        self._item = 1
        head = self._exact(bytearray(8))
        if head is None or head[:4] != MAGIC:
            raise OSError("sensor: bad stream header")
        self.typecode = chr(head[4])
        self.n = struct.unpack("<H", head[6:8])[0]
        self._item = 2 if self.typecode == "h" else 1
        self._poll = None
        self._wbuf = bytearray(32)
        try:  # answers are small: send each at once, not after the host's delayed ACK
            self._s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except OSError:
            pass

    def frame(self):
        """A buffer for one frame: array of typecode with n values (allocate once)."""
        return array.array(self.typecode, [0] * self.n)

    def read_into(self, buf):
        """Fill buf (from frame()) with the next frame; False at the end of the data."""
        return self._exact(buf) is not None

    def _exact(self, buf):
        # A blocking readinto fills the whole buffer on MicroPython, so the usual frame costs
        # one call and no allocation: the byte view of the caller's buffer is made once and
        # kept (the caller passes the same frame() buffer every time). Only a short read
        # slices, which allocates. Counted in bytes: an int16 array's view would slice in items.
        if buf is not self._buf:
            self._buf = buf
            self._mv = memoryview(_bytes_of(buf, self._item))
        mv = self._mv
        got = self._s.readinto(mv)
        if not got:
            return None
        while got < len(mv):
            n = self._s.readinto(mv[got:])
            if not n:
                return None
            got += n
        return buf

    def wait(self, timeout_ms):
        """True when a frame (or the end of the data) is waiting; else False after timeout_ms."""
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self._s, select.POLLIN)
        for _ in self._poll.ipoll(timeout_ms):  # ipoll: no list is made
            return True
        return False

    def write(self, buf, n):
        """Send the first n bytes of buf after a u16 little-endian length."""
        w = self._wbuf
        if len(w) < n + 2:
            w = self._wbuf = bytearray(n + 2)  # grows once to the largest answer
        w[0] = n & 0xFF
        w[1] = n >> 8
        for i in range(n):
            w[i + 2] = buf[i]
        self._s.write(w, n + 2)  # MicroPython streams take a length: no slice

    def close(self):
        if self._poll is not None:
            self._poll.unregister(self._s)
            self._poll = None
        self._s.close()


def _bytes_of(buf, item):
    if item == 1 or isinstance(buf, bytearray):
        return buf
    import uctypes  # a byte view of the same memory: no copy

    return uctypes.bytearray_at(uctypes.addressof(buf), len(buf) * item)
