"""The demo's terminal: a live dashboard while inputs stream, and the final comparison report.

The live view redraws at most ``max_fps`` times a second however often ``update`` is called
(a board answers far faster than a person reads). When stdout is not a terminal (CI, a pipe,
``--json``) nothing is drawn live: one plain line per quarter of the run and per phase change,
so that logs stay readable and free of escape codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from edgeladder_sim.demo.records import Answer, DemoReport
from edgeladder_sim.demo.stats import summarize
from edgeladder_sim.demo.tables import ReportTable, final_tables, ms, pct
from ladder.wire import SOURCES

_SOURCE_STYLE = {"edge": "green", "gateway": "cyan", "cloud": "magenta", "edge_fallback": "yellow"}


def render_live(
    answers: Sequence[Answer], *, phase: str, gateway_up: bool, total: int
) -> RenderableType:
    """One frame of the live dashboard (a pure function of what has been answered so far)."""
    s = summarize(answers)
    head = Text.assemble(
        ("phase ", "dim"),
        (phase, "bold"),
        ("   gateway ", "dim"),
        ("UP", "bold green") if gateway_up else ("DOWN", "bold red"),
        ("   answered ", "dim"),
        f"{s.count}/{total}",
        ("   accuracy ", "dim"),
        pct(s.accuracy),
        ("   escalation rate ", "dim"),
        pct(s.escalation_rate, 1),
    )
    bar = Table.grid(padding=(0, 1))  # a grid row ends the line (a bare ProgressBar does not)
    bar.add_row(
        ProgressBar(total=max(total, 1), completed=min(s.count, max(total, 1)), width=60),
        pct(s.count / total if total else None, 0),
    )
    t = Table(title="answers per source", title_justify="left", expand=False)
    for col in ("source", "answers", "share", "accuracy", "P50 ms", "P95 ms", "P99 ms"):
        t.add_column(col, justify="left" if col == "source" else "right")
    for src in SOURCES:
        n = s.answers_by_source[src]
        p = s.latency_ms[src]
        t.add_row(
            Text(src, style=_SOURCE_STYLE[src]),
            str(n),
            pct(n / s.count if s.count else None, 1),
            pct(s.accuracy_by_source[src]),
            ms(p["p50"]),
            ms(p["p95"]),
            ms(p["p99"]),
        )
    return Panel(Group(head, bar, t), title="edgeladder demo", title_align="left", expand=False)


def progress_line(answers: Sequence[Answer], *, phase: str, gateway_up: bool, total: int) -> str:
    """The plain one-line progress used when stdout is not a terminal."""
    s = summarize(answers)
    share = f" ({100 * s.count / total:.0f}%)" if total else ""
    return (
        f"demo: {s.count}/{total}{share} phase={phase} gateway={'up' if gateway_up else 'down'}"
        f" accuracy={pct(s.accuracy)} escalation={pct(s.escalation_rate, 1)}"
    )


class Dashboard:
    """``with Dashboard(console) as d: d.update(answers, phase=..., gateway_up=..., total=...)``."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        max_fps: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console if console is not None else Console()
        self.min_interval = 1.0 / max_fps
        self.clock = clock
        self.redraws = 0  # live frames drawn (the throttle's effect, visible to tests)
        self._live: Live | None = None
        self._last_draw: float | None = None
        self._pending: dict[str, Any] | None = None  # latest state not drawn yet
        self._quarter = 0  # plain mode: quarters of the run already reported
        self._phase: str | None = None

    def __enter__(self) -> Dashboard:
        if self.console.is_terminal:
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is None:
            return
        try:
            if self._pending is not None:
                self._draw(**self._pending)  # the last state always shows, throttled or not
        finally:
            self._live.stop()
            self._live = None

    def update(
        self, answers_so_far: Sequence[Answer], *, phase: str, gateway_up: bool, total: int
    ) -> None:
        state = {
            "answers": answers_so_far,
            "phase": phase,
            "gateway_up": gateway_up,
            "total": total,
        }
        if self._live is None:
            self._plain(**state)
            return
        now = self.clock()
        due = self._last_draw is None or now - self._last_draw >= self.min_interval
        if due or phase != self._phase or len(answers_so_far) >= total:
            self._last_draw = now
            self._draw(**state)
        else:
            self._pending = state

    def _draw(self, **state: Any) -> None:
        assert self._live is not None
        self._pending = None
        self._phase = state["phase"]
        self._live.update(render_live(**state), refresh=True)
        self.redraws += 1

    def _plain(self, **state: Any) -> None:
        quarter = 4 * len(state["answers"]) // state["total"] if state["total"] > 0 else 0
        # A line per quarter done and per phase change (the start of the run is no change).
        changed = self._phase is not None and state["phase"] != self._phase
        self._phase = state["phase"]
        if quarter > self._quarter or changed:
            self._quarter = max(quarter, self._quarter)
            self.console.print(
                progress_line(**state), markup=False, highlight=False, soft_wrap=True
            )


def _rich_table(t: ReportTable) -> Table:
    out = Table(title=t.title, title_justify="left", caption=t.note or None, caption_justify="left")
    for col, justify in zip(t.columns, t.aligns(), strict=True):
        out.add_column(col, justify=justify)
    for row in t.rows:
        out.add_row(*(Text(cell) for cell in row))  # Text: cells are data, never markup
    return out


def render_final(report: DemoReport) -> RenderableType:
    """The final report: comparison, bytes on the wire, the gateway outage, latency."""
    return Group(*(_rich_table(t) for t in final_tables(report)))


def print_final(console: Console, report: DemoReport) -> None:
    console.print(render_final(report))
