"""A virtual board's SPI flash: one file of the board's flash size, littlefs2 in a region of it.

:class:`FlashImage` is the one flash store of the simulator. The ROM bootloader reads, writes and
erases it as raw NOR flash (:meth:`~FlashImage.read`, :meth:`~FlashImage.write`,
:meth:`~FlashImage.erase`); the board's MicroPython VM mounts its filesystem region; host-side
helpers (:meth:`~FlashImage.write_files`, :meth:`~FlashImage.read_file`, ...) run the real VM on
it, so that what they write is what the board's own littlefs wrote.

The layout follows MicroPython's ESP32 partition tables: the image and its app partition sit at
the start, and the ``vfs`` partition that MicroPython formats as littlefs2 starts at 0x200000 and
runs to the end of the flash (2 MB on a 4 MB board). A board file may override it with
``vfs_offset`` and ``vfs_bytes``.

The filesystem is reached the way firmware reaches it on a board: the VM mounts ``vfs.VfsLfs2``
on the block device in ``boot/flashbdev.py`` (MicroPython), which reads and writes the flash file
at the region's offset. Each ``writeblocks`` is one ``write(2)`` on the file, so a killed process
(a power cut) leaves exactly what littlefs had written, and littlefs's copy-on-write commits keep
that mountable. Raw writes behave as on NOR flash: they can only clear bits (``new = old &
data``), so data written over unerased flash reads back corrupted, as on a chip.
"""

from __future__ import annotations

import ast
import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgeladder.device.micropython import run_micropython
from edgeladder.errors import EdgeladderError

BLOCK_BYTES = 4096  # SPI flash erase sector
ERASED = 0xFF
DEFAULT_VFS_OFFSET = 0x200000  # MicroPython's ESP32 partition tables put "vfs" here
BOOT_DIR = Path(__file__).with_name("boot")  # the board-side start-up code (MicroPython)
_HOST_HEAP = 2 * 1024 * 1024  # heap for host-side helper runs, not the board's


class FlashError(EdgeladderError):
    """The flash file or its filesystem cannot be used."""


@dataclass(frozen=True)
class FlashLayout:
    """Sizes and offsets in bytes; the filesystem region is block aligned (0 bytes: none)."""

    flash_bytes: int
    vfs_offset: int
    vfs_bytes: int

    def __post_init__(self) -> None:
        if not self.vfs_bytes:
            return
        if self.vfs_offset % BLOCK_BYTES or self.vfs_bytes % BLOCK_BYTES:
            raise FlashError(f"filesystem region must be {BLOCK_BYTES}-byte aligned: {self}")
        if self.vfs_bytes < 8 * BLOCK_BYTES or self.vfs_offset + self.vfs_bytes > self.flash_bytes:
            raise FlashError(f"filesystem region does not fit the flash: {self}")

    @classmethod
    def for_board(cls, board) -> FlashLayout:
        """The layout of an ``edgeladder.boards.registry.Board`` (a device with ``flash_bytes``)."""
        if not board.flash_bytes:
            raise FlashError(f"board {board.name!r} has no flash_bytes: it is not a device")
        # The board file's filesystem partition size (vfs_bytes), after the image region.
        offset = int(board.extra.get("vfs_offset", DEFAULT_VFS_OFFSET))
        size = int(board.vfs_bytes or board.flash_bytes - offset)
        return cls(board.flash_bytes, offset, size)

    @classmethod
    def for_size(cls, flash_bytes: int) -> FlashLayout:
        """The default partitions on ``flash_bytes`` of flash (no filesystem if it is too small)."""
        size = flash_bytes - DEFAULT_VFS_OFFSET
        return cls(flash_bytes, DEFAULT_VFS_OFFSET, size if size >= 8 * BLOCK_BYTES else 0)


