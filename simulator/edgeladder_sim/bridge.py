"""A virtual board's serial port as a pty: ``/dev/pts/N`` that mpremote and esptool open.

The bridge only moves bytes: host writes on the pty go to :meth:`Board.serial_in`, which routes
them to MicroPython's REPL or to the ROM bootloader; the board's output comes back through a
listener. The pty is raw on our side (``tty.setraw`` on the slave, whose termios is the pair's
only line discipline), so nothing turns ``\\r\\n`` into ``\\r\\r\\n`` or eats control bytes;
pyserial sets it raw again when it opens the port. We keep a slave descriptor open for the
bridge's lifetime, so the settings survive clients coming and going and reads never fail with
EIO between them. pyserial's ``exclusive`` uses ``flock``, which our descriptor does not hold.

A pty has no modem lines (DTR/RTS ioctls fail with ENOTTY, which pyserial ignores): resets over a
pty are the board's SYNC auto-detection or :meth:`Board.reset`; RFC2217 carries the lines.

Output nobody reads fills the pty's buffer; then, like a UART with nothing on the other end,
the bridge drops it (waiting briefly first, so that a busy reader loses nothing).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import tty

from .board import Board
from .flash import FlashImage
from .rfc2217 import Rfc2217Server

_DROP_AFTER_S = 1.0


class PtyBridge:
    """Expose ``board``'s serial line as a pty until :meth:`close`."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._closing = threading.Event()
        self._dropping = False
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._read_loop, name=f"pty {self.port}")
        self._thread.daemon = True
        board.add_listener(self._write)
        self._thread.start()

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self.board.remove_listener(self._write)
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyBridge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_loop(self) -> None:
        poller = select.poll()
        poller.register(self._master, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._closing.is_set():
            for fd, _ in poller.poll(1000):
                if fd == self._wake_r:
                    return
                try:
                    data = os.read(self._master, 4096)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                self.board.serial_in(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._closing.is_set():
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                if self._dropping:
                    return
                _, writable, _ = select.select([], [self._master], [], _DROP_AFTER_S)
                if not writable:
                    self._dropping = True  # nobody reads: drop until the buffer drains
                    return
                continue
            except OSError as e:
                if e.errno == errno.EIO:
                    return
                raise
            self._dropping = False
            view = view[n:]


class VirtualBoard:
    """A :class:`Board` with its pty, and with ``rfc2217=True`` its RFC2217 port too
    (:class:`edgeladder_sim.rfc2217.Rfc2217Server`; ``rfc2217_url`` is None without it)."""

    def __init__(
        self,
        spec: str = "esp32",
        workdir: os.PathLike | str = ".",
        *,
        flash: os.PathLike | str | None = None,
        rfc2217: bool = False,
    ) -> None:
        self.board = Board(spec, workdir)
        if flash is not None:
            self.board.flash = FlashImage(flash, self.board.flash.layout)
        self.pty = PtyBridge(self.board)
        self.port = self.pty.port
        self.rfc2217_url: str | None = None
        self._rfc2217: Rfc2217Server | None = None
        if rfc2217:
            self._rfc2217 = Rfc2217Server(self.board)
            self.rfc2217_url = self._rfc2217.url

    def close(self) -> None:
        if self._rfc2217 is not None:
            self._rfc2217.close()
        self.pty.close()
        self.board.close()

    def __enter__(self) -> VirtualBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
