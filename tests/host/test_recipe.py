"""Recipes: the digits recipe as written, [train] defaults and tier overrides, default tiers
by input rank, relative dataset paths, and an error naming the file for every bad recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeladder.build.recipe import default_recipe, load_recipe
from edgeladder.errors import EdgeladderError, RecipeError

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"

# A small valid recipe; tests append to it or replace parts of it.
_BASE = """\
task = "t"
[data]
source = "sklearn:digits"
[tiers.small]
arch = "dense"
board = "esp32"
[tiers.big]
arch = "conv2d"
board = "rpi5"
"""


def _training(t) -> tuple:
    return (t.epochs, t.batch_size, t.learning_rate, t.patience, t.augment)


def _write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "task"
    folder.mkdir(exist_ok=True)
    (folder / "recipe.toml").write_text(text)
    return folder


def _fails(path: Path, *fragments: str, file: Path | None = None) -> str:
    """Load ``path``; assert an EdgeladderError naming the recipe file and each fragment."""
    with pytest.raises(EdgeladderError) as info:
        load_recipe(path)
    msg = str(info.value)
    file = file or (path / "recipe.toml" if path.is_dir() else path)
    assert str(file) in msg, f"{file} not in {msg!r}"
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


# --- the digits recipe --------------------------------------------------------------------


def test_digits_recipe():
    r = load_recipe(DIGITS)
    assert r.task == "digits" and r.source == "sklearn:digits"
    assert (r.seed, r.validation, r.test, r.normalize) == (1234, 0.15, 0.20, "minmax")
    assert [t.name for t in r.tiers] == ["tiny", "medium", "large"]
    assert r.teacher.name == "large"
    assert [t.name for t in r.students] == ["tiny", "medium"]
    assert [t.board for t in r.tiers] == ["esp32", "rpi5", "jetson-orin-nano"]
    assert [t.arch for t in r.tiers] == ["dense", "conv2d", "conv2d"]
    assert (r.alpha, r.temperature) == (0.7, 3.0)
    tiny, medium, large = r.tiers
    assert medium.prune is not None
    assert (medium.prune.sparsity, medium.prune.epochs) == (0.5, 15)
    assert tiny.prune is None and large.prune is None
    assert tiny.arch_params == {"units": [64]}
    assert medium.arch_params == {"filters": [16, 32], "dense": [64], "dropout": 0.2}
    assert r.path == str(DIGITS / "recipe.toml")


def test_tier_overrides_beat_train_defaults():
    tiny, medium, large = load_recipe(DIGITS).tiers
    # [train]: epochs 80, batch 32, lr 0.003, patience 15, no augmentation
    assert _training(tiny) == (80, 32, 0.003, 15, None)
    # medium overrides only augment
    assert _training(medium) == (80, 32, 0.003, 15, "shift")
    # the teacher overrides epochs, patience and augment and keeps the rest
    assert _training(large) == (150, 32, 0.003, 25, "shift")


def test_folder_and_file_give_the_same_recipe():
    assert load_recipe(DIGITS).fingerprint() == load_recipe(DIGITS / "recipe.toml").fingerprint()


def test_builtin_defaults_and_last_tier_teaches(tmp_path):
    r = load_recipe(_write(tmp_path, _BASE))  # no [train], [distill], no teacher marked
    small, big = r.tiers
    assert _training(small) == _training(big) == (60, 32, 0.003, 12, None)
    assert r.teacher is big and not small.teacher
    assert (r.alpha, r.temperature, r.seed, r.normalize) == (0.7, 3.0, 0, "standard")


# --- default tiers by input rank ----------------------------------------------------------


@pytest.mark.parametrize("rank,arch", [(1, "dense"), (2, "conv1d"), (3, "conv2d")])
def test_default_recipe_picks_arch_by_rank(tmp_path, rank, arch):
    source = tmp_path / "sensors.npz"
    r = default_recipe(source, rank, seed=9)
    assert [t.name for t in r.tiers] == ["tiny", "medium", "large"]
    assert {t.arch for t in r.tiers} == {arch}
    assert [t.board for t in r.tiers] == ["esp32", "rpi5", "jetson-orin-nano"]
    assert r.teacher.name == "large"
    assert r.task == "sensors" and r.seed == 9
    assert r.source == str(source.resolve())


def test_default_recipe_refuses_rank_4(tmp_path):
    source = tmp_path / "video.npz"
    with pytest.raises(RecipeError) as info:
        default_recipe(source, 4)
    msg = str(info.value)
    assert str(source) in msg and "rank 4" in msg and "recipe.toml" in msg


# --- the dataset path ---------------------------------------------------------------------


def test_relative_npz_source_resolves_against_the_recipe(tmp_path, monkeypatch):
    folder = _write(tmp_path, _BASE.replace("sklearn:digits", "data/set.npz"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not relative to the working directory
    assert load_recipe(folder).source == str((folder / "data" / "set.npz").resolve())
    _write(tmp_path, _BASE.replace("sklearn:digits", "../shared.npz"))
    assert load_recipe(folder).source == str((tmp_path / "shared.npz").resolve())


def test_absolute_source_is_kept(tmp_path):
    target = tmp_path / "abs" / "set.npz"
    folder = _write(tmp_path, _BASE.replace("sklearn:digits", target.as_posix()))
    assert load_recipe(folder).source == target.as_posix()


# --- bad recipes --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    _fails(tmp_path / "missing.toml", "recipe not found")


def test_folder_without_recipe(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    _fails(folder, "recipe not found; expected recipe.toml in the folder")


def test_toml_syntax_error(tmp_path):
    _fails(_write(tmp_path, _BASE + "epochs = = 3\n"), "cannot parse recipe", "line 10")


def test_unknown_arch_lists_known_ones(tmp_path):
    folder = _write(tmp_path, _BASE.replace('"conv2d"', '"transformer"'))
    _fails(folder, "tier 'big'", "unknown arch 'transformer'", "conv1d, conv2d, dense")


def test_unknown_board_lists_known_boards(tmp_path):
    folder = _write(tmp_path, _BASE.replace('"rpi5"', '"arduino-uno"'))
    from edgeladder.boards import registry as boards

    _fails(folder, "unknown board 'arduino-uno'", ", ".join(sorted(boards.registry())))


def test_two_teachers(tmp_path):
    text = _BASE.replace('board = "esp32"', 'board = "esp32"\nteacher = true')
    text = text.replace('board = "rpi5"', 'board = "rpi5"\nteacher = true')
    _fails(_write(tmp_path, text), "only one tier can be the teacher", "'small', 'big'")


@pytest.mark.parametrize("alpha", [1.5, -0.1])
def test_alpha_out_of_range(tmp_path, alpha):
    folder = _write(tmp_path, _BASE + f"[distill]\nalpha = {alpha}\n")
    _fails(folder, f"alpha must be in [0, 1], got {alpha}")


def test_temperature_must_be_positive(tmp_path):
    _fails(_write(tmp_path, _BASE + "[distill]\ntemperature = 0\n"), "temperature must be > 0")


@pytest.mark.parametrize("sparsity", [1.5, 0, 1])
def test_prune_sparsity_out_of_range(tmp_path, sparsity):
    text = _BASE.replace('board = "rpi5"', f'board = "rpi5"\nprune = {{ sparsity = {sparsity} }}')
    _fails(_write(tmp_path, text), "tier 'big': prune.sparsity must be between 0 and 1")


def test_unknown_prune_key(tmp_path):
    text = _BASE.replace('board = "rpi5"', 'board = "rpi5"\nprune = { sparsity = 0.5, rate = 2 }')
    _fails(_write(tmp_path, text), "invalid recipe", "rate")


def test_unknown_train_key(tmp_path):
    folder = _write(tmp_path, _BASE + "[train]\nepoch = 5\n")
    _fails(folder, "[train] has unknown keys ['epoch']", "'epochs'")


def test_missing_data_source(tmp_path):
    _fails(_write(tmp_path, _BASE.replace('source = "sklearn:digits"', "")), "needs a source")


def test_no_tiers(tmp_path):
    _fails(_write(tmp_path, 'task = "t"\n[data]\nsource = "sklearn:digits"\n'), "no [tiers.*]")


def test_tier_without_arch(tmp_path):
    _fails(_write(tmp_path, _BASE.replace('arch = "dense"\n', "")), "tier 'small' needs an arch")


def test_wrong_value_type(tmp_path):
    _fails(_write(tmp_path, _BASE + '[train]\nepochs = "many"\n'), "invalid recipe")


def test_prune_max_loss_defaults_to_one_point_and_is_checked(tmp_path):
    text = _BASE.replace('board = "rpi5"', 'board = "rpi5"\nprune = { sparsity = 0.5 }')
    assert load_recipe(_write(tmp_path, text)).tiers[1].prune.max_loss == 0.01
    bad = _BASE.replace(
        'board = "rpi5"', 'board = "rpi5"\nprune = { sparsity = 0.5, max_loss = 2 }'
    )
    _fails(_write(tmp_path, bad), "prune.max_loss must be in [0, 1)")


@pytest.mark.parametrize(
    ("value", "mode"), [('"auto"', "auto"), ("true", "on"), ("false", "off"), ('"on"', "on")]
)
def test_crossfit_modes(tmp_path, value, mode):
    text = _BASE.replace(
        'source = "sklearn:digits"', f'source = "sklearn:digits"\ncrossfit = {value}'
    )
    assert load_recipe(_write(tmp_path, text)).crossfit == mode


def test_crossfit_rejects_other_values_and_bad_folds(tmp_path):
    bad = _BASE.replace('source = "sklearn:digits"', 'source = "sklearn:digits"\ncrossfit = "yes"')
    _fails(_write(tmp_path, bad), "crossfit must be auto, on or off")
    folds = _BASE.replace('source = "sklearn:digits"', 'source = "sklearn:digits"\nfolds = 1')
    _fails(_write(tmp_path, folds), "folds must be 2..20")
