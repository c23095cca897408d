"""Export models for firmware: C arrays (TFLite Micro) and frozen MicroPython modules."""

from edgeladder.convert.carray import export_model, write_c_array, write_micropython_module

__all__ = ["export_model", "write_c_array", "write_micropython_module"]
