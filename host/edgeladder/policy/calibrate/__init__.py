"""Threshold calibration for the ladder (``edgeladder calibrate``).

scores (the tiers' int8 logits on a split) -> temperature (T per stage) -> metrics (ECE,
AUROC) -> bounds (the error rate the split allows, a pessimistic T) -> sweep (thresholds:
accuracy, escalation, cost; the choice) -> ladder.json, with
calibration.json and plot (calibration.png) beside it. run.calibrate ties them together.
"""

from edgeladder.policy.calibrate.errors import CalibrationError, TargetNotMetError
from edgeladder.policy.calibrate.run import Options, Result, calibrate

__all__ = ["CalibrationError", "Options", "Result", "TargetNotMetError", "calibrate"]
