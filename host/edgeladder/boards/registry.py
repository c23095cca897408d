"""Boards as data: one TOML file per board under ``boards/``, loaded into a registry.

Adding a board means adding a file; nothing here names a board. A ``device`` board runs the
firmware (chip, flash layout, heap, and the figures ``edgeladder fit`` counts); a ``gateway``
or ``cloud`` board runs the larger tiers (power, TOPS, cost, the largest model it takes).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from edgeladder.errors import EdgeladderError
from edgeladder.util.resources import BOARDS_DIR

ROLES = ("device", "gateway", "cloud")
REQUIRED = ("name", "title", "role", "power_w", "tops", "cost_usd")
# A device board must say where the firmware goes and what a model may use.
DEVICE_REQUIRED = (
    "chip", "mpy_arch", "flash_offset", "flash_bytes", "heap_bytes", "firmware_bytes",
    "vfs_bytes", "engine_heap_bytes", "engine_flash_bytes", "app_reserve_bytes", "per_mac_ns",
)  # fmt: skip


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
    # device boards
    chip: str | None = None
    mpy_arch: str | None = None
    cpu_mhz: int | None = None
    flash_offset: int | None = None
    flash_bytes: int | None = None
    heap_bytes: int | None = None  # usable MicroPython heap
    firmware_bytes: int | None = None  # flash used by the MicroPython image
    vfs_bytes: int | None = None  # the filesystem partition
    engine_heap_bytes: int | None = None  # the imported engine's heap cost
    engine_flash_bytes: int | None = None  # the engine's .mpy files
    app_reserve_bytes: int | None = None  # heap an application needs beside the model
    per_mac_ns: float | None = None  # estimated time of one int8 MAC
    # gateway and cloud boards
    max_model_mb: float | None = None  # the largest model hardware selection sends here
    host: str | None = None  # an accessory's host board (its power counts too)
    extra: dict = field(default_factory=dict)

    @property
    def is_device(self) -> bool:
        return self.role == "device"


# Fields annotated as numbers (annotations are strings here: ``from __future__``).
_NUMERIC = {
    k
    for k, f in Board.__dataclass_fields__.items()
    if f.type in ("float", "int | None", "float | None")
}


def _load(path: Path) -> Board:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BoardError(f"cannot read board file: {e}", path) from e
    known = set(Board.__dataclass_fields__) - {"extra"}
    missing = set(REQUIRED) - data.keys()
    if missing:
        raise BoardError(f"missing keys {sorted(missing)}", path)
    if data["role"] not in ROLES:
        raise BoardError(f"role {data['role']!r} is not one of {ROLES}", path)
    if data["name"] != path.stem:
        raise BoardError(f"name {data['name']!r} differs from the file name {path.stem!r}", path)
    if data["role"] == "device":
        missing = set(DEVICE_REQUIRED) - data.keys()
        if missing:
            raise BoardError(f"a device board needs {sorted(missing)}", path)
    for key in _NUMERIC & data.keys():
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise BoardError(f"{key} = {value!r}: expected a number >= 0", path)
    extra = {k: v for k, v in data.items() if k not in known}
    return Board(**{k: v for k, v in data.items() if k in known}, extra=extra)


@cache
def registry(boards_dir: Path = BOARDS_DIR) -> dict[str, Board]:
    """All boards, by name."""
    boards = {b.name: b for b in (_load(p) for p in sorted(boards_dir.glob("*.toml")))}
    for b in boards.values():
        if b.host is not None and b.host not in boards:
            raise BoardError(
                f"host {b.host!r} is not a board; known boards: {', '.join(sorted(boards))}",
                boards_dir / f"{b.name}.toml",
            )
    return boards


def get(name: str) -> Board:
    """The board called ``name``, or a :class:`BoardError` that lists the known ones."""
    boards = registry()
    if name not in boards:
        raise BoardError(f"unknown board {name!r}; known boards: {', '.join(sorted(boards))}")
    return boards[name]


def devices() -> list[Board]:
    """The boards that run the firmware, by name."""
    return [b for _, b in sorted(registry().items()) if b.is_device]
