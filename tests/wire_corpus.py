"""Random and mutated wire messages and frames, for the fuzz tests on both runtimes."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ladder import framing, wire

GOLDEN = Path(__file__).parent / "golden" / "wire_v1.json"


def golden_messages() -> list[bytes]:
    return [bytes.fromhex(v["hex"]) for v in json.loads(GOLDEN.read_text())["messages"]]


def frame(msg: bytes) -> bytes:
    out = bytearray(2 * (len(msg) + framing.CRC_SIZE) + 2)
    return bytes(out[: framing.encode_into(out, msg, len(msg))])


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random edits: flip, set, insert, delete, truncate, extend, splice a length."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[i % len(b)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[i % len(b)] = rng.choice((0x00, 0x01, 0x03, 0x7F, 0x80, 0xC0, 0xDB, 0xFF))
        elif op == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and b:
            del b[i % len(b) : i % len(b) + rng.randint(1, 8)]
        elif op == 4:
            del b[i:]
        elif op == 5:  # now and then past the largest message, to reach the too_long paths
            size = 5000 if rng.random() < 0.03 else rng.randint(1, 64)
            b += rng.randbytes(size)
        elif op == 6 and len(b) > 21:
            b[20:22] = rng.randrange(65536).to_bytes(2, "little")  # an ESCALATE's input length
    return bytes(b)


def corpus(n: int, seed: int) -> list[bytes]:
    """n inputs: a third random bytes, a third mutated messages, a third valid messages."""
    rng = random.Random(seed)
    golden = golden_messages()
    out = []
    for k in range(n):
        kind = k % 3
        if kind == 0:
            out.append(rng.randbytes(rng.randint(0, 120)))
        elif kind == 1:
            out.append(mutate(rng.choice(golden), rng))
        else:
            out.append(rng.choice(golden))
    return out


def classify(msg: bytes) -> str:
    """What a receiver makes of one message: "ok <type>" or "drop <reason>". Both runtimes."""
    try:
        mtype, _device, _seq = wire.header(msg)
    except ValueError as e:
        return "drop " + str(e).split(" (")[0].split(" %")[0][:40]
    if mtype == wire.ESCALATE:
        fields = wire.unpack_escalate(msg)
        k, n, o_top, o_in = fields[4], fields[5], fields[6], fields[7]
        if o_in + n != len(msg) or o_top + 2 * k != o_in:
            return "bad escalate offsets"
    return "ok %d" % mtype  # noqa: UP031 (runs under MicroPython too: no f-strings)


# Device ids in spellings that int(s, 16) would take (device 1, 10, 0x1a, ...) and near misses:
# ladder.topics refuses every one, and a tier drops what arrives under them (topic_mismatch).
BAD_ID_SPELLINGS = [
    "0x000001", "0X000001", "0000_001", "000000_1", " 0000001", "0000001 ", "+0000001",
    "-0000001", "0000000A", "0000001A", "DEADBEEF", "0000001\n", "\t0000001", "0000001",
    "000000001", "", "00000g01", "0000 001", "\uff10" * 7 + "1", "\u0660" * 7 + "\u0661",
    "0000001\u00a0", "+", "#", "0x1", "1",
]  # fmt: skip
