# First-boot setup of a blank flash, as the ESP32 port's frozen inisetup.py does it: format the
# partition as littlefs2 and write the default boot.py.
import vfs

# What the ESP32 port writes as /boot.py after formatting.
BOOT_PY = """\
# This file is executed on every boot (including wake-boot from deepsleep)
#import esp
#esp.osdebug(None)
#import webrepl
#webrepl.start()
"""


def setup(bdev):
    # returns the new filesystem, not mounted
    print("Performing initial setup")
    vfs.VfsLfs2.mkfs(bdev)
    fs = vfs.VfsLfs2(bdev)
    vfs.mount(fs, "/flash")
    with open("/flash/boot.py", "w") as f:
        f.write(BOOT_PY)
    vfs.umount("/flash")
    return fs


def mount_or_setup(bdev):
    # a blank or unreadable partition is formatted, as on a board's first boot
    try:
        return vfs.VfsLfs2(bdev)
    except OSError:
        return setup(bdev)
