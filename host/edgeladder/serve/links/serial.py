"""A board on a serial port (or a virtual board's pty, or an rfc2217:// URL): wire messages in
SLIP + CRC32 frames (ladder.framing, the very module the board runs).

A reader thread feeds every byte to a :class:`ladder.framing.Decoder`; each whole, CRC-checked
message goes to ``on_message(bytes)``. REPL text between frames is ignored by the framing, and
frames the decoder drops are reported by reason (``on_drop``). ``send`` frames and writes one
message; writes are serialised by a lock (the worker answers while the reader may reject).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import serial

from edgeladder.serve.links import LinkError
from ladder import framing, wire

_READ_TIMEOUT_S = 0.05  # how long a read waits: bounds how fast stop() is noticed
_MAX_READ = 4096


class SerialLink:
    def __init__(
        self,
        port: str,
        on_message: Callable[[bytes], None],
        *,
        baudrate: int = 115200,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.on_message = on_message
        self.on_drop = on_drop
        self._decoder = framing.Decoder(wire.MAX_MESSAGE)
        self._seen_drops = [0] * len(framing.DROP_REASONS)
        self._out = bytearray(2 * (wire.MAX_MESSAGE + framing.CRC_SIZE) + 2)
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._serial: serial.SerialBase | None = None
        self._thread: threading.Thread | None = None
        self.callback_errors = 0

    def start(self) -> SerialLink:
        try:
            self._serial = serial.serial_for_url(
                self.port, baudrate=self.baudrate, timeout=_READ_TIMEOUT_S
            )
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open serial port {self.port}: {e}") from e
        self._thread = threading.Thread(target=self._read, name="tier-serial", daemon=True)
        self._thread.start()
        return self

    @property
    def open(self) -> bool:
        return self._serial is not None and self._thread is not None and self._thread.is_alive()

    def send(self, msg: bytes) -> bool:
        """Frame and write one message; False if the port is gone."""
        with self._write_lock:
            n = framing.encode_into(self._out, msg, len(msg))
            try:
                self._serial.write(self._out[:n])
            except (serial.SerialException, OSError):
                return False
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._serial is not None:
            self._serial.close()

    def _read(self) -> None:
        ser = self._serial
        while not self._stop.is_set():
            try:
                data = ser.read(min(max(ser.in_waiting, 1), _MAX_READ))
            except (serial.SerialException, OSError):
                return  # the port went away (board unplugged, pty closed)
            if data:
                self._decoder.feed(data, len(data), self._deliver)
                self._report_drops()

    def _deliver(self, buf: bytearray, n: int) -> None:
        try:
            self.on_message(bytes(buf[:n]))  # the decoder reuses buf: hand over a copy
        except Exception:  # never let one message end the reader
            self.callback_errors += 1

    def _report_drops(self) -> None:
        dropped = self._decoder.dropped
        for i, count in enumerate(dropped):
            if count != self._seen_drops[i]:
                if self.on_drop is not None:
                    for _ in range(count - self._seen_drops[i]):
                        self.on_drop(framing.DROP_REASONS[i])
                self._seen_drops[i] = count
