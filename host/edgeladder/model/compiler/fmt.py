"""The board's model format, imported from its one definition in ``firmware/ladder/mformat.py``
(and ``opsize.py``, the load-time check of a whole file), and ``pack``, its writer.

The device package ``ladder`` is plain MicroPython that CPython imports too; it is installed
with the host package (see pyproject.toml), so host and board read the same file. Only the
host writes model files, so ``pack`` lives here: every byte of RAM on a board counts.
"""

from __future__ import annotations

import hashlib
import struct

from ladder import mformat, opsize

__all__ = ["mformat", "opsize", "pack"]


def pack(h: mformat.Header, body: bytes) -> bytes:
    """The whole file for header ``h`` and ``body``; the sha256 (computed here) covers every
    byte after it: the rest of the header, then the body."""
    rest = struct.pack(mformat.REST_FMT, *[getattr(h, name) for name in mformat.HEADER_FIELDS])
    digest = hashlib.sha256(rest + bytes(body)).digest()
    head = struct.pack(
        mformat.HEAD_FMT, mformat.MAGIC, mformat.VERSION, mformat.HEADER_SIZE, digest
    )
    return head + rest + bytes(body)
