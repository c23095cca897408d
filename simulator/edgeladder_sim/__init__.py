"""edgeladder_sim: virtual boards on the real MicroPython unix port.

:mod:`edgeladder.device.micropython` (host side: ``calibrate`` needs it too) runs code under the
``micropython`` binary with a board's heap; the simulated boards, bridge and fleet are built on
it. The simulator imports the host package, never the other way round.
"""
