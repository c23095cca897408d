"""A sensor feed: the host pushes samples to a virtual board at a chosen rate.

:class:`SensorFeed` is a TCP server on a free loopback port. A board connects to it with
``socket`` (the unix port has it; so does the ESP32 port) and reads fixed-size frames: firmware
uses ``ladder.hal.Sensor``, which reads each frame into a preallocated array, as from a sensor
driver::

    from ladder.hal import Sensor
    s = Sensor(PORT)            # feed.port
    buf = s.frame()             # array('b' or 'h', n values), allocated once
    while s.read_into(buf):     # blocks until the next frame; False at the end
        ...

Wire format (little-endian): an 8-byte header ``b"ELSF"``, the dtype (``b"b"`` int8 or ``b"h"``
int16), a zero byte, the values per frame (uint16); then the frames back to back, frame ``i``
sent at ``start + i / rate_hz`` (all at once with ``rate_hz=None``). After the last frame the
host shuts its sending side (the board reads the end of the data; ``loop=True`` repeats the
samples until :meth:`stop` instead). Every connection gets the samples from the first one;
connections are served one after another, so a board that reconnects (after a reset) starts
over.

The answer channel: the board writes each answer back on the same connection (its actuator
side), as ``ladder.hal.Sensor.write`` does: a u16 little-endian length, then a ``ladder.wire``
ANSWER. The feed decodes them as they arrive, until the board closes the connection:
``feed.answers`` is the list of :class:`Answer` (with the host's arrival time), and
``feed.wait_answers(n, timeout)`` waits for the first ``n``. ``feed.sent_at[i]`` is when frame
``i`` left the host, so ``answer.t - feed.sent_at[answer.ref]`` is the round trip as the host
sees it. Anything undecodable is counted in ``feed.bad_answers``, never raised.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

import numpy as np

from ladder import wire

from .board import SimError

MAGIC = b"ELSF"
HOST = "127.0.0.1"
_DTYPES = {np.dtype(np.int8): b"b", np.dtype(np.int16): b"h"}


@dataclass(frozen=True)
class Answer:
    """One ANSWER from the board: its fields (ladder.wire) and when the host received it."""

    ref: int  # the frame's index on its connection, from 0
    label: int
    confidence: int  # Q16
    source: str  # edge | gateway | cloud | edge_fallback
    stage: int
    latency_us: int  # as the board measured it: frame read to answer
    device: int
    seq: int
    t: float  # time.monotonic() at arrival


class SensorFeed:
    """Serve ``samples`` (a 2-D int8 or int16 array: one row per frame) on loopback."""

    def __init__(
        self,
        samples,
        rate_hz: float | None = 100.0,
        *,
        loop: bool = False,
        host: str = HOST,
    ) -> None:
        data = np.asarray(samples)
        if data.ndim == 1:
            data = data.reshape(1, -1)
        if data.ndim != 2 or data.dtype not in _DTYPES:
            raise SimError(
                f"a sensor feed takes a 2-D int8 or int16 array (one row per frame), "
                f"not {data.dtype} with shape {data.shape}"
            )
        if not 0 < data.shape[1] < 65536:
            raise SimError(f"a frame has 1..65535 values, not {data.shape[1]}")
        if rate_hz is not None and rate_hz <= 0:
            raise SimError(f"rate_hz must be positive (or None: as fast as possible): {rate_hz}")
        self.samples = np.ascontiguousarray(data.astype(data.dtype.newbyteorder("<")))
        self.rate_hz = rate_hz
        self.loop = loop
        self.header = MAGIC + _DTYPES[data.dtype] + b"\x00" + struct.pack("<H", data.shape[1])
        self.frame_bytes = self.samples[0].nbytes
        self.sent = 0  # frames sent, over all connections
        self.sent_at: list[float] = []  # time.monotonic() per frame sent, in order
        self.connections = 0
        self.answers: list[Answer] = []
        self.bad_answers = 0
        self._answered = threading.Condition()
        self._closing = threading.Event()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((host, 0))
        self._server.listen(1)
        self._server.settimeout(0.2)
        self.host, self.port = self._server.getsockname()[:2]
        self._thread = threading.Thread(target=self._serve, name=f"sensor :{self.port}")
        self._thread.daemon = True
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def wait_answers(self, n: int, timeout: float) -> list[Answer]:
        """The first ``n`` answers, waiting up to ``timeout`` seconds for them."""
        with self._answered:
            if not self._answered.wait_for(lambda: len(self.answers) >= n, timeout):
                raise SimError(
                    f"the board sent {len(self.answers)} of {n} answers within {timeout} s"
                    f" ({self.sent} frames sent, {self.bad_answers} undecodable answers)"
                )
            return list(self.answers[:n])

    def stop(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._server.close()

    close = stop

    def __enter__(self) -> SensorFeed:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            reader = threading.Thread(
                target=self._read_answers, args=(conn,), name=f"answers :{self.port}"
            )
            reader.daemon = True
            with conn:
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    reader.start()
                    conn.sendall(self.header)
                    self._stream(conn)
                    conn.shutdown(socket.SHUT_WR)  # the end of the data; answers may follow
                while reader.is_alive():  # until the board closes (or stop())
                    reader.join(0.2)

    def _read_answers(self, conn: socket.socket) -> None:
        pending = b""
        while not self._closing.is_set():
            try:
                if not select.select([conn], [], [], 0.2)[0]:
                    continue
                data = conn.recv(4096)
            except (OSError, ValueError):
                return
            if not data:
                return
            t = time.monotonic()
            pending += data
            while len(pending) >= 2:
                n = int.from_bytes(pending[:2], "little")
                if len(pending) < 2 + n:
                    break
                self._take(pending[2 : 2 + n], t)
                pending = pending[2 + n :]

    def _take(self, msg: bytes, t: float) -> None:
        try:
            mtype, device, seq = wire.header(msg)
            if mtype != wire.ANSWER:
                raise ValueError(f"wire: type {mtype} on the answer channel")
            ref, label, conf, source, stage, latency = wire.unpack_answer(msg)
            name = wire.SOURCES[source]
        except (ValueError, IndexError):
            self.bad_answers += 1
            return
        answer = Answer(ref, label, conf, name, stage, latency, device, seq, t)
        with self._answered:
            self.answers.append(answer)
            self._answered.notify_all()

    def _stream(self, conn: socket.socket) -> None:
        start = time.monotonic()
        i = 0
        while not self._closing.is_set():
            if i == len(self.samples) and not self.loop:
                return
            if self.rate_hz is not None:
                delay = start + i / self.rate_hz - time.monotonic()
                if delay > 0 and self._closing.wait(delay):
                    return
            conn.sendall(self.samples[i % len(self.samples)].tobytes())
            self.sent_at.append(time.monotonic())
            self.sent += 1
            i += 1
