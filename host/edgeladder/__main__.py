"""``python -m edgeladder``: the same as the ``edgeladder`` command (used to start child tiers)."""

from .cli import main

raise SystemExit(main())
