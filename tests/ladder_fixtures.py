"""Ladder configs and inputs for tests, from a real digits build (the ``digits_build`` fixture).

Not a conftest: tests import it (``from ladder_fixtures import ...``; ``tests/`` is on the path
through the rootdir conftest). Everything here is what the host tools do too: exp tables from
each tier's logit scale (``Int8Runner``), ``ladderconfig`` to build and validate, the recipe's
deterministic split, and the tiny model's input quantization.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeladder.model.litert import Int8Runner
from edgeladder.policy import config as lc

REPO = Path(__file__).resolve().parents[1]
TIERS = ("tiny", "medium", "large")
WHERE = {"tiny": "edge", "medium": "gateway", "large": "cloud"}
BUDGET_MS = {"tiny": 20, "medium": 80, "large": 150}
EXPECTED_RTT_MS = {"tiny": 0, "medium": 20, "large": 60}


def tflite_path(build_dir: Path, tier: str) -> Path:
    return Path(build_dir) / tier / f"digits_{tier}.tflite"


def runner(build_dir: Path, tier: str) -> Int8Runner:
    return Int8Runner.from_bytes(tflite_path(build_dir, tier).read_bytes(), tier)


def ldr_bytes(build_dir: Path, tier: str = "tiny") -> bytes:
    """The tier's board model: the build's .ldr if it has one, else compiled now."""
    ldr = Path(build_dir) / tier / f"digits_{tier}.ldr"
    if ldr.is_file():
        return ldr.read_bytes()
    from edgeladder.model.compiler import compile_model

    return bytes(compile_model(tflite_path(build_dir, tier).read_bytes()).data)


def make_ladder(
    build_dir: Path,
    *,
    thresholds: Mapping[str, int] | None = None,
    deadline_ms: int = 200,
    measure: str = "margin",
    temperatures: Mapping[str, float] | None = None,
    expected_rtt_ms: Mapping[str, int] | None = None,
    tiers: tuple[str, ...] = TIERS,
) -> lc.LadderConfig:
    """A ladder over ``tiers`` (tiny on the board, then gateway, cloud); thresholds in Q16."""
    build_dir = Path(build_dir)
    thresholds = {"tiny": 45000, "medium": 40000, "large": 0, **(thresholds or {})}
    temperatures = temperatures or {}
    rtt = {**EXPECTED_RTT_MS, **(expected_rtt_ms or {})}
    stages = []
    for tier in tiers:
        r = runner(build_dir, tier)
        t = float(temperatures.get(tier, 1.0))
        where = WHERE[tier]
        stages.append(
            lc.Stage(
                name=tier,
                where=where,
                measure=measure,
                threshold=int(thresholds[tier]),
                temperature=t,
                exp_lut=lc.exp_lut(r.logits_scale, t),
                budget_ms=BUDGET_MS[tier],
                model=f"digits_{tier}.ldr" if where == "edge" else None,
                tflite=f"{tier}/digits_{tier}.tflite" if where != "edge" else None,
                expected_rtt_ms=rtt[tier] if where != "edge" else 0,
            )
        )
    tiny = runner(build_dir, tiers[0])
    cfg = lc.LadderConfig(
        task="digits",
        model_version=lc.model_version(build_dir),
        classes=10,
        deadline_ms=deadline_ms,
        input_scale=tiny.input_scale,
        input_zero_point=tiny.input_zero_point,
        stages=stages,
    )
    return lc.parse(cfg.to_json())  # validated as a board's ladder.json would be


def make_ladder_json(build_dir: Path, **kwargs: Any) -> dict[str, Any]:
    """``make_ladder(...)`` as the ladder.json dict a board gets."""
    return make_ladder(build_dir, **kwargs).to_json()


def device_json(device: int, link: dict[str, Any], sensor_port: int, fleet: str = "test") -> str:
    return lc.device_json(
        device, fleet=fleet, link=link, sensor={"kind": "tcp", "port": sensor_port}
    )


def board_files(build_dir: Path, ladder: dict[str, Any], device: str) -> dict[str, bytes]:
    """Files for a board's flash: /ladder.json, /device.json and its edge models."""
    files = {
        "ladder.json": json.dumps(ladder, separators=(",", ":")).encode(),
        "device.json": device.encode(),
    }
    for s in ladder["stages"]:
        if s["where"] == "edge":
            files[s["model"]] = ldr_bytes(build_dir, s["name"])
    return files


def quantized_rows(build_dir: Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The recipe's ``split`` (train | validation | test) of the digits data as the board's
    int8 input rows (N, 64), with their labels: normalized as the build did (task.json), then
    quantized with the tiny model's input scale and zero point."""
    from edgeladder.build.dataset import load_dataset, split_dataset
    from edgeladder.build.recipe import load_recipe

    build_dir = Path(build_dir)
    task = json.loads((build_dir / "task.json").read_text())
    # task.json's recipe path is as the build was given it (maybe relative to another cwd)
    given = Path(task.get("recipe", ""))
    recipe = load_recipe(given if given.is_absolute() else REPO / "models" / task["task"])
    ds = load_dataset(recipe.source)
    parts = split_dataset(ds, seed=recipe.seed, validation=recipe.validation, test=recipe.test)
    x, y = {
        "train": (parts.x_train, parts.y_train),
        "validation": (parts.x_val, parts.y_val),
        "test": (parts.x_test, parts.y_test),
    }[split]
    norm = task["normalize"]
    x = (x - np.asarray(norm["offset"], np.float32)) / np.asarray(norm["scale"], np.float32)
    xq = runner(build_dir, "tiny").quantize_input(x.astype(np.float32))
    return xq.reshape(len(xq), -1).astype(np.int8), y.astype(np.int64)
