"""Serve a :class:`~edgeladder_sim.rom.RomBootloader` on a pty and over RFC2217.

- :class:`PtyRomServer`: a pseudo-terminal whose slave path is the board's serial port. A pty
  has no DTR/RTS lines, so esptool needs ``--before no-reset --after no-reset`` there (as with
  a board whose auto-reset circuit is missing); :meth:`PtyRomServer.reset` presses the buttons.
- :class:`Rfc2217RomServer`: a TCP server speaking RFC2217 (pyserial's own ``PortManager``)
  whose SET_CONTROL commands drive the board's auto-reset circuit
  (:class:`~edgeladder_sim.rom.AutoResetCircuit`), so esptool's default
  ``--before default-reset`` and ``--after hard-reset`` work as on a dev board:
  ``esptool --port rfc2217://127.0.0.1:PORT?ign_set_control flash-id``.

Run one standalone: ``python -m edgeladder_sim.romserver --flash flash.bin`` prints the pty
path, then the RFC2217 URL, and serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import select
import socket
import sys
import termios
import threading
import tty
from collections.abc import Callable

import serial
import serial.rfc2217

from .rom import AutoResetCircuit, FlashImage, RomBootloader

_POLL_S = 0.05
_MAX_BACKLOG = 1 << 20  # bytes kept for a reader that is not there (a serial line drops them)


class _Server:
    """A thread that runs ``_loop`` until :meth:`stop`; the ROM is shared under a lock."""

    def __init__(self, rom: RomBootloader, lock: threading.Lock | None = None) -> None:
        self.rom = rom
        self.lock = lock or threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> _Server:
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()

    def _loop(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PtyRomServer(_Server):
    """The ROM on a pty; :attr:`path` is the port to give esptool."""

    def __init__(self, rom: RomBootloader, lock: threading.Lock | None = None) -> None:
        super().__init__(rom, lock)
        self._master, self._slave = os.openpty()
        # Raw on both ends: no "\n" -> "\r\n" translation, no echo (either corrupts SLIP).
        tty.setraw(self._slave, termios.TCSANOW)
        tty.setraw(self._master, termios.TCSANOW)
        flags = fcntl.fcntl(self._master, fcntl.F_GETFL)
        fcntl.fcntl(self._master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.path = os.ttyname(self._slave)
        self._out = bytearray()
        self._out_lock = threading.Lock()

    def reset(self, download: bool = True) -> None:
        """Press EN (with BOOT held if ``download``): the chip prints its boot log."""
        with self.lock:
            self._send(self.rom.reset(download))

    def _send(self, data: bytes) -> None:
        with self._out_lock:
            self._out += data
            if len(self._out) > _MAX_BACKLOG:
                del self._out[: len(self._out) - _MAX_BACKLOG]

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._out_lock:
                pending = bool(self._out)
            wlist = [self._master] if pending else []
            r, w, _ = select.select([self._master], wlist, [], _POLL_S)
            if r:
                try:
                    data = os.read(self._master, 65536)
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.EIO):
                        continue
                    raise
                with self.lock:
                    reply = self.rom.feed(data)
                if reply:
                    self._send(reply)
            if w:
                with self._out_lock:
                    try:
                        n = os.write(self._master, self._out)
                    except BlockingIOError:
                        n = 0
                    del self._out[:n]

    def _close(self) -> None:
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class _VirtualLines:
    """The serial-port object pyserial's RFC2217 PortManager drives: lines go to the circuit."""

    def __init__(self, on_lines: Callable[[bool | None, bool | None], None]) -> None:
        self._on_lines = on_lines
        self._dtr = self._rts = False
        self.baudrate = 115200
        self.bytesize, self.parity, self.stopbits = 8, "N", 1
        self.rtscts = self.xonxoff = False
        self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._dtr = bool(value)
        self._on_lines(self._dtr, None)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self._rts = bool(value)
        self._on_lines(None, self._rts)

    def reset_input_buffer(self) -> None:
        pass

    def reset_output_buffer(self) -> None:
        pass


class Rfc2217RomServer(_Server):
    """The ROM behind an RFC2217 port on ``host``; :attr:`url` is the port to give esptool.

    One client at a time, like a serial port opened exclusively. The auto-reset circuit keeps
    running between clients, so a hard reset requested just before a client disconnects still
    boots the firmware.
    """

    def __init__(
        self,
        rom: RomBootloader,
        host: str = "127.0.0.1",
        port: int = 0,
        lock: threading.Lock | None = None,
        circuit: AutoResetCircuit | None = None,
    ) -> None:
        super().__init__(rom, lock)
        self.circuit = circuit or AutoResetCircuit()
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(_POLL_S)
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"rfc2217://{self.host}:{self.port}?ign_set_control"
        self._client: socket.socket | None = None

    def _boot(self, mode: str | None) -> None:
        if mode is None:
            return
        with self.lock:
            log = self.rom.reset(download=mode == "download")
        self._to_client(log)

    def _to_client(self, data: bytes) -> None:
        if self._client is None or not data:
            return
        try:
            self._client.sendall(b"".join(self._manager.escape(data)))
        except OSError:
            self._client = None

    def _lines(self, dtr: bool | None, rts: bool | None) -> None:
        self._boot(self.circuit.set(dtr=dtr, rts=rts))

    def _loop(self) -> None:
        lines = _VirtualLines(self._lines)
        while not self._stop.is_set():
            self._boot(self.circuit.poll())
            if self._client is None:
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                conn.settimeout(_POLL_S)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._client = conn
                self._manager = serial.rfc2217.PortManager(lines, _Writer(conn))
                continue
            try:
                data = self._client.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    self._client.close()
                self._client = None
                continue
            payload = b"".join(self._manager.filter(data))
            if payload:
                # Bytes reaching the chip: a boot still settling has happened by now.
                self._boot(self.circuit.poll(force=True))
                with self.lock:
                    reply = self.rom.feed(payload)
                self._to_client(reply)

    def _close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(OSError):
                self._client.close()
        self._sock.close()


class _Writer:
    """The ``connection`` PortManager writes telnet replies to."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Serve a virtual ESP32 ROM bootloader.")
    p.add_argument("--flash", required=True, help="flash image file (created erased if missing)")
    p.add_argument("--size", type=lambda s: int(s, 0), default=4 << 20, help="flash bytes")
    p.add_argument("--chip", default="esp32")
    p.add_argument("--port", type=int, default=0, help="RFC2217 TCP port (default: any free)")
    a = p.parse_args(argv)
    flash = FlashImage(a.flash, a.size)
    rom = RomBootloader(flash, a.chip)
    lock = threading.Lock()
    pty_server = PtyRomServer(rom, lock).start()
    net = Rfc2217RomServer(rom, port=a.port, lock=lock).start()
    print(pty_server.path, flush=True)
    print(net.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        net.stop()
        pty_server.stop()
        flash.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
