"""Per-stage int8 logits and outputs of a build's tiers on one split of its dataset.

The split is made exactly as the build made it (edgeladder.build.recipe and
edgeladder.build.dataset with the seed the build used) and normalized with the build's own
statistics from ``task.json``, then
quantized with each model's input parameters, and run by what will run that stage: a tier that
runs on a board is scored by the board's own engine (``ladder.Model`` on the MicroPython VM, the
simulator's ``micropython``), a host tier by LiteRT's reference kernels as ``edgeladder serve``
runs it. The two differ: LiteRT rounds FULLY_CONNECTED once where TFLite Micro and the board
round twice, so a logit can be one code apart, and a threshold chosen on LiteRT's numbers could
put an input on the other side on the board. Without the simulator installed, board tiers fall
back to LiteRT and say so (``StageScores.runtime``).

A cross-fitted build (``report.json`` has ``"crossfit"``; small datasets) deploys models trained
on train+val, so their scores there are in-sample. Its calibration split is ``"oof"``: the
out-of-fold logits and outputs the build stored in ``crossfit.npz``, already requantized to the
deployed model's logits quantization, so the deployed ``.tflite``'s scale and zero point apply.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeladder.policy.calibrate.errors import CalibrationError

# "val": the default. "train+val": more samples, but the tiers were fitted on the train part,
# so their confidence there is optimistic (documented in docs/calibration.md). "oof": the
# out-of-fold scores of a cross-fitted build (its only calibration split: its deployed models
# were trained on train+val). "test" is for evaluation only: `edgeladder calibrate` refuses
# it, `edgeladder evaluate` and the demo report test accuracy.
CALIBRATION_SPLITS = ("val", "train+val", "oof")
SPLITS = (*CALIBRATION_SPLITS, "test")
IN_SAMPLE_WHEN_CROSSFIT = ("val", "train+val")  # refused for a cross-fitted build
CROSSFIT_RUNTIME = "LiteRT (out-of-fold models)"


@dataclass
class BuildInfo:
    build_dir: Path
    task: dict  # task.json
    report: dict  # report.json (the seed and split sizes the build used)

    @property
    def name(self) -> str:
        return str(self.task.get("task", self.build_dir.name))

    @property
    def classes(self) -> int:
        return len(self.task.get("labels", []))

    @property
    def crossfit(self) -> dict | None:
        """report.json's ``"crossfit"`` (folds, inputs, file) if the build was cross-fitted."""
        cf = self.report.get("crossfit")
        return cf if isinstance(cf, dict) and cf else None


@dataclass
class StageScores:
    """One tier's int8 outputs and logits (the input of its final SOFTMAX) on N inputs."""

    name: str
    tflite: str  # relative to the build folder
    logits: np.ndarray  # (N, C) int8
    outputs: np.ndarray  # (N, C) int8
    logit_scale: float
    logit_zero_point: int
    input_scale: float
    input_zero_point: int
    # what computed the numbers: "LiteRT", "board engine" or CROSSFIT_RUNTIME
    runtime: str = "LiteRT"

    @property
    def predictions(self) -> np.ndarray:
        # the board's answer: top-1 of the int8 output, ties to the lower index (np.argmax)
        return np.argmax(self.outputs, axis=1)


def find_build(arg: str | Path) -> Path:
    """A build folder from ``arg``: a build folder, a task folder (recipe.toml) or a task name."""
    p = Path(arg)
    if (p / "task.json").is_file():
        return p
    if (p / "recipe.toml").is_file():
        from edgeladder.build.recipe import load_recipe

        name = load_recipe(p).task
        hint = f"run `edgeladder build {p}` first"
    else:
        name, hint = p.name, "run `edgeladder build models/<task>` first, or give its build folder"
    b = Path("build") / name
    if (b / "task.json").is_file():
        return b
    is_task = (p / "recipe.toml").is_file()
    if not is_task and (p.exists() or len(p.parts) != 1):
        # a path the user gave: name that one, not build/<its name>/ (which they never gave)
        what = "no such folder" if not p.exists() else "not a folder"
        if p.is_dir():
            what = "neither a build (no task.json) nor a task (no recipe.toml)"
        raise CalibrationError(
            f"{what}: give a build folder (`edgeladder build TASK_FOLDER` writes "
            "build/<task>/) or a task folder with recipe.toml",
            p,
        )
    raise CalibrationError(f"no build of {name!r} (looked for {b}/task.json): {hint}")


