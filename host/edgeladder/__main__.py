"""``python -m edgeladder``: the same as the ``edgeladder`` command (used to start child tiers)."""

from edgeladder.cli import main

raise SystemExit(main())
