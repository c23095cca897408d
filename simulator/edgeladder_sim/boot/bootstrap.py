# A virtual board's start-up, run by the unix port with -i before its REPL:
#   micropython -i bootstrap.py MODE FLASH OFFSET SIZE BLOCK
# MODE is "boot" (a hard or soft boot: boot.py, then main.py) or "raw" (a soft reset from the raw
# REPL: boot.py only, as pyexec does). It mounts littlefs from the flash file at /, as the ESP32
# port's C start-up and _boot.py do, then runs boot.py and main.py.
import sys

# Markers the board reads on the VM's output (edgeladder_sim.vm: _UP, _READY).
sys.stdout.write("\x00\x1b[edgeladder-sim:up]\x00")  # from here on, Ctrl-C can interrupt
import gc  # noqa: E402
import os  # noqa: E402

import machine  # noqa: E402,F401 (this folder's: it adds reset(); cached for the firmware)
import micropython  # noqa: E402
import vfs  # noqa: E402
from flashbdev import FlashBdev  # noqa: E402
from inisetup import mount_or_setup  # noqa: E402


def _el_mount(argv):
    # not interruptible, as in the port's C start-up code
    micropython.kbd_intr(-1)
    fs = mount_or_setup(FlashBdev(argv[2], int(argv[3]), int(argv[4]), int(argv[5])))
    vfs.umount("/")
    vfs.mount(fs, "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    micropython.kbd_intr(3)


def _el_exec(name):
    # pyexec_file_if_exists: True when the file is absent or ran to its end
    try:
        with open(name) as f:
            src = f.read()
    except OSError:
        return True
    try:
        code = compile(src, name, "exec")
        src = None
        exec(code, globals())
        return True
    except (Exception, KeyboardInterrupt) as e:
        sys.print_exception(e)
        return False


try:
    _el_mount(sys.argv)
    if _el_exec("boot.py") and sys.argv[1] != "raw":
        _el_exec("main.py")
except KeyboardInterrupt:
    pass
finally:
    sys.stdout.write("\x00\x1b[edgeladder-sim:ready]\x00")  # boot.py/main.py done: the REPL
del _el_mount, _el_exec
gc.collect()
