"""The classical reference row: k-NN, logistic regression and DTW 1-NN on sets whose answer is
known, DTW against distances worked out by hand, and failures that become rows, not crashes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeladder.build import reference
from edgeladder.build.reference import dtw_distances, paa, reference_scores


def _rows(result: dict) -> dict[str, dict]:
    return {r["name"]: r for r in result["rows"]}


def _bump(t: int, start: int, height: float, width: int = 20) -> np.ndarray:
    """A half sine period of ``height`` over ``width`` steps from ``start``, zero elsewhere."""
    s = np.zeros(t, np.float32)
    s[start : start + width] = height * np.sin(np.pi * (np.arange(width) + 0.5) / width)
    return s


def _shifted_bumps(channels: int = 1):
    """Class 0: a tall bump, class 1: a low one. In train the tall bumps come early and the low
    ones late; in eval the other way round, 12 steps away (inside the 10 % band of 200 steps).

    Euclidean 1-NN matches by position and is always wrong; DTW warps the shift away and
    compares heights: always right."""
    t, early, late = 200, (88, 89, 90), (100, 101, 102)

    def make(tall_at, low_at):
        x = [_bump(t, p, 1.0) for p in tall_at] + [_bump(t, p, 0.5) for p in low_at]
        y = [0] * len(tall_at) + [1] * len(low_at)
        x = np.stack(x)[..., None].repeat(channels, axis=2)
        return x.astype(np.float32), np.array(y, np.int64)

    return (*make(early, late), *make(late, early))


@pytest.mark.parametrize("channels", [1, 3], ids=["univariate", "multivariate"])
def test_dtw_1nn_sees_through_a_shift_that_fools_euclidean_1nn(channels):
    result = reference_scores(*_shifted_bumps(channels), time_series=True)
    rows = _rows(result)
    assert list(rows) == ["1-NN euclidean", "5-NN euclidean", "logistic regression", "1-NN DTW"]
    assert rows["1-NN euclidean"]["accuracy"] == 0.0
    assert rows["1-NN DTW"]["accuracy"] == 1.0
    assert result["best"] == {"name": "1-NN DTW", "accuracy": 1.0}
    assert "band ±20 of 200 steps" in rows["1-NN DTW"]["note"]
    for r in rows.values():
        assert "error" not in r and r["seconds"] >= 0


def test_logistic_regression_separates_a_linearly_separable_table():
    rng = np.random.default_rng(0)
    w = rng.normal(size=8)

    def make(n):
        x = rng.normal(size=(n, 8)).astype(np.float32)
        score = x @ w
        keep = np.abs(score) > 0.5  # a margin around the separating plane
        return x[keep], (score[keep] > 0).astype(np.int64)

    result = reference_scores(*make(400), *make(200), time_series=False)
    rows = _rows(result)
    assert list(rows) == ["1-NN euclidean", "5-NN euclidean", "logistic regression"]
    assert rows["logistic regression"]["accuracy"] == 1.0
    assert rows["logistic regression"]["note"] is None  # converged
    assert result["best"]["accuracy"] == 1.0


def test_the_same_inputs_give_the_same_figures():
    data = _shifted_bumps()
    a, b = (reference_scores(*data, time_series=True) for _ in range(2))
    assert [r["accuracy"] for r in a["rows"]] == [r["accuracy"] for r in b["rows"]]


# --- DTW distances by hand --------------------------------------------------------------

# a = 0 1 2 3, b = 0 0 1 2. Euclidean: 0 + 1 + 1 + 1 = 3. DTW: a0~b0, a0~b1, a1~b2, a2~b3,
# a3~b3 costs 0 + 0 + 0 + 0 + 1 = 1 (the end a3~b3 costs 1 on any path): sqrt(1) = 1.
A = np.array([[0.0, 1.0, 2.0, 3.0]])
B = np.array([[0.0, 0.0, 1.0, 2.0]])


@pytest.mark.parametrize("backend", ["numpy", "dtaidistance"])
def test_dtw_matches_the_hand_computed_distance(backend):
    if backend == "dtaidistance":
        backend = reference.dtw_backend()[0]
        if backend == "numpy":
            pytest.skip("dtaidistance's C library is not available")
    d = dtw_distances(A[..., None], B[..., None], radius=1, backend=backend)
    assert d.shape == (1, 1) and d[0, 0] == pytest.approx(1.0)
    # radius 0: the diagonal only, which is the Euclidean distance
    d0 = dtw_distances(A[..., None], B[..., None], radius=0, backend=backend)
    assert d0[0, 0] == pytest.approx(math.sqrt(3))
    # two channels, each the same series: every cost doubles, sqrt(2)
    a2, b2 = np.stack([A, A], axis=2), np.stack([B, B], axis=2)
    assert dtw_distances(a2, b2, radius=1, backend=backend)[0, 0] == pytest.approx(math.sqrt(2))


def test_the_c_library_is_used_and_agrees_with_numpy():
    backend, why = reference.dtw_backend()
    assert backend == "c-omp", why  # dtaidistance is a dependency: its C code must load
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 30, 2)), rng.normal(size=(4, 30, 2))
    c = dtw_distances(a, b, radius=3, backend=backend)
    assert c.shape == (5, 4)
    np.testing.assert_allclose(c, dtw_distances(a, b, radius=3, backend="numpy"), rtol=1e-9)
    # the band matters: a wider one can only find shorter paths
    assert np.all(dtw_distances(a, b, radius=10) <= c + 1e-12)


# --- long series, failures ----------------------------------------------------------------


def test_paa_averages_nearly_equal_segments():
    x = np.arange(10, dtype=np.float64).reshape(1, 10, 1)
    np.testing.assert_allclose(paa(x, 5)[0, :, 0], [0.5, 2.5, 4.5, 6.5, 8.5])
    assert paa(x, 3).shape == (1, 3, 1)
    assert paa(x, 20) is x


def test_long_series_are_shortened_and_the_note_says_so(monkeypatch):
    monkeypatch.setattr(reference, "DTW_WORK_BUDGET", 1e5)
    x_tr, y_tr, x_ev, y_ev = _shifted_bumps()
    row = _rows(reference_scores(x_tr, y_tr, x_ev, y_ev, time_series=True))["1-NN DTW"]
    # 1e5 / (6 * 6 pairs) -> 52 steps
    assert "PAA 200→52 steps" in row["note"] and "band ±5 of 52 steps" in row["note"]
    assert row["accuracy"] == 1.0


def test_too_many_pairs_skip_the_row_with_a_note(monkeypatch):
    monkeypatch.setattr(reference, "DTW_WORK_BUDGET", 100.0)
    row = _rows(reference_scores(*_shifted_bumps(), time_series=True))["1-NN DTW"]
    assert row["accuracy"] is None and "skipped" in row["note"] and "error" not in row


def test_a_failing_reference_is_a_row_with_an_error_not_a_crash(monkeypatch):
    x_tr, y_tr, x_ev, y_ev = _shifted_bumps()

    def broken(*args):
        raise MemoryError("no room")

    monkeypatch.setattr(reference, "_dtw_1nn", broken)
    result = reference_scores(x_tr, y_tr, x_ev, y_ev, time_series=True)
    row = _rows(result)["1-NN DTW"]
    assert row["accuracy"] is None and row["error"] == "MemoryError: no room"
    assert result["best"]["name"] != "1-NN DTW"
    # shapes that do not match: every row fails, none crashes, no best
    bad = reference_scores(x_tr, y_tr, x_ev[:, :50], y_ev, time_series=True)
    assert all("error" in r for r in bad["rows"]) and bad["best"] is None


def test_progress_gets_one_step_and_one_advance_per_row():
    calls = []

    class Recorder:
        def step(self, description, total=None):
            calls.append(("step", description, total))

        def advance(self, n=1, **info):
            calls.append(("advance", n))

    reference_scores(*_shifted_bumps(), time_series=True, progress=Recorder())
    assert calls[0] == ("step", "classical reference", 4)
    assert calls[1:] == [("advance", 1)] * 4


def test_large_sets_are_drawn_down_and_the_note_says_so(monkeypatch):
    monkeypatch.setattr(reference, "MAX_TRAIN", 50)
    rng = np.random.default_rng(1)
    y = np.arange(300) % 3
    x = (y[:, None] + 0.1 * rng.standard_normal((300, 4))).astype(np.float32)
    out = reference.reference_scores(x, y, x[:30], y[:30], time_series=False)
    for row in out["rows"]:
        assert "fitted on 50 of 300 inputs (a stratified draw)" in row["note"]
        assert row["accuracy"] == 1.0
