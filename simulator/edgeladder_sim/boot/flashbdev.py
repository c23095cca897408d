# The flash file's filesystem region as a block device: littlefs's extended protocol, as
# esp32.Partition gives it on a board. Used by the board's start-up and by host-side helpers.


class FlashBdev:
    # readblocks/writeblocks take an offset inside the block; ioctl 6 erases a block, as
    # esp32.Partition does. One write(2) per call: a killed process keeps what was written.
    def __init__(self, path, offset, size, block):
        self.f = open(path, "r+b")  # noqa: SIM115 (open for the device's lifetime)
        self.base = offset
        self.bs = block
        self.n = size // block
        self.ff = b"\xff" * 512  # small: this heap is the board's

    def readblocks(self, n, buf, off=0):
        self.f.seek(self.base + n * self.bs + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=None):
        if off is None:
            # basic protocol (no offset): erase first, as a flash driver would
            off = 0
        self.f.seek(self.base + n * self.bs + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.n
        if op == 5:  # block size
            return self.bs
        if op == 6:  # erase
            self.f.seek(self.base + arg * self.bs)
            for _ in range(self.bs // 512):
                self.f.write(self.ff)
            return 0
        if op == 3:  # sync: flush reaches the OS, which keeps it past a killed process
            self.f.flush()
            return 0
        return 0
