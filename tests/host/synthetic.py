"""Small synthetic datasets of each input rank, generated (never downloaded) for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def time_series(path: Path, n: int = 360, t: int = 32, c: int = 3, seed: int = 0) -> Path:
    """(N, T, C): three classes of noisy sines at different frequencies."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    steps = np.arange(t)[None, :, None]
    freq = (1 + y)[:, None, None] * 0.25
    phase = rng.uniform(0, 2 * np.pi, (n, 1, c))
    x = np.sin(freq * steps + phase) + 0.3 * rng.standard_normal((n, t, c))
    np.savez(path, x=x.astype(np.float32), y=y, labels=np.array(["slow", "mid", "fast"]))
    return path


def tabular(path: Path, n: int = 360, f: int = 6, seed: int = 0) -> Path:
    """(N, F): three Gaussian blobs whose features have very different units."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centers = rng.normal(0, 2, (3, f))
    units = np.array([1, 10, 100, 0.1, 1000, 1])[:f]
    x = (centers[y] + rng.standard_normal((n, f))) * units
    np.savez(path, x=x.astype(np.float32), y=y)
    return path
