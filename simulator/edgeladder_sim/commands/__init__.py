"""Commands the simulator adds to the `edgeladder` CLI (registered as entry points)."""
