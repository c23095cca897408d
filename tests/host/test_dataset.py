"""Datasets: loading every rank, deterministic stratified splits, per-channel normalization,
and a DatasetError that names the file and the problem for every kind of bad input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeladder.build.dataset import Dataset, load_dataset, normalize_stats, split_dataset
from edgeladder.errors import DatasetError

RNG = np.random.default_rng(0)


def _save(tmp_path: Path, name: str = "data.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _fails(path: Path, *fragments: str) -> str:
    """Load ``path``; assert a DatasetError naming the file and each fragment."""
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    msg = str(info.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


def _good(n: int = 30, classes: int = 3, features: int = 4) -> dict[str, np.ndarray]:
    return {"x": RNG.normal(size=(n, features)), "y": np.arange(n) % classes}


# --- loading ------------------------------------------------------------------------------


def test_digits_loads_as_8x8_images():
    ds = load_dataset("sklearn:digits")
    assert ds.x.shape == (1797, 8, 8, 1)
    assert ds.x.dtype == np.float32
    assert ds.y.shape == (1797,) and ds.y.dtype == np.int64
    assert ds.labels == [str(i) for i in range(10)]
    assert ds.num_classes == 10 and ds.input_shape == (8, 8, 1)
    assert set(np.unique(ds.y)) == set(range(10))
    assert ds.x.min() == 0 and ds.x.max() == 16  # raw pixel values, not yet normalized
    assert ds.x_test is None and ds.source == "sklearn:digits"


@pytest.mark.parametrize(
    "shape",
    [(40, 7), (40, 12, 3), (40, 6, 5, 2)],
    ids=["tabular", "time-series", "images"],
)
def test_npz_of_each_rank_loads_with_its_shape(tmp_path, shape):
    x = RNG.normal(size=shape)  # float64 on disk
    y = np.arange(shape[0]) % 4
    ds = load_dataset(_save(tmp_path, "set.npz", x=x, y=y))
    assert ds.x.shape == shape and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x, x.astype(np.float32))
    np.testing.assert_array_equal(ds.y, y)
    assert ds.y.dtype == np.int64
    assert ds.input_shape == shape[1:]
    assert ds.labels == ["0", "1", "2", "3"]  # 0..max(y) without a labels array
    assert ds.name == "set" and ds.source == str(tmp_path / "set.npz")


def test_labels_array_is_used(tmp_path):
    # Only classes 0 and 1 occur, but the labels array declares three: it wins.
    path = _save(
        tmp_path, x=RNG.normal(size=(6, 2)), y=[0, 1, 0, 1, 0, 1], labels=["cat", "dog", "emu"]
    )
    ds = load_dataset(path)
    assert ds.labels == ["cat", "dog", "emu"]
    assert ds.num_classes == 3


def test_given_test_set_is_the_test_split(tmp_path):
    x, y = RNG.normal(size=(60, 4)), np.arange(60) % 3
    x_test, y_test = RNG.normal(size=(15, 4)), np.arange(15) % 3
    ds = load_dataset(_save(tmp_path, x=x, y=y, x_test=x_test, y_test=y_test))
    s = split_dataset(ds, seed=1, validation=0.2, test=0.3)
    np.testing.assert_array_equal(s.x_test, x_test.astype(np.float32))
    np.testing.assert_array_equal(s.y_test, y_test)
    # train + validation partition all of x; the test fraction is ignored
    assert len(s.y_train) + len(s.y_val) == 60
    assert s.counts == {"train": 48, "validation": 12, "test": 15}
    joined = np.concatenate([s.x_train, s.x_val])
    assert sorted(map(tuple, joined)) == sorted(map(tuple, x.astype(np.float32)))


# --- splitting ----------------------------------------------------------------------------

# Unbalanced classes: 300, 150 and 50 samples. Column 0 holds each row's id.
_COUNTS = (300, 150, 50)


def _id_dataset() -> Dataset:
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(len(_COUNTS)), _COUNTS)
    y = y[rng.permutation(len(y))]
    x = np.stack([np.arange(len(y)), rng.normal(size=len(y))], axis=1).astype(np.float32)
    return Dataset(name="ids", x=x, y=y.astype(np.int64), labels=["a", "b", "c"])


def _ids(x: np.ndarray) -> np.ndarray:
    return x[:, 0].astype(np.int64)


def test_split_partitions_the_rows():
    ds = _id_dataset()
    s = split_dataset(ds, seed=7, validation=0.2, test=0.25)
    parts = [_ids(s.x_train), _ids(s.x_val), _ids(s.x_test)]
    every = np.concatenate(parts)
    assert len(every) == len(np.unique(every)) == len(ds.y)  # disjoint
    np.testing.assert_array_equal(np.sort(every), np.arange(len(ds.y)))  # complete
    # labels travel with their rows
    for xs, ys in ((s.x_train, s.y_train), (s.x_val, s.y_val), (s.x_test, s.y_test)):
        np.testing.assert_array_equal(ys, ds.y[_ids(xs)])
    n = len(ds.y)
    assert s.counts == {"train": len(parts[0]), "validation": len(parts[1]), "test": len(parts[2])}
    assert abs(len(parts[2]) / n - 0.25) < 0.01
    assert abs(len(parts[1]) / n - 0.20) < 0.01


def test_split_is_stratified():
    ds = _id_dataset()
    s = split_dataset(ds, seed=7, validation=0.2, test=0.25)
    overall = np.bincount(ds.y) / len(ds.y)
    for ys in (s.y_train, s.y_val, s.y_test):
        share = np.bincount(ys, minlength=3) / len(ys)
        np.testing.assert_allclose(share, overall, atol=0.02)


def test_split_is_deterministic_per_seed():
    ds = _id_dataset()
    a = split_dataset(ds, seed=3, validation=0.2, test=0.25)
    b = split_dataset(_id_dataset(), seed=3, validation=0.2, test=0.25)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    c = split_dataset(ds, seed=4, validation=0.2, test=0.25)
    assert not np.array_equal(_ids(a.x_test), _ids(c.x_test))
    assert not np.array_equal(_ids(a.x_val), _ids(c.x_val))


def test_digits_split_is_stratified_and_complete():
    ds = load_dataset("sklearn:digits")
    s = split_dataset(ds, seed=1234, validation=0.15, test=0.2)
    assert sum(s.counts.values()) == 1797
    overall = np.bincount(ds.y) / len(ds.y)
    for ys in (s.y_train, s.y_val, s.y_test):
        np.testing.assert_allclose(np.bincount(ys, minlength=10) / len(ys), overall, atol=0.02)


def test_class_with_two_samples_cannot_be_split(tmp_path):
    y = np.array([0] * 10 + [1] * 10 + [2] * 2)
    path = _save(tmp_path, x=RNG.normal(size=(22, 3)), y=y, labels=["a", "b", "rare"])
    ds = load_dataset(path)
    with pytest.raises(DatasetError) as info:
        split_dataset(ds, seed=0, validation=0.2, test=0.2)
    msg = str(info.value)
    assert str(path) in msg
    assert "class 'rare' has only 2 sample(s)" in msg and "at least 3" in msg


@pytest.mark.parametrize("validation,test", [(0, 0.2), (0.5, 0.5), (0.2, -0.1), (1.0, 0)])
def test_bad_split_fractions(validation, test):
    with pytest.raises(DatasetError, match="bad split fractions"):
        split_dataset(_id_dataset(), seed=0, validation=validation, test=test)


# --- normalization ------------------------------------------------------------------------

_TABLE = np.array([[1, 10], [3, 30], [5, 20]], np.float32)  # two features, three rows


def test_standard_is_mean_and_population_std_per_feature():
    off, sc = normalize_stats(_TABLE, "standard")
    np.testing.assert_allclose(off, [3, 20])
    # var(1, 3, 5) = (4 + 0 + 4) / 3; var(10, 30, 20) = (100 + 100 + 0) / 3
    np.testing.assert_allclose(sc, [np.sqrt(8 / 3), np.sqrt(200 / 3)], rtol=1e-6)
    assert off.dtype == sc.dtype == np.float32


def test_minmax_maps_each_feature_onto_0_1():
    off, sc = normalize_stats(_TABLE, "minmax")
    np.testing.assert_allclose(off, [1, 10])
    np.testing.assert_allclose(sc, [4, 20])
    z = (_TABLE - off) / sc
    np.testing.assert_allclose(z.min(axis=0), [0, 0])
    np.testing.assert_allclose(z.max(axis=0), [1, 1])


def test_none_is_identity():
    off, sc = normalize_stats(_TABLE, "none")
    np.testing.assert_array_equal(off, [0, 0])
    np.testing.assert_array_equal(sc, [1, 1])


def test_stats_are_per_channel_on_the_last_axis():
    # (2, 2, 2): channel 0 holds 0, 1, 2, 3; channel 1 is constant 10.
    x = np.stack([np.arange(4).reshape(2, 2), np.full((2, 2), 10)], axis=-1).astype(np.float32)
    off, sc = normalize_stats(x, "minmax")
    np.testing.assert_allclose(off, [0, 10])
    np.testing.assert_allclose(sc, [3, 1])  # a constant channel gets scale 1, not 0
    off, sc = normalize_stats(x, "standard")
    np.testing.assert_allclose(off, [1.5, 10])
    np.testing.assert_allclose(sc, [np.sqrt(1.25), 1], rtol=1e-6)


def test_unknown_normalization():
    with pytest.raises(DatasetError, match="unknown normalization 'zscore'"):
        normalize_stats(_TABLE, "zscore")


# --- bad files ----------------------------------------------------------------------------


@pytest.mark.parametrize(("folder", "says"), [(False, "not found"), (True, "is a folder")])
def test_no_file_there(tmp_path, folder, says):
    path = tmp_path / "data.npz"
    if folder:
        path.mkdir()
    _fails(path, says)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(1).bytes(300))
    _fails(path, "not a .npz file")


def test_truncated_npz(tmp_path):
    path = _save(tmp_path, **_good())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _fails(path, "not a .npz file, or truncated")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    _fails(path, "not a .npz file")


def test_npy_instead_of_npz(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, RNG.normal(size=(5, 2)))
    _fails(path, "not a .npz file")


def test_corrupt_compressed_member(tmp_path):
    path = tmp_path / "c.npz"
    np.savez_compressed(path, x=RNG.normal(size=(200, 50)), y=np.arange(200) % 4)
    raw = bytearray(path.read_bytes())
    for i in range(200, 2000, 7):  # flip bits inside x's deflate stream
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    _fails(path, "not a readable .npz file")


def test_zip_members_that_are_not_arrays(tmp_path):
    path = tmp_path / "z.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x", "1,2,3")
        z.writestr("y", "0")
    _fails(path, "x, y are not .npy arrays")


@pytest.mark.parametrize("drop,found", [("x", "found: labels, y"), ("y", "found: labels, x")])
def test_missing_array_lists_found_ones(tmp_path, drop, found):
    arrays = {**_good(), "labels": ["a", "b", "c"]}
    del arrays[drop]
    _fails(_save(tmp_path, **arrays), f"missing array(s) {drop}", found)


def test_x_and_y_of_different_length(tmp_path):
    _fails(_save(tmp_path, x=np.zeros((10, 2)), y=np.arange(9) % 2), "x has 10 samples but y has 9")


def test_negative_label_names_its_index(tmp_path):
    y = np.arange(30) % 3
    y[4] = -1
    _fails(_save(tmp_path, x=np.zeros((30, 2)), y=y), "label -1 at y[4] is out of range 0..2")


def test_label_beyond_labels_array_names_its_index(tmp_path):
    y = np.arange(30) % 3
    y[7] = 3
    path = _save(tmp_path, x=np.zeros((30, 2)), y=y, labels=["a", "b", "c"])
    _fails(path, "label 3 at y[7] is out of range 0..2 (3 labels)")


def test_test_label_out_of_range(tmp_path):
    y_test = np.array([0, 1, 5, 2])
    path = _save(
        tmp_path, **_good(), x_test=np.zeros((4, 4)), y_test=y_test, labels=["a", "b", "c"]
    )
    _fails(path, "label 5 at y_test[2]")


def test_non_integer_float_labels(tmp_path):
    y = (np.arange(30) % 3).astype(np.float64)
    y[5] = 1.5
    _fails(_save(tmp_path, x=np.zeros((30, 2)), y=y), "y must hold integer class indices")


def test_integral_float_labels_are_accepted(tmp_path):
    ds = load_dataset(_save(tmp_path, x=np.zeros((6, 2)), y=np.array([0.0, 1.0, 2.0] * 2)))
    assert ds.y.dtype == np.int64 and ds.labels == ["0", "1", "2"]


def test_nan_in_x(tmp_path):
    arrays = _good()
    arrays["x"][3, 1] = np.nan
    _fails(_save(tmp_path, **arrays), "x contains NaN")


def test_x_test_of_another_sample_shape(tmp_path):
    path = _save(tmp_path, **_good(features=4), x_test=np.zeros((5, 5)), y_test=np.arange(5) % 3)
    _fails(path, "x_test samples have shape (5,) but x samples (4,)")


def test_x_test_without_y_test(tmp_path):
    _fails(
        _save(tmp_path, **_good(), x_test=np.zeros((5, 4))),
        "x_test and y_test must be given together",
    )


def test_y_with_two_axes(tmp_path):
    path = _save(tmp_path, x=np.zeros((30, 2)), y=(np.arange(30) % 3).reshape(30, 1))
    _fails(path, "y has shape (30, 1); expected one integer label per sample")


def test_object_x_is_a_dataset_error(tmp_path):
    # np.savez pickles object arrays; the loader refuses pickles (allow_pickle=False).
    x = np.array([[1, "a"], [2, "b"], [3, "c"]], dtype=object)
    _fails(_save(tmp_path, x=x, y=[0, 1, 0]), "Object arrays cannot be loaded")


def test_string_x_is_a_dataset_error(tmp_path):
    x = np.array([["1", "a"], ["2", "b"], ["3", "c"]])  # <U1 needs no pickle
    _fails(_save(tmp_path, x=x, y=[0, 1, 0]), "x has dtype <U1; expected numbers")
