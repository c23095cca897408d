"""Boards as data, hardware selection and the fit check (issue 4, items 1 and 4).

`select-hardware` must give the board of each rule, at the rules' boundaries too (10 ms,
5 MB, 10 W), and apply the fit checks (power budget, model size); `fit` must accept the
digits tiny tier on an ESP32 and reject a model too big for its heap, saying by how much.
"""

from __future__ import annotations

import functools
import json
import shutil
import tomllib
from pathlib import Path

import pytest
import tflite_models

from edgeladder.boards import registry as boards
from edgeladder.boards.fit import fit
from edgeladder.boards.select import HardwareError, select_hardware
from edgeladder.cli import main
from edgeladder.errors import ModelFileError

REPO = Path(__file__).resolve().parents[2]
DIGITS_TINY = REPO / "build" / "digits" / "tiny" / "digits_tiny.tflite"


def _run(capsys, *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what TensorFlow printed while building a model
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- boards ---------------------------------------------------------------------------------

# The hardware table we design from: power (W), TOPS, cost ($), role.
TABLE = {
    "esp32": (0.5, 1, 5, "device"),
    "rpi5": (5, 2, 80, "gateway"),
    "coral-usb": (2, 4, 60, "gateway"),
    "jetson-orin-nano": (15, 40, 500, "cloud"),
    "jetson-agx-orin": (60, 275, 2000, "cloud"),
}


def test_registry_loads_every_board_file():
    files = sorted(p.stem for p in boards.BOARDS_DIR.glob("*.toml"))
    assert sorted(boards.registry()) == files
    assert {"esp32", "esp32s3", "esp32c3", *TABLE} <= set(files)
    for name in files:
        board = boards.get(name)
        assert board.role in ("device", "gateway", "cloud"), name
        assert tomllib.loads((boards.BOARDS_DIR / f"{name}.toml").read_text())["name"] == name


@pytest.mark.parametrize("name", sorted(TABLE))
def test_board_figures_match_the_table(name):
    b = boards.get(name)
    assert (b.power_w, b.tops, b.cost_usd, b.role) == TABLE[name]


@pytest.mark.parametrize(
    ("name", "chip", "offset", "flash_mb", "arch"),
    [
        ("esp32", "esp32", 0x1000, 4, "xtensawin"),
        ("esp32s3", "esp32s3", 0x0, 8, "xtensawin"),
        ("esp32c3", "esp32c3", 0x0, 4, "rv32imc"),
    ],
)
def test_device_boards(name, chip, offset, flash_mb, arch):
    b = boards.get(name)
    assert (b.chip, b.flash_offset, b.flash_bytes, b.mpy_arch) == (
        chip,
        offset,
        flash_mb << 20,
        arch,
    )
    assert b.firmware_bytes + b.vfs_bytes + offset <= b.flash_bytes
    assert 0 < b.engine_heap_bytes < b.heap_bytes
    assert b.per_mac_ns > 0


def test_esp32_heap_and_the_psram_variant():
    assert boards.get("esp32").heap_bytes == 110_000
    assert boards.get("esp32s3").heap_bytes > 10 * boards.get("esp32").heap_bytes


def test_the_recipe_boards_exist():
    recipe = tomllib.loads((REPO / "models" / "digits" / "recipe.toml").read_text())
    for tier in recipe["tiers"].values():
        boards.get(tier["board"])


def test_a_device_board_file_without_its_figures_is_refused(tmp_path):
    text = (boards.BOARDS_DIR / "esp32.toml").read_text()
    (tmp_path / "esp32.toml").write_text(text.replace("per_mac_ns", "# per_mac_ns"))
    with pytest.raises(
        boards.BoardError, match=r"esp32.toml: a device board needs \['per_mac_ns'\]"
    ):
        boards.registry(tmp_path)


# --- select-hardware ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "board"),
    [
        # rule 1: latency < 10 ms -> Coral USB if the model is < 5 MB, else Orin Nano
        ({"latency_ms": 5, "model_size_mb": 2}, "coral-usb"),
        ({"latency_ms": 9.99, "model_size_mb": 4.99}, "coral-usb"),
        ({"latency_ms": 5, "model_size_mb": 5}, "jetson-orin-nano"),  # 5 MB is not < 5 MB
        ({"latency_ms": 10, "model_size_mb": 2}, "rpi5"),  # 10 ms is not < 10 ms: default
        ({"latency_ms": 10, "model_size_mb": 50}, "rpi5"),
        # rule order: latency decides before offline and streams
        ({"latency_ms": 5, "model_size_mb": 2, "offline": True, "streams": 8}, "coral-usb"),
        # rule 2: offline -> Pi 5 under 10 W, else Orin Nano
        ({"latency_ms": 50, "model_size_mb": 2, "offline": True, "power_w": 8}, "rpi5"),
        ({"latency_ms": 50, "model_size_mb": 2, "offline": True, "power_w": 9.9}, "rpi5"),
        ({"latency_ms": 50, "model_size_mb": 2, "offline": True}, "jetson-orin-nano"),
        (
            {"latency_ms": 50, "model_size_mb": 2, "offline": True, "power_w": 20},
            "jetson-orin-nano",
        ),
        # rule 3: several streams -> AGX Orin
        ({"latency_ms": 50, "model_size_mb": 2, "streams": 2}, "jetson-agx-orin"),
        ({"latency_ms": 50, "model_size_mb": 2, "streams": 16}, "jetson-agx-orin"),
        # rule 4: default -> Pi 5
        ({"latency_ms": 50, "model_size_mb": 2}, "rpi5"),
        ({"latency_ms": 50, "model_size_mb": 2, "streams": 1, "power_w": 6}, "rpi5"),
    ],
)
def test_each_rule_picks_its_board(kwargs, board):
    selection = select_hardware(**kwargs)
    assert selection.board == board, selection.reasons
    assert not any("excluded" in r for r in selection.reasons)


