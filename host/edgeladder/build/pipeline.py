"""``edgeladder build``: dataset → teacher → distilled students (+ baselines) → pruning →
int8 → evaluation → artifacts and ``report.json``.

The pipeline reports progress through a small :class:`Progress` protocol so that the CLI can
draw rich bars and tests can run it silently.
"""

from __future__ import annotations

import gzip
import hashlib
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
from edgeladder.build.recipe import Recipe, TierSpec
from edgeladder.errors import BuildError
from edgeladder.util import atomic

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPORT = "report.json"
TASK = "task.json"
MANIFEST = "manifest.json"


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
    offset, scale = normalize_stats(split.x_train, recipe.normalize)
    norm = _normalized(split, offset, scale)
    check_normalized(norm, offset, scale, recipe.normalize, recipe.source)
    trainer = _Trainer(recipe, norm, ds.num_classes, progress)
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


class _Trainer:
    """Trains every tier of one recipe on one normalized split."""

    def __init__(self, recipe: Recipe, split: Split, classes: int, progress: Progress) -> None:
        self.r, self.s, self.classes, self.p = recipe, split, classes, progress
        self.teacher = None  # the trained teacher's logits model

    def run_all(self, stage: Path) -> dict[str, dict[str, Any]]:
        import keras
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # retracing notices are not the user's concern
        tf.config.experimental.enable_op_determinism()
        results: dict[str, dict[str, Any]] = {}
        # Teacher first: the students learn from its logits.
        order = [self.r.teacher, *self.r.students]
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
        self, model, tier: TierSpec, label: str, teacher=None, epochs=None, lr=None, callbacks=None
    ):
        from edgeladder.build.training import fit

        n = epochs or tier.epochs
        self.p.step(label, total=n)
        res = fit(
            model,
            self.s.x_train,
            self.s.y_train,
            self.s.x_val,
            self.s.y_val,
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
        return res

    def _tier(self, tier: TierSpec, seed: int, stage: Path, i: int, n: int) -> dict[str, Any]:
        from edgeladder.build.quantize import to_int8_tflite

        name = f"[{i + 1}/{n}] {tier.name}"
        model = self._model(tier, seed)
        distilled = not tier.teacher and tier.distill and self.teacher is not None
        teacher = self.teacher if distilled else None
        how = "distil" if distilled else "train"
        fitres = self._fit(model, tier, f"{name}: {how}", teacher)
        entry: dict[str, Any] = {"board": tier.board, "arch": tier.arch, "distilled": distilled}

        pruning = None
        if tier.prune is not None:
            pruning = self._prune(model, tier, teacher, name)
        if tier.teacher:
            self.teacher = model

        self.p.step(f"{name}: int8 quantization")
        tfl = to_int8_tflite(model, self.s.x_train, seed=self.r.seed)
        entry.update(self._evaluate(model, tfl, tier.name))
        entry["params"] = int(model.count_params())
        entry["epochs_run"] = fitres.epochs_run

        if distilled:
            base = self._model(tier, seed)
            self._fit(base, tier, f"{name}: baseline (labels only)")
            btfl = to_int8_tflite(base, self.s.x_train, seed=self.r.seed)
            b = self._evaluate(base, btfl, tier.name + " baseline")
            entry["baseline_accuracy_float"] = b["accuracy_float"]
            entry["baseline_accuracy_int8"] = b["accuracy_int8"]
        else:
            # The teacher learns from labels alone: it is its own baseline.
            entry["baseline_accuracy_float"] = entry["accuracy_float"]
            entry["baseline_accuracy_int8"] = entry["accuracy_int8"]

        entry.update(self._write(tier, model, tfl, stage))
        entry["pruning"] = pruning
        entry["gzip_bytes"] = len(gzip.compress(tfl, 9, mtime=0))
        return entry

    def _prune(self, model, tier: TierSpec, teacher, name: str) -> dict[str, Any]:
        from edgeladder.build import prune
        from edgeladder.build.quantize import to_int8_tflite

        assert tier.prune is not None
        before = to_int8_tflite(model, self.s.x_train, seed=self.r.seed)
        before_eval = self._evaluate(model, before, tier.name + " unpruned")
        cb = prune.pruning_callback(model, tier.prune.sparsity, tier.prune.epochs)
        self._fit(
            model,
            tier,
            f"{name}: prune to {tier.prune.sparsity:.0%} + fine-tune",
            teacher,
            epochs=tier.prune.epochs,
            lr=tier.learning_rate / 3,
            callbacks=[cb],
        )
        reached = prune.finalize(model, tier.prune.sparsity)
        return {
            "target_sparsity": tier.prune.sparsity,
            "kernel_sparsity": round(reached, 4),
            "unpruned_accuracy_int8": before_eval["accuracy_int8"],
            "unpruned_tflite_bytes": len(before),
            "unpruned_gzip_bytes": len(gzip.compress(before, 9, mtime=0)),
            "macs_skipped": 0,
            "note": (
                "zeros shrink the compressed model (gzip_bytes vs unpruned_gzip_bytes) but the"
                " int8 kernels (LiteRT, TFLite Micro, the board engine) are dense and still"
                " multiply them: no MACs are skipped and the .tflite is the same size"
            ),
        }

    def _evaluate(self, model, tfl: bytes, label: str) -> dict[str, Any]:
        from edgeladder.model.litert import Int8Runner

        logits = model.predict(self.s.x_test, verbose=0)
        acc_f = float(np.mean(np.argmax(logits, axis=1) == self.s.y_test))
        runner = Int8Runner.from_bytes(tfl, label)
        q_out = runner.predict(self.s.x_test)
        acc_q = float(np.mean(np.argmax(q_out, axis=1) == self.s.y_test))
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
