"""edgeladder_sim: virtual boards on the real MicroPython unix port.

:mod:`edgeladder_sim.vm` runs code under the ``micropython`` binary with a board's heap; the
simulated boards, bridge and fleet are built on it.
"""
