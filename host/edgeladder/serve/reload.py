"""Hot reload: watch the served ``.tflite`` and swap in a new model without stopping.

Every ``interval`` seconds the file's (mtime, size) is compared with the last one seen; on a
change the file must hold still for a moment (a copy in progress is not loaded half-written),
then its sha256 decides whether the content really changed. The new runner is loaded, checked
against its own unpatched model and warmed at every batch bucket here, in this thread, off the
hot path; the server swaps it in between two batches. A file that does not load leaves the old
model serving: one error line, ``edgeladder_model_reload_failures_total`` +1, and no retry until
the file changes again.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edgeladder.errors import EdgeladderError

_SETTLE_S = 0.1  # the file must keep the same (mtime, size) this long before it is read


class Reloader:
    def __init__(
        self,
        path: str | Path,
        reload: Callable[[bytes], object],
        failed: Callable[[str], None],
        *,
        interval: float = 0.5,
    ) -> None:
        self.path = Path(path)
        self.reload = reload
        self.failed = failed
        self.interval = interval
        self._seen = self._stat()
        self._served = self._hash()  # the content being served
        self._tried = self._served  # the last content tried (a failed one is not retried)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Reloader:
        self._thread = threading.Thread(target=self._run, name="tier-reload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None  # gone for a moment (replaced by rename): keep serving the old one
        return st.st_mtime_ns, st.st_size

    def _hash(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        """One check (the thread calls it; tests may too)."""
        st = self._stat()
        if st is None or st == self._seen:
            return
        time.sleep(_SETTLE_S)
        if self._stat() != st:
            return  # still being written: look again next time
        try:
            data = self.path.read_bytes()
        except OSError:
            return
        self._seen = st
        sha = hashlib.sha256(data).hexdigest()
        if sha in (self._served, self._tried):
            self._tried = sha
            return  # touched, or put back, or the same broken file again
        self._tried = sha
        try:
            self.reload(data)
        except EdgeladderError as e:
            self.failed(str(e))
            return
        except (ValueError, RuntimeError, MemoryError) as e:  # LiteRT on a damaged file
            self.failed(f"{type(e).__name__}: {e}")
            return
        self._served = sha
