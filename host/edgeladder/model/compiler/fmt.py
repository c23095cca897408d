"""The board's model format, imported from its one definition in ``firmware/ladder/mformat.py``.

The device package ``ladder`` is plain MicroPython that CPython imports too; it is installed
with the host package (see pyproject.toml), so host and board read the same file.
"""

from __future__ import annotations

from ladder import mformat

__all__ = ["mformat"]
