"""Where the data folders that ship with edgeladder live: the firmware and the board files.

Defined once here; every module that needs the firmware tree or the board registry asks this one.
"""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parents[3]
FIRMWARE_DIR = _ROOT / "firmware"
BOARDS_DIR = _ROOT / "boards"
