"""A bounded request queue and one worker thread that runs dynamic micro-batches.

The worker takes the first waiting request, then keeps gathering until the batch holds
``max_batch`` requests or ``max_delay`` has passed since that first one *arrived*: under load the
queue already holds a full batch and nothing waits; when idle, a lone request waits at most
``max_delay`` (about a millisecond) for company.

Full queue: :meth:`Batcher.submit` returns False at once and the caller rejects (``queue_full``)
so that a board falls back now instead of at its deadline. A request whose deadline passes while
it waits is not run: ``expire`` gets it (the caller rejects it with ``deadline``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol


class Item(Protocol):
    arrival: float  # time.monotonic() when it arrived
    deadline: float  # time.monotonic() past which an answer is useless


class Batcher:
    def __init__(
        self,
        process: Callable[[Sequence[Item]], None],
        expire: Callable[[Item], None],
        *,
        max_batch: int = 16,
        max_delay_s: float = 0.001,
        capacity: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1 or capacity < 1 or max_delay_s < 0:
            raise ValueError("batcher: max_batch and capacity must be >= 1, max_delay >= 0")
        self.process = process
        self.expire = expire
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.capacity = capacity
        self.clock = clock
        self._queue: deque[Item] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # what killed process(), if anything did

    def __len__(self) -> int:
        return len(self._queue)

    def start(self) -> Batcher:
        self._thread = threading.Thread(target=self._run, name="tier-batcher", daemon=True)
        self._thread.start()
        return self

    def submit(self, item: Item) -> bool:
        """Queue item; False (at once, nothing queued) when the queue is full or stopping."""
        with self._cond:
            if self._stopping or len(self._queue) >= self.capacity:
                return False
            self._queue.append(item)
            self._cond.notify()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Refuse new items, finish what is queued (expired ones expire), stop the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            if batch:
                try:
                    self.process(batch)
                except Exception as e:  # keep serving; the server logs and counts it
                    self.error = e

    def _gather(self) -> list[Item] | None:
        """The next batch: [] when everything taken had expired; None once stopped and empty."""
        q = self._queue
        with self._cond:
            while not q:
                if self._stopping:
                    return None
                self._cond.wait()
            first = q.popleft()
            batch = [first]
            close_at = first.arrival + self.max_delay_s
            while len(batch) < self.max_batch:
                if q:
                    batch.append(q.popleft())
                    continue
                left = close_at - self.clock()
                if left <= 0 or self._stopping:
                    break
                self._cond.wait(left)
        # Deadlines are checked when the batch closes: whatever waited too long is not run.
        now = self.clock()
        live = []
        for item in batch:
            if item.deadline <= now:
                try:
                    self.expire(item)
                except Exception as e:  # as for process(): the worker goes on
                    self.error = e
            else:
                live.append(item)
        return live
