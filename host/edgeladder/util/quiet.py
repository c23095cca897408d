"""Silence chatty native libraries (TensorFlow's converter prints from C++ and from Python).

Redirects file descriptors 1 and 2 (what C++ writes to) into a temporary file, and
``sys.stdout``/``sys.stderr`` (what Python prints to) into a buffer, for the duration of the
block; the captured text is kept so that a failure can show it.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


class Captured:
    text: str = ""


@contextlib.contextmanager
def quiet_native() -> Iterator[Captured]:
    captured = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    py_sink = io.StringIO()
    with (
        tempfile.TemporaryFile(mode="w+b") as sink,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(py_sink),  # Python-level prints (Keras export)
        contextlib.redirect_stderr(py_sink),
    ):
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.text = py_sink.getvalue() + sink.read().decode("utf-8", "replace")
