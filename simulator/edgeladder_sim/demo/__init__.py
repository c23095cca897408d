"""The presentation side of `edgeladder demo`: records, statistics, dashboard and reports."""
