"""``python -m edgeladder_sim board [--board esp32]``: the same as ``edgeladder sim ...``."""

import sys

from edgeladder.cli import main

sys.exit(main(["sim", *sys.argv[1:]]))
