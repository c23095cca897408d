"""``edgeladder build``: dataset → teacher → distilled students (+ baselines) → pruning →
int8 → evaluation → artifacts and ``report.json``.

The pipeline reports progress through a small :class:`Progress` protocol so that the CLI can
draw rich bars and tests can run it silently.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeladder import __version__
from edgeladder.boards import registry as boards
from edgeladder.build.dataset import (
    Split,
    check_normalized,
    load_dataset,
    normalize_stats,
    split_dataset,
)
from edgeladder.build.recipe import Recipe, TierSpec, crossfits
from edgeladder.errors import BuildError
from edgeladder.util import atomic

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPORT = "report.json"
TASK = "task.json"
MANIFEST = "manifest.json"
CROSSFIT = "crossfit.npz"


class Progress(Protocol):
    """A new step closes the one before; ``total`` is None for steps without a count."""

    def step(self, description: str, total: int | None = None) -> None: ...
    def advance(self, n: int = 1, **info: Any) -> None: ...
    def note(self, message: str) -> None: ...


class SilentProgress:
    def step(self, description: str, total: int | None = None) -> None:
        pass

    def advance(self, n: int = 1, **info: Any) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass
class BuildResult:
    out: Path
    report: dict[str, Any]
    reused: bool
    seconds: float
    files: dict[str, str] = field(default_factory=dict)


def _code_hash() -> str:
    """Hash of the code that shapes the artifacts: a change to it invalidates the cache."""
    from ladder import mformat

    root = Path(__file__).resolve().parents[1]
    sources = [
        *sorted(root.glob("build/*.py")),
        *sorted(root.glob("model/**/*.py")),
        Path(mformat.__file__),
    ]
    h = hashlib.sha256(__version__.encode())
    for p in sources:
        h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(recipe: Recipe, data_hash: str) -> str:
    import tensorflow as tf

    h = hashlib.sha256()
    for part in (recipe.fingerprint(), data_hash, _code_hash(), tf.__version__):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()


def _cached(out: Path, key: str) -> dict[str, Any] | None:
    """The previous report if ``out`` holds a complete build for ``key``, else None."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        if manifest.get("cache_key") != key:
            return None
        for rel, digest in manifest["files"].items():
            if hashlib.sha256((out / rel).read_bytes()).hexdigest() != digest:
                return None
        return json.loads((out / REPORT).read_text())
    except (OSError, ValueError, KeyError):
        return None


