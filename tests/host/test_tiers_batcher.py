"""serve.batcher: micro-batches form up to max_batch or max_delay, a full queue refuses at once,
requests past their deadline are expired instead of run. A fake process() stands in for the
model (the batcher does not know what it batches)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from edgeladder.serve.batcher import Batcher


@dataclass
class Req:
    n: int
    arrival: float = field(default_factory=time.monotonic)
    deadline: float = 0.0

    def __post_init__(self) -> None:
        self.deadline = self.deadline or self.arrival + 10.0


class Recorder:
    """process(): records each batch, optionally blocks until released."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.times: list[float] = []
        self.expired: list[int] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        if not hold:
            self.release.set()
        self.done = threading.Condition()

    def process(self, batch) -> None:
        self.entered.set()
        self.release.wait(10)
        with self.done:
            self.batches.append([r.n for r in batch])
            self.times.append(time.monotonic())
            self.done.notify_all()

    def expire(self, r) -> None:
        with self.done:
            self.expired.append(r.n)
            self.done.notify_all()

    def wait_total(self, n: int, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        with self.done:
            while sum(map(len, self.batches)) + len(self.expired) < n:
                assert self.done.wait(end - time.monotonic()), (self.batches, self.expired)


@pytest.fixture
def make():
    made: list[Batcher] = []

    def factory(rec: Recorder, **kw) -> Batcher:
        b = Batcher(rec.process, rec.expire, **kw).start()
        made.append(b)
        return b

    yield factory
    for b in made:
        b.stop()


def test_a_backlog_forms_batches_of_max_batch(make):
    rec = Recorder(hold=True)
    b = make(rec, max_batch=4, max_delay_s=0.5, capacity=64)
    assert b.submit(Req(0))
    assert rec.entered.wait(2)  # the worker holds a batch of one; ten more queue up behind
    for i in range(1, 11):
        assert b.submit(Req(i))
    rec.release.set()
    rec.wait_total(11)
    # the backlog is cut into full batches at once (no waiting for max_delay), in order
    assert rec.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


def _one_submitted(make, **kw) -> tuple[Recorder, Batcher, float]:
    """A batcher with a recorder, and request 0 submitted now (at the time returned)."""
    rec = Recorder()
    b = make(rec, **kw)
    t0 = time.monotonic()
    b.submit(Req(0, arrival=t0))
    return rec, b, t0


def test_a_lone_request_waits_at_most_max_delay_for_company(make):
    rec, b, t0 = _one_submitted(make, max_batch=16, max_delay_s=0.08, capacity=64)
    time.sleep(0.02)
    b.submit(Req(1))  # within the first one's delay: same batch
    rec.wait_total(2)
    waited = rec.times[0] - t0
    assert rec.batches == [[0, 1]]
    assert 0.07 <= waited < 0.5, waited
    time.sleep(0.15)
    b.submit(Req(2))  # a later one starts a batch of its own
    rec.wait_total(3)
    assert rec.batches == [[0, 1], [2]]


def test_max_batch_one_never_waits(make):
    rec, _, t0 = _one_submitted(make, max_batch=1, max_delay_s=1.0, capacity=8)
    rec.wait_total(1)
    assert rec.times[0] - t0 < 0.2  # not the 1 s delay: a full batch closes at once


def test_a_full_queue_refuses_at_once(make):
    rec = Recorder(hold=True)
    b = make(rec, max_batch=2, max_delay_s=0.0, capacity=3)
    assert b.submit(Req(0))
    assert rec.entered.wait(2)
    assert [b.submit(Req(i)) for i in (1, 2, 3)] == [True, True, True]
    t0 = time.perf_counter()
    refused = b.submit(Req(4))
    took = time.perf_counter() - t0
    assert refused is False
    assert took < 0.005  # no waiting for room: the board falls back now
    assert len(b) == 3
    rec.release.set()
    rec.wait_total(4)
    assert sorted(n for batch in rec.batches for n in batch) == [0, 1, 2, 3]


def test_requests_past_their_deadline_are_expired_not_run(make):
    rec = Recorder(hold=True)
    b = make(rec, max_batch=8, max_delay_s=0.0, capacity=8)
    b.submit(Req(0))
    assert rec.entered.wait(2)
    now = time.monotonic()
    b.submit(Req(1, deadline=now + 0.05))  # expires while the worker is busy
    b.submit(Req(2, deadline=now + 30))
    time.sleep(0.1)
    rec.release.set()
    rec.wait_total(3)
    assert rec.expired == [1]
    assert rec.batches == [[0], [2]]


def test_stop_finishes_the_queue_then_refuses(make):
    rec = Recorder(hold=True)
    b = make(rec, max_batch=2, max_delay_s=0.0, capacity=8)
    for i in range(5):
        b.submit(Req(i))
    assert rec.entered.wait(2)
    threading.Timer(0.05, rec.release.set).start()
    b.stop(timeout=5)
    assert sorted(n for batch in rec.batches for n in batch) == [0, 1, 2, 3, 4]
    assert b.submit(Req(9)) is False


def test_a_failing_process_does_not_stop_the_worker(make):
    calls = []

    def process(batch):
        calls.append([r.n for r in batch])
        if len(calls) == 1:
            raise RuntimeError("boom")

    b = Batcher(process, lambda r: None, max_batch=1, max_delay_s=0.0, capacity=4).start()
    try:
        b.submit(Req(0))
        deadline = time.monotonic() + 2
        while not calls and time.monotonic() < deadline:
            time.sleep(0.005)
        b.submit(Req(1))
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert calls == [[0], [1]]
        assert isinstance(b.error, RuntimeError)
    finally:
        b.stop()
