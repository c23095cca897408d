"""The demo's HTML report: one self-contained file (inline CSS, plots as base64 PNG, no JS).

matplotlib is imported lazily (it is the optional ``plots`` extra, and slow to import) and
used through ``Figure`` objects with the Agg canvas, never pyplot: no global backend switch,
no GUI, safe to call from a process that also draws a rich dashboard.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from edgeladder.util.atomic import write_text
from edgeladder_sim.demo.records import Answer, DemoReport
from edgeladder_sim.demo.stats import TIERS, demo_json, ladder_summary
from edgeladder_sim.demo.tables import ReportTable, final_tables, pct
from ladder.wire import SOURCES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_COLORS = {"edge": "#2e7d32", "gateway": "#1565c0", "cloud": "#8e24aa", "edge_fallback": "#ef6c00"}
_MIN_MS = 0.01  # log axes cannot show 0 ms; a zero latency is drawn at this floor
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.headline { font-size: 1.05em; background: #f3f6f9; padding: .7em 1em; border-radius: 6px; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .9em; }
table { border-collapse: collapse; margin: .4em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .7em; text-align: right; }
th, td.l { text-align: left; } th { background: #eef1f4; }
caption { text-align: left; font-weight: 600; padding: .3em 0; }
.note { color: #555; font-size: .85em; } pre { background: #f6f6f6; padding: .8em; }
"""


def _figure(width: float = 8.0, height: float = 4.2) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _point(ax, rate: float, accuracy: float, marker: str, color: str, label: str) -> None:
    """One (escalation rate, accuracy) point of the sweep plot, in percent."""
    ax.plot(100 * rate, 100 * accuracy, marker, ms=9, color=color, label=label)


