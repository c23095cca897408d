"""The demo's figures, computed from answers: pure functions a person can check by hand.

Accuracy and escalation rate of "the ladder" are taken over the ``main`` phase (the held-out
set with every tier up); the gateway-down and recovered phases are reported on their own, so
that the outage does not blur the headline figure. Latency percentiles use every answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeladder_sim.demo.records import PHASES, REMOTE_SOURCES, Answer, DemoReport
from ladder.wire import SOURCES

PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
TIERS = ("tiny", "medium", "large")
# The keys of the issue's `edgeladder demo --json` line, in its order; demo_json adds EXTRA_KEYS.
ISSUE_KEYS = (
    "ladder_accuracy",
    "tier_accuracy",
    "fixed_threshold_accuracy",
    "fixed_threshold_escalation_rate",
    "escalation_rate",
    "bytes_per_escalation",
    "json_bytes_per_escalation",
    "latency_ms",
    "fallback_max_wait_ms",
    "deadline_ms",
)
EXTRA_KEYS = (
    "answers",
    "calibrated_thresholds",
    "fixed_thresholds",
    "input_bytes",
    "phases",
    "gateway_outage",
    "recovery",
)
_DECIMALS = 6  # fractions: enough to tell 0.3 accuracy points apart on any split
_MS_DECIMALS = 3


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """P50/P95/P99 with numpy's linear interpolation; all None when there are no values."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return dict.fromkeys(PERCENTILES)
    got = np.percentile(arr, list(PERCENTILES.values()))
    return {k: float(v) for k, v in zip(PERCENTILES, got, strict=True)}


@dataclass(frozen=True)
class Summary:
    """Figures over a set of answers. Rates and accuracies are None when there is no answer."""

    count: int
    accuracy: float | None
    escalation_rate: float | None  # share of answers for which the board sent an escalation
    answers_by_source: dict[str, int]  # every source, 0 included
    accuracy_by_source: dict[str, float | None]
    latency_ms: dict[str, dict[str, float | None]]  # every source and "all": p50/p95/p99


def _fraction(num: int, den: int) -> float | None:
    return num / den if den else None


def summarize(answers: Iterable[Answer], *, phase: str | None = None) -> Summary:
    """Summarize ``answers`` (only those of ``phase`` when given)."""
    rows = [a for a in answers if phase is None or a.phase == phase]
    by_source: dict[str, list[Answer]] = {s: [] for s in SOURCES}
    for a in rows:
        by_source[a.source].append(a)
    latency = {s: percentiles(a.latency_ms for a in got) for s, got in by_source.items()}
    latency["all"] = percentiles(a.latency_ms for a in rows)
    return Summary(
        count=len(rows),
        accuracy=_fraction(sum(a.correct for a in rows), len(rows)),
        escalation_rate=_fraction(sum(a.escalated for a in rows), len(rows)),
        answers_by_source={s: len(got) for s, got in by_source.items()},
        accuracy_by_source={
            s: _fraction(sum(a.correct for a in got), len(got)) for s, got in by_source.items()
        },
        latency_ms=latency,
    )


def ladder_summary(report: DemoReport) -> Summary:
    """The headline figures: the main phase, or every answer if the run had no main phase."""
    if any(a.phase == "main" for a in report.answers):
        return summarize(report.answers, phase="main")
    return summarize(report.answers)


def _needed_remote(a: Answer) -> bool:
    # An answer wanted a remote tier if the board escalated it, or if it fell back without
    # sending (a board that knows the gateway is offline answers at once as edge_fallback).
    return a.escalated or a.source == "edge_fallback"


@dataclass(frozen=True)
class Outage:
    """The gateway-down phase: did every unsure input fall back, and within its deadline?"""

    answers: int  # answers in the phase
    escalations: int  # of which the board wanted a remote tier
    fallbacks: int  # of which were answered edge_fallback
    all_edge_fallback: bool  # escalations > 0 and every one of them is edge_fallback
    max_wait_ms: float | None  # longest board latency of those escalations
    deadline_ms: int
    within_deadline: bool | None  # None when nothing escalated in the phase


def fallback_max_wait(answers: Iterable[Answer]) -> float | None:
    """The longest wait of an input that wanted a remote tier while the gateway was down."""
    waits = [a.latency_ms for a in answers if a.phase == "gateway_down" and _needed_remote(a)]
    return max(waits) if waits else None