def build(
    recipe: Recipe,
    out: str | Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> BuildResult:
    """Run the whole build for ``recipe`` into ``out`` (atomically), or reuse it if current."""
    t0 = time.monotonic()
    progress = progress or SilentProgress()
    out = Path(out)
    progress.step("load dataset")
    ds = load_dataset(recipe.source)
    key = cache_key(recipe, ds.content_hash())
    if not force and (report := _cached(out, key)) is not None:
        return BuildResult(out, report, reused=True, seconds=time.monotonic() - t0)

    split = split_dataset(ds, seed=recipe.seed, validation=recipe.validation, test=recipe.test)
    crossfit = crossfits(recipe, len(split.y_train) + len(split.y_val))
    smallest = _smallest_class(split)
    crossfit_note = None
    if crossfit and smallest < 2 and recipe.crossfit == "auto":
        # "on" says so as an error (_check_folds); "auto" keeps the validation split
        crossfit = False
        crossfit_note = "not cross-fitted: a class has a single train + validation input"
    # Cross-fitted models train on train + validation: their statistics are the pool's.
    fit_on = np.concatenate([split.x_train, split.x_val]) if crossfit else split.x_train
    offset, scale = normalize_stats(fit_on, recipe.normalize)
    norm = _normalized(split, offset, scale)
    check_normalized(norm, offset, scale, recipe.normalize, recipe.source)
    if crossfit:
        _check_folds(norm, recipe.folds, recipe.source)
    trainer = _Trainer(recipe, norm, ds.num_classes, progress, crossfit)
    with atomic.staged_dir(out) as stage:
        tiers = trainer.run_all(stage)
        report = {
            "task": recipe.task,
            "tiers": {t.name: tiers[t.name] for t in recipe.tiers},
            "teacher": recipe.teacher.name,
            "distillation": {"alpha": recipe.alpha, "temperature": recipe.temperature},
            "split": split.counts,
            "seed": recipe.seed,
            "edgeladder": __version__,
            "cache_key": key,
        }
        if (oof := trainer.write_oof(stage)) is not None:
            report["crossfit"] = oof
        if crossfit_note:
            report["crossfit_note"] = crossfit_note
        report["reference"] = _reference(norm, ds.input_shape, crossfit, progress)
        report["ranking"], report["flags"] = rank_tiers(report)
        task_info = {
            "task": recipe.task,
            "labels": ds.labels,
            "input_shape": list(ds.input_shape),
            "normalize": {
                "mode": recipe.normalize,
                "offset": offset.tolist(),
                "scale": scale.tolist(),
                "note": "model input = (x - offset) / scale per channel (last axis)",
            },
            "source": recipe.source,
            "recipe": recipe.path,
            "tiers": {
                t.name: {"board": t.board, "tflite": tiers[t.name]["files"]["tflite"]}
                for t in recipe.tiers
            },
        }
        atomic.write_text(stage / REPORT, json.dumps(report, indent=2) + "\n")
        atomic.write_text(stage / TASK, json.dumps(task_info, indent=2) + "\n")
        files = {
            str(p.relative_to(stage)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(stage.rglob("*"))
            if p.is_file()
        }
        atomic.write_text(
            stage / MANIFEST, json.dumps({"cache_key": key, "files": files}, indent=2) + "\n"
        )
    return BuildResult(out, report, reused=False, seconds=time.monotonic() - t0, files=files)


def _smallest_class(split: Split) -> int:
    counts = np.bincount(np.concatenate([split.y_train, split.y_val]))
    present = counts[counts > 0]
    return int(present.min()) if len(present) else 0


def _check_folds(split: Split, folds: int, source: str) -> None:
    if (smallest := _smallest_class(split)) < 2:
        raise BuildError(
            f"cross-fitting needs at least 2 inputs of every class in train + validation; a"
            f" class has {smallest}: add inputs or set [data] crossfit = false",
            source,
        )


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` folds of row indices, each class dealt round-robin after a seeded shuffle, so every
    fold holds about the same share of every class (fewer folds if a class is smaller)."""
    rng = np.random.default_rng(seed)
    smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
    k = max(2, min(k, smallest))
    folds: list[list[int]] = [[] for _ in range(k)]
    start = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        for j, i in enumerate(idx):
            folds[(start + j) % k].append(int(i))
        start += len(idx)  # the next class starts where this one stopped: even fold sizes
    return [np.sort(np.asarray(f, np.int64)) for f in folds]


def _reference(split: Split, shape, crossfit: bool, progress: Progress) -> dict[str, Any]:
    """The classical reference rows (build/reference.py), fitted on train + validation (what
    the tiers learned from, early stopping included) and scored on the test split."""
    from edgeladder.build.reference import reference_scores

    progress.step("classical reference (scikit-learn)")
    x = np.concatenate([split.x_train, split.x_val])
    y = np.concatenate([split.y_train, split.y_val])
    return reference_scores(
        x, y, split.x_test, split.y_test, time_series=len(shape) == 2, progress=progress
    )


def rank_tiers(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Tiers by validation accuracy (best first), and the flags a user must see: a tier worse
    on validation than a smaller one, and the best tier below the classical reference."""
    tiers = report["tiers"]
    ranking = sorted(
        (
            {
                "tier": n,
                "val_accuracy_int8": t["val_accuracy_int8"],
                "test_accuracy_int8": t["accuracy_int8"],
                "params": t["params"],
            }
            for n, t in tiers.items()
        ),
        key=lambda r: (-r["val_accuracy_int8"], r["params"]),
    )
    flags = []
    for n, t in tiers.items():
        for m, u in tiers.items():
            if u["params"] < t["params"] and u["val_accuracy_int8"] > t["val_accuracy_int8"]:
                flags.append(
                    f"{n} is worse on validation than the smaller {m}"
                    f" ({t['val_accuracy_int8']:.2%} vs {u['val_accuracy_int8']:.2%})"
                )
                break
    ref = (report.get("reference") or {}).get("best")
    if ref and ref.get("accuracy") is not None:
        best = max(tiers, key=lambda n: tiers[n]["accuracy_int8"])
        # the same number of right answers is a tie, whatever the float rounding says
        reaches = tiers[best]["accuracy_int8"] >= round(ref["accuracy"], 6) - 1e-9
        report["reference"]["best_tier"] = {"tier": best, "reaches_reference": reaches}
        if not reaches:
            flags.append(
                f"every tier is below the classical reference: the best, {best}, scores"
                f" {tiers[best]['accuracy_int8']:.2%} on test where {ref['name']} scores"
                f" {ref['accuracy']:.2%}"
            )
    return ranking, flags


def _normalized(split: Split, offset: np.ndarray, scale: np.ndarray) -> Split:
    def f(x):
        return ((x - offset) / scale).astype(np.float32)

    return Split(
        f(split.x_train),
        split.y_train,
        f(split.x_val),
        split.y_val,
        f(split.x_test),
        split.y_test,
        split.counts,
    )


@dataclass
class _Candidate:
    """One trained form of a tier: its logits model, int8 bytes and how it was trained."""

    kind: str  # "distilled", "baseline" (labels only) or "trained" (the teacher)
    model: Any
    tflite: bytes
    fit: Any  # training.FitResult
    pruned: bool = False


@dataclass
class _Scores:
    """A model's int8 answers on some inputs, and the quantization of its logits."""

    outputs: np.ndarray
    logits: np.ndarray
    logit_scale: float
    logit_zero_point: int

    def accuracy(self, y: np.ndarray) -> float:
        return float(np.mean(np.argmax(self.outputs, axis=1) == y)) if len(y) else 0.0


def _int8_scores(tfl: bytes, x: np.ndarray, label: str) -> _Scores:
    from edgeladder.model.litert import Int8Runner

    runner = Int8Runner.from_bytes(tfl, label)
    outputs, logits = runner.run_int8_logits(runner.quantize_input(x))
    return _Scores(outputs, logits, runner.logits_scale, runner.logits_zero_point)


def requantize(logits: np.ndarray, scale: float, zero_point: int, to: tuple[float, int]):
    """int8 logits of one model in another's logits quantization (what the deployed model's
    gate table reads): dequantize, divide by the new scale, round, clip to int8."""
    real = (logits.astype(np.float64) - zero_point) * scale
    q = np.round(real / to[0]) + to[1]
    return np.clip(q, -128, 127).astype(np.int8)


def select_candidate(
    accuracies: dict[str, float], sizes: dict[str, int], preferred: str
) -> tuple[str, str]:
    """The best validation accuracy; ties to the smaller model, then to ``preferred``.

    Returns (kind, why) — ``why`` is the sentence the report carries."""
    best = max(accuracies.values())
    if len(accuracies) == 1:
        (kind,) = accuracies
        return kind, f"the only form ({kind}, {best:.2%} on validation): nothing to choose"
    tied = [k for k, a in accuracies.items() if a >= best - 1e-12]
    tied.sort(key=lambda k: (sizes[k], k != preferred))
    kind = tied[0]
    others = ", ".join(f"{k} {a:.2%}" for k, a in accuracies.items() if k != kind)
    if len(tied) > 1:
        why = f"tie at {best:.2%} on validation ({others}): kept the smaller/{preferred}"
    else:
        why = f"better on validation: {kind} {best:.2%} vs {others}"
    return kind, why


class _Trainer:
    """Trains every tier of one recipe on one normalized split.

    Without cross-fitting each tier trains on the train split, stops early on validation, and
    every choice (distilled or baseline, pruned or not) is made on validation. With it, the
    train and validation inputs are pooled and split into k folds: each fold's models train on
    the other folds and answer for the held-out one (out-of-fold int8 logits, one per input),
    the choices are made on those answers, and the shipped models train on every pooled input
    for the number of epochs the folds' early stopping chose.
    """

    def __init__(
        self, recipe: Recipe, split: Split, classes: int, progress: Progress, crossfit: bool
    ) -> None:
        self.r, self.s, self.classes, self.p = recipe, split, classes, progress
        self.crossfit = crossfit
        self.teacher = None  # the shipped teacher's logits model
        self.fold_teachers: list[Any] = []
        if crossfit:
            self.x_pool = np.concatenate([split.x_train, split.x_val])
            self.y_pool = np.concatenate([split.y_train, split.y_val])
            self.folds = stratified_folds(self.y_pool, recipe.folds, recipe.seed)
        self.oof: dict[str, dict[str, np.ndarray]] = {}

    # -- the tiers

    def run_all(self, stage: Path) -> dict[str, dict[str, Any]]:
        import keras
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # retracing notices are not the user's concern
        tf.config.experimental.enable_op_determinism()
        results: dict[str, dict[str, Any]] = {}
        # Teacher first: the students learn from its logits.
        order = [self.r.teacher, *self.r.students]
        # Every board tier fits its board before a minute goes into training.
        self.shaping = {
            t.name: self._fit_board(t, f"[{i + 1}/{len(order)}] {t.name}")
            for i, t in enumerate(order)
        }
        for i, tier in enumerate(order):
            seed = self.r.seed + 101 * (self.r.tiers.index(tier) + 1)
            keras.utils.set_random_seed(seed)
            results[tier.name] = self._tier(tier, seed, stage, i, len(order))
        return results

    def _model(self, tier: TierSpec, seed: int):
        import keras

        from edgeladder.build.architectures import build_model

        keras.utils.set_random_seed(seed)  # same init for the distilled model and its baseline
        m = build_model(tier.arch, self.s.x_train.shape[1:], self.classes, tier.arch_params)
        m.name = f"{self.r.task}_{tier.name}"
        return m

    def _fit(
        self,
        model,
        tier: TierSpec,
        label: str,
        data: tuple,
        teacher=None,
        epochs=None,
        lr=None,
        callbacks=None,
    ):
        from edgeladder.build.training import fit

        x_tr, y_tr, x_es, y_es = data
        n = epochs or tier.epochs
        self.p.step(label, total=n)
        return fit(
            model,
            x_tr,
            y_tr,
            x_es,
            y_es,
            classes=self.classes,
            epochs=n,
            batch_size=tier.batch_size,
            learning_rate=lr or tier.learning_rate,
            patience=tier.patience if callbacks is None else n,  # no early stop while pruning
            teacher=teacher,
            alpha=self.r.alpha,
            temperature=self.r.temperature,
            on_epoch=lambda e, logs: self.p.advance(
                1, loss=logs.get("loss"), val_acc=logs.get("val_accuracy")
            ),
            extra_callbacks=callbacks,
            restore_best=callbacks is None,
            augment=tier.augment,
        )

    def _candidates(
        self,
        tier: TierSpec,
        seed: int,
        label: str,
        data: tuple,
        teacher,
        epochs=None,
        only: str | None = None,
    ) -> dict[str, _Candidate]:
        """The forms of ``tier`` worth choosing between (or just ``only``), trained on
        ``data``."""
        from edgeladder.build.quantize import to_int8_tflite

        distil = not tier.teacher and tier.distill and teacher is not None
        kinds = ["distilled", "baseline"] if distil else ["trained"]
        if only is not None:
            kinds = [only]
        out = {}
        for kind in kinds:
            model = self._model(tier, seed)
            how = {"distilled": "distil", "baseline": "baseline (labels only)"}.get(kind, "train")
            n = epochs.get(kind) if isinstance(epochs, dict) else epochs
            res = self._fit(
                model, tier, f"{label}: {how}", data, teacher if kind == "distilled" else None, n
            )
            self.p.step(f"{label}: int8 quantization ({kind})")
            out[kind] = _Candidate(
                kind, model, to_int8_tflite(model, data[0], seed=self.r.seed), res
            )
        return out

    def _pruned(self, tier: TierSpec, cand: _Candidate, label: str, data: tuple, teacher):
        """A pruned copy of ``cand`` (the unpruned one is kept to fall back on)."""
        import keras

        from edgeladder.build import prune
        from edgeladder.build.quantize import to_int8_tflite

        assert tier.prune is not None
        model = keras.models.clone_model(cand.model)
        model.set_weights(cand.model.get_weights())
        cb = prune.pruning_callback(model, tier.prune.sparsity, tier.prune.epochs)
        res = self._fit(
            model,
            tier,
            f"{label}: prune to {tier.prune.sparsity:.0%} + fine-tune",
            data,
            teacher if cand.kind == "distilled" else None,
            epochs=tier.prune.epochs,
            lr=tier.learning_rate / 3,
            callbacks=[cb],
        )
        prune.finalize(model, tier.prune.sparsity)
        tfl = to_int8_tflite(model, data[0], seed=self.r.seed)
        return _Candidate(cand.kind, model, tfl, res, pruned=True)

    def _tier(self, tier: TierSpec, seed: int, stage: Path, i: int, n: int) -> dict[str, Any]:
        name = f"[{i + 1}/{n}] {tier.name}"
        shaping = self.shaping.get(tier.name)
        if self.crossfit:
            chosen, choice = self._crossfitted(tier, seed, name)
        else:
            data = (self.s.x_train, self.s.y_train, self.s.x_val, self.s.y_val)
            chosen, choice = self._validated(tier, seed, name, data)
        if tier.teacher:
            self.teacher = chosen.model
        entry: dict[str, Any] = {
            "board": tier.board,
            "arch": tier.arch,
            "arch_params": tier.arch_params,
            "distilled": chosen.kind == "distilled",
            "selected": chosen.kind,
            **choice,
        }
        if shaping:
            entry["board_fit"] = shaping
        entry.update(self._evaluate(chosen.model, chosen.tflite, tier.name))
        entry["params"] = int(chosen.model.count_params())
        entry["epochs_run"] = chosen.fit.epochs_run
        base = choice["candidates"].get("baseline")
        # what distillation bought: the same student trained on labels alone (test split)
        entry["baseline_accuracy_int8"] = (
            base["test_accuracy_int8"] if base else entry["accuracy_int8"]
        )
        entry.update(self._write(tier, chosen.model, chosen.tflite, stage))
        entry["gzip_bytes"] = len(gzip.compress(chosen.tflite, 9, mtime=0))
        return entry

    # -- choosing on validation

    def _validated(self, tier: TierSpec, seed: int, name: str, data: tuple):
        x_val, y_val = data[2], data[3]
        cands = self._candidates(tier, seed, name, data, self.teacher)
        val = {k: _int8_scores(c.tflite, x_val, k).accuracy(y_val) for k, c in cands.items()}
        sizes = {k: len(c.tflite) for k, c in cands.items()}
        kind, why = select_candidate(val, sizes, preferred="distilled")
        chosen = cands[kind]
        choice: dict[str, Any] = {
            "validation": "validation split",
            "val_accuracy_int8": val[kind],
            "candidates": self._candidate_report(cands, val),
            "selection": why,
        }
        pruning = None
        if tier.prune is not None:
            pruned = self._pruned(tier, chosen, name, data, self.teacher)
            p_val = _int8_scores(pruned.tflite, x_val, "pruned").accuracy(y_val)
            pruning = self._pruning_report(tier, chosen, pruned, val[kind], p_val)
            if pruning["kept"]:
                chosen = pruned
                choice["val_accuracy_int8"] = p_val
        choice["pruning"] = pruning
        return chosen, choice

    def _candidate_report(self, cands: dict[str, _Candidate], val: dict[str, float]) -> dict:
        """Each candidate's validation and test int8 accuracy (test for the report only)."""
        out = {}
        for k, c in cands.items():
            test = _int8_scores(c.tflite, self.s.x_test, k).accuracy(self.s.y_test)
            out[k] = {
                "val_accuracy_int8": round(val[k], 6),
                "test_accuracy_int8": round(test, 6),
                "epochs": c.fit.best_epoch,
            }
        return out

    def _pruning_report(self, tier, unpruned: _Candidate, pruned: _Candidate, before, after):
        from edgeladder.build import prune

        assert tier.prune is not None
        lost = before - after
        kept = lost <= tier.prune.max_loss + 1e-12
        return {
            "target_sparsity": tier.prune.sparsity,
            "kernel_sparsity": round(prune.kernel_sparsity(pruned.model), 4),
            "max_loss": tier.prune.max_loss,
            "val_accuracy_int8_unpruned": round(before, 6),
            "val_accuracy_int8_pruned": round(after, 6),
            "kept": bool(kept),
            "decision": (
                f"pruned model shipped: it loses {lost:+.2%} on validation (allowed"
                f" {tier.prune.max_loss:.2%})"
                if kept
                else f"NOT shipped: pruning loses {lost:.2%} on validation, more than the"
                f" {tier.prune.max_loss:.2%} the recipe allows; the unpruned model ships"
            ),
            "unpruned_accuracy_int8": _int8_scores(
                unpruned.tflite, self.s.x_test, "unpruned"
            ).accuracy(self.s.y_test),
            "unpruned_tflite_bytes": len(unpruned.tflite),
            "unpruned_gzip_bytes": len(gzip.compress(unpruned.tflite, 9, mtime=0)),
            "macs_skipped": 0,
            "note": (
                "zeros shrink the compressed model (gzip_bytes vs unpruned_gzip_bytes) but the"
                " int8 kernels (LiteRT, TFLite Micro, the board engine) are dense and still"
                " multiply them: no MACs are skipped and the .tflite is the same size"
            ),
        }

    # -- choosing out of fold

    def _crossfitted(self, tier: TierSpec, seed: int, name: str):
        k = len(self.folds)
        oof: dict[str, list] = {}
        fold_cands: list[dict[str, _Candidate]] = []
        for f, held in enumerate(self.folds):
            data = self._fold_data(held)
            teacher = self.fold_teachers[f] if self.fold_teachers else None
            cands = self._candidates(tier, seed, f"{name} fold {f + 1}/{k}", data, teacher)
            fold_cands.append(cands)
            for kind, c in cands.items():
                oof.setdefault(kind, []).append(_int8_scores(c.tflite, data[2], kind))
        acc = {kind: self._oof_accuracy(parts) for kind, parts in oof.items()}
        sizes = {kind: len(fold_cands[0][kind].tflite) for kind in oof}
        kind, why = select_candidate(acc, sizes, preferred="distilled")
        # the shipped model's epochs: the median of the folds' early-stopping choices
        epochs = {kd: int(np.median([fc[kd].fit.best_epoch for fc in fold_cands])) for kd in oof}
        chosen_parts = oof[kind]
        pruning = None
        prune_kept = False
        if tier.prune is not None:
            pruned_parts = []
            for f, held in enumerate(self.folds):
                data = self._fold_data(held)
                teacher = self.fold_teachers[f] if self.fold_teachers else None
                pc = self._pruned(
                    tier, fold_cands[f][kind], f"{name} fold {f + 1}/{k}", data, teacher
                )
                pruned_parts.append(_int8_scores(pc.tflite, data[2], "pruned"))
            p_acc = self._oof_accuracy(pruned_parts)
            prune_kept = acc[kind] - p_acc <= tier.prune.max_loss + 1e-12
            if prune_kept:
                chosen_parts = pruned_parts
            pruning = (acc[kind], p_acc)
        if tier.teacher:
            self.fold_teachers = [fc[kind].model for fc in fold_cands]
        # the shipped model: every pooled input, the folds' epoch count, no early stop
        pool = (self.x_pool, self.y_pool, None, None)
        # only the chosen form: the folds have already said which one is better
        label = f"{name} (all {len(self.y_pool)} inputs)"
        final = self._candidates(tier, seed, label, pool, self.teacher, epochs, only=kind)
        chosen = final[kind]
        if pruning is not None:
            pruned = self._pruned(tier, chosen, name, pool, self.teacher)
            report = self._pruning_report(tier, chosen, pruned, *pruning)
            report["kept"] = bool(prune_kept)
            if prune_kept:
                chosen = pruned
            pruning = report
        self._store_oof(tier.name, chosen_parts, chosen.tflite)
        choice = {
            "validation": f"out-of-fold ({k} folds, {len(self.y_pool)} inputs)",
            "val_accuracy_int8": self._oof_accuracy(chosen_parts),
            "candidates": {
                kd: {
                    "val_accuracy_int8": round(acc[kd], 6),
                    # the form not chosen is not trained on every input: no test figure
                    "test_accuracy_int8": round(
                        _int8_scores(final[kd].tflite, self.s.x_test, kd).accuracy(self.s.y_test),
                        6,
                    )
                    if kd in final
                    else None,
                    "epochs": epochs[kd],
                }
                for kd in acc
            },
            "selection": why,
            "pruning": pruning,
        }
        return chosen, choice

    def _fold_data(self, held: np.ndarray) -> tuple:
        mask = np.ones(len(self.y_pool), dtype=bool)
        mask[held] = False
        return self.x_pool[mask], self.y_pool[mask], self.x_pool[held], self.y_pool[held]

    def _oof_accuracy(self, parts: list[_Scores]) -> float:
        right = sum(
            int(np.sum(np.argmax(p.outputs, axis=1) == self.y_pool[held]))
            for p, held in zip(parts, self.folds, strict=True)
        )
        return right / len(self.y_pool)

    def _store_oof(self, tier: str, parts: list[_Scores], shipped: bytes) -> None:
        """Out-of-fold answers in pooled order, logits requantized to the shipped model's."""
        from edgeladder.model.litert import Int8Runner

        runner = Int8Runner.from_bytes(shipped, tier)  # only its logits' quantization is needed
        to = (runner.logits_scale, runner.logits_zero_point)
        n, c = len(self.y_pool), self.classes
        logits = np.zeros((n, c), np.int8)
        outputs = np.zeros((n, c), np.int8)
        for p, held in zip(parts, self.folds, strict=True):
            logits[held] = requantize(p.logits, p.logit_scale, p.logit_zero_point, to)
            outputs[held] = p.outputs
        self.oof[tier] = {"logits": logits, "outputs": outputs}

    def write_oof(self, stage: Path) -> dict[str, Any] | None:
        """crossfit.npz (docs/recipes.md): what calibrate's "oof" split reads."""
        if not self.crossfit:
            return None
        fold = np.zeros(len(self.y_pool), np.int64)
        for f, held in enumerate(self.folds):
            fold[held] = f
        arrays: dict[str, np.ndarray] = {
            "y": self.y_pool.astype(np.int64),
            "index": np.arange(len(self.y_pool), dtype=np.int64),
            "fold": fold,
        }
        for tier, a in self.oof.items():
            arrays[f"{tier}_logits"] = a["logits"]
            arrays[f"{tier}_outputs"] = a["outputs"]
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic.write_bytes(stage / CROSSFIT, buf.getvalue())
        return {"folds": len(self.folds), "inputs": len(self.y_pool), "file": CROSSFIT}

    # -- the board tier fits its board

    def _fit_board(self, tier: TierSpec, name: str) -> dict[str, Any] | None:
        """Check (before training) that a board tier's int8 model fits its board and its time
        budget; reshape a default tier until it does, refuse a recipe's tier that does not."""
        if not tier.board or not boards.get(tier.board).is_device:
            return None
        from edgeladder.build import shaping

        self.p.step(f"{name}: check the board fits")
        default = bool(self.r.extra.get("default"))
        return shaping.fit_board_tier(
            tier,
            self.s.x_train,
            self.classes,
            reshape=default,
            task=self.r.task,
        )

    def _evaluate(self, model, tfl: bytes, label: str) -> dict[str, Any]:
        logits = model.predict(self.s.x_test, verbose=0)
        acc_f = float(np.mean(np.argmax(logits, axis=1) == self.s.y_test))
        acc_q = _int8_scores(tfl, self.s.x_test, label).accuracy(self.s.y_test)
        return {"accuracy_float": round(acc_f, 6), "accuracy_int8": round(acc_q, 6)}

    def _write(self, tier: TierSpec, model, tfl: bytes, stage: Path) -> dict[str, Any]:
        from edgeladder.build.quantize import with_softmax
        from edgeladder.model.carray import write_c_array
        from edgeladder.model.compiler import compile_model, default_output, write_compiled
        from edgeladder.model.litert import Int8Runner
        from edgeladder.model.tflite.reader import read_model
        from edgeladder.model.tflite.summary import summarize

        d = stage / tier.name
        d.mkdir(parents=True, exist_ok=True)
        base = f"{self.r.task}_{tier.name}"
        keras_path = d / f"{base}.keras"
        with_softmax(model).save(keras_path)
        tfl_path = atomic.write_bytes(d / f"{base}.tflite", tfl)
        header, source = write_c_array(tfl_path, d / "c", name=f"{base}_model")

        # Golden vectors: int8 inputs from the test split and what LiteRT answers.
        runner = Int8Runner.from_bytes(tfl, base)
        k = min(self.r.golden_count, len(self.s.x_test))
        xq = runner.quantize_input(self.s.x_test[:k])
        yq = runner.run_int8(xq)
        golden = {
            "model": tfl_path.name,
            "model_sha256": hashlib.sha256(tfl).hexdigest(),
            "input_shape": list(xq.shape[1:]),
            "input_quantization": [runner.input_scale, runner.input_zero_point],
            "output_quantization": [runner.output_scale, runner.output_zero_point],
            "inputs": xq.reshape(k, -1).tolist(),
            "outputs": yq.reshape(k, -1).tolist(),
            "labels": self.s.y_test[:k].tolist(),
        }
        golden_path = atomic.write_text(d / "golden.json", json.dumps(golden) + "\n")

        m = read_model(tfl)
        summary = summarize(m)
        w_zero = w_total = 0
        for op in m.ops:
            if op.op_name in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
                w = m.tensors[op.inputs[1]]
                if w.data is not None:
                    arr = np.frombuffer(w.data, dtype=np.int8)
                    w_zero += int(np.count_nonzero(arr == 0))
                    w_total += arr.size
        rel = lambda p: str(Path(p).relative_to(stage))  # noqa: E731
        files = {}
        board_form: dict[str, Any] = {}
        if tier.board and boards.get(tier.board).role == "device":
            # A tier that runs on a board also gets the board's compiled form.
            compiled = compile_model(tfl_path)
            ldr = write_compiled(compiled, default_output(tfl_path))
            files["compiled"] = rel(ldr)
            board_form = {"compiled_bytes": len(compiled.data), "arena_bytes": compiled.arena_size}
        return {
            **board_form,
            "tflite_bytes": len(tfl),
            "macs": int(summary["total_macs"]),
            "sparsity": round(w_zero / w_total, 4) if w_total else 0.0,
            "tflite_sha256": hashlib.sha256(tfl).hexdigest(),
            "files": {
                "keras": rel(keras_path),
                "tflite": rel(tfl_path),
                "c_header": rel(header),
                "c_source": rel(source),
                "golden": rel(golden_path),
                **files,
            },
        }


def check_report(report: dict[str, Any]) -> list[str]:
    """Problems with a report against the quality bar (empty when all is well)."""
    problems = []
    for name, t in report["tiers"].items():
        drop = t["accuracy_float"] - t["accuracy_int8"]
        if drop > 0.01:
            problems.append(f"{name}: int8 loses {drop:.1%} vs float (more than 1 point)")
    return problems


__all__ = ["BuildError", "BuildResult", "Progress", "SilentProgress", "build", "check_report"]
