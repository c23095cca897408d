"""A virtual board's SPI flash: one file of the board's flash size, littlefs2 in a region of it.

The layout follows MicroPython's ESP32 partition tables: the image and its app partition sit at
the start, and the ``vfs`` partition that MicroPython formats as littlefs2 starts at 0x200000 and
runs to the end of the flash (2 MB on a 4 MB board). A board file may override it with
``vfs_offset`` and ``vfs_bytes``.

The filesystem is reached the way firmware reaches it on a board: the MicroPython VM mounts
``vfs.VfsLfs2`` on a block device written in MicroPython (:data:`BDEV_SOURCE`) that reads and
writes the flash file at the region's offset. Each ``writeblocks`` is one ``write(2)`` on the
file, so a killed process (a power cut) leaves exactly what littlefs had written, and littlefs's
copy-on-write commits keep that mountable. The ROM bootloader emulation writes the same file.

Host-side helpers (:meth:`FlashImage.write_files`, :meth:`FlashImage.read_file`, ...) run the
real VM on the image, so that what they write is what the board's own littlefs wrote.
"""

from __future__ import annotations

import ast
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgeladder.device.micropython import run_micropython
from edgeladder.errors import EdgeladderError

BLOCK_BYTES = 4096  # SPI flash erase sector
ERASED = 0xFF
DEFAULT_FS_OFFSET = 0x200000  # MicroPython's ESP32 partition tables put "vfs" here
_HOST_HEAP = 2 * 1024 * 1024  # heap for host-side helper runs, not the board's

# The ESP32 port's first-boot setup (inisetup.py) writes this boot.py after formatting.
DEFAULT_BOOT_PY = """\
# This file is executed on every boot (including wake-boot from deepsleep)
#import esp
#esp.osdebug(None)
#import webrepl
#webrepl.start()
"""

# MicroPython source: littlefs's extended block-device protocol over the flash file.
BDEV_SOURCE = """
class FlashBdev:
    # readblocks/writeblocks take an offset inside the block; ioctl 6 erases a block, as
    # esp32.Partition does. One write(2) per call: a killed process keeps what was written.
    def __init__(self, path, offset, size, block):
        self.f = open(path, "r+b")
        self.base = offset
        self.bs = block
        self.n = size // block
        self.ff = b"\\xff" * 512  # small: this heap is the board's

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
"""


class FlashError(EdgeladderError):
    """The flash file or its filesystem cannot be used."""


@dataclass(frozen=True)
class FlashLayout:
    """Sizes and offsets in bytes; the filesystem region is block aligned."""

    flash_bytes: int
    fs_offset: int
    fs_bytes: int

    def __post_init__(self) -> None:
        if self.fs_offset % BLOCK_BYTES or self.fs_bytes % BLOCK_BYTES:
            raise FlashError(f"filesystem region must be {BLOCK_BYTES}-byte aligned: {self}")
        if self.fs_bytes < 8 * BLOCK_BYTES or self.fs_offset + self.fs_bytes > self.flash_bytes:
            raise FlashError(f"filesystem region does not fit the flash: {self}")

    @classmethod
    def for_board(cls, board) -> FlashLayout:
        """The layout of an ``edgeladder.boards.registry.Board`` (a device with ``flash_bytes``)."""
        if not board.flash_bytes:
            raise FlashError(f"board {board.name!r} has no flash_bytes: it is not a device")
        # The board file's filesystem partition size (vfs_bytes), after the image region.
        offset = int(board.extra.get("vfs_offset", DEFAULT_FS_OFFSET))
        size = int(board.vfs_bytes or board.flash_bytes - offset)
        return cls(board.flash_bytes, offset, size)


