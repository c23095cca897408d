"""The "oof" split of a cross-fitted build: crossfit.npz's scores as stored, or one clear error.

A synthetic crossfit.npz in a copy of the digits build stands in for what a cross-fitted
`edgeladder build` writes: every pooled train+val row once, in a shuffled order, 5 folds, random
int8 logits and outputs per tier.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeladder import cli
from edgeladder.model.litert import Int8Runner
from edgeladder.policy.calibrate import Options, calibrate, scores
from edgeladder.policy.calibrate.errors import CalibrationError

TIERS = ["tiny", "medium", "large"]
FOLDS = 5


@pytest.fixture(scope="module")
def plain(digits_build, tmp_path_factory):
    out = tmp_path_factory.mktemp("crossfit") / "plain"
    shutil.copytree(digits_build.out, out, ignore=shutil.ignore_patterns("*.keras", "c"))
    # its own ladder.json: the shared build has one only once something has calibrated it
    calibrate(out, Options(plot=False, test_report=False))
    return out


def _arrays(plain) -> dict[str, np.ndarray]:
    info = scores.load_build(plain)
    s = scores._split(info)  # the pooled labels, train then val, as the build pools them
    pooled_y = np.concatenate([s.y_train, s.y_val]).astype(np.int64)
    rng = np.random.default_rng(7)
    index = rng.permutation(len(pooled_y)).astype(np.int64)
    n, c = len(index), info.classes
    arrays = {"y": pooled_y[index], "index": index, "fold": (np.arange(n) % FOLDS).astype(np.int64)}
    for t in TIERS:
        arrays[f"{t}_logits"] = rng.integers(-128, 128, (n, c)).astype(np.int8)
        arrays[f"{t}_outputs"] = rng.integers(-128, 128, (n, c)).astype(np.int8)
    return arrays


def _crossfit(plain, dest, arrays=None, meta=None):
    """A copy of the plain build, cross-fitted: report.json's key and crossfit.npz."""
    shutil.copytree(plain, dest)
    arrays = _arrays(plain) if arrays is None else arrays
    report = json.loads((dest / "report.json").read_text())
    n = len(arrays["y"])
    report["crossfit"] = meta or {"folds": FOLDS, "inputs": n, "file": "crossfit.npz"}
    (dest / "report.json").write_text(json.dumps(report))
    np.savez(dest / "crossfit.npz", **arrays)
    return dest, arrays


@pytest.fixture(scope="module")
def crossfitted(plain, tmp_path_factory):
    return _crossfit(plain, tmp_path_factory.mktemp("crossfit") / "digits")


def test_default_split(plain, crossfitted):
    assert scores.default_split(scores.load_build(plain)) == "val"
    assert scores.default_split(scores.load_build(crossfitted[0])) == "oof"
    assert "oof" in scores.CALIBRATION_SPLITS and "oof" in scores.SPLITS
    assert "test" not in scores.CALIBRATION_SPLITS


def test_oof_scores_come_back_as_stored(crossfitted):
    build, arrays = crossfitted
    info = scores.load_build(build)
    got, y = scores.score_split(info, TIERS, "oof")
    assert np.array_equal(y, arrays["y"]) and y.dtype == np.int64
    for st in got:
        assert st.runtime == scores.CROSSFIT_RUNTIME == "LiteRT (out-of-fold models)"
        assert np.array_equal(st.logits, arrays[f"{st.name}_logits"]) and st.logits.dtype == np.int8
        assert np.array_equal(st.outputs, arrays[f"{st.name}_outputs"])
        assert np.array_equal(st.predictions, np.argmax(arrays[f"{st.name}_outputs"], axis=1))
        # the deployed model's quantization: its .tflite's, as score_tier reads it
        path = build / info.task["tiers"][st.name]["tflite"]
        runner = Int8Runner.from_bytes(path.read_bytes(), str(path))
        assert st.tflite == info.task["tiers"][st.name]["tflite"]
        assert (st.logit_scale, st.logit_zero_point) == (
            runner.logits_scale,
            runner.logits_zero_point,
        )
        assert st.input_scale == runner.input_scale
        assert st.input_zero_point == runner.input_zero_point
    # a subset of the tiers, in the order asked
    got, _ = scores.score_split(info, ["large", "tiny"], "oof")
    assert [s.name for s in got] == ["large", "tiny"]


def test_oof_inputs_are_the_pooled_rows_at_the_index(plain, crossfitted):
    build, arrays = crossfitted
    x, y = scores.split_inputs(scores.load_build(build), "oof")
    assert np.array_equal(y, arrays["y"]) and len(x) == len(y)
    # the first pooled row (train[0]) sits where index == 0
    s = scores._split(scores.load_build(plain))
    norm = json.loads((build / "task.json").read_text())["normalize"]
    first = (s.x_train[0] - np.float32(norm["offset"][0])) / np.float32(norm["scale"][0])
    assert np.allclose(x[int(np.flatnonzero(arrays["index"] == 0)[0])], first)


