"""The final report's tables as plain strings, drawn by the terminal (rich) and the HTML report.

One builder for both renderers, so that the terminal and the HTML file never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edgeladder_sim.demo.records import DemoReport
from edgeladder_sim.demo.stats import TIERS, ladder_summary, outage, recovery, summarize
from ladder.wire import SOURCES

NONE = "—"
# Tiers alone: the tiny tier answers everything on the board, the others answer everything off it.
_TIER_ESCALATION = {"tiny": 0.0, "medium": 1.0, "large": 1.0}


@dataclass(frozen=True)
class ReportTable:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""
    left: int = 1  # leading columns of text (left-aligned); the rest are figures

    def aligns(self) -> tuple[str, ...]:
        return tuple("left" if i < self.left else "right" for i in range(len(self.columns)))


def pct(x: float | None, nd: int = 2) -> str:
    return NONE if x is None else f"{100 * x:.{nd}f}%"


def ms(x: float | None) -> str:
    return NONE if x is None else f"{x:.1f}"


def yes_no(x: bool | None) -> str:
    return NONE if x is None else ("yes" if x else "no")


def _thresholds(th: Mapping[str, float]) -> str:
    return " / ".join(f"{k} {v:.3f}" for k, v in th.items()) or NONE


def _points(acc: float | None, ref: float | None) -> str:
    if acc is None or ref is None:
        return NONE
    return f"{100 * (acc - ref):+.2f} pt"


def comparison_table(report: DemoReport) -> ReportTable:
    large = report.tier_accuracy.get("large")
    ladder = ladder_summary(report)
    fixed_name = " / ".join(f"{v:.2f}" for v in report.fixed_thresholds.values())
    rows = [
        (
            "ladder (calibrated)",
            _thresholds(report.thresholds),
            ladder.accuracy,
            ladder.escalation_rate,
            "ladder",
        ),
        *((f"{t} alone", NONE, report.tier_accuracy.get(t), _TIER_ESCALATION[t], t) for t in TIERS),
        (
            f"fixed {fixed_name}",
            _thresholds(report.fixed_thresholds),
            report.fixed_accuracy,
            report.fixed_escalation_rate,
            "fixed",
        ),
    ]
    columns = ("", "thresholds", "accuracy", "vs large", "off the board")
    if report.costs:
        columns += ("cost",)
    out = []
    for name, th, acc, esc, key in rows:
        row = (name, th, pct(acc), _points(acc, large), pct(esc, 1))
        if report.costs:
            cost = report.costs.get(key)
            row += (NONE if cost is None else f"{cost:.3g}",)
        out.append(row)
    return ReportTable(
        "Ladder vs each tier alone vs fixed thresholds",
        columns,
        tuple(out),
        note=f"ladder figures over the main phase ({ladder.count} answers); "
        "off the board = escalation rate",
        left=2,
    )


def wire_table(report: DemoReport) -> ReportTable:
    ours, naive = report.bytes_per_escalation, report.json_bytes_per_escalation
    rows = [
        ("ours: binary ESCALATE", f"{ours:,}", "1.0x"),
        ('JSON {"input": [numbers]}', f"{naive:,}", f"{naive / ours:.1f}x" if ours else NONE),
    ]
    note = ""
    if report.input_bytes is not None:
        rows.insert(0, ("int8 input tensor alone", f"{report.input_bytes:,}", NONE))
        note = f"overhead over the input: {ours - report.input_bytes:+,} bytes"
    return ReportTable(
        "Bytes on the wire per escalation", ("payload", "bytes", "vs ours"), tuple(rows), note
    )


def outage_table(report: DemoReport) -> ReportTable:
    out, rec = outage(report), recovery(report)
    wait = NONE
    if out.max_wait_ms is not None:
        wait = f"{ms(out.max_wait_ms)} ms (deadline {out.deadline_ms} ms): "
        wait += "within" if out.within_deadline else "OVER"
    resumed = yes_no(rec.resumed)
    if rec.resumed:
        when = [f"after {ms(rec.after_ms)} ms"] if rec.after_ms is not None else []
        when.append(f"{rec.fallbacks_before} fallback(s) first")
        resumed += f" ({', '.join(when)})"
    rows = [
        ("answers while the gateway was down", str(out.answers)),
        ("unsure inputs → edge_fallback", f"{out.fallbacks} / {out.escalations}"),
        ("all edge_fallback", yes_no(out.all_edge_fallback if out.escalations else None)),
        ("longest wait vs deadline", wait),
        ("escalation resumed after restore", resumed),
        ("answers after restore", str(rec.answers)),
    ]
    if report.gateway_killed_ms is not None:
        rows.insert(0, ("gateway killed at", f"{report.gateway_killed_ms / 1000:.2f} s"))
    if report.gateway_restored_ms is not None:
        rows.insert(1, ("gateway restored at", f"{report.gateway_restored_ms / 1000:.2f} s"))
    return ReportTable("Gateway killed mid-run", ("check", "result"), tuple(rows), left=2)


def latency_table(report: DemoReport) -> ReportTable:
    s = summarize(report.answers)
    rows = []
    for src in (*SOURCES, "all"):
        n = s.count if src == "all" else s.answers_by_source[src]
        acc = s.accuracy if src == "all" else s.accuracy_by_source[src]
        p = s.latency_ms[src]
        rows.append((src, str(n), pct(acc), ms(p["p50"]), ms(p["p95"]), ms(p["p99"])))
    return ReportTable(
        "Latency per source (ms, on the board, frame read to answer)",
        ("source", "answers", "accuracy", "P50", "P95", "P99"),
        tuple(rows),
        note="all phases",
    )


def final_tables(report: DemoReport) -> list[ReportTable]:
    tables = [comparison_table(report), wire_table(report)]
    if report.gateway_killed_ms is not None:  # a run without the outage pass has no such table
        tables.append(outage_table(report))
    tables.append(latency_table(report))
    return tables