def outage(report: DemoReport) -> Outage:
    unsure = [a for a in report.answers if a.phase == "gateway_down" and _needed_remote(a)]
    fallbacks = sum(a.source == "edge_fallback" for a in unsure)
    wait = report.fallback_max_wait_ms
    if wait is None:
        wait = fallback_max_wait(report.answers)
    return Outage(
        answers=sum(a.phase == "gateway_down" for a in report.answers),
        escalations=len(unsure),
        fallbacks=fallbacks,
        all_edge_fallback=bool(unsure) and fallbacks == len(unsure),
        max_wait_ms=wait,
        deadline_ms=report.deadline_ms,
        within_deadline=None if wait is None else wait <= report.deadline_ms,
    )


@dataclass(frozen=True)
class Recovery:
    """After the gateway came back: did escalations reach a remote tier again, and when?"""

    answers: int  # answers in the recovered phase
    resumed: bool  # some recovered answer came from the gateway or the cloud
    fallbacks_before: int | None  # edge_fallback answers before the first remote one
    after_ms: float | None  # first remote answer's arrival minus the restore time


def recovery(report: DemoReport) -> Recovery:
    rows = [a for a in report.answers if a.phase == "recovered"]
    if all(a.at_ms is not None for a in rows):
        rows.sort(key=lambda a: a.at_ms)  # arrival order; else the caller's (answer) order
    first = next((i for i, a in enumerate(rows) if a.source in REMOTE_SOURCES), None)
    if first is None:
        return Recovery(answers=len(rows), resumed=False, fallbacks_before=None, after_ms=None)
    hit = rows[first]
    after = None
    if hit.at_ms is not None and report.gateway_restored_ms is not None:
        after = hit.at_ms - report.gateway_restored_ms
    return Recovery(
        answers=len(rows),
        resumed=True,
        fallbacks_before=sum(a.source == "edge_fallback" for a in rows[:first]),
        after_ms=after,
    )


def _r(x: float | None, nd: int = _DECIMALS) -> float | None:
    return None if x is None else round(float(x), nd)


def _latency(p: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: _r(v, _MS_DECIMALS) for k, v in p.items()}


def demo_json(report: DemoReport) -> dict[str, Any]:
    """The `edgeladder demo --json` summary: the issue's keys (ISSUE_KEYS), then EXTRA_KEYS."""
    ladder = ladder_summary(report)
    everything = summarize(report.answers)
    out = outage(report)
    rec = recovery(report)
    doc: dict[str, Any] = {
        "ladder_accuracy": _r(ladder.accuracy),
        "tier_accuracy": {t: _r(report.tier_accuracy.get(t)) for t in TIERS},
        "fixed_threshold_accuracy": _r(report.fixed_accuracy),
        "fixed_threshold_escalation_rate": _r(report.fixed_escalation_rate),
        "escalation_rate": _r(ladder.escalation_rate),
        "bytes_per_escalation": int(report.bytes_per_escalation),
        "json_bytes_per_escalation": int(report.json_bytes_per_escalation),
        "latency_ms": {s: _latency(everything.latency_ms[s]) for s in SOURCES},
        "fallback_max_wait_ms": _r(out.max_wait_ms, _MS_DECIMALS),
        "deadline_ms": int(report.deadline_ms),
        "answers": everything.count,
        "calibrated_thresholds": {k: _r(v) for k, v in report.thresholds.items()},
        "fixed_thresholds": {k: _r(v) for k, v in report.fixed_thresholds.items()},
        "input_bytes": report.input_bytes,
        "phases": {},
        "gateway_outage": {
            "answers": out.answers,
            "escalations": out.escalations,
            "fallbacks": out.fallbacks,
            "all_edge_fallback": out.all_edge_fallback,
            "within_deadline": out.within_deadline,
        },
        "recovery": {
            "answers": rec.answers,
            "resumed": rec.resumed,
            "fallbacks_before": rec.fallbacks_before,
            "after_ms": _r(rec.after_ms, _MS_DECIMALS),
        },
    }
    for name in PHASES:
        s = summarize(report.answers, phase=name)
        if s.count:
            doc["phases"][name] = {
                "answers": s.count,
                "accuracy": _r(s.accuracy),
                "escalation_rate": _r(s.escalation_rate),
                "answers_by_source": s.answers_by_source,
            }
    return doc


def json_payload_bytes(int8_row: Sequence[int] | bytes | np.ndarray) -> int:
    """Bytes of the naive alternative to our ESCALATE: ``{"input": [ints]}`` as UTF-8 JSON.

    ``bytes`` are read as int8 (two's complement), the way the tensor sits in the message.
    """
    if isinstance(int8_row, bytes | bytearray | memoryview):
        values = np.frombuffer(bytes(int8_row), dtype=np.int8).tolist()
    else:
        values = [int(v) for v in np.asarray(int8_row).ravel()]
    return len(json.dumps({"input": values}).encode("utf-8"))
