"""Public datasets that edgeladder was never tuned on, as .npz files `edgeladder build` takes.

    python bench/unseen/datasets.py OUTDIR [--only NAME,NAME,...]

Every set ships inside a PyPI package, so nothing is downloaded at run time:

- tabular: scikit-learn's ``wine`` and ``breast_cancer`` (no official split: edgeladder
  splits them);
- time series: aeon's bundled UCR/UEA classification sets with their official TRAIN/TEST
  splits (``x_test``/``y_test`` in the .npz); aeon stores (N, C, T), edgeladder takes (N, T, C);
- images: scikit-image's ``lfw_subset`` (100 faces and 100 non-faces, 25×25 grey; no official
  split).

Variable-length sets (JapaneseVowels, PickupGestureWiimoteZ) are padded to the longest series
of train and test by repeating each series' last step; the table's note says so.

Each .npz holds ``x`` (N, ...) float32, ``y`` (N,) int64, ``labels`` (class names, strings)
and, with an official split, ``x_test``/``y_test`` — the format of
``edgeladder.build.dataset``. Needs ``pip install -e '.[bench]'`` (aeon, scikit-image).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Prepared:
    name: str
    kind: str  # tabular | time series | image
    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: str = ""
    note: str = ""

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"x": self.x, "y": self.y, "labels": np.array(self.labels, dtype=str)}
        if self.x_test is not None:
            out |= {"x_test": self.x_test, "y_test": self.y_test}
        return out


def _sklearn(name: str) -> Callable[[], Prepared]:
    def load() -> Prepared:
        from sklearn import datasets

        d = getattr(datasets, f"load_{name}")()
        return Prepared(
            name=name,
            kind="tabular",
            x=d.data.astype(np.float32),
            y=d.target.astype(np.int64),
            labels=[str(n) for n in d.target_names],
            source=f"sklearn.datasets.load_{name}",
        )

    return load


def _lfw_subset() -> Prepared:
    from skimage import data

    images = data.lfw_subset()  # (200, 25, 25) in 0..1: the first 100 faces, then 100 not
    return Prepared(
        name="lfw_subset",
        kind="image",
        x=images.astype(np.float32)[..., None],
        y=np.repeat(np.arange(2, dtype=np.int64), 100),
        labels=["face", "non-face"],
        source="skimage.data.lfw_subset",
    )


# aeon's bundled classification sets (the data folder also holds forecasting, regression and
# anomaly sets, and UnitTest, a slice of Chinatown for aeon's own tests).
AEON_SETS = (
    "BasicMotions",
    "ItalyPowerDemand",
    "ArrowHead",
    "GunPoint",
    "OSULeaf",
    "ACSF1",
    "JapaneseVowels",
    "PickupGestureWiimoteZ",
)


def _aeon_dir() -> Path:
    import aeon.datasets

    return Path(aeon.datasets.__file__).parent / "data"


def _aeon(name: str) -> Callable[[], Prepared]:
    def load() -> Prepared:
        from aeon.datasets import load_from_ts_file

        folder = _aeon_dir() / name
        parts = {}
        for split in ("TRAIN", "TEST"):
            x, y = load_from_ts_file(str(folder / f"{name}_{split}.ts"))
            parts[split] = (list(x) if isinstance(x, list) else list(np.asarray(x)), y)
        lengths = [np.shape(s)[1] for series, _ in parts.values() for s in series]
        t, note = max(lengths), ""
        if min(lengths) != t:
            note = f"variable length {min(lengths)}..{t}: padded to {t} with the last step"
        names = sorted({str(v) for _, y in parts.values() for v in y}, key=_label_key)
        index = {n: i for i, n in enumerate(names)}

        def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
            series, y = parts[split]
            x = np.stack([_pad(np.asarray(s, np.float64).T, t) for s in series])  # (N, T, C)
            return x.astype(np.float32), np.array([index[str(v)] for v in y], np.int64)

        x, y = arrays("TRAIN")
        x_test, y_test = arrays("TEST")
        return Prepared(
            name=name,
            kind="time series",
            x=x,
            y=y,
            labels=names,
            x_test=x_test,
            y_test=y_test,
            source=f"aeon/datasets/data/{name} (official TRAIN/TEST)",
            note=note,
        )

    return load


def _label_key(label: str) -> tuple[int, float, str]:
    """Numeric labels in numeric order ("2" before "10"), then the others by name."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _pad(series: np.ndarray, length: int) -> np.ndarray:
    """(T, C) to (length, C), repeating the last step."""
    if len(series) >= length:
        return series[:length]
    return np.concatenate([series, np.repeat(series[-1:], length - len(series), axis=0)])


SOURCES: dict[str, Callable[[], Prepared]] = {
    "wine": _sklearn("wine"),
    "breast_cancer": _sklearn("breast_cancer"),
    **{n: _aeon(n) for n in AEON_SETS},
    "lfw_subset": _lfw_subset,
}


def prepare(name: str) -> Prepared:
    if name not in SOURCES:
        raise SystemExit(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}")
    p = SOURCES[name]()
    if not np.all(np.isfinite(p.x)) or (p.x_test is not None and not np.all(np.isfinite(p.x_test))):
        raise SystemExit(f"{name}: missing values in the data")
    return p


def write(name: str, out_dir: Path) -> tuple[Path, Prepared]:
    out_dir.mkdir(parents=True, exist_ok=True)
    p = prepare(name)
    path = out_dir / f"{name}.npz"
    np.savez_compressed(path, **p.arrays())
    return path, p


def table(prepared: list[Prepared]) -> str:
    head = ("dataset", "kind", "sample shape", "x", "x_test", "classes", "note")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in prepared:
        test = "split by edgeladder" if p.x_test is None else str(len(p.x_test))
        row = (p.name, p.kind, "×".join(map(str, p.x.shape[1:])), str(len(p.x)), test)
        lines.append("| " + " | ".join((*row, str(len(p.labels)), p.note)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for the .npz files")
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(SOURCES)}")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SOURCES)
    done = []
    for name in names:
        path, p = write(name, args.out)
        done.append(p)
        print(f"wrote {path}", file=sys.stderr)
    print(table(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
