"""Host side of the links to boards and between tiers: MQTT (paho) and serial (pyserial).

Both speak ladder.wire messages; the serial link frames them with ladder.framing (the same
files the board runs). A link moves bytes and reports connection state; what the bytes mean is
the tier's business (edgeladder.serve.server).
"""

from __future__ import annotations

from edgeladder.errors import EdgeladderError


class LinkError(EdgeladderError):
    """A broker or serial port cannot be reached or opened."""


__all__ = ["LinkError"]
