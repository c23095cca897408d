# ladder.link.serial: the board's link to a host tier over the USB REPL port, in binary mode.
#
# Frames (ladder.framing: SLIP + CRC32) go out on sys.stdout.buffer and come in on
# sys.stdin.buffer. A 0x03 byte never appears inside a frame (framing escapes it), so Ctrl-C
# from mpremote still interrupts the application, and a leading END in every frame flushes any
# REPL text the host saw before it. Reading never blocks: select.poll on stdin says whether a
# byte is waiting, and bytes are read one at a time, because a stream's readinto() waits until
# its buffer is full (a REPL port has no "what is there" read).
#
# A serial line has no connection state: `up` is always True and the board learns that a host
# is listening only from its replies. After _MISSES escalations in a row went unanswered,
# tier_online() says False for a back-off period (then lets one escalation probe again), so a
# missing host costs one deadline now and then instead of one per input. Any whole message from
# the host ends the back-off.

import select
import sys
from time import sleep_ms, ticks_diff, ticks_ms

from micropython import const

from .. import framing, wire

_MISSES = const(2)  # unanswered escalations in a row before the back-off
_BACKOFF_MS = const(2000)
_MAX_IN = const(256)  # largest message a board takes in (RESULT and REJECT are 24 and 17 bytes)
_DRAIN = const(512)  # bytes read per call at most, so that a flood cannot starve the app


class Link:
    def __init__(self, device_cfg, device_id):
        cfg = device_cfg.get("link") or {}
        self.device = device_id
        self.up = True
        self.sessions = 1  # one session from the start: the app says HELLO once
        self._limit = cfg.get("miss_limit", _MISSES)
        self._backoff = cfg.get("backoff_ms", _BACKOFF_MS)
        self._misses = 0
        self._off_at = 0
        self._waiting = False  # an ESCALATE went out and nothing came back since
        self._out = bytearray(256)  # grows once to the largest frame sent, then is reused
        self._wr = sys.stdout.buffer
        self._rd = sys.stdin.buffer
        self._b1 = bytearray(1)
        self._dec = framing.Decoder(_MAX_IN)
        self._poll = select.poll()
        self._poll.register(sys.stdin, select.POLLIN)
        self._eof = False
        self._cb = None
        self._got = 0
        self._late = 0  # whole messages that arrived while nobody waited (after a deadline)
        self._unsent = 0
        self._on_frame = self._frame  # bound once: the decoder calls it without allocating

    def tier_online(self):
        if self._misses < self._limit:
            return True
        # in back-off; once it is over, one escalation may probe (a timeout renews it)
        return ticks_diff(ticks_ms(), self._off_at) >= self._backoff

    def service(self):
        self._cb = None  # what arrives now answers nothing that is still waited for
        self._drain()

    def send(self, mtype, msg, n):
        need = 2 * (n + framing.CRC_SIZE) + 2
        if len(self._out) < need:
            self._out = bytearray(need)
        m = framing.encode_into(self._out, msg, n)
        try:
            self._wr.write(self._out, m)  # MicroPython streams take a length: no slice
        except OSError:
            self._unsent += 1
            return False
        if mtype == wire.ESCALATE:
            self._waiting = True
        return True

    def poll(self, timeout_ms, on_message):
        """Deliver what arrives within timeout_ms; return at the first whole message(s)."""
        self._cb = on_message
        self._got = 0
        t0 = ticks_ms()
        while True:
            self._drain()
            if self._got:
                break
            left = timeout_ms - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                break
            if self._eof:
                sleep_ms(left)  # nothing can arrive any more; still honour the wait
            else:
                for _ in self._poll.ipoll(left):  # ipoll: no list is made
                    break
        self._cb = None
        if self._waiting and not self._got:
            self._waiting = False  # the escalation's wait ended with nothing from the host
            self._misses += 1
            if self._misses >= self._limit:
                self._off_at = ticks_ms()
        return self._got

    def close(self):
        if not self._eof:
            self._poll.unregister(sys.stdin)
            self._eof = True

    @property
    def dropped(self):
        out = {"late": self._late, "unsent": self._unsent}
        d = self._dec.dropped
        for i in range(len(d)):
            out[framing.DROP_REASONS[i]] = d[i]
        return out

    def _drain(self):
        if self._eof:
            return
        p = self._poll
        b = self._b1
        for _ in range(_DRAIN):
            ready = False
            for _ in p.ipoll(0):
                ready = True
            if not ready:
                return
            if not self._rd.readinto(b, 1):
                self.close()  # end of input (the host side closed the line)
                return
            self._dec.feed(b, 1, self._on_frame)

    def _frame(self, buf, n):
        # any whole message: the host is there
        self._misses = 0
        self._waiting = False
        self._got += 1
        cb = self._cb
        if cb is None:
            self._late += 1
        else:
            cb(buf, n)
