"""Fuzzing the board's wire decoder and deframer under the real micropython binary.

10,000 random, mutated and valid messages (seeded; tests/wire_corpus.py) go through the board's
`wire.header`/unpack, and the same messages, framed and then mutated, go through its deframer as
one byte stream. The board must get through all of them without an exception other than the
codec's ValueError and without hanging (the run has a timeout), and reach the very same verdict
as the host for every message: the two runtimes share one codec.
"""

from __future__ import annotations

import hashlib
import inspect
import random
import struct

from wire_corpus import classify, corpus, frame, mutate

from ladder import framing, wire

N = 10_000
SEED = 20261127

BOARD_SCRIPT = r"""
import struct
from ladder import wire, framing

%(classify)s

def messages(path):
    # One message at a time: the whole corpus does not fit the board's heap.
    with open(path, "rb") as f:
        while True:
            head = f.read(4)
            if len(head) < 4:
                return
            yield f.read(struct.unpack("<I", head)[0])

import hashlib
h = hashlib.sha256()
count = 0
for msg in messages(%(corpus)r):
    try:
        verdict = classify(msg)
    except Exception as e:  # anything but the codec's ValueError is a bug: report it
        verdict = "CRASH %%s %%s" %% (type(e).__name__, e)
        print(verdict, msg)
    h.update(verdict.encode())
    h.update(b"\n")
    count += 1
print("messages", count, h.digest().hex())

dec = framing.Decoder(wire.MAX_MESSAGE)
good = [0]
def on_message(buf, n):
    if classify(bytes(buf[:n])).startswith("ok"):
        good[0] += 1
chunk = bytearray(61)
with open(%(stream)r, "rb") as f:
    while True:
        n = f.readinto(chunk)
        if not n:
            break
        dec.feed(chunk, n, on_message)
print("frames", dec.frames, good[0], dec.dropped)
"""


def _host_verdicts(msgs: list[bytes]) -> str:
    h = hashlib.sha256()
    for m in msgs:
        h.update(classify(m).encode() + b"\n")
    return h.hexdigest()


def test_board_decoder_survives_10000_random_and_mutated_messages(upy, tmp_path):
    msgs = corpus(N, SEED)
    path = tmp_path / "corpus.bin"
    path.write_bytes(b"".join(struct.pack("<I", len(m)) + m for m in msgs))
    rng = random.Random(SEED + 1)
    stream = b"".join(
        mutate(frame(m), rng) if rng.random() < 0.5 else frame(m) for m in msgs if len(m) < 600
    )
    (tmp_path / "stream.bin").write_bytes(stream)

    res = upy(
        BOARD_SCRIPT
        % {
            "classify": inspect.getsource(classify),
            "corpus": str(path),
            "stream": str(tmp_path / "stream.bin"),
        },
        timeout=240,
    ).check()
    lines = res.stdout.splitlines()
    assert not [ln for ln in lines if ln.startswith("CRASH")], res.stdout[:2000]

    kinds = [classify(m).split()[0] for m in msgs]
    assert kinds.count("drop") > N // 3  # the corpus really exercises the error paths
    assert lines[-2] == f"messages {N} {_host_verdicts(msgs)}"

    # The host deframes the same stream the same way.
    dec = framing.Decoder(wire.MAX_MESSAGE)
    good = [0]

    def on_message(buf, n):
        if classify(bytes(buf[:n])).startswith("ok"):
            good[0] += 1

    for i in range(0, len(stream), 61):
        chunk = stream[i : i + 61]
        dec.feed(chunk, len(chunk), on_message)
    assert lines[-1] == f"frames {dec.frames} {good[0]} {dec.dropped}"
    assert dec.frames > N // 3 and sum(dec.dropped) > 1000
