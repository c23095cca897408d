"""The host package's error types.

Every layer raises a subclass of :class:`EdgeladderError` with a message that names the
file or object and the problem. The CLI translates it once into a one-line error and a
non-zero exit; library users catch it like any exception.
"""

from __future__ import annotations

from pathlib import Path


class EdgeladderError(Exception):
    """Base class: bad input or a failed step, with a message fit for a user."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class DatasetError(EdgeladderError):
    """A dataset is missing, unreadable or inconsistent."""


class RecipeError(EdgeladderError):
    """A task recipe is missing or invalid."""


class ModelFileError(EdgeladderError):
    """A model file is missing, corrupt, or not the kind the command needs."""


class BuildError(EdgeladderError):
    """A build step failed (training, conversion, evaluation)."""