def load_build(build_dir: str | Path) -> BuildInfo:
    build_dir = Path(build_dir)
    docs = {}
    for name in ("task.json", "report.json"):
        f = build_dir / name
        try:
            docs[name] = json.loads(f.read_text())
        except FileNotFoundError as e:
            raise CalibrationError("missing: the build is incomplete; rebuild the task", f) from e
        except (OSError, ValueError) as e:
            raise CalibrationError(f"unreadable ({e}): rebuild the task", f) from e
    return BuildInfo(build_dir, docs["task.json"], docs["report.json"])


def _recipe(info: BuildInfo):
    from edgeladder.build.recipe import default_recipe, load_recipe
    from edgeladder.errors import EdgeladderError

    src = str(info.task.get("recipe", ""))
    try:
        if src.endswith(".toml"):
            recipe = load_recipe(src)
        else:  # built with --dataset: the default recipe of that file
            recipe = default_recipe(src, len(info.task.get("input_shape", [])))
    except EdgeladderError as e:
        raise CalibrationError(
            f"cannot remake the build's data split ({e}); rebuild the task", info.build_dir
        ) from e
    if "seed" in info.report:
        recipe.seed = int(info.report["seed"])  # `build --seed` overrides the recipe's
    return recipe


def default_split(info: BuildInfo) -> str:
    """The split to calibrate on: "oof" for a cross-fitted build, else "val"."""
    return "oof" if info.crossfit else "val"


def check_split(info: BuildInfo, split: str) -> None:
    """Refuse a split unknown, or one the build's deployed models were trained on."""
    if split not in SPLITS:
        raise CalibrationError(f"unknown split {split!r}; use {' or '.join(SPLITS)}")
    if split == "oof" and not info.crossfit:
        raise CalibrationError(
            "this build was not cross-fitted: no out-of-fold scores; use --split val",
            info.build_dir,
        )
    if split in IN_SAMPLE_WHEN_CROSSFIT and info.crossfit:
        raise CalibrationError(
            f"this build was cross-fitted: its deployed models were trained on train+val, so"
            f" their scores on {split!r} are in-sample; use --split oof (the out-of-fold scores)",
            info.build_dir,
        )


def _split(info: BuildInfo):
    from edgeladder.build.dataset import load_dataset, split_dataset

    recipe = _recipe(info)
    s = split_dataset(
        load_dataset(recipe.source),
        seed=recipe.seed,
        validation=recipe.validation,
        test=recipe.test,
    )
    want = info.report.get("split")
    if want and want != s.counts:
        raise CalibrationError(
            f"the recipe now splits the data {s.counts}, the build used {want}: rebuild the task",
            info.build_dir,
        )
    return s