def test_the_reasons_explain_the_rule_and_the_board():
    s = select_hardware(latency_ms=10, model_size_mb=2)
    assert s.reasons[0] == (
        "rule 1 (latency < 10 ms) does not apply: latency 10 ms is not under 10 ms"
    )
    assert s.reasons[1] == "rule 2 (offline) does not apply: the tier is online"
    assert s.reasons[2] == "rule 3 (several streams) does not apply: one stream"
    assert s.reasons[3].startswith("rule 4 (default)")
    assert s.reasons[-1] == "Raspberry Pi 5 (gateway): 5 W; 2 TOPS; $80"


def test_a_power_budget_excludes_boards_over_it():
    # Offline at exactly 10 W: not under 10 W, so the rule names the Orin Nano, but it draws
    # 15 W; the AGX Orin draws 60 W; the Pi 5 (5 W) fits.
    s = select_hardware(latency_ms=50, model_size_mb=2, offline=True, power_w=10)
    assert s.board == "rpi5"
    assert "Jetson Orin Nano excluded: it draws 15 W, over the 10 W power budget" in s.reasons
    assert "Jetson AGX Orin excluded: it draws 60 W, over the 10 W power budget" in s.reasons
    assert s.reasons[-1] == "Raspberry Pi 5 (gateway): 5 W, within the 10 W budget; 2 TOPS; $80"
    # Many streams within 20 W: the Orin Nano instead of the AGX Orin.
    s = select_hardware(latency_ms=50, model_size_mb=2, streams=4, power_w=20)
    assert s.board == "jetson-orin-nano"
    assert any(r.startswith("Jetson AGX Orin excluded") for r in s.reasons)


def test_an_accessory_counts_its_host_power():
    s = select_hardware(latency_ms=5, model_size_mb=2, power_w=7)
    assert s.board == "coral-usb"
    assert "2 W + 5 W for its host Raspberry Pi 5 = 7 W" in s.reasons[-1]
    with pytest.raises(HardwareError, match="Coral USB Accelerator excluded: it draws 2 W \\+ 5 W"):
        select_hardware(latency_ms=5, model_size_mb=2, power_w=6.5)


def test_a_model_too_large_for_a_board_falls_back():
    s = select_hardware(latency_ms=50, model_size_mb=2000)
    assert s.board == "jetson-orin-nano"
    assert "Raspberry Pi 5 excluded: the model (2000 MB) is over the 1024 MB it takes" in s.reasons


