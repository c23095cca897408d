"""Task recipes: ``models/<task>/recipe.toml`` declares the dataset, the tiers and how to train.

Without a recipe, :func:`default_recipe` picks three tiers from the input rank (dense for
tabular, 1-D convolutions for time series, 2-D convolutions for images).
"""

from __future__ import annotations

import inspect
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeladder.boards import registry as boards
from edgeladder.errors import RecipeError

RECIPE_FILE = "recipe.toml"
DEFAULT_TEST = 0.2  # the test fraction of a dataset without x_test, unless the recipe says
CROSSFIT_BELOW = 500  # "auto": cross-fit when train + validation hold fewer inputs than this
_CROSSFIT = {"auto": "auto", "on": "on", "off": "off", True: "on", False: "off"}
_TRAIN_KEYS = {"epochs", "batch_size", "learning_rate", "patience", "augment"}
_TIER_KEYS = _TRAIN_KEYS | {"arch", "board", "teacher", "distill", "prune"}


@dataclass
class PruneSpec:
    sparsity: float
    epochs: int = 10
    # the most int8 validation accuracy pruning may cost; beyond it the unpruned model ships
    max_loss: float = 0.01


@dataclass
class TierSpec:
    name: str
    arch: str
    arch_params: dict[str, Any]
    board: str
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    augment: str | None = None
    teacher: bool = False
    distill: bool = True
    prune: PruneSpec | None = None


@dataclass
class Recipe:
    task: str
    source: str
    seed: int
    validation: float
    test: float
    normalize: str
    alpha: float
    temperature: float
    tiers: list[TierSpec]
    path: str = ""
    golden_count: int = 8
    # k-fold cross-fitting: "auto" (below CROSSFIT_BELOW train+validation inputs), "on", "off"
    crossfit: str = "auto"
    folds: int = 5
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def teacher(self) -> TierSpec:
        return next(t for t in self.tiers if t.teacher)

    @property
    def students(self) -> list[TierSpec]:
        return [t for t in self.tiers if not t.teacher]

    def fingerprint(self) -> str:
        """Canonical JSON of everything that affects the build (not the recipe's path)."""
        d = asdict(self)
        d.pop("path")
        return json.dumps(d, sort_keys=True)


