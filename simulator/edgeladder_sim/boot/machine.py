# The unix port's machine module plus what a board has and the unix port lacks: reset().
# This file extends the built-in module (MicroPython's documented way: import it with an empty
# path); the board's start-up imports it once, so `import machine` finds it afterwards.
import sys
import time

_path = sys.path
sys.path = []
try:
    from machine import *  # noqa: F403 (the built-in module)
finally:
    sys.path = _path
    del _path


def reset():
    # A hard reset: the chip restarts from its ROM, boot.py and main.py run again. The board
    # (edgeladder_sim.vm: _RESET) reads this marker and cuts the VM off; nothing after this call
    # runs, as on a board.
    sys.stdout.write("\x00\x1b[edgeladder-sim:reset]\x00")
    while True:
        try:  # noqa: SIM105 (a board has no contextlib)
            time.sleep_ms(1000)
        except KeyboardInterrupt:
            pass
