"""A classical reference row: what simple, well-known classifiers score on the same split.

Seconds, not minutes, on the two-core machines the project runs on. Beside the tiers' own
accuracy it answers "is the network worth it here?":

- ``1-NN euclidean`` and ``5-NN euclidean``: k-nearest neighbours on the flattened inputs;
- ``logistic regression``: standardized features, L-BFGS, the default C (deterministic);
- ``1-NN DTW`` (time series (N, T, C) only): dependent multivariate dynamic time warping with
  a Sakoe–Chiba band of 10 % of the length, by ``dtaidistance``'s C library (OpenMP). Series
  so long that T·T·n_train·n_eval is over :data:`DTW_WORK_BUDGET` are first shortened by
  piecewise aggregate approximation (PAA) to at most :data:`PAA_MAX_STEPS` steps, and the
  row's note says so. Without the C library a numpy implementation runs instead, on a smaller
  budget, and the note says that too.

A reference that fails gives a row with ``error`` (and ``accuracy`` None): it never stops a
build. This module needs numpy, scikit-learn and (for DTW) dtaidistance, nothing of
edgeladder's, so the benchmarks can load it on its own.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

# T·T·n_train·n_eval (times the channels) above which DTW works on PAA-shortened series.
# The C library does about 4e8 band cells a second on two cores; the 10 % band holds about a
# fifth of the T·T cells, so this budget is about five seconds.
DTW_WORK_BUDGET = 1e10
NUMPY_DTW_WORK_BUDGET = 2e8  # the numpy fallback is about 50 times slower
PAA_MAX_STEPS = 256
PAA_MIN_STEPS = 16  # below this the series say too little: skip the row instead
WINDOW_FRACTION = 0.1
LOGREG_MAX_ITER = 5000
# The rows are a sanity check in seconds, not a contest: at most this many training inputs
# (a seeded, class-stratified draw) and this many scored ones; the notes say when they cut.
MAX_TRAIN = 5000
MAX_EVAL = 5000


class Progress(Protocol):  # the build pipeline's protocol (edgeladder.build.pipeline)
    def step(self, description: str, total: int | None = None) -> None: ...
    def advance(self, n: int = 1, **info: Any) -> None: ...


def reference_scores(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    *,
    time_series: bool,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fit each reference on the train arrays and score it on the eval arrays.

    Returns ``{"rows": [{"name", "accuracy", "seconds", "note"[, "error"]}, ...],
    "best": {"name", "accuracy"} or None}``; ``accuracy`` is a fraction in 0..1, None for a
    row that failed or was skipped.
    """
    refs: list[tuple[str, Callable[..., tuple[np.ndarray, str | None]]]] = [
        ("1-NN euclidean", lambda *a: _knn(*a, k=1)),
        ("5-NN euclidean", lambda *a: _knn(*a, k=5)),
        ("logistic regression", _logistic),
    ]
    if time_series:
        refs.append(("1-NN DTW", _dtw_1nn))
    if progress is not None:
        progress.step("classical reference", total=len(refs))
    x_train, y_train, cut_train = _capped(x_train, y_train, MAX_TRAIN)
    x_eval, y_eval, cut_eval = _capped(x_eval, y_eval, MAX_EVAL)
    cuts = [
        f"{what} on {len(y):,} of {n:,} inputs (a stratified draw)"
        for what, y, n in (("fitted", y_train, cut_train), ("scored", y_eval, cut_eval))
        if n
    ]
    rows = []
    for name, fit_predict in refs:
        t0 = time.perf_counter()
        row: dict[str, Any] = {"name": name, "accuracy": None, "seconds": 0.0, "note": None}
        try:
            xtr, ytr, xev, yev = _check(x_train, y_train, x_eval, y_eval, time_series)
            pred, row["note"] = fit_predict(xtr, ytr, xev)
            if pred is not None:
                row["accuracy"] = float(np.mean(np.asarray(pred) == yev))
        except Exception as e:  # a reference must never stop the build
            row["error"] = f"{type(e).__name__}: {e}"
        row["seconds"] = round(time.perf_counter() - t0, 3)
        if cuts:
            row["note"] = "; ".join([*cuts, *([row["note"]] if row["note"] else [])])
        rows.append(row)
        if progress is not None:
            acc = row["accuracy"]
            progress.advance(1, **({"accuracy": acc} if acc is not None else {}))
    scored = [r for r in rows if r["accuracy"] is not None]
    best = max(scored, key=lambda r: r["accuracy"], default=None)  # ties: the first listed
    return {
        "rows": rows,
        "best": None if best is None else {"name": best["name"], "accuracy": best["accuracy"]},
    }