def load_recipe(path: str | Path) -> Recipe:
    """Read ``path`` (a task folder or its ``recipe.toml``) into a validated :class:`Recipe`."""
    path = Path(path)
    file = path / RECIPE_FILE if path.is_dir() else path
    if not file.exists():
        hint = f"; expected {RECIPE_FILE} in the folder" if path.is_dir() else ""
        raise RecipeError(f"recipe not found{hint}", file)
    try:
        raw = tomllib.loads(file.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise RecipeError(f"cannot parse recipe: {e}", file) from e
    try:
        recipe = _from_dict(raw, file)
    except (KeyError, TypeError, ValueError) as e:
        raise RecipeError(f"invalid recipe: {e}", file) from e
    return recipe


def _from_dict(raw: dict[str, Any], file: Path) -> Recipe:
    def fail(msg: str):
        raise RecipeError(msg, file)

    data = raw.get("data", {})
    if "source" not in data:
        fail("[data] needs a source (a registered name like sklearn:digits or a .npz path)")
    source = str(data["source"])
    if ":" not in source and not Path(source).is_absolute():
        source = str((file.parent / source).resolve())
    train = {**_DEFAULT_TRAIN, **raw.get("train", {})}
    unknown = set(train) - _TRAIN_KEYS
    if unknown:
        fail(f"[train] has unknown keys {sorted(unknown)}; known: {sorted(_TRAIN_KEYS)}")
    tiers_raw = raw.get("tiers", {})
    if not tiers_raw:
        fail("no [tiers.*] tables; declare at least a teacher and one student")
    tiers = [_tier(name, t, train, fail) for name, t in tiers_raw.items()]
    distill = raw.get("distill", {})
    return _finish(
        Recipe(
            task=str(raw.get("task", file.parent.name)),
            source=source,
            seed=int(data.get("seed", 0)),
            validation=float(data.get("validation", 0.15)),
            test=float(data.get("test", DEFAULT_TEST)),
            normalize=str(data.get("normalize", "standard")),
            alpha=float(distill.get("alpha", 0.7)),
            temperature=float(distill.get("temperature", 3.0)),
            golden_count=int(raw.get("golden_count", 8)),
            crossfit=_crossfit_mode(data.get("crossfit", "auto"), fail),
            folds=int(data.get("folds", 5)),
            tiers=tiers,
            path=str(file),
        ),
        fail,
    )


_DEFAULT_TRAIN = {
    "epochs": 60,
    "batch_size": 32,
    "learning_rate": 0.003,
    "patience": 12,
    "augment": "",
}


def _crossfit_mode(value: Any, fail) -> str:
    mode = _CROSSFIT.get(value) if isinstance(value, bool | str) else None
    if mode is None:
        fail(f"[data] crossfit must be auto, on or off (or true/false), got {value!r}")
    return mode


def _tier(name: str, t: dict[str, Any], train: dict[str, Any], fail) -> TierSpec:
    from edgeladder.build.architectures import ARCHITECTURES

    if "arch" not in t:
        fail(f"tier {name!r} needs an arch (one of {', '.join(sorted(ARCHITECTURES))})")
    if t["arch"] not in ARCHITECTURES:
        fail(
            f"tier {name!r}: unknown arch {t['arch']!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        )
    params = {k: v for k, v in t.items() if k not in _TIER_KEYS}
    accepted = _arch_parameters(ARCHITECTURES[t["arch"]])
    unknown = sorted(set(params) - accepted)
    if unknown:
        fail(
            f"tier {name!r}: unknown key(s) {unknown} for arch {t['arch']!r}; it takes"
            f" {sorted(accepted)} and the tier keys {sorted(_TIER_KEYS)}"
        )
    board = str(t.get("board", ""))
    if board:
        try:
            boards.get(board)
        except boards.BoardError as e:  # it lists the known boards; add the tier and the file
            fail(f"tier {name!r}: {e}")
    prune = t.get("prune")
    if prune is not None:
        prune = PruneSpec(**prune)
        if not 0 < prune.sparsity < 1:
            fail(f"tier {name!r}: prune.sparsity must be between 0 and 1")
        if not 0 <= prune.max_loss < 1:
            fail(f"tier {name!r}: prune.max_loss must be in [0, 1), a share of accuracy")
    merged = {k: t.get(k, train[k]) for k in _TRAIN_KEYS}
    return TierSpec(
        name=name,
        arch=t["arch"],
        arch_params=params,
        board=board,
        epochs=int(merged["epochs"]),
        batch_size=int(merged["batch_size"]),
        learning_rate=float(merged["learning_rate"]),
        patience=int(merged["patience"]),
        augment=merged["augment"] or None,
        teacher=bool(t.get("teacher", False)),
        distill=bool(t.get("distill", True)),
        prune=prune,
    )


def _arch_parameters(builder) -> set[str]:
    """The keyword parameters an architecture builder accepts (after shape and classes)."""
    sig = inspect.signature(builder)
    return {n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}


def _finish(r: Recipe, fail) -> Recipe:
    teachers = [t.name for t in r.tiers if t.teacher]
    if len(teachers) > 1:
        fail(f"only one tier can be the teacher; found {teachers}")
    if not teachers:
        r.tiers[-1].teacher = True  # the last (largest) tier teaches by default
    if not 0 <= r.alpha <= 1:
        fail(f"[distill] alpha must be in [0, 1], got {r.alpha}")
    if r.temperature <= 0:
        fail(f"[distill] temperature must be > 0, got {r.temperature}")
    if not 2 <= r.folds <= 20:
        fail(f"[data] folds must be 2..20, got {r.folds}")
    return r


def crossfits(recipe: Recipe, pooled_inputs: int) -> bool:
    """Whether ``recipe`` trains with k-fold cross-fitting on ``pooled_inputs`` inputs."""
    if recipe.crossfit == "auto":
        return pooled_inputs < CROSSFIT_BELOW
    return recipe.crossfit == "on"


# Default tiers by input rank (sample shape without the batch axis): the architecture that
# fits the data, at three sizes. `default_recipe` then scales them to the data (docs/recipes.md):
# long inputs are averaged down first, small datasets get smaller batches, more epochs and more
# dropout; the build then checks the board tier against its board (`fit_board_tier`).
_DEFAULT_TIERS: dict[int, dict[str, dict[str, Any]]] = {
    1: {
        "tiny": {"arch": "dense", "units": [16], "board": "esp32"},
        "medium": {"arch": "dense", "units": [64, 32], "board": "rpi5"},
        "large": {
            "arch": "dense",
            "units": [256, 128],
            "dropout": 0.2,
            "board": "jetson-orin-nano",
        },
    },
    2: {
        "tiny": {"arch": "conv1d", "filters": [8, 16], "dense": [], "board": "esp32"},
        "medium": {"arch": "conv1d", "filters": [16, 32], "dense": [32], "board": "rpi5"},
        "large": {
            "arch": "conv1d",
            "filters": [32, 64, 64],
            "dense": [64],
            "dropout": 0.2,
            "board": "jetson-orin-nano",
        },
    },
    3: {
        "tiny": {"arch": "conv2d", "filters": [8], "dense": [], "board": "esp32"},
        "medium": {"arch": "conv2d", "filters": [16, 32], "dense": [64], "board": "rpi5"},
        "large": {
            "arch": "conv2d",
            "filters": [32, 64],
            "dense": [128],
            "dropout": 0.3,
            "board": "jetson-orin-nano",
        },
    },
}

# The longest side (steps of a series, pixels of an image) each default tier convolves over;
# a longer input is averaged down by the smallest whole factor that brings it within.
_MAX_SIDE = {
    2: {"tiny": 64, "medium": 128, "large": 256},
    3: {"tiny": 16, "medium": 24, "large": 32},
}
SMALL_DATA = 500  # below this many train + validation inputs, the small-data rules apply


def _scaled(tiers: dict[str, dict[str, Any]], rank: int, shape, samples: int | None) -> None:
    """Scale the default tiers to the input's size and the number of samples, in place."""
    if shape is not None and rank in _MAX_SIDE:
        side = max(int(v) for v in shape[:-1])
        narrow = min(int(v) for v in shape[:-1])  # the pooling window must fit every axis
        for name, t in tiers.items():
            factor = min(narrow, -(-side // _MAX_SIDE[rank][name]))  # ceil
            if factor > 1:
                t["downsample"] = factor
    if samples is not None and samples < SMALL_DATA:
        # Few inputs: several updates per epoch, a patient early stop, more dropout off the
        # board (the tiny tier has too few weights to overfit much).
        for name, t in tiers.items():
            t["batch_size"] = max(8, min(32, samples // 16))
            t["epochs"] = 200
            t["patience"] = 30
            if name != "tiny":
                t["dropout"] = max(float(t.get("dropout", 0.0)), 0.3)


def default_recipe(
    source: str | Path,
    input_rank: int,
    *,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
    samples: int | None = None,
) -> Recipe:
    """Three tiers chosen from the input rank, for a dataset that has no recipe; scaled to
    ``input_shape`` and to ``samples`` (train + validation inputs) when they are given."""
    if input_rank not in _DEFAULT_TIERS:
        raise RecipeError(
            f"no default tiers for samples of rank {input_rank}; expected (F,), (T, C) or"
            " (H, W, C) — write a recipe.toml for this dataset",
            source,
        )
    tiers = {k: dict(v) for k, v in _DEFAULT_TIERS[input_rank].items()}
    _scaled(tiers, input_rank, input_shape, samples)
    tiers["large"]["teacher"] = True
    raw = {
        "task": Path(str(source)).stem,
        "data": {"source": str(Path(source).resolve()), "seed": seed, "normalize": "standard"},
        "tiers": tiers,
    }
    recipe = _from_dict(raw, Path(str(source)))
    recipe.extra["default"] = True  # the build may reshape a default board tier to fit
    return recipe