def split_inputs(info: BuildInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalized float inputs and labels of ``split``, as the build split and normalized them.

    "oof": the pooled train+val rows in crossfit.npz's order (its ``index``)."""
    check_split(info, split)
    s = _split(info)
    if split == "val":
        x, y = s.x_val, s.y_val
    elif split == "test":
        x, y = s.x_test, s.y_test
    else:
        x, y = np.concatenate([s.x_train, s.x_val]), np.concatenate([s.y_train, s.y_val])
        if split == "oof":
            cf = load_crossfit(info, [])
            if cf.index.max(initial=-1) >= len(y):
                raise CalibrationError(
                    f"index up to {cf.index.max()}, train+val has {len(y)} rows: rebuild the task",
                    cf.path,
                )
            x, y = x[cf.index], y[cf.index]
            if not np.array_equal(y, cf.y):
                raise CalibrationError(
                    "its labels disagree with the dataset's at its index: rebuild the task",
                    cf.path,
                )
    norm = info.task.get("normalize") or {}
    offset = np.asarray(norm.get("offset", [0.0]), dtype=np.float32)
    scale = np.asarray(norm.get("scale", [1.0]), dtype=np.float32)
    return ((x - offset) / scale).astype(np.float32), np.asarray(y, dtype=np.int64)


def _runner(info: BuildInfo, tier: str):
    """(the tier's .tflite relative to the build, its LiteRT runner)."""
    from edgeladder.model.litert import Int8Runner

    tiers = info.task.get("tiers", {})
    if tier not in tiers:
        raise CalibrationError(f"the build has no tier {tier!r}", info.build_dir / "task.json")
    rel = tiers[tier]["tflite"]
    path = info.build_dir / rel
    try:
        return rel, Int8Runner.from_bytes(path.read_bytes(), str(path))
    except FileNotFoundError as e:
        raise CalibrationError("missing: rebuild the task", path) from e


def score_tier(info: BuildInfo, tier: str, x: np.ndarray) -> StageScores:
    """Run tier ``tier`` of the build on normalized inputs ``x``: its logits and outputs."""
    from edgeladder.errors import ModelFileError

    rel, runner = _runner(info, tier)
    try:
        outputs, logits = runner.run_int8_logits(runner.quantize_input(x))
    except ModelFileError as e:
        raise CalibrationError(f"{e}; the gate needs the logits", info.build_dir / rel) from e
    runtime = "LiteRT"
    ldr = _board_model(info, tier)
    if ldr is not None and _have_micropython():
        outputs, logits = board_engine_scores(ldr, runner.quantize_input(x))
        runtime = "board engine"
    return StageScores(
        name=tier,
        tflite=rel,
        logits=logits.astype(np.int8),
        outputs=outputs.astype(np.int8),
        logit_scale=runner.logits_scale,
        logit_zero_point=runner.logits_zero_point,
        input_scale=runner.input_scale,
        input_zero_point=runner.input_zero_point,
        runtime=runtime,
    )


def _board_model(info: BuildInfo, tier: str) -> Path | None:
    """The tier's compiled board model if the tier runs on a device board, else None."""
    rel = ((info.report.get("tiers", {}).get(tier) or {}).get("files") or {}).get("compiled")
    return info.build_dir / rel if rel and (info.build_dir / rel).is_file() else None


def _have_micropython() -> bool:
    try:
        from edgeladder.device.micropython import find_micropython
    except ImportError:
        return False
    try:
        find_micropython()
    except Exception:  # the simulator is installed but its VM is not: LiteRT it is
        return False
    return True


# Reads every input, invokes, writes the logits view and the output: one process per tier.
_ENGINE_SCRIPT = """\
from ladder import Model
m = Model.load({model!r})
lg = m.logits()
out = m.output.data
inp = m.input.data
buf = bytearray(len(inp))
with open({inputs!r}, "rb") as fi, open({outputs!r}, "wb") as fo:
    while fi.readinto(buf) == len(buf):
        inp[:] = buf
        m.invoke()
        fo.write(lg)
        fo.write(out)
"""


def board_engine_scores(ldr: Path, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 outputs, int8 logits) of the board engine on int8 inputs, under ``micropython``."""
    import tempfile

    from edgeladder.boards import registry as boards
    from edgeladder.device.micropython import FIRMWARE_DIR, run_micropython
    from edgeladder.device.mpycross import compile_tree

    xq = np.ascontiguousarray(xq, np.int8).reshape(len(xq), -1)
    with tempfile.TemporaryDirectory(prefix="edgeladder-score-") as tmp:
        t = Path(tmp)
        # .mpy as a board gets them: importing the sources would need compiler RAM.
        compile_tree(FIRMWARE_DIR, "host", t / "fw")
        (t / "in.bin").write_bytes(xq.tobytes())
        code = _ENGINE_SCRIPT.format(
            model=str(ldr), inputs=str(t / "in.bin"), outputs=str(t / "out.bin")
        )
        res = run_micropython(
            code, heap_bytes=boards.get("esp32").heap_bytes, path=[t / "fw"], timeout=300
        )
        if res.returncode != 0:
            raise CalibrationError(f"the board engine failed: {res.stdout[-400:]}", ldr)
        raw = np.frombuffer((t / "out.bin").read_bytes(), np.int8)
    both = raw.reshape(len(xq), -1)
    classes = both.shape[1] // 2
    return both[:, classes:].copy(), both[:, :classes].copy()


@dataclass
class Crossfit:
    """crossfit.npz of a cross-fitted build: per pooled train+val input, out-of-fold scores."""

    path: Path
    folds: int
    y: np.ndarray  # (N,) int64 labels
    index: np.ndarray  # (N,) int64 row in train+val (train then val, as split_dataset orders)
    fold: np.ndarray  # (N,) int64 the fold whose model did not see the row
    logits: dict[str, np.ndarray]  # per tier (N, C) int8, in the deployed model's quantization
    outputs: dict[str, np.ndarray]  # per tier (N, C) int8


def load_crossfit(info: BuildInfo, tiers: list[str]) -> Crossfit:
    """The build's crossfit.npz with ``tiers``' arrays, checked: one clear error if not sound."""
    check_split(info, "oof")  # a build that was not cross-fitted has none
    meta = info.crossfit or {}
    path = info.build_dir / str(meta.get("file") or "crossfit.npz")

    def bad(why: str) -> CalibrationError:
        return CalibrationError(f"{why}: rebuild the task", path)

    keys = ["y", "index", "fold"] + [f"{t}_{k}" for t in tiers for k in ("logits", "outputs")]
    try:
        if not zipfile.is_zipfile(path):  # np.load would take it for a pickle
            raise bad("unreadable: not an .npz archive")
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise bad(f"no {', '.join(missing)} in it")
            arrays = {k: z[k] for k in keys}
    except FileNotFoundError as e:
        raise bad("missing (report.json says the build was cross-fitted)") from e
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise bad(f"unreadable, not a sound .npz ({' '.join(str(e).split())})") from e

    y = arrays["y"]
    n = len(y) if y.ndim == 1 else -1
    for k in ("y", "index", "fold"):
        a = arrays[k]
        if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
            raise bad(f"{k} is {a.dtype} {a.shape}: y, index, fold must be int vectors, one length")
    index, fold = arrays["index"], arrays["fold"]
    if "inputs" in meta and int(meta["inputs"]) != n:
        raise bad(f"{n} inputs, report.json's crossfit says {meta['inputs']}")
    folds = int(meta.get("folds") or 0)
    if n and (fold.min() < 0 or (folds and fold.max() >= folds)):
        raise bad(f"fold numbers {fold.min()}..{fold.max()} outside 0..{folds - 1}")
    split = info.report.get("split") or {}
    pool = int(split.get("train", 0)) + int(split.get("validation", 0)) or None
    if n and (index.min() < 0 or (pool and index.max() >= pool)):
        raise bad(f"index {index.min()}..{index.max()} outside train+val's 0..{(pool or 0) - 1}")
    if len(np.unique(index)) != n:
        raise bad("index repeats rows")
    classes = info.classes
    if n and classes and (y.min() < 0 or y.max() >= classes):
        raise bad(f"labels {y.min()}..{y.max()} outside 0..{classes - 1}")
    out: dict[str, dict[str, np.ndarray]] = {"logits": {}, "outputs": {}}
    for t in tiers:
        for k in ("logits", "outputs"):
            a = arrays[f"{t}_{k}"]
            c = classes or (a.shape[1] if a.ndim == 2 else 0)
            if a.dtype != np.int8 or a.shape != (n, c):
                raise bad(f"{t}_{k} is {a.dtype} {a.shape}, expected int8 ({n}, {c})")
            out[k][t] = a
    return Crossfit(
        path=path,
        folds=folds,
        y=y.astype(np.int64),
        index=index.astype(np.int64),
        fold=fold.astype(np.int64),
        logits=out["logits"],
        outputs=out["outputs"],
    )


def oof_scores(info: BuildInfo, tiers: list[str]) -> tuple[list[StageScores], np.ndarray]:
    """The out-of-fold scores of a cross-fitted build, in the deployed models' quantization."""
    cf = load_crossfit(info, tiers)
    got = []
    for t in tiers:
        rel, runner = _runner(info, t)
        if runner.logits_index is None:
            raise CalibrationError(
                "the model does not end with SOFTMAX; the gate needs the logits",
                info.build_dir / rel,
            )
        got.append(
            StageScores(
                name=t,
                tflite=rel,
                logits=cf.logits[t],
                outputs=cf.outputs[t],
                logit_scale=runner.logits_scale,
                logit_zero_point=runner.logits_zero_point,
                input_scale=runner.input_scale,
                input_zero_point=runner.input_zero_point,
                runtime=CROSSFIT_RUNTIME,
            )
        )
    return got, cf.y


def score_split(
    info: BuildInfo, tiers: list[str], split: str = "val"
) -> tuple[list[StageScores], np.ndarray]:
    """Every named tier's scores on ``split`` (in the given order) and the true labels.

    "oof" reads the stored out-of-fold scores (:func:`oof_scores`); the others run the tiers."""
    check_split(info, split)
    if split == "oof":
        return oof_scores(info, tiers)
    x, y = split_inputs(info, split)
    return [score_tier(info, t, x) for t in tiers], y
