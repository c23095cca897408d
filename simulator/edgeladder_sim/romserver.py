"""Serve a :class:`~edgeladder_sim.rom.RomBootloader` on a pty and over RFC2217.

- :class:`PtyRomServer`: a pseudo-terminal whose slave path is the board's serial port. A pty
  has no DTR/RTS lines, so esptool needs ``--before no-reset --after no-reset`` there (as with
  a board whose auto-reset circuit is missing); :meth:`PtyRomServer.reset` presses the buttons.
- :class:`Rfc2217RomServer`: a TCP server speaking RFC2217 (pyserial's own ``PortManager``)
  whose SET_CONTROL commands drive the board's auto-reset circuit
  (:class:`~edgeladder_sim.autoreset.AutoResetCircuit`), so esptool's default
  ``--before default-reset`` and ``--after hard-reset`` work as on a dev board:
  ``esptool --port rfc2217://127.0.0.1:PORT?ign_set_control flash-id``.
- :class:`Rfc2217Port`: the network side both share with :mod:`edgeladder_sim.rfc2217` (the
  whole board over RFC2217): one client, telnet/RFC2217 options, callbacks for data and lines.

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

from .autoreset import AutoResetCircuit
from .flash import FlashImage
from .rom import RomBootloader

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


class _Line:
    """A modem line of :class:`_VirtualLines`: setting it reports the change to ``on_lines``."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, lines, owner=None) -> bool:
        return lines.levels[self.name]

    def __set__(self, lines, value: bool) -> None:
        level = lines.levels[self.name] = bool(value)
        lines.on_lines(level if self.name == "dtr" else None, level if self.name == "rts" else None)


class _VirtualLines:
    """The serial-port object pyserial's RFC2217 PortManager drives: lines go to ``on_lines``."""

    dtr = _Line()
    rts = _Line()

    def __init__(self, on_lines: Callable[[bool | None, bool | None], None]) -> None:
        self.on_lines = on_lines
        self.levels = {"dtr": False, "rts": False}
        self.baudrate = 115200
        self.bytesize, self.parity, self.stopbits = 8, "N", 1
        self.rtscts = self.xonxoff = False
        self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False

    def reset_input_buffer(self) -> None:
        pass

    def reset_output_buffer(self) -> None:
        pass


class Rfc2217Port:
    """The network side of an RFC2217 serial port, shared by every server in the simulator.

    A TCP socket on ``host:port`` taking one client at a time (like a serial port opened
    exclusively); telnet and RFC2217 option handling is pyserial's own ``PortManager``. What sits
    behind the port comes in as two callbacks: ``on_data(payload)`` gets the host's bytes (telnet
    commands removed), ``on_lines(dtr, rts)`` every DTR/RTS change (one of them ``None``), before
    the change is acknowledged. Baud rate and framing settings are acknowledged and kept on
    :attr:`lines`. :meth:`send` is the device's output (thread-safe; dropped when no client is
    connected, or when the client stops reading, as a UART would). The owner calls :meth:`step`
    in a loop: one accept or one read, waiting at most ``_POLL_S``.
    """

    _SEND_TIMEOUT_S = 1.0

    def __init__(
        self,
        on_data: Callable[[bytes], None],
        on_lines: Callable[[bool | None, bool | None], None],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._on_data = on_data
        self.lines = _VirtualLines(on_lines)
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(_POLL_S)
        self.host, self.port = self._sock.getsockname()[:2]
        self._client: socket.socket | None = None
        self._manager: serial.rfc2217.PortManager | None = None
        self._send_lock = threading.RLock()  # PortManager writes while we hold it

    @property
    def connected(self) -> bool:
        return self._client is not None

    def send(self, data: bytes) -> None:
        """Bytes from the device to the client, telnet-escaped."""
        with self._send_lock:
            client, manager = self._client, self._manager
            if client is None or manager is None or not data:
                return
            try:
                client.sendall(b"".join(manager.escape(data)))
            except TimeoutError:
                pass  # the client does not read: the bytes are lost, as on a UART
            except OSError:
                self._drop_client()

    def _write_raw(self, data: bytes) -> None:
        # PortManager's telnet replies (option negotiation, SET_CONTROL / baud answers).
        with self._send_lock:
            if self._client is None:
                return
            try:
                self._client.sendall(data)
            except OSError:
                self._drop_client()

    def _drop_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(OSError):
                self._client.close()
        self._client = None
        self._manager = None

    def step(self) -> None:
        """Accept a client, or read what it sent and pass it on; wait at most ``_POLL_S``."""
        client = self._client
        if client is None:
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                return
            conn.settimeout(self._SEND_TIMEOUT_S)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._send_lock:
                self._client = conn
                self._manager = serial.rfc2217.PortManager(self.lines, _Writer(self._write_raw))
            return
        try:
            readable, _, _ = select.select([client], [], [], _POLL_S)
        except (OSError, ValueError):
            readable = [client]
        if not readable:
            return
        try:
            data = client.recv(65536)
        except TimeoutError:
            return
        except OSError:
            data = b""
        if not data:
            with self._send_lock:
                if self._client is client:
                    self._drop_client()
            return
        manager = self._manager
        if manager is None:
            return
        payload = b"".join(manager.filter(data))
        if payload:
            self._on_data(payload)

    def close(self) -> None:
        with self._send_lock:
            self._drop_client()
        self._sock.close()


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
        self._port = Rfc2217Port(self._data, self._lines, host, port)
        self.host, self.port = self._port.host, self._port.port
        self.url = f"rfc2217://{self.host}:{self.port}?ign_set_control"

    def _boot(self, mode: str | None) -> None:
        if mode is None:
            return
        with self.lock:
            log = self.rom.reset(download=mode == "download")
        self._port.send(log)

    def _lines(self, dtr: bool | None, rts: bool | None) -> None:
        self._boot(self.circuit.set(dtr=dtr, rts=rts))

    def _data(self, payload: bytes) -> None:
        # Bytes reaching the chip: a boot still settling has happened by now.
        self._boot(self.circuit.poll(force=True))
        with self.lock:
            reply = self.rom.feed(payload)
        self._port.send(reply)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._boot(self.circuit.poll())
            self._port.step()

    def _close(self) -> None:
        self._port.close()


class _Writer:
    """The ``connection`` PortManager writes telnet replies to."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write


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
