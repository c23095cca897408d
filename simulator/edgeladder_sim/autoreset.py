"""The two-transistor auto-reset circuit of ESP32 dev boards, driven by DTR and RTS.

One model for every path that carries modem lines: a whole board behind RFC2217
(:meth:`edgeladder_sim.board.Board.set_lines`) and the ROM-only RFC2217 server
(:class:`edgeladder_sim.romserver.Rfc2217RomServer`). A pty has no lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable

BOOT_SETTLE_S = 0.25  # EN rises through an RC network: GPIO0 low until then still counts


class AutoResetCircuit:
    """EN (chip enable) is low only while RTS is asserted and DTR is not; GPIO0 is low only while
    DTR is asserted and RTS is not.

    The chip samples GPIO0 as EN rises, but EN rises slowly through an RC network, so a GPIO0 low
    seen within ``settle`` seconds after the rise still selects download mode (esptool's
    ClassicReset relies on that: it releases EN one line change before it pulls GPIO0 low; over
    RFC2217 with ``ign_set_control`` each change comes 0.1 s after the previous one). Call
    :meth:`set` on every line change and :meth:`poll` now and then (or once :attr:`settling` is
    over); both return ``"download"`` or ``"firmware"`` when the chip comes out of reset, else
    ``None``. :attr:`in_reset` is True while EN is held low.
    """

    def __init__(
        self, settle: float = BOOT_SETTLE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.dtr = False
        self.rts = False
        self.settle = settle
        self._clock = clock
        self._rise: float | None = None
        self.in_reset = False

    @property
    def settling(self) -> bool:
        """EN has risen and the boot mode is not decided yet."""
        return self._rise is not None

    def _en_low(self) -> bool:
        return self.rts and not self.dtr

    def _io0_low(self) -> bool:
        return self.dtr and not self.rts

    def set(self, dtr: bool | None = None, rts: bool | None = None) -> str | None:
        result = self.poll()
        was_low = self._en_low()
        if dtr is not None:
            self.dtr = bool(dtr)
        if rts is not None:
            self.rts = bool(rts)
        if self._en_low():
            self.in_reset = True
            self._rise = None
        elif was_low:
            self.in_reset = False
            self._rise = self._clock()
        if self._rise is not None and self._io0_low():
            # GPIO0 low while EN is still rising: download mode is certain now.
            self._rise = None
            return result or "download"
        return result

    def poll(self, force: bool = False) -> str | None:
        """Resolve a pending boot once the settle time has passed (or now, if ``force``)."""
        if self._rise is None:
            return None
        if not force and self._clock() - self._rise < self.settle:
            return None
        self._rise = None
        return "firmware"
