# ladder.link.tcp: the non-blocking TCP socket under ladder.link.mqtt. Its own module because
# the socket's quirks differ by port (lwIP on an ESP32, Linux on the unix port) and have nothing
# to do with MQTT.

import errno
import socket

try:
    from micropython import const
except ImportError:  # CPython: importable for host tools and linters

    def const(x):
        return x


_IPPROTO_TCP = const(6)  # the same numbers on Linux and lwIP; MicroPython names neither
_TCP_NODELAY = const(1)
# A connect that is under way: lwIP's errno values differ from Linux's (the unix port's).
_PENDING = (errno.EINPROGRESS, errno.EAGAIN, 115, 11)


def resolve(host, port):
    """The address to connect to (a blocking DNS look-up: done once, then kept)."""
    return socket.getaddrinfo(host, port)[0][-1]


def connect(addr):
    """A new non-blocking socket, connecting to addr; OSError if it fails at once."""
    s = socket.socket()
    s.setblocking(False)
    try:  # an escalation is one small packet: send it now, not after the broker's ACK
        s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
    except OSError:
        pass
    try:
        s.connect(addr)
    except OSError as e:
        if e.args[0] not in _PENDING:
            s.close()
            raise
    return s