def _capped(x: np.ndarray, y: np.ndarray, most: int) -> tuple[np.ndarray, np.ndarray, int]:
    """At most ``most`` rows, drawn per class in proportion (seeded); the original count if
    it cut, else 0."""
    if len(y) <= most:
        return x, y, 0
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        pick, _ = train_test_split(idx, train_size=most, stratify=y, random_state=0)
    except ValueError:  # a class too small to stratify: a plain seeded draw
        pick, _ = train_test_split(idx, train_size=most, random_state=0)
    pick = np.sort(pick)
    return x[pick], y[pick], len(y)


def _check(x_train, y_train, x_eval, y_eval, time_series: bool):
    xtr, xev = np.asarray(x_train), np.asarray(x_eval)
    ytr, yev = np.asarray(y_train).reshape(-1), np.asarray(y_eval).reshape(-1)
    if len(xtr) != len(ytr) or len(xev) != len(yev):
        raise ValueError(
            f"{len(xtr)} train inputs for {len(ytr)} labels, {len(xev)} eval inputs for"
            f" {len(yev)} labels"
        )
    if xtr.shape[1:] != xev.shape[1:]:
        raise ValueError(f"train samples {xtr.shape[1:]} but eval samples {xev.shape[1:]}")
    if len(xtr) == 0 or len(xev) == 0:
        raise ValueError("no train or no eval inputs")
    if time_series:
        if xtr.ndim == 2:  # (N, T): one channel
            xtr, xev = xtr[..., None], xev[..., None]
        if xtr.ndim != 3:
            raise ValueError(f"time series must be (N, T, C), got samples of {xtr.shape[1:]}")
    return xtr, ytr.astype(np.int64), xev, yev.astype(np.int64)


def _flat(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)


def _knn(xtr, ytr, xev, *, k: int) -> tuple[np.ndarray, str | None]:
    from sklearn.neighbors import KNeighborsClassifier

    kk = min(k, len(ytr))
    clf = KNeighborsClassifier(n_neighbors=kk, algorithm="brute", metric="euclidean")
    clf.fit(_flat(xtr), ytr)
    note = f"k={kk}: only {len(ytr)} train inputs" if kk != k else None
    return clf.predict(_flat(xev)), note


