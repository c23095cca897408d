"""Errors of ``edgeladder calibrate``: one line each, saying what to do."""

from __future__ import annotations

from edgeladder.errors import EdgeladderError


class CalibrationError(EdgeladderError):
    """Calibration cannot run: a missing build or tier file, a bad option."""


class TargetNotMetError(CalibrationError):
    """No threshold setting reaches the asked accuracy or escalation target."""
