"""What the build chooses and why: the student it ships, the folds it cross-fits, the tiers it
flags, the board tier it shapes to fit, the default tiers it scales to the data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import synthetic

from edgeladder.build import shaping
from edgeladder.build.pipeline import rank_tiers, requantize, select_candidate, stratified_folds
from edgeladder.build.recipe import default_recipe, load_recipe
from edgeladder.cli import main
from edgeladder.errors import BuildError

# ---- choosing a form ----------------------------------------------------------------------


def test_the_better_form_on_validation_ships():
    kind, why = select_candidate(
        {"distilled": 0.475, "baseline": 0.925}, {"distilled": 9, "baseline": 9}, "distilled"
    )
    assert kind == "baseline" and "92.50%" in why and "47.50%" in why


def test_a_tie_goes_to_the_smaller_then_to_the_preferred_form():
    acc = {"distilled": 0.9, "baseline": 0.9}
    assert select_candidate(acc, {"distilled": 10, "baseline": 8}, "distilled")[0] == "baseline"
    assert select_candidate(acc, {"distilled": 8, "baseline": 8}, "distilled")[0] == "distilled"
    assert "tie" in select_candidate(acc, {"distilled": 8, "baseline": 8}, "distilled")[1]


def test_folds_partition_the_inputs_and_keep_the_class_shares():
    y = np.array([0] * 23 + [1] * 11 + [2] * 6)
    folds = stratified_folds(y, 5, seed=3)
    every = np.sort(np.concatenate(folds))
    assert len(folds) == 5 and np.array_equal(every, np.arange(len(y)))
    for f in folds:
        counts = np.bincount(y[f], minlength=3)
        assert np.all(np.abs(counts - np.bincount(y) / 5) <= 1)
    # a class of 3 allows at most 3 folds, each with one of it
    assert len(stratified_folds(np.array([0] * 10 + [1] * 3), 5, seed=0)) == 3


def test_requantize_keeps_the_real_value():
    q = np.array([[-128, 0, 127]], np.int8)
    # scale 0.1 zp 0 -> reals -12.8, 0, 12.7; to scale 0.2 zp -10 -> -74, -10, 53.5->54 (even: 54)
    out = requantize(q, 0.1, 0, (0.2, -10))
    assert out.tolist() == [[-74, -10, 54]]
    assert requantize(q, 1.0, 0, (0.01, 0)).tolist() == [[-128, 0, 127]]  # clipped


def test_a_bigger_tier_worse_than_a_smaller_one_is_flagged_and_so_is_the_reference():
    report = {
        "tiers": {
            "tiny": {"val_accuracy_int8": 0.9, "accuracy_int8": 0.88, "params": 100},
            "medium": {"val_accuracy_int8": 0.8, "accuracy_int8": 0.85, "params": 1000},
            "large": {"val_accuracy_int8": 0.95, "accuracy_int8": 0.9, "params": 9000},
        },
        "reference": {"best": {"name": "1-NN DTW", "accuracy": 0.93}},
    }
    ranking, flags = rank_tiers(report)
    assert [r["tier"] for r in ranking] == ["large", "tiny", "medium"]
    assert any(f.startswith("medium is worse on validation than the smaller tiny") for f in flags)
    assert not any(f.startswith("large") for f in flags)
    assert any("below the classical reference" in f and "1-NN DTW" in f for f in flags)
    assert report["reference"]["best_tier"] == {"tier": "large", "reaches_reference": False}
    report["reference"]["best"]["accuracy"] = 0.9000000001  # the same count of right answers
    assert not any("reference" in f for f in rank_tiers(report)[1])


# ---- default tiers scaled to the data --------------------------------------------------------


def test_long_series_are_averaged_down_per_tier(tmp_path):
    r = default_recipe(tmp_path / "x.npz", 2, input_shape=(1460, 1), samples=100)
    ds = {t.name: t.arch_params.get("downsample", 1) for t in r.tiers}
    assert ds == {"tiny": 23, "medium": 12, "large": 6}  # 1460 -> at most 64, 128, 256 steps
    assert all(t.epochs == 200 and t.batch_size == 8 for t in r.tiers)
    short = default_recipe(tmp_path / "x.npz", 2, input_shape=(24, 1), samples=5000)
    assert all("downsample" not in t.arch_params for t in short.tiers)
    assert all(t.epochs == 60 for t in short.tiers)


def test_a_default_board_tier_is_reshaped_until_it_fits(tmp_path):
    x = np.random.default_rng(0).standard_normal((40, 3000, 4)).astype(np.float32)
    r = default_recipe(tmp_path / "x.npz", 2, input_shape=x.shape[1:], samples=40)
    tiny = r.tiers[0]
    tiny.arch_params.update(downsample=1, filters=[64, 128])  # far over the ESP32's budgets
    assert shaping._problems(shaping.measure(tiny, x, 5, "t"))
    done = shaping.fit_board_tier(tiny, x, 5, reshape=True, task="t")
    assert done and done["reshaped"]
    after = shaping.measure(tiny, x, 5, "t")
    assert after.fits and after.latency_ms <= shaping.BOARD_BUDGET_MS


def test_a_recipe_board_tier_that_does_not_fit_is_refused(tmp_path, capsys):
    data = synthetic.time_series(tmp_path / "d.npz", n=60, t=2000, c=2)
    task = tmp_path / "task"
    task.mkdir()
    (task / "recipe.toml").write_text(
        f'[data]\nsource = "{data}"\n'
        '[tiers.tiny]\narch = "conv1d"\nfilters = [64, 64]\nboard = "esp32"\n'
        '[tiers.large]\narch = "conv1d"\nfilters = [8]\nboard = "rpi5"\nteacher = true\n'
    )
    out = tmp_path / "out"
    assert main(["build", str(task), "--out", str(out), "--epochs", "1"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "tier 'tiny'" in err[0] and "does not fit esp32" in err[0]
    assert not out.exists()
    with pytest.raises(BuildError):
        shaping.fit_board_tier(
            load_recipe(task).tiers[0],
            np.zeros((4, 2000, 2), np.float32),
            3,
            reshape=False,
            task="t",
        )


# ---- cross-fitting a small dataset, end to end --------------------------------------------


@pytest.mark.slow
def test_a_small_dataset_is_cross_fitted_and_calibrated_out_of_fold(tmp_path, capsys):
    from edgeladder.policy.calibrate import scores

    data = synthetic.time_series(tmp_path / "d.npz", n=120, t=24, c=2)
    out = tmp_path / "out"
    assert (
        main(["build", "--dataset", str(data), "--out", str(out), "--epochs", "15", "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    pooled = report["split"]["train"] + report["split"]["validation"]
    assert report["crossfit"] == {"folds": 5, "inputs": pooled, "file": "crossfit.npz"}
    for name, t in report["tiers"].items():
        assert t["validation"].startswith("out-of-fold")
        # no shipped form is worse out of fold than another form of the same tier
        assert all(
            t["val_accuracy_int8"] >= c["val_accuracy_int8"] - 1e-6
            for c in t["candidates"].values()
        ), name
    info = scores.load_build(out)
    assert scores.default_split(info) == "oof"
    stages, y = scores.score_split(info, ["tiny", "medium", "large"], "oof")
    assert len(y) == pooled and all(len(s.logits) == pooled for s in stages)
    # the stored out-of-fold answers are the ones the report's accuracy counts
    acc = float(np.mean(stages[0].predictions == y))
    assert acc == pytest.approx(report["tiers"]["tiny"]["val_accuracy_int8"])
    assert main(["calibrate", str(out), "--json", "--no-plot", "--best-effort"]) == 0
    cal = json.loads(capsys.readouterr().out)
    assert cal["split"] == "oof" and cal["inputs"] == pooled
    assert "held" in cal["chosen"]["guarantee"] and "test" in cal


def test_a_narrow_image_is_averaged_no_further_than_its_short_side(tmp_path):
    from edgeladder.build.architectures import build_model

    r = default_recipe(tmp_path / "x.npz", 3, input_shape=(400, 5, 1), samples=100)
    for t in r.tiers:
        assert t.arch_params["downsample"] <= 5
        build_model(t.arch, (400, 5, 1), 3, t.arch_params)  # builds: the window fits
