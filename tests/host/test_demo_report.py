"""The demo's presentation layer on hand-made answers: figures, JSON, terminal and HTML reports."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from rich.console import Console

from edgeladder_sim.demo.dashboard import Dashboard, print_final
from edgeladder_sim.demo.records import Answer, DemoError, DemoReport, SweepPoint
from edgeladder_sim.demo.report_html import write_html
from edgeladder_sim.demo.stats import (
    EXTRA_KEYS,
    ISSUE_KEYS,
    demo_json,
    json_payload_bytes,
    outage,
    percentiles,
    recovery,
    summarize,
)


def ans(i, source, latency, phase="main", *, ok=True, esc=False, at=None):
    truth = i % 10
    return Answer(
        index=i,
        device=i % 2,
        truth=truth,
        label=truth if ok else (truth + 1) % 10,
        source=source,
        latency_ms=latency,
        phase=phase,
        escalated=esc,
        at_ms=float(10 * i) if at is None else at,
    )


# Twelve answers a person can follow: 6 in the main phase (5 right, 2 escalated), 3 with the
# gateway down (2 fallbacks, the longest 150 ms), 3 after the restore at 100 ms (one fallback
# first, then the gateway answers at 130 ms, i.e. 30 ms after the restore).
ANSWERS = (
    ans(0, "edge", 2.0),
    ans(1, "edge", 4.0),
    ans(2, "edge", 6.0, ok=False),
    ans(3, "gateway", 40.0, esc=True),
    ans(4, "cloud", 90.0, esc=True),
    ans(5, "edge", 3.0),
    ans(6, "edge", 5.0, "gateway_down", at=60.0),
    ans(7, "edge_fallback", 120.0, "gateway_down", ok=False, esc=True, at=70.0),
    ans(8, "edge_fallback", 150.0, "gateway_down", esc=True, at=80.0),
    ans(9, "edge_fallback", 30.0, "recovered", esc=True, at=105.0),
    ans(10, "gateway", 50.0, "recovered", esc=True, at=130.0),
    ans(11, "edge", 2.0, "recovered", at=140.0),
)


def make_report(**over) -> DemoReport:
    fields = {
        "answers": ANSWERS,
        "tier_accuracy": {"tiny": 0.9012, "medium": 0.9734, "large": 0.9881},
        "fixed_accuracy": 0.9777,
        "fixed_escalation_rate": 0.3125,
        "bytes_per_escalation": 94,
        "json_bytes_per_escalation": 257,
        "deadline_ms": 200,
        "thresholds": {"tiny": 0.55, "medium": 0.7},
        "sweep": (SweepPoint(0.3, 0.95, 0.05), SweepPoint(0.55, 0.982, 0.14), (0.8, 0.987, 0.3)),
        "costs": {"ladder": 0.21, "large": 1.0},
        "input_bytes": 64,
        "gateway_killed_ms": 55.0,
        "gateway_restored_ms": 100.0,
    }
    fields.update(over)
    return DemoReport(**fields)


def test_percentiles_are_numpy_linear_on_hand_checked_numbers():
    # Linear interpolation over [1, 2, 3, 4]: rank q/100 * 3 -> 1.5, 2.85, 2.97.
    assert percentiles([4, 1, 3, 2]) == pytest.approx({"p50": 2.5, "p95": 3.85, "p99": 3.97})
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}


def test_summarize_counts_accuracy_and_escalation_per_source():
    s = summarize(ANSWERS, phase="main")
    assert s.count == 6
    assert s.accuracy == pytest.approx(5 / 6)
    assert s.escalation_rate == pytest.approx(2 / 6)
    assert s.answers_by_source == {"edge": 4, "gateway": 1, "cloud": 1, "edge_fallback": 0}
    assert s.accuracy_by_source["edge"] == pytest.approx(3 / 4)
    assert s.accuracy_by_source["edge_fallback"] is None
    assert s.latency_ms["edge"]["p50"] == pytest.approx(3.5)  # median of 2, 3, 4, 6
    assert s.latency_ms["edge_fallback"]["p99"] is None

    everything = summarize(ANSWERS)
    assert everything.count == 12
    assert everything.answers_by_source == {"edge": 6, "gateway": 2, "cloud": 1, "edge_fallback": 3}
    assert everything.escalation_rate == pytest.approx(6 / 12)
    assert everything.accuracy == pytest.approx(10 / 12)
    assert summarize([]).accuracy is None


def test_an_answer_with_an_unknown_source_or_phase_is_refused():
    with pytest.raises(DemoError, match="unknown source 'fog'"):
        ans(0, "fog", 1.0)
    with pytest.raises(DemoError, match="unknown phase 'warmup'"):
        ans(0, "edge", 1.0, "warmup")


def test_outage_and_recovery_figures():
    out = outage(make_report())
    assert (out.answers, out.escalations, out.fallbacks) == (3, 2, 2)
    assert out.all_edge_fallback is True
    assert out.max_wait_ms == 150.0
    assert out.within_deadline is True
    assert outage(make_report(deadline_ms=100)).within_deadline is False
    # A gateway answer while the gateway is supposedly down breaks "all edge_fallback".
    leaky = (*ANSWERS, ans(12, "gateway", 40.0, "gateway_down", esc=True, at=85.0))
    assert outage(make_report(answers=leaky)).all_edge_fallback is False

    rec = recovery(make_report())
    assert rec.resumed is True
    assert rec.fallbacks_before == 1
    assert rec.after_ms == pytest.approx(30.0)
    stuck = tuple(a for a in ANSWERS if not (a.phase == "recovered" and a.source == "gateway"))
    assert recovery(make_report(answers=stuck)).resumed is False


def test_demo_json_has_exactly_the_issue_keys_with_the_right_values():
    doc = demo_json(make_report())
    assert tuple(doc)[: len(ISSUE_KEYS)] == ISSUE_KEYS
    assert set(doc) == set(ISSUE_KEYS) | set(EXTRA_KEYS)
    assert doc["ladder_accuracy"] == round(5 / 6, 6)  # main phase only
    assert doc["escalation_rate"] == round(2 / 6, 6)
    assert doc["tier_accuracy"] == {"tiny": 0.9012, "medium": 0.9734, "large": 0.9881}
    assert doc["fixed_threshold_accuracy"] == 0.9777
    assert doc["fixed_threshold_escalation_rate"] == 0.3125
    assert doc["bytes_per_escalation"] == 94 and isinstance(doc["bytes_per_escalation"], int)
    assert doc["json_bytes_per_escalation"] == 257
    assert set(doc["latency_ms"]) == {"edge", "gateway", "cloud", "edge_fallback"}
    for p in doc["latency_ms"].values():
        assert set(p) == {"p50", "p95", "p99"}
    assert doc["latency_ms"]["edge"]["p50"] == 3.5  # all phases: 2, 2, 3, 4, 5, 6
    assert doc["latency_ms"]["edge_fallback"]["p50"] == 120.0
    assert doc["fallback_max_wait_ms"] == 150.0
    assert doc["deadline_ms"] == 200 and isinstance(doc["deadline_ms"], int)
    assert doc["phases"]["gateway_down"]["answers_by_source"]["edge_fallback"] == 2
    assert doc["recovery"]["resumed"] is True
    assert json.loads(json.dumps(doc)) == doc  # plain JSON types only
    # A figure measured by the caller wins over the one derived from the answers.
    assert demo_json(make_report(fallback_max_wait_ms=187.5))["fallback_max_wait_ms"] == 187.5


def test_json_payload_bytes_counts_the_naive_json_of_the_int8_input():
    assert json_payload_bytes([1, -2, 3]) == len(b'{"input": [1, -2, 3]}') == 21
    assert json_payload_bytes(b"\x01\xfe\x03") == 21  # bytes are int8, as on the wire
    assert json_payload_bytes(np.array([1, -2, 3], dtype=np.int8)) == 21
    assert json_payload_bytes([-128] * 64) == len('{"input": []}') + 64 * 4 + 63 * 2


def test_html_report_is_self_contained_with_every_plot_and_table(tmp_path):
    path = write_html(tmp_path / "out" / "report.html", make_report())
    text = path.read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 3  # calibration curve, latency, timeline
    for b64 in images:
        assert base64.b64decode(b64).startswith(b"\x89PNG\r\n\x1a\n")
    for figure in ("83.33%", "90.12%", "98.81%", "97.77%", "31.2%", "94", "257", "2.7x"):
        assert f">{figure}<" in text, figure
    assert "150.0 ms (deadline 200 ms): within" in text
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temp file left


def test_dashboard_prints_nothing_live_when_not_a_terminal():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    answers = [ans(i, "edge", 2.0) for i in range(100)]
    with Dashboard(console) as d:
        for n in range(1, 101):
            d.update(answers[:n], phase="main", gateway_up=True, total=100)
    lines = buf.getvalue().splitlines()
    assert "\x1b" not in buf.getvalue()  # no cursor moves, no colour
    assert [line.split()[1] for line in lines] == ["25/100", "50/100", "75/100", "100/100"]
    assert all(line.startswith("demo: ") for line in lines)


def test_live_dashboard_redraws_at_most_8_times_a_second():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    now = [0.0]
    answers = [ans(i, "edge" if i % 5 else "gateway", 3.0, esc=i % 5 == 0) for i in range(200)]
    with Dashboard(console, clock=lambda: now[0]) as d:
        for n in range(1, 200):  # 199 updates over 1.99 s
            now[0] += 0.01
            d.update(answers[:n], phase="main", gateway_up=True, total=200)
        assert 8 <= d.redraws <= 17
    assert "\x1b[" in buf.getvalue()  # drawn live
    assert "199/200" in buf.getvalue()  # the last, throttled state is drawn on exit


def test_print_final_shows_the_comparison_wire_outage_and_latency_figures():
    buf = io.StringIO()
    print_final(Console(file=buf, width=160, force_terminal=False), make_report())
    out = buf.getvalue()
    for figure in (
        "83.33%",  # ladder accuracy (main phase)
        "33.3%",  # ladder escalation rate
        "90.12%",
        "97.34%",
        "98.81%",  # tiers alone
        "-15.48 pt",  # ladder vs large
        "97.77%",
        "31.2%",  # fixed thresholds
        "tiny 0.950 / medium 0.900",
        "0.21",  # cost
        "2.7x",  # JSON vs ours
        "+30 bytes",  # overhead over the 64-byte input
        "2 / 2",  # fallbacks
        "150.0 ms (deadline 200 ms): within",
        "yes (after 30.0 ms, 1 fallback(s) first)",
        "edge_fallback",
    ):
        assert figure in out, figure
    assert re.search(r"edge\s+│\s+6\s+│\s+83\.33%\s+│\s+3\.5\s+│", out)  # latency row
