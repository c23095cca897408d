"""Make a board hold exactly the planned files: compare hashes, copy what differs, remove stale.

The order keeps a board bootable at every point of a cut: leftover ``.tmp`` files of a cut
deploy go first, then the new and changed files, then the stale files in the managed folders,
and the config (``/ladder.json``) last, so that a board never reads a config that names files
it does not have yet.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from edgeladder.device.deploy.errors import DeployError
from edgeladder.device.deploy.plan import CONFIG_PATH, MANAGED_DIRS
from edgeladder.device.deploy.transport import Board

ProgressFn = Callable[[str, str, int], None]  # (event, board path, bytes)


@dataclass
class DeployResult:
    port: str
    board: str
    arch: str
    platform: str
    simulated: bool
    tiers: list[str]
    copied: list[tuple[str, int]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    boot_log: str = ""
    seconds: float = 0.0

    @property
    def bytes_copied(self) -> int:
        return sum(n for _, n in self.copied)

    def as_dict(self) -> dict:
        return {
            "port": self.port,
            "board": self.board,
            "arch": self.arch,
            "platform": self.platform,
            "simulated": self.simulated,
            "tiers": self.tiers,
            "copied": [{"path": p, "bytes": n} for p, n in self.copied],
            "unchanged": self.unchanged,
            "removed": self.removed,
            "bytes_copied": self.bytes_copied,
            "notes": self.notes,
            "boot_log": self.boot_log,
            "seconds": round(self.seconds, 2),
        }


def sync(conn: Board, files: dict[str, bytes], result: DeployResult, report: ProgressFn) -> None:
    """Copy to the board what differs from ``files``; remove what the deploy does not name."""
    state = conn.scan(MANAGED_DIRS, tuple(files))
    on_board = set(state["paths"])
    for d in sorted({p.rsplit("/", 1)[0] for p in files if p.count("/") > 1}):
        if d + "/" not in on_board:
            conn.exec(f"os.mkdir({d!r})")
            on_board.add(d + "/")
    # New files first, stale ones next, the config last: a cut at any point leaves a
    # board that boots (old .py files would shadow the new .mpy only until removed).
    leftovers = [p for p in state["paths"] if p.endswith(".tmp")]  # a cut deploy's
    _remove_stale(conn, leftovers, files, result, report)
    for path in sorted(files, key=lambda p: (p == CONFIG_PATH, p)):
        if path == CONFIG_PATH:
            rest = [p for p in state["paths"] if p not in leftovers]
            _remove_stale(conn, rest, files, result, report)
        data = files[path]
        if state["sha"].get(path) == hashlib.sha256(data).hexdigest():
            result.unchanged.append(path)
            continue
        conn.write_atomic(path, data)
        result.copied.append((path, len(data)))
        report("copied", path, len(data))


def _remove_stale(
    conn: Board, paths: list[str], files: dict[str, bytes], result: DeployResult, report
) -> None:
    """Remove files in the managed folders that the deploy does not name, and empty folders."""
    for path in paths:
        if not path.endswith("/") and path not in files:
            conn.exec(f"try:\n    os.remove({path!r})\nexcept OSError:\n    pass")
            result.removed.append(path)
            report("removed", path, 0)
    wanted_dirs = {p.rsplit("/", 1)[0] + "/" for p in files}
    for d in sorted((p for p in paths if p.endswith("/")), key=len, reverse=True):
        if not any(w.startswith(d) for w in wanted_dirs):
            with contextlib.suppress(DeployError):
                conn.exec(f"os.rmdir({d[:-1]!r})")
                result.removed.append(d)
