"""What can go wrong in a deploy: one error type for the layer, and the port errors it shares."""

from __future__ import annotations

from edgeladder.device.ports import BoardNotAnsweringError, DeviceError, PortError


class DeployError(DeviceError):
    """A deploy could not be prepared or finished."""


class BuildMissingError(DeployError):
    """The task has not been built (or not for a device)."""


class ArchMismatchError(DeployError):
    """The connected board runs code for another architecture than its board file says."""


# The port errors are the device layer's, the same as `flash` raises.
DeployPortError = PortError

__all__ = [
    "ArchMismatchError",
    "BoardNotAnsweringError",
    "BuildMissingError",
    "DeployError",
    "DeployPortError",
]
