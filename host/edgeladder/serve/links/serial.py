"""A board on a serial port (or a virtual board's pty, or an rfc2217:// URL): wire messages in
SLIP + CRC32 frames (ladder.framing, the very module the board runs).

:class:`SerialLink` is what the stage core talks to: the board wired to this tier, its requests
in and its replies out (a serial line reaches no other tier). :class:`SerialPort` is the port
under it: a reader thread feeds every byte to a :class:`ladder.framing.Decoder`; each whole,
CRC-checked message goes to ``on_message(bytes)``. REPL text between frames is ignored by the
framing, and frames the decoder drops are reported by reason (``on_drop``). ``send`` frames and
writes one message; writes are serialised by a lock (the worker answers while the reader may
reject).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import serial

from edgeladder.serve.links import LinkError
from ladder import framing, wire

if TYPE_CHECKING:
    from edgeladder.serve.stage import StageCore

_READ_TIMEOUT_S = 0.05  # how long a read waits: bounds how fast stop() is noticed
_MAX_READ = 4096


class SerialPort:
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

    def start(self) -> SerialPort:
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


class SerialLink:
    """The stage core's serial link: ``SerialLink(core, port)``, attached, then started."""

    kind = "serial"
    direct = True
    chains = False
    up = True  # a serial line has no connection state (as on the board)

    def __init__(self, core: StageCore, port: str, *, baudrate: int = 115200) -> None:
        self.core = core
        self.name = port
        self.port = SerialPort(port, self.on_message, baudrate=baudrate, on_drop=self.on_drop)

    @classmethod
    def from_options(cls, core: StageCore, opts: Any) -> SerialLink:
        return cls(core, opts.serial, baudrate=opts.baud)

    def tier_online(self) -> bool:
        return False  # no other tier on the line

    def start(self) -> SerialLink:
        self.port.start()
        return self

    def send(self, device: int, mtype: int, msg: bytes) -> bool:
        return self.port.send(msg)

    def forward(self, msg: bytes) -> bool:
        return False

    def announce(self, device: int, mtype: int, msg: bytes) -> None:
        pass  # the line holds one board and this tier: nobody else to tell

    def lost(self) -> str | None:
        return None if self.port.open else f"serial port {self.name} closed"

    def close(self) -> None:
        self.port.stop()

    def on_message(self, msg: bytes) -> None:
        """Every whole frame from the port (its reader thread). Never raises."""
        try:
            self.core.on_device(msg, self)
        except Exception as e:
            self.core.drop("malformed", f"{type(e).__name__}: {e}")

    def on_drop(self, reason: str) -> None:
        """A frame the framing dropped: ``dropped_frame_<reason>`` (ladder.framing's too_long,
        bad_escape, bad_crc, too_short). REPL text before a frame counts as bad_crc."""
        self.core.drop("frame_" + reason, "serial frame dropped by the framing")
