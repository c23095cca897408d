"""The ladder's policy: stage config (ladder.json), offline replay, calibration."""