class FlashImage:
    """The flash file of one virtual board; ``layout`` may be a size in bytes."""

    def __init__(self, path: Path | str, layout: FlashLayout | int) -> None:
        self.path = Path(path)
        self.layout = FlashLayout.for_size(layout) if isinstance(layout, int) else layout

    @property
    def size(self) -> int:
        return self.layout.flash_bytes

    def create(self) -> FlashImage:
        """Make an erased flash file (all 0xFF) unless one of the right size exists."""
        if self.path.exists():
            size = self.path.stat().st_size
            if size != self.size:
                raise FlashError(
                    f"flash file is {size} bytes, the board has {self.size}; "
                    "delete it or pick the matching board",
                    self.path,
                )
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        chunk = bytes([ERASED]) * (1 << 20)
        with open(tmp, "wb") as f:
            left = self.size
            while left:
                n = min(left, len(chunk))
                f.write(chunk[:n])
                left -= n
        os.replace(tmp, self.path)
        return self

    def close(self) -> None:
        """Nothing stays open between accesses (the file may be replaced meanwhile)."""

    # Raw NOR access, as the ROM bootloader sees the chip.

    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise ValueError(f"flash access {offset:#x}+{n:#x} is outside {self.size:#x} bytes")

    def _fd(self) -> int:
        return os.open(self.create().path, os.O_RDWR)

    def read(self, offset: int, n: int) -> bytes:
        n = max(0, min(n, self.size - offset))
        self._check(offset, n)
        fd = self._fd()
        try:
            return os.pread(fd, n, offset)
        finally:
            os.close(fd)

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        fd = self._fd()
        try:
            old = os.pread(fd, len(data), offset)
            anded = int.from_bytes(old, "little") & int.from_bytes(data, "little")
            os.pwrite(fd, anded.to_bytes(len(data), "little"), offset)
        finally:
            os.close(fd)

    def erase(self, offset: int = 0, n: int | None = None) -> None:
        """Erase ``n`` bytes at ``offset`` (default: all of it, as ``esptool erase-flash``)."""
        n = self.size - offset if n is None else n
        self._check(offset, n)
        fd = self._fd()
        try:
            os.pwrite(fd, b"\xff" * n, offset)
        finally:
            os.close(fd)

    def md5(self, offset: int, n: int) -> str:
        return hashlib.md5(self.read(offset, n)).hexdigest()

    # The filesystem region, as the board's firmware sees it.

    def bdev_args(self) -> tuple[str, int, int, int]:
        """The arguments of ``FlashBdev(path, offset, size, block)`` for this image."""
        lay = self.layout
        if not lay.vfs_bytes:
            raise FlashError(f"this flash ({self.size} bytes) has no filesystem region", self.path)
        return str(self.path), lay.vfs_offset, lay.vfs_bytes, BLOCK_BYTES

    # Host-side helpers: each runs the real VM with the filesystem mounted at /flash.

    def _run(self, body: str, *, mount: str = "vfs.VfsLfs2(bd)") -> str:
        # mount: how the region becomes a filesystem (an unmountable one raises by default)
        self.create()
        code = (
            "import vfs, os, sys\n"
            "from flashbdev import FlashBdev\n"
            "from inisetup import setup, mount_or_setup\n"
            f"bd = FlashBdev(*{self.bdev_args()!r})\n"
            f"vfs.mount({mount}, '/flash')\n"
            f"{body}\n"
            "vfs.umount('/flash')\n"
        )
        result = run_micropython(code, heap_bytes=_HOST_HEAP, path=[BOOT_DIR], timeout=120)
        if result.returncode != 0 or result.timed_out:
            raise FlashError(f"filesystem operation failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def format(self) -> None:
        """Make an empty littlefs2 filesystem with the ESP32 port's default ``boot.py``."""
        self._run("pass", mount="setup(bd)")

    def write_files(self, files: Mapping[str, bytes], *, format_first: bool = False) -> None:
        """Write ``{"lib/x.py": data}`` into the filesystem, parents included. A blank region
        is formatted first, with the default ``boot.py`` as a board's first boot writes it."""
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
            mount = "setup(bd)" if format_first else "mount_or_setup(bd)"
            self._run(body + "\n".join(lines), mount=mount)

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
