"""The model pipeline end to end: the real digits build, and builds without a recipe."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import synthetic

from edgeladder.build.pipeline import build
from edgeladder.build.recipe import load_recipe
from edgeladder.cli import main
from edgeladder.model.litert import Int8Runner
from edgeladder.model.tflite.reader import read_model

pytestmark = pytest.mark.slow


# ---- the digits build: the figures the foundation promises -------------------------------


def test_digits_report_meets_the_bar(digits_build):
    tiers = digits_build.report["tiers"]
    assert list(tiers) == ["tiny", "medium", "large"]
    for name, t in tiers.items():
        assert abs(t["accuracy_float"] - t["accuracy_int8"]) <= 0.01, name
        for key in ("accuracy_float", "accuracy_int8", "baseline_accuracy_int8"):
            assert 0.0 <= t[key] <= 1.0
    assert tiers["large"]["accuracy_int8"] >= 0.98
    assert tiers["tiny"]["tflite_bytes"] <= 16 * 1024
    assert tiers["tiny"]["macs"] <= 20_000
    acc = {n: t["accuracy_int8"] for n, t in tiers.items()}
    assert acc["tiny"] < acc["medium"] and acc["tiny"] < acc["large"]
    # the report ranks the tiers by validation accuracy and flags what a user must see
    ranked = [r["val_accuracy_int8"] for r in digits_build.report["ranking"]]
    assert ranked == sorted(ranked, reverse=True)
    ref = digits_build.report["reference"]
    assert {r["name"] for r in ref["rows"]} >= {"1-NN euclidean", "logistic regression"}
    reaches = ref["best_tier"]["reaches_reference"]
    assert reaches == (max(acc.values()) >= round(ref["best"]["accuracy"], 6) - 1e-9)
    assert reaches != any("classical reference" in f for f in digits_build.report["flags"])


def test_digits_report_matches_the_artifacts(digits_build):
    out, report = digits_build.out, digits_build.report
    assert json.loads((out / "report.json").read_text()) == report
    for name, t in report["tiers"].items():
        tfl = (out / t["files"]["tflite"]).read_bytes()
        assert len(tfl) == t["tflite_bytes"]
        assert hashlib.sha256(tfl).hexdigest() == t["tflite_sha256"]
        assert len(gzip.compress(tfl, 9, mtime=0)) == t["gzip_bytes"]
        model = read_model(tfl)
        assert model.input_tensors()[0].dtype == "INT8", name
        assert model.output_tensors()[0].dtype == "INT8", name
        # Weights per channel: one scale per output channel of every FC/conv weight tensor.
        for op in model.ops:
            if op.op_name in ("FULLY_CONNECTED", "CONV_2D"):
                w = model.tensors[op.inputs[1]]
                assert len(w.scales) == w.shape[0] > 1, (name, op.index)


def test_golden_vectors_are_what_litert_answers(digits_build):
    out = digits_build.out
    for name, t in digits_build.report["tiers"].items():
        golden = json.loads((out / t["files"]["golden"]).read_text())
        runner = Int8Runner.from_bytes((out / t["files"]["tflite"]).read_bytes(), name)
        x = np.array(golden["inputs"], dtype=np.int8).reshape(-1, *golden["input_shape"])
        assert len(x) >= 4
        assert np.array_equal(runner.run_int8(x).reshape(len(x), -1), golden["outputs"])


def test_c_arrays_compile_and_round_trip(digits_build, tmp_path):
    out = digits_build.out
    for name, t in digits_build.report["tiers"].items():
        header, source = out / t["files"]["c_header"], out / t["files"]["c_source"]
        symbol = header.stem
        main_c = tmp_path / f"{name}_main.c"
        main_c.write_text(
            f'#include <stdio.h>\n#include "{header.name}"\n'
            "int main(int argc, char **argv) {\n"
            "  (void)argc;\n"
            '  FILE *f = fopen(argv[1], "wb");\n'
            f"  size_t n = fwrite({symbol}, 1, {symbol}_len, f);\n"
            "  fclose(f);\n"
            f"  return n == {symbol}_len ? 0 : 1;\n}}\n"
        )
        exe = tmp_path / name
        flags = ["-std=c11", "-Wall", "-Wextra", "-Werror"]
        subprocess.run(["gcc", *flags, "-c", str(source), "-o", str(tmp_path / "m.o")], check=True)
        subprocess.run(
            ["gcc", *flags, f"-I{header.parent}", str(main_c), str(source), "-o", str(exe)],
            check=True,
        )
        back = tmp_path / f"{name}.bin"
        subprocess.run([str(exe), str(back)], check=True)
        assert back.read_bytes() == (out / t["files"]["tflite"]).read_bytes(), name


def test_distillation_and_pruning_are_reported_honestly(digits_build):
    tiers = digits_build.report["tiers"]
    assert tiers["large"]["distilled"] is False and tiers["large"]["selected"] == "trained"
    for name in ("tiny", "medium"):
        t = tiers[name]
        cands = t["candidates"]
        assert set(cands) == {"distilled", "baseline"}
        # the form that ships is the better one on validation, never the worse
        best = max(c["val_accuracy_int8"] for c in cands.values())
        assert cands[t["selected"]]["val_accuracy_int8"] == best, name
        assert t["distilled"] == (t["selected"] == "distilled")
        assert t["validation"] == "validation split"
    p = tiers["medium"]["pruning"]
    assert p["target_sparsity"] == 0.5 and p["max_loss"] == 0.01
    lost = p["val_accuracy_int8_unpruned"] - p["val_accuracy_int8_pruned"]
    assert p["kept"] == (lost <= p["max_loss"] + 1e-9)
    assert p["macs_skipped"] == 0
    # Sparsity is read from the int8 weights that ship, not from the float model.
    if p["kept"]:
        assert tiers["medium"]["sparsity"] >= 0.5
        assert tiers["medium"]["gzip_bytes"] < p["unpruned_gzip_bytes"]
    else:
        assert tiers["medium"]["sparsity"] < 0.5
        assert tiers["medium"]["gzip_bytes"] == p["unpruned_gzip_bytes"]
    assert tiers["tiny"]["pruning"] is None


def test_second_build_reuses_the_artifacts(digits_build):
    again = build(load_recipe(Path("models/digits")), digits_build.out)
    assert again.reused
    assert again.report == digits_build.report
    assert again.seconds < 60


# ---- builds from a bare .npz: the tiers follow the input rank ------------------------------


def _ops(path: Path) -> set[str]:
    return {op.op_name for op in read_model(path).ops}


@pytest.mark.parametrize(
    ("make", "has_conv"),
    [(synthetic.time_series, True), (synthetic.tabular, False)],
    ids=["time-series", "tabular"],
)
def test_build_from_npz_without_recipe(tmp_path, capsys, make, has_conv):
    data = make(tmp_path / "data.npz")
    out = tmp_path / "out"
    code = main(["build", "--dataset", str(data), "--out", str(out), "--epochs", "20", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((out / "report.json").read_text())
    assert set(report["tiers"]) == {"tiny", "medium", "large"}
    for t in report["tiers"].values():
        assert (out / t["files"]["tflite"]).exists()
        assert (out / t["files"]["c_source"]).exists()
        assert ("CONV_2D" in _ops(out / t["files"]["tflite"])) == has_conv
        assert t["accuracy_int8"] > 0.5  # well above chance (1/3) after 20 epochs
    task = json.loads((out / "task.json").read_text())
    assert (
        len(task["normalize"]["scale"])
        == read_model(out / report["tiers"]["tiny"]["files"]["tflite"]).input_tensors()[0].shape[-1]
    )


def test_failed_build_leaves_nothing(tmp_path, capsys):
    data = synthetic.tabular(tmp_path / "data.npz")
    recipe = tmp_path / "task" / "recipe.toml"
    recipe.parent.mkdir()
    recipe.write_text(
        f'[data]\nsource = "{data}"\n'
        '[tiers.small]\narch = "dense"\nunits = [8]\n'
        '[tiers.big]\narch = "dense"\nunits = [16]\nteacher = true\nbogus = 3\n'
    )
    out = tmp_path / "out"
    assert main(["build", str(recipe.parent), "--out", str(out), "--epochs", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bogus" in err[0]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_board_tiers_get_the_compiled_form(digits_build):
    from ladder import mformat

    for name, t in digits_build.report["tiers"].items():
        on_board = t["board"] == "esp32"
        assert ("compiled" in t["files"]) == on_board, name
        if on_board:
            data = (digits_build.out / t["files"]["compiled"]).read_bytes()
            header = mformat.read_header(data)
            assert len(data) == t["compiled_bytes"]
            assert header.arena_size == t["arena_bytes"]
