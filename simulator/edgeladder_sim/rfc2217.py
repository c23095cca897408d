"""A whole virtual board over RFC2217: MicroPython's REPL and the ROM bootloader on one port.

:class:`Rfc2217Server` puts a :class:`~edgeladder_sim.board.Board`'s serial line behind a TCP
port that pyserial's ``rfc2217://`` client (and so the unmodified esptool and mpremote) opens
like a USB-serial adapter. Host bytes go to :meth:`Board.serial_in`; what the board prints comes
back through a listener. SET_CONTROL's DTR/RTS changes go to :meth:`Board.set_lines`, wired as
on an ESP32 devkit, so esptool's default ``--before default-reset`` enters the ROM bootloader
and ``--after hard-reset`` boots MicroPython again. Baud rate and framing requests are
acknowledged (the line has no speed). The telnet / RFC2217 handling is
:class:`edgeladder_sim.romserver.Rfc2217Port`, shared with the ROM-only server.

One client at a time; the board runs on between clients, and its output while nobody is
connected is dropped, as on a UART.
"""

from __future__ import annotations

import threading

from .board import Board
from .romserver import Rfc2217Port


class Rfc2217Server:
    """Serve ``board``'s serial line on ``host:port`` (0: any free port) until :meth:`close`."""

    def __init__(self, board: Board, host: str = "127.0.0.1", port: int = 0) -> None:
        self.board = board
        self._port = Rfc2217Port(board.serial_in, self._lines, host, port)
        self.host, self.port = self._port.host, self._port.port
        self.url = f"rfc2217://{self.host}:{self.port}"
        self._stop = threading.Event()
        board.add_listener(self._port.send)
        self._thread = threading.Thread(target=self._loop, name=f"rfc2217 {self.port}")
        self._thread.daemon = True
        self._thread.start()

    def _lines(self, dtr: bool | None, rts: bool | None) -> None:
        self.board.set_lines(dtr=dtr, rts=rts)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._port.step()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.board.remove_listener(self._port.send)
        self._thread.join(timeout=5)
        self._port.close()

    def __enter__(self) -> Rfc2217Server:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
