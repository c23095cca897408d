# Runs after boot.py. Prints the banner; then, on a board deployed with a ladder (/ladder.json and
# /device.json, written by `edgeladder deploy` or the demo), runs the application until its
# sensor data ends. Without them the board only reaches its REPL, as a freshly flashed one does.
import gc
import json
import os
import sys

import ladder

gc.collect()
print("edgeladder ladder %s, %d bytes free" % (ladder.__version__, gc.mem_free()))


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


if _exists("/ladder.json") and _exists("/device.json"):
    from ladder import app

    try:
        done = app.run("/ladder.json", "/device.json")
    except Exception as e:  # a bad config or a missing sensor: say so, then the REPL starts
        sys.print_exception(e)
        print("edgeladder ladder stopped")
    else:
        print("edgeladder ladder done", json.dumps(done))