def test_no_board_is_a_clear_error():
    with pytest.raises(HardwareError) as e:
        select_hardware(latency_ms=50, model_size_mb=2, offline=True, power_w=3)
    assert str(e.value).startswith("no board meets these needs: Raspberry Pi 5 excluded")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latency_ms": 0, "model_size_mb": 1},
        {"latency_ms": 5, "model_size_mb": -1},
        {"latency_ms": 5, "model_size_mb": 1, "power_w": 0},
        {"latency_ms": 5, "model_size_mb": 1, "streams": 0},
    ],
)
def test_invalid_needs(kwargs):
    with pytest.raises(HardwareError, match="must be"):
        select_hardware(**kwargs)


def test_select_hardware_cli_json(capsys):
    code, out, err = _run(
        capsys, "select-hardware", "--latency-ms", "5", "--model-size-mb", "2", "--json"
    )
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert set(data) == {"board", "reasons"}
    assert data["board"] == "coral-usb"
    assert data["reasons"] == select_hardware(5, 2).reasons


def test_select_hardware_cli_text_and_errors(capsys):
    code, out, _ = _run(capsys, "select-hardware", "--latency-ms", "50", "--model-size-mb", "2",
                        "--streams", "3")  # fmt: skip
    assert code == 0
    assert out.splitlines()[0] == "jetson-agx-orin"
    code, _, err = _run(capsys, "select-hardware", "--latency-ms", "50", "--model-size-mb", "2",
                        "--offline", "--power-w", "3")  # fmt: skip
    assert code == 1
    assert err.startswith("error: no board meets these needs") and err.count("\n") == 1
    code, _, err = _run(capsys, "select-hardware", "--latency-ms", "0", "--model-size-mb", "2")
    assert code == 2 and "--latency-ms" in err


# --- fit ------------------------------------------------------------------------------------


@functools.cache
def _tiny_tflite() -> Path:
    """The digits tiny tier when it is built; otherwise a small int8 MLP built with TF."""
    return DIGITS_TINY if DIGITS_TINY.exists() else tflite_models.mlp_int8()


@functools.cache
def _too_big_tflite() -> Path:
    """Dense 600 -> 256 -> 10, int8: about 156 KB of weights, more than an ESP32's heap."""
    tf = tflite_models._tf()
    tf.keras.utils.set_random_seed(7)
    model = tflite_models._mlp(tf, 600, 256, 10, "softmax")
    return tflite_models._convert(model, (600,), "too_big_for_esp32")


def test_fit_accepts_the_tiny_tier_on_an_esp32():
    from edgeladder.model.compiler import compile_model
    from edgeladder.model.tflite.reader import read_model
    from edgeladder.model.tflite.summary import summarize

    path = _tiny_tflite()
    report = fit(path, "esp32")
    compiled = compile_model(path)
    heap = report.budget("heap")
    assert report.fits and all(b.fits for b in report.budgets)
    assert report.model.compiled
    assert report.model.file_bytes == len(compiled.data)
    assert report.model.arena_bytes == compiled.arena_size
    assert report.model.macs == summarize(read_model(path))["total_macs"] > 0
    assert report.latency_ms == pytest.approx(report.model.macs * 300 / 1e6)
    parts = dict(heap.parts)
    assert parts["engine (ladder, imported)"] == boards.get("esp32").engine_heap_bytes
    assert parts["model file (read into RAM)"] == len(compiled.data)
    assert parts["arena"] == compiled.arena_size
    assert heap.needed == sum(parts.values()) and heap.available == 110_000
    assert heap.spare == 110_000 - heap.needed > 0
    assert set(report.fits_on) == {"esp32", "esp32s3", "esp32c3"}


def test_fit_reads_a_compiled_model_too(tmp_path):
    from edgeladder.model.compiler import compile_model

    ldr = tmp_path / "tiny.ldr"
    ldr.write_bytes(compile_model(_tiny_tflite()).data)
    from_ldr, from_tflite = fit(ldr, "esp32"), fit(_tiny_tflite(), "esp32")
    assert not from_ldr.model.compiled
    assert from_ldr.budgets == from_tflite.budgets
    assert from_ldr.model.macs == from_tflite.model.macs