def test_oof_labels_that_disagree_with_the_dataset(plain, tmp_path):
    arrays = _arrays(plain)
    arrays["y"][0] = (arrays["y"][0] + 1) % 10
    build = _broken(plain, tmp_path, y=arrays["y"])
    scores.score_split(scores.load_build(build), TIERS, "oof")  # the scores need no dataset
    with pytest.raises(CalibrationError, match="labels disagree with the dataset's"):
        scores.split_inputs(scores.load_build(build), "oof")


def test_a_cross_fitted_build_refuses_its_in_sample_splits(crossfitted):
    info = scores.load_build(crossfitted[0])
    for split in ("val", "train+val"):
        with pytest.raises(CalibrationError, match=r"fitted.*in-sample; use --split oof") as e:
            scores.score_split(info, TIERS, split)
        assert "\n" not in str(e.value)
    got, y = scores.score_split(info, ["tiny"], "test")  # test is held out either way
    assert got[0].runtime != scores.CROSSFIT_RUNTIME and len(y) == info.report["split"]["test"]


def test_a_plain_build_has_no_oof(plain):
    with pytest.raises(CalibrationError, match=r"not cross-fitted.*use --split val") as e:
        scores.score_split(scores.load_build(plain), TIERS, "oof")
    assert str(e.value).startswith(str(plain)) and "\n" not in str(e.value)


def _broken(plain, tmp_path, **change):
    arrays = _arrays(plain)
    meta = change.pop("meta", None)
    for k, v in change.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    return _crossfit(plain, tmp_path / "digits", arrays, meta)[0]


def _error(build) -> str:
    with pytest.raises(CalibrationError) as e:
        scores.score_split(scores.load_build(build), TIERS, "oof")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(build / "crossfit.npz") + ": ")
    return msg


def test_a_missing_crossfit_file(plain, tmp_path):
    build = _broken(plain, tmp_path)
    (build / "crossfit.npz").unlink()
    assert "missing" in _error(build) and "rebuild" in _error(build)


def test_a_corrupt_crossfit_file(plain, tmp_path):
    build = _broken(plain, tmp_path)
    data = (build / "crossfit.npz").read_bytes()
    (build / "crossfit.npz").write_bytes(data[: len(data) // 2])  # cut short
    assert "unreadable" in _error(build)
    (build / "crossfit.npz").write_bytes(b"not an archive\n" * 10)
    assert "unreadable: not an .npz archive" in _error(build)
    flipped = bytearray(data)
    flipped[200] ^= 0xFF  # inside y's data, the first member: its CRC fails
    (build / "crossfit.npz").write_bytes(bytes(flipped))
    assert "Bad CRC-32 for file 'y.npy'" in _error(build)


def test_a_crossfit_file_without_a_tier(plain, tmp_path):
    build = _broken(plain, tmp_path, medium_logits=None)
    assert "no medium_logits in it" in _error(build)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda a: {"large_outputs": a["large_outputs"][:-1]}, "large_outputs is int8 (1437, 10)"),
        (lambda a: {"tiny_logits": a["tiny_logits"][:, :9]}, "expected int8 (1438, 10)"),
        (lambda a: {"tiny_logits": a["tiny_logits"].astype(np.int16)}, "tiny_logits is int16"),
        (lambda a: {"fold": a["fold"][:-1]}, "fold is int64 (1437,)"),
        (lambda a: {"y": a["y"].astype(np.float32)}, "y is float32"),
        (lambda a: {"fold": a["fold"] + 1}, "fold numbers 1..5 outside 0..4"),
        (lambda a: {"index": np.zeros_like(a["index"])}, "index repeats rows"),
        (lambda a: {"index": a["index"] + 1}, "outside train+val's 0..1437"),
        (lambda a: {"y": a["y"] + 5}, "labels 5..14 outside 0..9"),
    ],
)
def test_a_crossfit_file_with_bad_shapes(plain, tmp_path, change, says):
    build = _broken(plain, tmp_path, **change(_arrays(plain)))
    assert says in _error(build)


def test_report_and_file_disagree(plain, tmp_path):
    build = _broken(plain, tmp_path, meta={"folds": FOLDS, "inputs": 100})
    assert "1438 inputs, report.json's crossfit says 100" in _error(build)


def test_the_cli_refuses_val_on_a_cross_fitted_build(crossfitted, capsys):
    build = crossfitted[0]
    rc = cli.main(["evaluate", str(build), "--split", "val", "--ladder", str(build / "none.json")])
    _, err = capsys.readouterr()
    assert rc == 1 and err.count("\n") == 1 and "no ladder to evaluate" in err
    rc = cli.main(["evaluate", str(build), "--split", "val"])
    _, err = capsys.readouterr()
    assert rc == 1 and err.count("\n") == 1 and "use --split oof" in err


def test_evaluate_on_oof_is_reported_as_not_held_out(crossfitted, capsys):
    build = crossfitted[0]
    rc = cli.main(["evaluate", str(build), "--split", "oof", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(out)
    assert report["split"] == "oof" and not report["held_out"]
    assert report["inputs"] == 1438
    assert set(report["runtimes"].values()) == {scores.CROSSFIT_RUNTIME}
