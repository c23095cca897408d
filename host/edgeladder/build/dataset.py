"""Load a dataset, check it, and split it deterministically.

A dataset is ``x`` (N, ...) of any rank — images (N, H, W, C), time series (N, T, C),
tabular (N, F) — with integer labels ``y`` (N,). Sources are registered by name
(``sklearn:digits``) or given as a ``.npz`` path with ``x``, ``y`` and optionally
``x_test``, ``y_test`` and ``labels``.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeladder.errors import DatasetError


@dataclass
class Dataset:
    """Samples, labels and their names, plus an optional fixed test set."""

    name: str
    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def content_hash(self) -> str:
        """sha256 over the arrays and labels: the cache key's data part."""
        h = hashlib.sha256()
        for a in (self.x, self.y, self.x_test, self.y_test):
            if a is None:
                h.update(b"-")
                continue
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        h.update("\x00".join(self.labels).encode())
        return h.hexdigest()


@dataclass
class Split:
    """Train, validation and test arrays (float32 inputs, int64 labels)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)


def _digits() -> Dataset:
    # scikit-learn ships these 1,797 8x8 images inside the wheel: no download needed.
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[..., None]  # (N, 8, 8, 1), pixel values 0..16
    return Dataset(
        name="digits",
        x=x,
        y=d.target.astype(np.int64),
        labels=[str(n) for n in d.target_names],
        source="sklearn:digits",
    )


# Named sources: adding one means adding a loader here, nothing else changes.
BUILTIN_SOURCES: dict[str, Callable[[], Dataset]] = {"sklearn:digits": _digits}


def load_dataset(source: str | Path) -> Dataset:
    """Load a registered dataset by name or a ``.npz`` file, and validate it."""
    key = str(source)
    ds = BUILTIN_SOURCES[key]() if key in BUILTIN_SOURCES else _load_npz(Path(source))
    _validate(ds, Path(key) if key not in BUILTIN_SOURCES else None)
    return ds


_MAX_CLASSES = 10_000  # a classifier's output layer, not an id space


def _load_npz(path: Path) -> Dataset:
    if not path.exists():
        raise DatasetError("dataset file not found", path)
    if path.is_dir():
        raise DatasetError("is a folder; expected a .npz file with arrays x and y", path)
    if not zipfile.is_zipfile(path):
        # np.load would return a bare array for a .npy and talk about pickles for anything else.
        raise DatasetError(
            "not a .npz file, or truncated: expected a zip of arrays x and y (numpy.savez)", path
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as e:
        raise DatasetError(f"not a readable .npz file ({e})", path) from e
    not_npy = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
    if not_npy:  # NpzFile hands back raw bytes for zip members that are not .npy files
        raise DatasetError(f"member(s) {', '.join(not_npy)} are not .npy arrays", path)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DatasetError(
            f"missing array(s) {', '.join(missing)}; a dataset needs x (N, ...) and y (N,)"
            f" (found: {', '.join(sorted(arrays)) or 'none'})",
            path,
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DatasetError("x_test and y_test must be given together", path)
    y = arrays["y"]
    labels_arr = arrays.get("labels")
    if labels_arr is not None:
        labels = [str(v) for v in np.asarray(labels_arr).reshape(-1)]
    else:
        ys = [y] + ([arrays["y_test"]] if "y_test" in arrays else [])
        top = max((int(np.max(a)) for a in ys if a.size and _is_integral(a)), default=0)
        if top >= _MAX_CLASSES:
            raise DatasetError(
                f"largest label is {top}; labels must be class indices 0..N-1 (at most"
                f" {_MAX_CLASSES} classes) — remap them, or add a `labels` array",
                path,
            )
        labels = [str(i) for i in range(top + 1)]
    return Dataset(
        name=path.stem,
        x=arrays["x"],
        y=y,
        labels=labels,
        x_test=arrays.get("x_test"),
        y_test=arrays.get("y_test"),
        source=str(path),
    )


def _is_integral(a: np.ndarray) -> bool:
    if np.issubdtype(a.dtype, np.integer):
        return True
    return np.issubdtype(a.dtype, np.floating) and bool(np.all(np.mod(a, 1) == 0))


def _validate(ds: Dataset, path: Path | None) -> None:
    def fail(msg: str) -> None:
        raise DatasetError(msg, path if path is not None else ds.source)

    for xn, yn in (("x", "y"), ("x_test", "y_test")):
        x, y = getattr(ds, xn), getattr(ds, yn)
        if x is None:
            continue
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            fail(f"{xn} has dtype {x.dtype}; expected numbers")
        if x.ndim < 2:
            fail(f"{xn} has shape {x.shape}; expected (N, features...) with at least 2 axes")
        if y.ndim != 1:
            fail(f"{yn} has shape {y.shape}; expected one integer label per sample (N,)")
        if len(x) != len(y):
            fail(f"{xn} has {len(x)} samples but {yn} has {len(y)}")
        if len(x) == 0:
            fail(f"{xn} is empty")
        if not _is_integral(y):
            fail(f"{yn} must hold integer class indices, found dtype {y.dtype}")
        bad = (y < 0) | (y >= ds.num_classes)
        if np.any(bad):
            i = int(np.argmax(bad))
            fail(
                f"label {y[i]} at {yn}[{i}] is out of range 0..{ds.num_classes - 1}"
                f" ({ds.num_classes} labels)"
            )
        bad_values = _not_float32(x)
        if bad_values:
            fail(f"{xn} {bad_values}: fix, rescale or drop those samples")
    if ds.x_test is not None and ds.x_test.shape[1:] != ds.x.shape[1:]:
        fail(f"x_test samples have shape {ds.x_test.shape[1:]} but x samples {ds.x.shape[1:]}")
    if ds.num_classes < 2:
        fail("needs at least 2 classes")
    ds.x = ds.x.astype(np.float32)
    ds.y = ds.y.astype(np.int64)
    if ds.x_test is not None:
        ds.x_test = ds.x_test.astype(np.float32)
        ds.y_test = ds.y_test.astype(np.int64)


_F32_MAX = float(np.finfo(np.float32).max)


def _not_float32(x: np.ndarray) -> str:
    """What in ``x`` training in float32 cannot take ("" if nothing): NaN, inf, too large."""
    if not np.issubdtype(x.dtype, np.floating):
        return ""  # integers and booleans are finite (int64 beyond 3.4e38 does not exist)
    finite = np.isfinite(x)
    n_bad = int(x.size - np.count_nonzero(finite))
    if n_bad:
        return f"contains NaN or infinite values: {n_bad:,} of {x.size:,}"
    n_big = int(np.count_nonzero(np.abs(x) > _F32_MAX))
    if n_big:
        return (
            f"contains values beyond float32's range, which training uses (|v| >"
            f" {_F32_MAX:.3g}): {n_big:,} of {x.size:,}"
        )
    return ""


# Beyond this after normalization, float32 training overflows: Adam squares the gradients,
# and a gradient grows with its input (1e12 leaves room for fan-in and the hidden layers).
_MAX_NORMALIZED = 1e12


def check_normalized(
    split: Split, offset: np.ndarray, scale: np.ndarray, mode: str, source: str | Path
) -> None:
    """Refuse, before any tier trains, data that float32 training turns into ``loss=nan``:
    per-channel statistics that overflowed, and normalized values that are not finite or so
    large that the squared gradients overflow."""

    def fail(what: str) -> None:
        raise DatasetError(
            f"{what}: the data's values overflow float32 training; rescale them (e.g. to"
            " physical units) or pick another normalization in the recipe",
            source,
        )

    for name, stat in (("offset", offset), ("scale", scale)):
        n_bad = int(stat.size - np.count_nonzero(np.isfinite(stat)))
        if n_bad:
            fail(f"x_train's {mode!r} normalization {name} is not finite in {n_bad} channel(s)")
    for name in ("x_train", "x_val", "x_test"):
        x = getattr(split, name)
        bad = _not_float32(x)
        if bad:
            fail(f"{name} after {mode!r} normalization {bad}")
        n_big = int(np.count_nonzero(np.abs(x) > _MAX_NORMALIZED))
        if n_big:
            fail(
                f"{name} after {mode!r} normalization contains values beyond"
                f" ±{_MAX_NORMALIZED:.0e}: {n_big:,} of {x.size:,}"
            )


def _stratified_take(y: np.ndarray, idx: np.ndarray, frac: float, rng) -> np.ndarray:
    """Pick about ``frac`` of ``idx`` from every class (at least one per class)."""
    take = []
    for c in np.unique(y[idx]):
        members = idx[y[idx] == c]
        members = members[rng.permutation(len(members))]
        n = max(1, round(frac * len(members))) if len(members) > 1 else 0
        take.append(members[:n])
    return np.sort(np.concatenate(take)) if take else np.array([], dtype=np.int64)


def split_dataset(ds: Dataset, *, seed: int, validation: float, test: float) -> Split:
    """Deterministic stratified split: the same seed gives the same indices everywhere.

    With a fixed test set in the dataset, only train/validation is split.
    """
    if not (0 < validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise DatasetError(
            f"bad split fractions validation={validation}, test={test}: each must be in"
            " (0, 1) and together below 1",
            ds.source,
        )
    if ds.x_test is None and test <= 0:
        raise DatasetError(
            "test fraction is 0 but the dataset has no x_test/y_test: give one or the other",
            ds.source,
        )
    rng = np.random.default_rng(seed)
    all_idx = np.arange(len(ds.y))
    counts = np.bincount(ds.y, minlength=ds.num_classes)
    present = counts[counts > 0]
    if present.min() < 3:
        c = int(np.argmin(np.where(counts > 0, counts, 1 << 30)))
        raise DatasetError(
            f"class {ds.labels[c]!r} has only {counts[c]} sample(s); a stratified split needs"
            " at least 3 per class",
            ds.source,
        )
    if ds.x_test is None:
        test_idx = _stratified_take(ds.y, all_idx, test, rng)
        rest = np.setdiff1d(all_idx, test_idx)
        x_test, y_test = ds.x[test_idx], ds.y[test_idx]
    else:
        rest = all_idx
        x_test, y_test = ds.x_test, ds.y_test
    val_idx = _stratified_take(
        ds.y, rest, validation / (1 - (test if ds.x_test is None else 0)), rng
    )
    train_idx = np.setdiff1d(rest, val_idx)
    return Split(
        x_train=ds.x[train_idx],
        y_train=ds.y[train_idx],
        x_val=ds.x[val_idx],
        y_val=ds.y[val_idx],
        x_test=x_test,
        y_test=y_test,
        counts={"train": len(train_idx), "validation": len(val_idx), "test": len(y_test)},
    )


def normalize_stats(x_train: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (last axis) ``offset`` and ``scale`` so that (x - offset) / scale is tame.

    ``standard``: mean and standard deviation; ``minmax``: minimum and range, giving [0, 1];
    ``none``: identity. Per channel keeps tabular features of different units comparable,
    and the board can apply it to raw readings as one integer affine map per channel.
    """
    axes = tuple(range(x_train.ndim - 1))
    if mode == "standard":
        off, sc = x_train.mean(axis=axes), x_train.std(axis=axes)
    elif mode == "minmax":
        off = x_train.min(axis=axes)
        sc = x_train.max(axis=axes) - off
    elif mode == "none":
        off = np.zeros(x_train.shape[-1], np.float32)
        sc = np.ones(x_train.shape[-1], np.float32)
    else:
        raise DatasetError(f"unknown normalization {mode!r}; use standard, minmax or none")
    sc = np.where(sc > 1e-12, sc, 1.0)
    return off.astype(np.float32), sc.astype(np.float32)
