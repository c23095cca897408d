"""The Prometheus metrics of one tier, in its own registry (two servers in one process, as in
tests, never share counters).

``edgeladder_requests_total{outcome}`` counts every message that reached the tier by what became
of it: ``answered``, ``forwarded`` (chained to the next tier), ``rejected_<reason>`` (a REJECT
went back: queue_full, deadline, shutdown) or ``dropped_<reason>`` (see server.DROP_REASONS;
where a reply is possible a REJECT went back too).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: a micro-batch waits about a millisecond; the board's deadline is a few hundred.
_TIME_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgeladder_requests", "Messages received, by what became of them", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            "edgeladder_queue_seconds", "Arrival to the start of its batch", registry=r,
            buckets=_TIME_BUCKETS,
        )  # fmt: skip
        self.compute_seconds = Histogram(
            "edgeladder_compute_seconds", "One batched invoke (model and gate)", registry=r,
            buckets=_TIME_BUCKETS,
        )  # fmt: skip
        self.batch_size = Histogram(
            "edgeladder_batch_size", "Requests per batch", registry=r, buckets=_BATCH_BUCKETS
        )
        self.reloads = Counter(
            "edgeladder_model_reloads", "Model files swapped in while serving", registry=r
        )
        self.reload_failures = Counter(
            "edgeladder_model_reload_failures", "Changed model files that failed to load",
            registry=r,
        )  # fmt: skip
        self.ready = Gauge("edgeladder_ready", "1 once warmed up and connected", registry=r)
        self.batched = Gauge(
            "edgeladder_batched_invoke",
            "1 if a batch runs in one invoke, 0 if the model fell back to single invokes",
            registry=r,
        )
        self.queue_depth = Gauge("edgeladder_queue_depth", "Requests waiting", registry=r)
        self.devices = Gauge("edgeladder_known_devices", "Devices seen (HELLO/HB)", registry=r)

    def count(self, outcome: str, n: int = 1) -> None:
        self.requests.labels(outcome).inc(n)

    def value(self, outcome: str) -> float:
        """The count of one outcome (0 if never seen): for tests and the bench."""
        v = self.registry.get_sample_value("edgeladder_requests_total", {"outcome": outcome})
        return v or 0.0

    def bind(self, ready: Callable[[], bool], queue_depth: Callable[[], int]) -> None:
        """Gauges read at scrape time from the server's own state."""
        self.ready.set_function(lambda: 1.0 if ready() else 0.0)
        self.queue_depth.set_function(lambda: float(queue_depth()))

    def text(self) -> bytes:
        return generate_latest(self.registry)
