"""SLIP framing (RFC 1055) as esptool and the ESP ROM use it: ``0xC0`` ends a frame,
``0xDB 0xDC`` / ``0xDB 0xDD`` escape ``0xC0`` / ``0xDB`` inside one."""

from __future__ import annotations

END = 0xC0
ESC = 0xDB
_UNESCAPE = {0xDC: END, 0xDD: ESC}


def encode(payload: bytes) -> bytes:
    """One frame: ``END``, the escaped payload, ``END``."""
    body = payload.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
    return b"\xc0" + body + b"\xc0"


class Decoder:
    """Splits a byte stream into SLIP frames; bytes between frames are dropped (line noise)."""

    def __init__(self) -> None:
        self._frame: bytearray | None = None
        self._escaped = False

    def reset(self) -> None:
        self._frame, self._escaped = None, False

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        for b in data:
            if self._frame is None:
                if b == END:
                    self._frame = bytearray()
            elif self._escaped:
                self._escaped = False
                self._frame.append(_UNESCAPE.get(b, b))
            elif b == ESC:
                self._escaped = True
            elif b == END:
                if self._frame:
                    frames.append(bytes(self._frame))
                    self._frame = None
                # An empty frame is two ENDs in a row: the second one opens the next frame.
                else:
                    self._frame = bytearray()
            else:
                self._frame.append(b)
        return frames
