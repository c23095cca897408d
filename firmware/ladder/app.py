# ladder.app: the board's application. Sensor frame -> edge models and gates -> answer here or
# escalate over the link -> answer, tagged with where it was made.
#
#   run("ladder.json", "device.json") -> counters
#
# Both files are read once, at start. The loop keeps the link serviced while it waits for the
# next frame (a short poll on the sensor), says HELLO at every new link session and a
# HEARTBEAT every 5 s, and writes each answer back on the sensor stream as a ladder.wire
# ANSWER (ref = the frame's index from 0). At the end of the sensor data: a last heartbeat,
# close, and the counters. A bad message from the link is counted and dropped (ladder.cascade),
# never raised.

import gc
import json
from time import ticks_add, ticks_diff, ticks_ms, ticks_us

from micropython import const

from . import __version__, link, wire
from .cascade import DROPS, SKIPS, Cascade
from .hal import Sensor

_HEARTBEAT_MS = const(5000)
_SENSOR_WAIT_MS = const(20)  # how long one loop turn waits for a frame before servicing again


def _load(path):
    with open(path) as f:
        return json.load(f)


def _firmware():
    v = __version__.split(".")
    return (int(v[0]), int(v[1]), int(v[2]))


def _total(dropped):
    # a link reports {reason: count} (or one count)
    if isinstance(dropped, int):
        return dropped
    n = 0
    for k in dropped:
        n += dropped[k]
    return n


class App:
    def __init__(self, ladder_path, device_path):
        dev = _load(device_path)
        self.device = dev["device"]
        cut = ladder_path.rfind("/")
        base = ladder_path[: cut + 1] if cut >= 0 else ""
        self.link = link.make(dev, self.device)
        # from the path: the cascade frees the parsed JSON before it loads the models
        self.cascade = Cascade(ladder_path, self.link, self.device, base)
        self.stages = self.cascade.stage_count
        gc.collect()
        s = dev["sensor"]
        if s.get("kind", "tcp") != "tcp":
            raise ValueError("app: sensor kind %r (only tcp)" % s.get("kind"))
        self.sensor = Sensor(s["port"], s.get("host", "127.0.0.1"))
        if self.sensor.typecode != "b" or self.sensor.n != self.cascade.n_in:
            raise ValueError(
                "app: the sensor sends %d values of type %s; the model takes %d int8"
                % (self.sensor.n, self.sensor.typecode, self.cascade.n_in)
            )
        self.frame = self.sensor.frame()
        self.msg = bytearray(wire.HEADER_SIZE + wire.HEARTBEAT_SIZE)  # HELLO, HEARTBEAT, ANSWER
        self.frames = 0
        self._session = 0
        self._start = ticks_ms()

    def run(self):
        c = self.cascade
        lk = self.link
        sensor = self.sensor
        frame = self.frame
        msg = self.msg
        next_hb = ticks_add(ticks_ms(), _HEARTBEAT_MS)
        try:
            while True:
                lk.service()
                if lk.sessions != self._session:
                    self._session = lk.sessions
                    self.hello()
                if ticks_diff(ticks_ms(), next_hb) >= 0:
                    next_hb = ticks_add(ticks_ms(), _HEARTBEAT_MS)
                    self.heartbeat()
                if not sensor.wait(_SENSOR_WAIT_MS):
                    continue
                if not sensor.read_into(frame):
                    break  # the end of the sensor data
                t0 = ticks_us()
                c.decide(frame, t0)
                n = wire.pack_answer(
                    msg, self.device, c.next_seq(), self.frames, c.label, c.conf, c.source,
                    c.stage, c.latency_us,
                )  # fmt: skip
                sensor.write(msg, n)
                self.frames += 1
                if c.reject_reason == wire.UNKNOWN_DEVICE:
                    # the tier has not heard our HELLO (it started after us, or lost it)
                    c.reject_reason = 0
                    self.hello()
            self.heartbeat()
        finally:
            lk.close()
            sensor.close()
        return self.counters()

    def hello(self):
        c = self.cascade
        n = wire.pack_hello(
            self.msg, self.device, c.next_seq(), c.version, _firmware(), self.stages,
            gc.mem_free(),
        )  # fmt: skip
        self.link.send(wire.HELLO, self.msg, n)

    def heartbeat(self):
        c = self.cascade
        n = wire.pack_heartbeat(
            self.msg, self.device, c.next_seq(), ticks_diff(ticks_ms(), self._start) // 1000,
            gc.mem_free(), sum(c.sources), c.escalated, c.sources[wire.EDGE_FALLBACK],
            self.dropped(),
        )  # fmt: skip
        self.link.send(wire.HEARTBEAT, self.msg, n)

    def dropped(self):
        return sum(self.cascade.drops) + _total(self.link.dropped)

    def counters(self):
        c = self.cascade
        drops = {}
        for i in range(len(DROPS)):
            drops[DROPS[i]] = c.drops[i]
        skips = {}
        for i in range(len(SKIPS)):
            skips[SKIPS[i]] = c.skips[i]
        sources = {}
        for i in range(len(wire.SOURCES)):
            sources[wire.SOURCES[i]] = c.sources[i]
        ld = self.link.dropped
        return {
            "frames": self.frames,
            "sources": sources,
            "escalated": c.escalated,
            "timeouts": c.timeouts,
            "rejected": c.rejected,
            "skipped": skips,
            "dropped": drops,
            "link_dropped": ld if isinstance(ld, dict) else {"total": ld},
            "sessions": self.link.sessions,
            "escalation_bytes": c.esc_bytes,
        }


def run(ladder_path="ladder.json", device_path="device.json"):
    return App(ladder_path, device_path).run()
