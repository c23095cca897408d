# ladder.framing: wire messages on a byte stream (the USB REPL port in binary mode, or a UART).
# Defined once; the host imports this same file.
#
# Frame = END, SLIP(message + CRC32 of the message, little-endian), END. SLIP (RFC 1055) byte
# stuffing with one extra escape: 0x03 never appears inside a frame, because on the REPL port a
# 0x03 byte is Ctrl-C and would interrupt the running firmware. A leading END flushes line noise
# (or REPL text) that came before the frame; a receiver drops anything that fails the CRC.
#
# The decoder owns one fixed buffer, made once: feeding bytes allocates nothing, and a frame
# longer than the buffer is dropped and counted rather than grown.

import binascii

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


END = const(0xC0)
ESC = const(0xDB)
ESC_END = const(0xDC)  # ESC ESC_END = a data 0xC0
ESC_ESC = const(0xDD)  # ESC ESC_ESC = a data 0xDB
ESC_ETX = const(0xDE)  # ESC ESC_ETX = a data 0x03 (Ctrl-C on a REPL port)
ETX = const(0x03)
CRC_SIZE = const(4)


def crc32(data, n):
    return binascii.crc32(memoryview(data)[:n]) & 0xFFFFFFFF


def encoded_size(msg, n):
    """Bytes that encode_into writes for the first n bytes of msg."""
    size = 2 + n + CRC_SIZE
    for i in range(n):
        b = msg[i]
        if b == END or b == ESC or b == ETX:
            size += 1
    c = crc32(msg, n)
    for _ in range(CRC_SIZE):
        b = c & 0xFF
        if b == END or b == ESC or b == ETX:
            size += 1
        c >>= 8
    return size


def _put(out, o, b):
    if b == END:
        out[o] = ESC
        out[o + 1] = ESC_END
        return o + 2
    if b == ESC:
        out[o] = ESC
        out[o + 1] = ESC_ESC
        return o + 2
    if b == ETX:
        out[o] = ESC
        out[o + 1] = ESC_ETX
        return o + 2
    out[o] = b
    return o + 1


def encode_into(out, msg, n):
    """Frame the first n bytes of msg into out; return the frame length.

    out must hold 2 * (n + 4) + 2 bytes (the worst case, every byte escaped)."""
    if len(out) < 2 * (n + CRC_SIZE) + 2:
        raise ValueError("framing: output buffer too small")
    out[0] = END
    o = 1
    for i in range(n):
        o = _put(out, o, msg[i])
    c = crc32(msg, n)
    for _ in range(CRC_SIZE):
        o = _put(out, o, c & 0xFF)
        c >>= 8
    out[o] = END
    return o + 1


# Why the decoder dropped a frame; index into Decoder.dropped.
TOO_LONG = const(0)
BAD_ESCAPE = const(1)
BAD_CRC = const(2)
TOO_SHORT = const(3)
DROP_REASONS = ("too_long", "bad_escape", "bad_crc", "too_short")


class Decoder:
    """Feed bytes; get whole, CRC-checked messages. One buffer of max_message + 4 bytes."""

    def __init__(self, max_message):
        self.buf = bytearray(max_message + CRC_SIZE)
        self.n = 0
        self._esc = False
        self._bad = -1  # a reason once the current frame is known bad; drop it at its END
        self.dropped = [0, 0, 0, 0]
        self.frames = 0

    def feed(self, data, n, on_message):
        """Decode the first n bytes of data; call on_message(buf, length) for each good message.

        The message is only valid during the call (the buffer is reused)."""
        buf = self.buf
        cap = len(buf)
        for i in range(n):
            b = data[i]
            if b == END:
                self._end(on_message)
                continue
            if self._bad >= 0:
                continue
            if self._esc:
                self._esc = False
                if b == ESC_END:
                    b = END
                elif b == ESC_ESC:
                    b = ESC
                elif b == ESC_ETX:
                    b = ETX
                else:
                    self._bad = BAD_ESCAPE
                    continue
            elif b == ESC:
                self._esc = True
                continue
            if self.n >= cap:
                self._bad = TOO_LONG
                continue
            buf[self.n] = b
            self.n += 1

    def _end(self, on_message):
        n, bad = self.n, self._bad
        self.n = 0
        self._esc = False
        self._bad = -1
        if bad >= 0:
            self.dropped[bad] += 1
            return
        if n == 0:
            return  # back-to-back ENDs: nothing between them
        if n <= CRC_SIZE:
            self.dropped[TOO_SHORT] += 1
            return
        m = n - CRC_SIZE
        buf = self.buf
        got = buf[m] | buf[m + 1] << 8 | buf[m + 2] << 16 | buf[m + 3] << 24
        if got != crc32(buf, m):
            self.dropped[BAD_CRC] += 1
            return
        self.frames += 1
        on_message(buf, m)
