"""Write files and directories so that a crash never leaves a half-written artifact.

Data goes to a temporary sibling first and is renamed into place: on POSIX the rename is
atomic, so a reader sees either the old file or the complete new one. A target that exists
and is not a regular file (``/dev/stdout``, a FIFO, ``/dev/full``) is written in place: renaming
over it would replace the device itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgeladder.errors import EdgeladderError


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        try:  # a device or a pipe: no rename; a failed write names the file
            with open(path, "wb") as f:
                f.write(data)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(path)) from e
        return path
    _make_folder(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # mkstemp makes the file 0600; give it the mode a plain open() would (umask applies).
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _make_folder(folder: Path) -> None:
    """``folder`` and its parents; one that exists as something else is a clear error."""
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise EdgeladderError("is not a folder: give a folder for the output", p)
            break
    folder.mkdir(parents=True, exist_ok=True)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe later.
_UMASK = _read_umask()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``final`` only if the block succeeds.

    On an exception the staging folder is removed and ``final`` is left as it was, so a
    failed build never leaves a mix of old and new artifacts.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():  # never swap a file or a device out of the way
        raise EdgeladderError("is not a folder: give a folder for the output", final)
    _make_folder(final.parent)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".stage", dir=final.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.{os.getpid()}.old")
        os.replace(final, old)
    os.replace(stage, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