def _logistic(xtr, ytr, xev) -> tuple[np.ndarray, str | None]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(
        StandardScaler(),
        LogisticRegression(solver="lbfgs", max_iter=LOGREG_MAX_ITER, random_state=0),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(_flat(xtr), ytr)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    note = None if converged else f"L-BFGS stopped at max_iter={LOGREG_MAX_ITER}, not converged"
    return clf.predict(_flat(xev)), note


# --- DTW --------------------------------------------------------------------------------


def band_radius(length: int, fraction: float = WINDOW_FRACTION) -> int:
    """Sakoe–Chiba radius: ``|i - j| <= r`` with r = ``fraction`` of the length (at least 1)."""
    return max(1, round(fraction * length))


def paa(x: np.ndarray, steps: int) -> np.ndarray:
    """Piecewise aggregate approximation of (N, T, C) series along T: (N, steps, C) means of
    ``steps`` nearly equal segments."""
    t = x.shape[1]
    if steps >= t:
        return x
    starts = (np.arange(steps) * t) // steps
    sizes = np.diff(np.append(starts, t)).astype(np.float64)
    return np.add.reduceat(x.astype(np.float64), starts, axis=1) / sizes[None, :, None]


def dtw_backend() -> tuple[str, str | None]:
    """("c-omp" | "c" | "numpy", why not the fastest) — what :func:`dtw_distances` will use."""
    try:
        from dtaidistance import dtw
    except ImportError as e:
        return "numpy", f"dtaidistance not importable ({e})"
    if dtw.dtw_cc is None:
        return "numpy", "dtaidistance's C library is not available"
    if dtw.dtw_cc_omp is None:
        return "c", "dtaidistance built without OpenMP: one thread"
    return "c-omp", None


def dtw_distances(a: np.ndarray, b: np.ndarray, radius: int, backend: str | None = None):
    """(len(a), len(b)) DTW distances between the (N, T, C) series of ``a`` and of ``b``.

    Dependent multivariate DTW as dtaidistance defines it: the square root of the smallest
    sum, along a warping path with ``|i - j| <= radius``, of the squared Euclidean distances
    between the aligned time steps (C vectors).
    """
    backend = backend or dtw_backend()[0]
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if backend == "numpy":
        return _dtw_numpy(a, b, radius)
    from dtaidistance import dtw, dtw_ndim

    n, m = len(a), len(b)
    univariate = a.shape[2] == 1
    series = [s[:, 0].copy() if univariate else s for s in (*a, *b)]
    kw = {
        "window": radius + 1,  # dtaidistance: |i - j| < window
        "block": ((0, n), (n, n + m)),
        "compact": True,
        "parallel": backend == "c-omp",
    }
    if univariate:
        d = dtw.distance_matrix_fast(series, **kw)
    else:
        d = dtw_ndim.distance_matrix_fast(series, **kw)
    d = np.asarray(d, dtype=np.float64)
    if d.size != n * m:
        raise RuntimeError(f"dtaidistance returned {d.size} distances for {n}x{m} pairs")
    return d.reshape(n, m)


def _dtw_numpy(a: np.ndarray, b: np.ndarray, radius: int) -> np.ndarray:
    """The same distances in numpy, vectorized over chunks of (a, b) pairs."""
    n, m, t = len(a), len(b), a.shape[1]
    ii, jj = np.divmod(np.arange(n * m), m)
    out = np.empty(n * m)
    chunk = max(1, 4_000_000 // (t * a.shape[2]))
    for s in range(0, n * m, chunk):
        pa, pb = a[ii[s : s + chunk]], b[jj[s : s + chunk]]
        p = len(pa)
        prev = np.full((p, t + 1), np.inf)
        prev[:, 0] = 0.0
        for i in range(1, t + 1):
            cur = np.full((p, t + 1), np.inf)
            for j in range(max(1, i - radius), min(t, i + radius) + 1):
                cost = np.sum((pa[:, i - 1] - pb[:, j - 1]) ** 2, axis=1)
                cur[:, j] = cost + np.minimum(np.minimum(prev[:, j], prev[:, j - 1]), cur[:, j - 1])
            prev = cur  # cur[:, 0] is inf: only the start (0, 0) has a free predecessor
        out[s : s + p] = np.sqrt(prev[:, t])
    return out.reshape(n, m)


def _dtw_1nn(xtr, ytr, xev) -> tuple[np.ndarray | None, str | None]:
    backend, why = dtw_backend()
    notes = [why] if why else []
    budget = NUMPY_DTW_WORK_BUDGET if backend == "numpy" else DTW_WORK_BUDGET
    n, m, t, c = len(xtr), len(xev), xtr.shape[1], xtr.shape[2]
    pairs = float(n) * m * c
    work = float(t) * t * pairs
    if work > budget:
        steps = min(PAA_MAX_STEPS, t, math.isqrt(int(budget / pairs)))
        if steps < PAA_MIN_STEPS:
            notes.append(
                f"skipped: {n}x{m} pairs are too many even at {PAA_MIN_STEPS} steps"
                f" (T·T·n·m·C budget {budget:.0e})"
            )
            return None, "; ".join(notes)
        xtr, xev = paa(xtr, steps), paa(xev, steps)
        notes.append(f"PAA {t}→{steps} steps (T·T·n·m·C {work:.1e} > budget {budget:.0e})")
    length = xtr.shape[1]
    r = band_radius(length)
    notes.insert(0, f"band ±{r} of {length} steps, {backend}")
    d = dtw_distances(xtr, xev, r, backend)
    nearest = np.argmin(d, axis=0)  # ties: the first train input
    return ytr[nearest], "; ".join(notes)
