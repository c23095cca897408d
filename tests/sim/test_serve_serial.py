"""`edgeladder serve --serial PORT`: a board on a serial line (here a pty, as a virtual board's
port is) sends SLIP+CRC frames; the tier answers on the same line. REPL text and broken frames
on the line are ignored and counted. With --mqtt too, unsure inputs climb to the cloud tier
over the broker and the cloud's answer comes back down the serial line.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
import tty

import pytest

from edgeladder.model.litert import Int8Runner
from edgeladder.policy import config as ladderconfig
from edgeladder.serve.process import ServeProcessError
from edgeladder_sim.fixtures.ladder import (
    FLEET,
    Devices,
    digits_inputs,
    escalate_bytes,
    write_ladder,
)
from edgeladder_sim.fixtures.ladder import tflite_path as tflite
from ladder import framing, gate, wire


class FakeBoard:
    """The board's end of a pty: writes framed messages, reads framed replies."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # bytes pass untouched, no echo (pyserial does the same)
        self.port = os.ttyname(self.slave)
        self.decoder = framing.Decoder(wire.MAX_MESSAGE)
        self.got: list[bytes] = []

    def send(self, msg: bytes) -> None:
        out = bytearray(2 * (len(msg) + 4) + 2)
        n = framing.encode_into(out, msg, len(msg))
        os.write(self.master, bytes(out[:n]))

    def hello(self, device: int, version: int) -> None:
        buf = bytearray(64)
        self.send(bytes(buf[: wire.pack_hello(buf, device, 1, version, (0, 1, 0), 3, 1000)]))

    def read(self, n: int, timeout: float = 10.0) -> list[bytes]:
        """Wait until n whole messages have arrived in all; return them."""
        end = time.monotonic() + timeout
        while len(self.got) < n:
            left = end - time.monotonic()
            assert left > 0, f"{len(self.got)} of {n} replies on the serial line"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                data = os.read(self.master, 4096)
                self.decoder.feed(data, len(data), lambda b, m: self.got.append(bytes(b[:m])))
        return self.got

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def broken_frame(msg: bytes) -> bytes:
    """msg framed, then one plain data byte changed: the CRC no longer matches."""
    out = bytearray(2 * (len(msg) + 4) + 2)
    n = framing.encode_into(out, msg, len(msg))
    special = (framing.END, framing.ESC, framing.ETX)
    i = next(
        i for i in range(2, n - 1)
        if out[i] not in special and out[i] ^ 1 not in special and out[i - 1] != framing.ESC
    )  # fmt: skip
    out[i] ^= 1
    return bytes(out[:n])


@pytest.fixture
def board():
    b = FakeBoard()
    yield b
    b.close()


@pytest.fixture
def serve(serve_tier):
    return serve_tier


def test_a_board_on_a_serial_line_gets_answers(board, serve, digits_build, tmp_path):
    build = digits_build.out
    x, _ = digits_inputs(build, 20)
    lad = write_ladder(build, tmp_path / "ladder", thresholds={"medium": 65536})
    cfg = ladderconfig.load(lad)
    tier = serve(lad.parent, "medium", "--serial", board.port)
    tier.wait_ready()
    os.write(board.master, b"MicroPython v1.24 on esp32\r\n>>> ")  # REPL text: ignored
    board.hello(0x51, cfg.model_version)
    for i, row in enumerate(x):
        board.send(escalate_bytes(0x51, 1 + i, row.tobytes(), cfg.model_version))
    # a frame with a broken CRC, and an escalation from a board that never said hello
    os.write(
        board.master, broken_frame(escalate_bytes(0x51, 99, x[0].tobytes(), cfg.model_version))
    )
    board.send(escalate_bytes(0x77, 1, x[0].tobytes(), cfg.model_version))
    replies = board.read(len(x) + 1)
    want = Int8Runner.from_bytes(tflite(build, "medium").read_bytes()).run_int8(x).argmax(axis=1)
    results = {}
    for msg in replies:
        mtype, device, _ = wire.header(msg)
        if mtype == wire.REJECT:
            assert device == 0x77
            assert wire.unpack_reject(msg)[1] == wire.UNKNOWN_DEVICE
            continue
        ref, version, label, _, source, stage = wire.unpack_result(msg)
        assert (device, version, source, stage) == (0x51, cfg.model_version, wire.GATEWAY, 1)
        results[ref] = label
    # no next tier reachable over serial alone: the gateway answers even when unsure
    assert results == {1 + i: int(want[i]) for i in range(len(x))}
    tier.wait_metric("edgeladder_requests_total", 'outcome="answered"', len(x))
    # two frames failed the CRC: the REPL text (ended by the HELLO's leading END) and the broken one
    tier.wait_metric("edgeladder_requests_total", 'outcome="dropped_frame_bad_crc"', 2)
    tier.wait_metric("edgeladder_requests_total", 'outcome="dropped_unknown_device"', 1)
    assert tier.stop() == 0


def test_unsure_serial_escalations_climb_to_the_cloud_over_mqtt(
    broker, board, serve, digits_build, tmp_path
):
    build = digits_build.out
    x, _ = digits_inputs(build, 10)
    lad = write_ladder(build, tmp_path / "ladder", thresholds={"medium": 65536})  # never sure
    cfg = ladderconfig.load(lad)
    cloud = serve(lad.parent, "large", "--mqtt", broker.url, "--fleet", FLEET)
    cloud.wait_ready()
    watcher = Devices(broker.url).start()
    try:
        watcher.wait_status("cloud", "online")
        gateway = serve(
            lad.parent, "medium", "--serial", board.port, "--mqtt", broker.url, "--fleet", FLEET
        )
        gateway.wait_ready()
        # the gateway speaks for its serial board on the broker: the cloud learns it from there.
        # A board repeats HELLO (and heartbeats register it too), so a first frame lost while the
        # port settles on a loaded machine is not a failure: say it again, as a board would.
        for _ in range(3):
            board.hello(0x52, cfg.model_version)
            with contextlib.suppress(ServeProcessError):
                cloud.wait_metric("edgeladder_known_devices", "", 1, timeout=5.0)
                break
        cloud.wait_metric("edgeladder_known_devices", "", 1)
        for i, row in enumerate(x):
            board.send(escalate_bytes(0x52, 1 + i, row.tobytes(), cfg.model_version))
        replies = board.read(len(x))
    finally:
        watcher.stop()
    large = Int8Runner.from_bytes(tflite(build, "large").read_bytes()).run_int8(x).argmax(axis=1)
    medium, logits = Int8Runner.from_bytes(tflite(build, "medium").read_bytes()).run_int8_logits(x)
    lut = cfg.stage("medium").exp_lut
    # under 65536 (not certain) climbs to the cloud; a margin of exactly 1.0 stays
    climbs = [gate.confidence(gate.MARGIN, row, 10, lut) < 65536 for row in logits.tolist()]
    assert any(climbs)
    want = {
        1 + i: (wire.CLOUD, 2, int(large[i]))
        if climbs[i]
        else (wire.GATEWAY, 1, int(medium[i].argmax()))
        for i in range(len(x))
    }
    got = {}
    for msg in replies:
        ref, version, label, _, source, stage = wire.unpack_result(msg)
        assert (wire.header(msg)[1], version) == (0x52, cfg.model_version)
        got[ref] = (source, stage, label)
    assert got == want
    assert gateway.metric("edgeladder_requests_total", 'outcome="forwarded"') == sum(climbs)
