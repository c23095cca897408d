"""Golden byte vectors of the wire protocol (tests/golden/wire_v1.json) on both runtimes.

The codec and the framing are one file each under firmware/ladder/, imported by the host and run
by the board. These vectors pin their bytes: CPython and the real micropython binary must both
pack exactly these messages and frames and read the same fields back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ladder import framing, wire

GOLDEN = Path(__file__).parents[1] / "golden" / "wire_v1.json"
VECTORS = json.loads(GOLDEN.read_text())
UNPACK = {
    wire.HELLO: "unpack_hello",
    wire.HEARTBEAT: "unpack_heartbeat",
    wire.RESULT: "unpack_result",
    wire.REJECT: "unpack_reject",
    wire.ANSWER: "unpack_answer",
}


def _args(v: dict) -> list:
    args = list(v["args"])
    if v["pack"] == "pack_escalate":
        args[6], args[7] = bytes.fromhex(args[6]), bytes.fromhex(args[7])
    if v["pack"] == "pack_hello":
        args[3] = tuple(args[3])
    return args


@pytest.mark.parametrize("v", VECTORS["messages"], ids=lambda v: v["name"])
def test_cpython_packs_and_reads_the_golden_messages(v):
    buf = bytearray(wire.MAX_MESSAGE)
    n = getattr(wire, v["pack"])(buf, *_args(v))
    assert bytes(buf[:n]).hex() == v["hex"]
    msg = bytes.fromhex(v["hex"])
    mtype, device, seq = wire.header(msg)
    assert (device, seq) == (v["args"][0], v["args"][1])
    if mtype == wire.ESCALATE:
        mver, dl, conf, stage, k, m, o_top, o_in = wire.unpack_escalate(msg)
        assert (mver, dl, conf, stage) == tuple(v["args"][2:6])
        assert msg[o_top : o_top + 2 * k].hex() == v["args"][6]
        assert msg[o_in : o_in + m].hex() == v["args"][7]
    else:
        fields = getattr(wire, UNPACK[mtype])(msg)
        want = list(v["args"][2:])
        if mtype == wire.HELLO:
            want = [want[0], *want[1], *want[2:]]
        want = [min(x, 65535) if i == _q16_index(mtype) else x for i, x in enumerate(want)]
        assert list(fields) == want


def _q16_index(mtype: int) -> int:
    # The confidence field, sent clamped to 65535 (Q16 1.0 does not fit a u16).
    return {wire.RESULT: 3, wire.ANSWER: 2}.get(mtype, -1)


@pytest.mark.parametrize("f", VECTORS["frames"], ids=lambda f: f["name"])
def test_cpython_frames_and_deframes_the_golden_frames(f):
    msg = bytes.fromhex(f["message"])
    out = bytearray(2 * (len(msg) + framing.CRC_SIZE) + 2)
    n = framing.encode_into(out, msg, len(msg))
    assert bytes(out[:n]).hex() == f["frame"]
    assert 0x03 not in out[:n]  # never Ctrl-C on a REPL port
    got = []
    dec = framing.Decoder(wire.MAX_MESSAGE)
    frame = bytes.fromhex(f["frame"])
    dec.feed(frame, len(frame), lambda b, k: got.append(bytes(b[:k])))
    assert got == [msg]


BOARD_SCRIPT = r"""
import json
from ladder import wire, framing
doc = json.load(open(%(path)r))
buf = bytearray(wire.MAX_MESSAGE)
bad = 0
for v in doc["messages"]:
    a = list(v["args"])
    if v["pack"] == "pack_escalate":
        a[6] = bytes.fromhex(a[6]); a[7] = bytes.fromhex(a[7])
    if v["pack"] == "pack_hello":
        a[3] = tuple(a[3])
    n = getattr(wire, v["pack"])(buf, *a)
    if bytes(buf[:n]).hex() != v["hex"]:
        bad += 1
        print("pack differs", v["name"], bytes(buf[:n]).hex())
    msg = bytes.fromhex(v["hex"])
    t, d, s = wire.header(msg)
    if (d, s) != (v["args"][0], v["args"][1]):
        bad += 1
        print("header differs", v["name"])
    if t == wire.ESCALATE:
        print(v["name"], wire.unpack_escalate(msg))
    else:
        print(v["name"], getattr(wire, %(unpack)r[t])(msg))
got = []
dec = framing.Decoder(wire.MAX_MESSAGE)
for f in doc["frames"]:
    msg = bytes.fromhex(f["message"])
    out = bytearray(2 * (len(msg) + 4) + 2)
    n = framing.encode_into(out, msg, len(msg))
    if bytes(out[:n]).hex() != f["frame"]:
        bad += 1
        print("frame differs", f["name"])
    fr = bytes.fromhex(f["frame"])
    dec.feed(fr, len(fr), lambda b, k: got.append(bytes(b[:k]).hex() == f["message"]))
print("frames decoded", len(got), all(got))
print("bad", bad)
"""


def test_micropython_packs_and_reads_the_same_bytes(upy):
    unpack = {t: name for t, name in UNPACK.items()}
    res = upy(BOARD_SCRIPT % {"path": str(GOLDEN), "unpack": unpack}).check()
    lines = res.stdout.splitlines()
    assert lines[-1] == "bad 0", res.stdout
    assert lines[-2] == f"frames decoded {len(VECTORS['frames'])} True"
    # The board reads the same fields as CPython does.
    for v, line in zip(VECTORS["messages"], lines, strict=False):
        msg = bytes.fromhex(v["hex"])
        mtype = wire.header(msg)[0]
        fields = (
            wire.unpack_escalate(msg)
            if mtype == wire.ESCALATE
            else getattr(wire, UNPACK[mtype])(msg)
        )
        assert line == f"{v['name']} {fields}"
