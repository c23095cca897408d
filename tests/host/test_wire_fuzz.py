"""Fuzzing the host's wire decoder and serial deframer with hypothesis (>= 10,000 inputs each).

A receiver may only ever accept a well-formed message or raise ValueError("wire: ..."): no other
exception, no hang, no field read past the end.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_corpus import classify, frame, golden_messages, mutate

from ladder import framing, wire

FUZZ = settings(
    max_examples=10_000,
    deadline=None,
    derandomize=True,  # the same inputs on every run: a failure reproduces
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
GOLDEN = golden_messages()


def _receive(msg: bytes) -> None:
    verdict = classify(msg)
    assert verdict.startswith(("ok ", "drop wire:")), verdict


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes_are_decoded_or_dropped(data):
    _receive(data)


@FUZZ
@given(st.sampled_from(GOLDEN), st.integers(0, 2**32 - 1))
def test_mutated_messages_are_decoded_or_dropped(msg, seed):
    _receive(mutate(msg, random.Random(seed)))


@FUZZ
@given(st.lists(st.sampled_from(GOLDEN), min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_mutated_frame_streams_never_crash_the_deframer(msgs, seed):
    rng = random.Random(seed)
    stream = b"".join(mutate(frame(m), rng) if rng.random() < 0.7 else frame(m) for m in msgs)
    dec = framing.Decoder(wire.MAX_MESSAGE)
    got = []
    # Fed in random chunks, as bytes arrive from a port.
    i = 0
    while i < len(stream):
        j = i + rng.randint(1, 64)
        chunk = stream[i:j]
        dec.feed(chunk, len(chunk), lambda b, k: got.append(bytes(b[:k])))
        i = j
    for m in got:  # what passes the CRC is what some sender framed: a golden message
        assert m in GOLDEN or classify(m).startswith(("ok ", "drop wire:"))
    assert dec.frames == len(got)


def test_every_valid_frame_survives_garbage_around_it():
    rng = random.Random(5)
    dec = framing.Decoder(wire.MAX_MESSAGE)
    got = []
    for m in GOLDEN * 50:
        noise = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        data = noise + frame(m)
        dec.feed(data, len(data), lambda b, k: got.append(bytes(b[:k])))
    assert got == GOLDEN * 50
