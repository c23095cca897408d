# ladder: the device side of edgeladder. Short names on purpose: every name costs RAM on a board.
# Plain MicroPython that CPython can import too (no viper, no typing at runtime).

__version__ = "0.1.0"


class LadderError(Exception):
    """A failed step on the board: a bad model, a bad frame, a failed update."""


from .quant import quantize_into, top_k_into  # noqa: E402, F401  (re-export)

try:  # the engine needs MicroPython's viper; CPython hosts import ladder.mformat through here
    from .engine import Model  # noqa: F401
except ImportError:
    pass