def test_fit_rejects_a_model_too_big_for_the_esp32_heap(capsys):
    path = _too_big_tflite()
    report = fit(path, "esp32")
    heap = report.budget("heap")
    assert not report.fits and not heap.fits
    assert report.budget("filesystem").fits  # the file is fine: the heap is the limit
    assert heap.over_by == heap.needed - 110_000 > 50_000
    assert f"heap needs {heap.needed:,} bytes of 110,000: over by {heap.over_by:,} bytes" in (
        report.message
    )
    assert "esp32s3" in report.fits_on and "esp32" not in report.fits_on

    code, out, err = _run(capsys, "fit", path, "--board", "esp32", "--json")
    assert (code, err) == (1, f"error: {report.message}\n")
    assert f"over by {heap.over_by:,} bytes" in err and "esp32s3" in err
    data = json.loads(out)
    assert data["fits"] is False
    assert data["over_by"] == {"heap": heap.over_by}
    assert data["budgets"]["heap"]["needed"] == heap.needed
    assert data["message"] == report.message

    code, out, err = _run(capsys, "fit", path, "--board", "esp32")
    assert (code, err) == (1, f"error: {report.message}\n")
    assert f"OVER by {heap.over_by:,} bytes" in out  # the table prints either way
    assert out.splitlines()[-1] == f"fits: NO (heap over by {heap.over_by:,} bytes)"

    code, out, _ = _run(capsys, "fit", path, "--board", "esp32s3")
    assert code == 0 and "fits: yes" in out


def test_fit_cli_exit_zero_when_it_fits(capsys):
    code, out, err = _run(capsys, "fit", _tiny_tflite(), "--board", "esp32")
    assert (code, err) == (0, "")
    assert "fits: yes" in out and "latency (estimate)" in out
    code, out, _ = _run(capsys, "fit", _tiny_tflite(), "--board", "esp32", "--json")
    data = json.loads(out)
    assert code == 0 and data["fits"] is True and data["over_by"] == {}
    assert set(data["budgets"]) == {"heap", "flash", "filesystem"}


def test_fit_unknown_board_lists_the_known_ones(capsys):
    code, out, err = _run(capsys, "fit", _tiny_tflite(), "--board", "esp64")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert err.startswith("error: unknown board 'esp64'; known boards: ")
    for name in boards.registry():
        assert name in err


def test_fit_on_a_gateway_board_is_an_error(capsys):
    code, _, err = _run(capsys, "fit", _tiny_tflite(), "--board", "rpi5")
    assert code == 1
    assert err == (
        "error: rpi5 is a gateway board, which runs the .tflite with LiteRT;"
        " fit checks a device board: esp32, esp32c3, esp32s3\n"
    )


def test_fit_corrupt_or_missing_model(capsys, tmp_path):
    from edgeladder.model.compiler import compile_model

    data = bytearray(compile_model(_tiny_tflite()).data)
    data[-1] ^= 0xFF
    bad = tmp_path / "bad.ldr"
    bad.write_bytes(data)
    with pytest.raises(ModelFileError, match="sha256 mismatch"):
        fit(bad, "esp32")
    code, _, err = _run(capsys, "fit", bad, "--board", "esp32")
    assert code == 1 and err.count("\n") == 1 and str(bad) in err

    junk = tmp_path / "junk.tflite"
    shutil.copy(_tiny_tflite(), junk)
    junk.write_bytes(junk.read_bytes()[:100])
    code, _, err = _run(capsys, "fit", junk, "--board", "esp32")
    assert code == 1 and err.count("\n") == 1 and str(junk) in err

    missing = tmp_path / "missing.tflite"
    code, _, err = _run(capsys, "fit", missing, "--board", "esp32")
    assert (code, err) == (1, f"error: {missing}: not found\n")


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda d: b"XXXX" + d[4:], "bad magic"),  # was "not a TFLite model"
        (lambda d: d[:52] + bytes([d[52] ^ 0x40]) + d[53:], "sha256 mismatch"),  # arena size
        (lambda d: d[:-100], "truncated"),
        (lambda d: d[:30], "too short"),
    ],
)
def test_fit_on_a_corrupt_ldr_says_what_is_wrong(capsys, tmp_path, corrupt, reason):
    from edgeladder.model.compiler import compile_model

    bad = tmp_path / "tiny.ldr"
    bad.write_bytes(corrupt(compile_model(_tiny_tflite()).data))
    code, out, err = _run(capsys, "fit", bad, "--board", "esp32")
    assert (code, out) == (1, "") and err.count("\n") == 1, err
    assert err.startswith(f"error: {bad}: corrupt or invalid board model (.ldr)"), err
    assert reason in err and "TFLite" not in err and "does NOT fit" not in err
