"""The links of a host tier: how requests reach its stage core and how replies leave it.

One module per transport, one entry in :data:`LINKS`, one interface (:class:`TierLink`) that
the stage core (:mod:`edgeladder.serve.stage`) uses without knowing the transport; it mirrors
the board's links (``firmware/ladder/link/``: ``up``, ``tier_online()``, ``send``, ``close``):

``mqtt``    :class:`~edgeladder.serve.links.mqtt.MqttLink`: boards and the tier below over a
            broker (topics from ``ladder.topics``), and the way up to the next tier. Its paho
            session is :class:`~edgeladder.serve.links.mqtt.MqttSession`.
``serial``  :class:`~edgeladder.serve.links.serial.SerialLink`: one board on a serial port (or
            a virtual board's pty, or rfc2217://), ``ladder.framing`` frames through
            :class:`~edgeladder.serve.links.serial.SerialPort`.

A link moves bytes and reports its state; what the bytes mean is the stage core's business.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from edgeladder.errors import EdgeladderError


class LinkError(EdgeladderError):
    """A broker or serial port cannot be reached or opened."""


class Sink(Protocol):
    """Where the replies to one request go (the link it came in on)."""

    def send(self, device: int, mtype: int, msg: bytes) -> bool: ...


class TierLink(Sink, Protocol):
    """One transport of a tier, as the stage core sees it.

    ``direct``: the boards on it are wired to this tier (serial): their escalations are served
    whatever stage this is, and their HELLO and HEARTBEAT are announced upstream. ``chains``:
    it reaches the other tiers (MQTT): chained escalations go out on it."""

    kind: str
    direct: bool
    chains: bool

    @property
    def up(self) -> bool:
        """The transport works now (serial: always, as on the board)."""
        ...

    def tier_online(self) -> bool:
        """The next tier is known to be online: worth forwarding to."""
        ...

    def start(self) -> Any: ...

    def forward(self, msg: bytes) -> bool:
        """A chained ESCALATE to the next tier; False if not sent."""
        ...

    def announce(self, device: int, mtype: int, msg: bytes) -> None:
        """A HELLO or HEARTBEAT of a board on another link, for the tiers this one reaches."""
        ...

    def lost(self) -> str | None:
        """Why the link is gone for good (and the tier must stop), or None."""
        ...

    def close(self) -> None: ...


# kind -> the module that holds it and the class; imported only when used (paho, pyserial).
LINKS = {
    "serial": ("edgeladder.serve.links.serial", "SerialLink"),
    "mqtt": ("edgeladder.serve.links.mqtt", "MqttLink"),
}


def link_class(kind: str) -> type:
    """The TierLink class of a transport in :data:`LINKS`."""
    try:
        module, name = LINKS[kind]
    except KeyError:
        raise LinkError(f"no link {kind!r}: one of {', '.join(LINKS)}") from None
    return getattr(importlib.import_module(module), name)


__all__ = ["LINKS", "LinkError", "Sink", "TierLink", "link_class"]
