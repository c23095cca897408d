"""Where the data folders that ship with edgeladder live: the firmware and the board files.

Defined once here; every module that needs the firmware tree or the board registry asks this one.

The folders stay at the top of the source tree (``firmware/``, ``boards/``) and are installed
as the data packages ``edgeladder.util.firmware`` and ``edgeladder.util.boards``
(``[tool.setuptools.package-dir]`` in pyproject.toml). A wheel install finds them by import.
An editable install (``pip install -e .``) maps them too, but setuptools' editable finder
cannot import a folder without ``__init__.py`` below a regular package, so there they are
found in the source tree that the install records (``direct_url.json``, PEP 610).
"""

from __future__ import annotations

import importlib.util
import json
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from edgeladder.errors import EdgeladderError

DISTRIBUTION = "edgeladder"


def data_dir(name: str) -> Path:
    """The installed folder of the data package ``edgeladder.util.<name>``."""
    spec = importlib.util.find_spec(f"{__package__}.{name}")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    source = _editable_source()
    if source is not None and (source / name).is_dir():
        return source / name
    raise EdgeladderError(
        f"edgeladder's {name}/ folder is not installed: reinstall edgeladder "
        "(`pip install .`, or `pip install -e .` in a checkout)"
    )


def _editable_source() -> Path | None:
    """The source tree of an editable install of edgeladder, or None.

    Every distribution of that name on the path is asked: a source tree's own
    ``edgeladder.egg-info`` (the current folder may be one) records no install.
    """
    for dist in metadata.distributions(name=DISTRIBUTION):
        try:
            info = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        url = urlparse(info.get("url", ""))
        if url.scheme == "file" and info.get("dir_info", {}).get("editable"):
            return Path(unquote(url.path))
    return None


FIRMWARE_DIR = data_dir("firmware")
BOARDS_DIR = data_dir("boards")
