"""Boards as data: one TOML file per board under ``boards/``, loaded into a registry.

Adding a board means adding a file; nothing here names a board.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .errors import EdgeladderError

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"
ROLES = ("device", "gateway", "cloud")


class BoardError(EdgeladderError):
    """An unknown board or a malformed board file."""


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    role: str
    power_w: float
    tops: float
    cost_usd: float
    chip: str | None = None
    mpy_arch: str | None = None
    flash_offset: int | None = None
    flash_bytes: int | None = None
    heap_bytes: int | None = None
    extra: dict = field(default_factory=dict)


def _load(path: Path) -> Board:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BoardError(f"cannot read board file: {e}", path) from e
    known = set(Board.__dataclass_fields__) - {"extra"}
    missing = {"name", "title", "role", "power_w", "tops", "cost_usd"} - data.keys()
    if missing:
        raise BoardError(f"missing keys {sorted(missing)}", path)
    if data["role"] not in ROLES:
        raise BoardError(f"role {data['role']!r} is not one of {ROLES}", path)
    extra = {k: v for k, v in data.items() if k not in known}
    return Board(**{k: v for k, v in data.items() if k in known}, extra=extra)


@cache
def registry(boards_dir: Path = BOARDS_DIR) -> dict[str, Board]:
    """All boards, by name."""
    boards = [_load(p) for p in sorted(boards_dir.glob("*.toml"))]
    return {b.name: b for b in boards}


def get(name: str) -> Board:
    """The board called ``name``, or a :class:`BoardError` that lists the known ones."""
    boards = registry()
    if name not in boards:
        raise BoardError(f"unknown board {name!r}; known boards: {', '.join(sorted(boards))}")
    return boards[name]