class FlashImage:
    """The flash file of one virtual board."""

    def __init__(self, path: Path | str, layout: FlashLayout) -> None:
        self.path = Path(path)
        self.layout = layout

    def create(self) -> FlashImage:
        """Make an erased flash file (all 0xFF) unless one of the right size exists."""
        if self.path.exists():
            size = self.path.stat().st_size
            if size != self.layout.flash_bytes:
                raise FlashError(
                    f"flash file is {size} bytes, the board has {self.layout.flash_bytes}; "
                    "delete it or pick the matching board",
                    self.path,
                )
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        chunk = bytes([ERASED]) * (1 << 20)
        with open(tmp, "wb") as f:
            left = self.layout.flash_bytes
            while left:
                n = min(left, len(chunk))
                f.write(chunk[:n])
                left -= n
        os.replace(tmp, self.path)
        return self

    def erase(self) -> None:
        """Erase the whole flash, as ``esptool erase-flash`` does."""
        self.path.unlink(missing_ok=True)
        self.create()

    def bdev_args(self) -> str:
        """The arguments of ``FlashBdev(...)`` for this image, as MicroPython source."""
        lay = self.layout
        return f"{str(self.path)!r}, {lay.fs_offset}, {lay.fs_bytes}, {BLOCK_BYTES}"

    # Host-side helpers: each runs the real VM with the filesystem mounted at /flash.

    def _run(self, body: str, *, format_if_blank: bool = False) -> str:
        self.create()
        fmt = (
            "    vfs.VfsLfs2.mkfs(bd)\n    fs = vfs.VfsLfs2(bd)\n"
            if format_if_blank
            else "    raise\n"
        )
        code = (
            f"import vfs, os, sys\n{BDEV_SOURCE}\n"
            f"bd = FlashBdev({self.bdev_args()})\n"
            f"try:\n    fs = vfs.VfsLfs2(bd)\nexcept OSError:\n{fmt}"
            'vfs.mount(fs, "/flash")\n'
            f"{body}\n"
            'vfs.umount("/flash")\n'
        )
        result = run_micropython(code, heap_bytes=_HOST_HEAP, timeout=120)
        if result.returncode != 0 or result.timed_out:
            raise FlashError(f"filesystem operation failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def format(self) -> None:
        """Make an empty littlefs2 filesystem with the ESP32 port's default ``boot.py``."""
        self.create()
        self.write_files({"boot.py": DEFAULT_BOOT_PY.encode()}, format_first=True)

    def write_files(self, files: Mapping[str, bytes], *, format_first: bool = False) -> None:
        """Write ``{"lib/x.py": data}`` into the filesystem, parents included. A blank region
        is formatted first, with the default ``boot.py`` as a board's first boot writes it."""
        if not format_first and not self.mountable():
            files = {"boot.py": DEFAULT_BOOT_PY.encode(), **files}
        with tempfile.TemporaryDirectory(prefix="edgeladder-flash-") as tmp:
            lines = []
            for i, (name, data) in enumerate(files.items()):
                name = name.lstrip("/")
                src = Path(tmp) / str(i)
                src.write_bytes(data)
                lines.append(f"put({str(src)!r}, {name!r})")
            body = (
                "def put(src, name):\n"
                "    path = '/flash'\n"
                "    for part in name.split('/')[:-1]:\n"
                "        path += '/' + part\n"
                "        try:\n            os.mkdir(path)\n"
                "        except OSError:\n            pass\n"
                "    with open(src, 'rb') as fi, open('/flash/' + name, 'wb') as fo:\n"
                "        fo.write(fi.read())\n"
            )
            if format_first:
                body = (
                    "vfs.umount('/flash')\nvfs.VfsLfs2.mkfs(bd)\n"
                    "fs = vfs.VfsLfs2(bd)\nvfs.mount(fs, '/flash')\n" + body
                )
            self._run(body + "\n".join(lines), format_if_blank=True)

    def read_file(self, name: str) -> bytes:
        """The contents of ``name`` in the filesystem; :class:`FlashError` if missing."""
        with tempfile.TemporaryDirectory(prefix="edgeladder-flash-") as tmp:
            dst = Path(tmp) / "out"
            self._run(
                f"with open('/flash/' + {name.lstrip('/')!r}, 'rb') as fi, "
                f"open({str(dst)!r}, 'wb') as fo:\n    fo.write(fi.read())"
            )
            return dst.read_bytes()

    def listdir(self, folder: str = "") -> list[str]:
        """Names in ``folder`` of the filesystem (raises :class:`FlashError` if unmountable)."""
        out = self._run(f"print(repr(sorted(os.listdir('/flash/' + {folder.lstrip('/')!r}))))")
        return ast.literal_eval(out.strip().splitlines()[-1])

    def mountable(self) -> bool:
        """True if littlefs mounts the region (what a board checks at boot)."""
        try:
            self._run("pass")
        except FlashError:
            return False
        return True
