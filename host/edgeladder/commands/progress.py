"""Rich progress bars for long pipeline steps (drawn on stderr, so stdout stays scriptable)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


class RichProgress:
    """Implements the pipeline's Progress protocol with one bar per step."""

    def __init__(self, title: str, quiet: bool = False) -> None:
        self.console = Console(stderr=True, quiet=quiet)
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.title = title
        self.task = None

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close()
        self.bar.stop()

    def _close(self) -> None:
        if self.task is not None:
            t = self.bar.tasks[-1]
            if t.total is None:
                self.bar.update(self.task, total=1, completed=1)
            else:
                self.bar.update(self.task, total=t.completed or t.total)
        self.task = None

    def step(self, description: str, total: int | None = None) -> None:
        self._close()
        self.task = self.bar.add_task(description, total=total, info="")

    def advance(self, n: int = 1, **info: Any) -> None:
        if self.task is None:
            return
        parts = [f"{k}={v:.3f}" for k, v in info.items() if isinstance(v, float)]
        self.bar.update(self.task, advance=n, info=" ".join(parts))

    def note(self, message: str) -> None:
        self.console.print(message)