def plot_calibration(report: DemoReport) -> bytes:
    """Accuracy vs escalation rate: the sweep, the chosen threshold, the run, fixed, tiers."""
    fig, ax = _figure()
    sweep = sorted(report.sweep, key=lambda p: p[2])
    if sweep:
        ax.plot(
            [100 * p[2] for p in sweep],
            [100 * p[1] for p in sweep],
            ".-",
            color="#607d8b",
            label=f"{report.sweep_stage} threshold swept, same inputs",
        )
        chosen = report.thresholds.get(report.sweep_stage)
        if chosen is not None:
            t, acc, esc = min(sweep, key=lambda p: abs(p[0] - chosen))
            ax.plot(
                100 * esc, 100 * acc, "*", ms=16, color="#d81b60", label=f"chosen threshold {t:.3f}"
            )
    ladder = ladder_summary(report)
    if ladder.accuracy is not None and ladder.escalation_rate is not None:
        _point(ax, ladder.escalation_rate, ladder.accuracy, "D", "#000", "ladder, this run")
    fixed = " / ".join(f"{v:.2f}" for v in report.fixed_thresholds.values())
    _point(
        ax, report.fixed_escalation_rate, report.fixed_accuracy, "s", "#ff8f00",
        f"fixed thresholds {fixed}",
    )  # fmt: skip
    # Tiers with the same point (medium and large often tie) share one marker and one label.
    points: dict[tuple[float, float], list[str]] = {}
    for tier, x in zip(TIERS, (0.0, 100.0, 100.0), strict=True):
        acc = report.tier_accuracy.get(tier)
        if acc is not None:
            points.setdefault((x, round(100 * acc, 6)), []).append(tier)
    for (x, acc), tiers in points.items():
        ax.plot(x, acc, "^", ms=9, color=_COLORS["gateway"] if x else _COLORS["edge"])
        ax.annotate(
            f"{' = '.join(tiers)} alone",
            (x, acc),
            textcoords="offset points",
            xytext=(6 if x == 0 else -6, 6),
            ha="left" if x == 0 else "right",
        )
    large = report.tier_accuracy.get("large")
    if large is not None:
        ax.axhline(100 * large - 0.3, ls="--", lw=1, color="#9e9e9e", label="large − 0.3 pt")
    ax.set_xlabel("inputs escalated off the board (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlim(-4, 104)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def plot_latency(report: DemoReport) -> bytes:
    """Latency CDF per source on a log axis, with the deadline."""
    fig, ax = _figure()
    drawn = False
    for src in SOURCES:
        vals = sorted(max(a.latency_ms, _MIN_MS) for a in report.answers if a.source == src)
        if vals:
            ys = [(i + 1) / len(vals) for i in range(len(vals))]
            ax.step(vals, ys, where="post", color=_COLORS[src], label=f"{src} ({len(vals)})")
            drawn = True
    ax.axvline(
        report.deadline_ms,
        ls="--",
        color="#c62828",
        lw=1,
        label=f"deadline {report.deadline_ms} ms",
    )
    ax.set_xscale("log")
    ax.set_xlabel("latency on the board, frame read to answer (ms, log)")
    ax.set_ylabel("share of answers ≤ x")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    if not drawn:
        ax.text(0.5, 0.5, "no answers", transform=ax.transAxes, ha="center")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def _timeline_axis(report: DemoReport) -> tuple[list[float], str, tuple[float, float] | None]:
    """x of every answer, the axis label, and the span when the gateway was down."""
    answers: tuple[Answer, ...] = report.answers
    timed = bool(answers) and all(a.at_ms is not None for a in answers)
    if timed:
        xs = [(a.at_ms or 0.0) / 1000 for a in answers]
    else:
        xs = [float(i) for i in range(len(answers))]
    down = [x for x, a in zip(xs, answers, strict=True) if a.phase == "gateway_down"]
    span = (min(down), max(down)) if down else None
    if timed:
        phase = next((p for p in report.phases if p.name == "gateway_down"), None)
        if phase is not None:
            end = phase.end_ms if phase.end_ms is not None else max(xs) * 1000
            span = (phase.start_ms / 1000, end / 1000)
        if report.gateway_killed_ms is not None:
            end_ms = report.gateway_restored_ms
            end = end_ms / 1000 if end_ms is not None else max(xs)
            span = (report.gateway_killed_ms / 1000, end)
    return xs, "time since start (s)" if timed else "answer number", span


def plot_timeline(report: DemoReport) -> bytes:
    """Answers by source over time, gateway-down span shaded.

    Two panels: edge answers are most of the traffic and would flatten the story, so the
    inputs that wanted a remote tier get their own panel, where the switch to edge_fallback
    and back to gateway/cloud is plain to see.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 5.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, 2])
    xs, label, span = _timeline_axis(report)
    if xs:
        lo, hi = min(xs), max(xs)
        n_bins = max(1, min(60, len(xs) // 25))
        edges = [lo + (hi - lo) * i / n_bins for i in range(n_bins + 1)] if hi > lo else n_bins
        by_source = {
            s: [x for x, a in zip(xs, report.answers, strict=True) if a.source == s]
            for s in SOURCES
        }
        for ax, sources in ((top, ("edge",)), (bottom, ("gateway", "cloud", "edge_fallback"))):
            ax.hist(
                [by_source[s] for s in sources],
                bins=edges,
                stacked=True,
                color=[_COLORS[s] for s in sources],
                label=list(sources),
            )
    else:
        bottom.text(0.5, 0.5, "no answers", transform=bottom.transAxes, ha="center")
    for ax in (top, bottom):
        if span is not None:
            ax.axvspan(*span, color="#c62828", alpha=0.12, label="gateway down")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    top.set_ylabel("edge")
    bottom.set_ylabel("unsure inputs")
    bottom.set_xlabel(label)
    return _png(fig)


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _table(t: ReportTable) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in t.columns)
    cls = [' class="l"' if a == "left" else "" for a in t.aligns()]
    body = "".join(
        "<tr>" + "".join(f"<td{k}>{e(c)}</td>" for k, c in zip(cls, row, strict=True)) + "</tr>"
        for row in t.rows
    )
    note = f'<p class="note">{e(t.note)}</p>' if t.note else ""
    return f"<table><caption>{e(t.title)}</caption><tr>{head}</tr>{body}</table>{note}"


def render_html(report: DemoReport, *, title: str = "edgeladder demo") -> str:
    """The whole report as one HTML string."""
    e = html.escape
    ladder = ladder_summary(report)
    headline = (
        f"Ladder accuracy <b>{pct(ladder.accuracy)}</b> with <b>{pct(ladder.escalation_rate, 1)}"
        f"</b> of inputs escalated off the board (large tier alone: "
        f"{pct(report.tier_accuracy.get('large'))}); {len(report.answers)} answers in all."
    )
    plots = [
        _img(
            plot_calibration(report),
            "accuracy vs escalation rate",
            "Accuracy vs escalation rate: the calibration sweep with the chosen threshold, this "
            "run, the fixed thresholds and each tier alone.",
        ),
        _img(
            plot_latency(report),
            "latency per source",
            "Latency per source (cumulative share of answers, log axis) against the deadline.",
        ),
        _img(
            plot_timeline(report),
            "answers by source over time",
            "Answers by source over time: edge_fallback while the gateway is down (shaded), "
            "then escalation resumes through the gateway.",
        ),
    ]
    tables = "\n".join(_table(t) for t in final_tables(report))
    summary = e(json.dumps(demo_json(report), indent=2))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n<h1>{e(title)}</h1>\n"
        f'<p class="headline">{headline}</p>\n<h2>Plots</h2>\n' + "\n".join(plots) + "\n"
        f"<h2>Tables</h2>\n{tables}\n"
        f"<h2>JSON summary</h2>\n<details><summary>edgeladder demo --json</summary>"
        f"<pre>{summary}</pre></details>\n</body></html>\n"
    )


def write_html(path: str | Path, report: DemoReport, *, title: str = "edgeladder demo") -> Path:
    """Write the report to ``path`` atomically (a reader never sees half a file)."""
    return write_text(path, render_html(report, title=title))
