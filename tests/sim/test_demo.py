"""`edgeladder demo` end to end: the issue's figures, measured on virtual boards.

Both brokers: the embedded amqtt (the README's default) and Debian's Mosquitto (as in CI and on
gateways). One run each, about 25 s: build (the session's digits build), calibrate, two serve
processes, four virtual ESP32s running the firmware, the test split, then the outage pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeladder_sim.demo.stats import ISSUE_KEYS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("broker_kind", ["amqtt", "mosquitto"])
def test_demo_ladder_meets_the_issue_figures(broker_kind, digits_build, tmp_path):
    out = tmp_path / "report"
    argv = [
        sys.executable, "-m", "edgeladder", "demo", str(REPO / "models" / "digits"),
        "--build-dir", str(digits_build.out), "--json", "--broker", broker_kind,
        "--out", str(out), "--keep", str(tmp_path / "work"),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    assert set(got) == set(ISSUE_KEYS)

    tiers = got["tier_accuracy"]
    assert set(tiers) == {"tiny", "medium", "large"}
    # The ladder is about as accurate as the large tier while most inputs stay on the board.
    assert got["ladder_accuracy"] >= tiers["large"] - 0.003
    assert 0 < got["escalation_rate"] <= 0.15
    assert got["ladder_accuracy"] > tiers["tiny"]
    # The fixed thresholds of the same run, for comparison.
    assert 0 < got["fixed_threshold_accuracy"] <= 1
    assert 0 <= got["fixed_threshold_escalation_rate"] <= 1

    # Bytes on the wire per escalation: the 64-byte input plus at most 32.
    assert 64 < got["bytes_per_escalation"] <= 64 + 32
    assert got["json_bytes_per_escalation"] > 2 * got["bytes_per_escalation"]

    # Every source answered, with latencies measured on the board.
    lat = got["latency_ms"]
    for source in ("edge", "gateway", "cloud", "edge_fallback"):
        assert lat[source]["p50"] is not None, source
        assert lat[source]["p50"] <= lat[source]["p95"] <= lat[source]["p99"]
    assert lat["edge"]["p99"] < lat["gateway"]["p50"]

    # The outage: no request waited longer than its deadline.
    assert got["fallback_max_wait_ms"] <= got["deadline_ms"]

    full = json.loads((out / "demo.json").read_text())
    outage, recovery = full["gateway_outage"], full["recovery"]
    assert outage["escalations"] > 0 and outage["all_edge_fallback"]
    assert outage["within_deadline"]
    assert recovery["resumed"], recovery  # escalation came back by itself
    phases = full["phases"]
    assert list(phases) == ["main", "before_kill", "gateway_down", "recovered"]
    down = phases["gateway_down"]["answers_by_source"]
    assert down["gateway"] == down["cloud"] == 0 and down["edge_fallback"] > 0
    assert phases["main"]["answers"] == 359 and phases["main"]["answers_by_source"]["cloud"] > 0
    # The live ladder is the offline replay of the same gates over the same inputs.
    assert full["facts"]["live_matches_replay"] == 1.0
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
