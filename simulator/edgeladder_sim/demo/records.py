"""What the demo records while it runs, as plain frozen data the renderers read.

The ladder (boards, broker, tiers) produces :class:`Answer` rows; the lead's demo command
adds the figures measured elsewhere (tiers alone, fixed thresholds, bytes on the wire, the
calibration sweep) and hands one :class:`DemoReport` to the terminal, JSON and HTML renderers.
Nothing here talks to a board, so every renderer can be tested on hand-made numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from edgeladder.errors import EdgeladderError
from ladder.wire import SOURCES

# The demo's phases in the order they happen: the held-out set with every tier up; then a
# second pass: before the gateway is killed, while it is down, after it came back.
PHASES = ("main", "before_kill", "gateway_down", "recovered")
REMOTE_SOURCES = ("gateway", "cloud")


class DemoError(EdgeladderError):
    """The demo recorded something the report cannot describe (unknown source or phase)."""


@dataclass(frozen=True)
class Answer:
    """One answered input: the board's ANSWER plus the truth from the held-out set."""

    index: int  # row of the held-out set
    device: int
    truth: int
    label: int
    source: str  # "edge" | "gateway" | "cloud" | "edge_fallback"
    latency_ms: float  # measured on the board, from frame read to answer
    phase: str  # "main" | "gateway_down" | "recovered"
    escalated: bool  # the board sent an escalation for it (whatever came back)
    # When the host received it, in ms since the run started (the timeline's x axis and the
    # recovery delay); None when the caller did not record it: the timeline then uses order.
    at_ms: float | None = None

    def __post_init__(self) -> None:
        # Checked here, once, so that a typo in the wiring fails loudly instead of silently
        # dropping a source from every table.
        if self.source not in SOURCES:
            raise DemoError(
                f"answer {self.index}: unknown source {self.source!r}; one of {SOURCES}"
            )
        if self.phase not in PHASES:
            raise DemoError(f"answer {self.index}: unknown phase {self.phase!r}; one of {PHASES}")

    @property
    def correct(self) -> bool:
        return self.label == self.truth


class SweepPoint(NamedTuple):
    """One point of the calibration sweep (a plain 3-tuple works too)."""

    threshold: float  # gate threshold as a fraction 0..1
    accuracy: float  # ladder accuracy at that threshold, 0..1
    escalation_rate: float  # share of inputs sent off the board, 0..1


@dataclass(frozen=True)
class Phase:
    """When a phase ran, in ms since the run started (end None: still running at the end)."""

    name: str
    start_ms: float
    end_ms: float | None = None


@dataclass(frozen=True)
class DemoReport:
    """Everything the final terminal report, the ``--json`` summary and the HTML report need.

    Accuracies and rates are fractions 0..1; thresholds are fractions too (Q16 / 65536).
    ``costs`` is keyed by comparison row: "ladder", "tiny", "medium", "large", "fixed";
    a missing key leaves the cell empty and no key at all drops the cost column.
    """

    answers: tuple[Answer, ...]
    tier_accuracy: Mapping[str, float]  # {"tiny", "medium", "large"}: each tier alone
    fixed_accuracy: float  # the ladder with the thresholds we started from
    fixed_escalation_rate: float
    bytes_per_escalation: int  # our ESCALATE message on the wire
    json_bytes_per_escalation: int  # json_payload_bytes() of the same input
    deadline_ms: int
    thresholds: Mapping[str, float] = field(default_factory=dict)  # calibrated, per stage
    fixed_thresholds: Mapping[str, float] = field(
        default_factory=lambda: {"tiny": 0.95, "medium": 0.90}
    )
    sweep: tuple[SweepPoint, ...] = ()
    sweep_stage: str = "tiny"  # the stage whose threshold the sweep varies
    costs: Mapping[str, float] = field(default_factory=dict)
    input_bytes: int | None = None  # int8 input tensor size, to show the wire overhead
    # Measured by the caller; None: the largest latency of the outage's fallback answers.
    fallback_max_wait_ms: float | None = None
    gateway_killed_ms: float | None = None  # ms since the run started
    gateway_restored_ms: float | None = None
    phases: tuple[Phase, ...] = ()
