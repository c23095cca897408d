"""edgeladder: tiered edge inference for fleets of microcontrollers (host side)."""

__version__ = "0.1.0"
