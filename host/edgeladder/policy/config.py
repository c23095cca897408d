"""The ladder config (``ladder.json``: stages, gates, budgets) and a board's ``device.json``.

``edgeladder calibrate`` writes ``build/<task>/ladder.json``; ``deploy`` ships it to a board as
``/ladder.json`` (the board reads it with ``json`` at start); ``edgeladder serve`` reads the
stage it serves from it. One file, so that the thresholds a board uses and the ones a tier
uses come from the same calibration run. docs/protocol.md describes the fields.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeladder.errors import EdgeladderError
from edgeladder.util.atomic import write_text
from ladder import gate

FORMAT = 1
WHERE = ("edge", "gateway", "cloud")


class ConfigError(EdgeladderError):
    """A ladder.json or device.json is missing or invalid."""


@dataclass
class Stage:
    name: str
    where: str  # edge | gateway | cloud
    measure: str  # max | margin | entropy (ladder.gate.MEASURES)
    threshold: int  # Q16: answer here when the confidence is at least this
    temperature: float
    exp_lut: list[int]  # ladder.gate's table for this stage's logit scale and temperature
    budget_ms: int  # the most this stage may add to an answer's latency
    model: str | None = None  # edge stages: the compiled model file on the board
    tflite: str | None = None  # remote stages: the .tflite, relative to the build folder
    expected_rtt_ms: int = 0  # remote stages: escalate only if this fits the time left

    @property
    def remote(self) -> bool:
        return self.where != "edge"


@dataclass
class LadderConfig:
    task: str
    model_version: int  # u32, the same for every tier of one build (ladder.wire messages)
    classes: int
    deadline_ms: int  # an answer's whole budget, from frame read to answer
    input_scale: float
    input_zero_point: int
    stages: list[Stage] = field(default_factory=list)
    format: int = FORMAT

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"no stage {name!r} (stages: {', '.join(s.name for s in self.stages)})")

    def next_stage(self, name: str) -> Stage | None:
        names = [s.name for s in self.stages]
        i = names.index(self.stage(name).name)
        return self.stages[i + 1] if i + 1 < len(self.stages) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "task": self.task,
            "model_version": self.model_version,
            "classes": self.classes,
            "deadline_ms": self.deadline_ms,
            "input": {"scale": self.input_scale, "zero_point": self.input_zero_point},
            "stages": [{k: v for k, v in asdict(s).items() if v is not None} for s in self.stages],
        }


def exp_lut(logit_scale: float, temperature: float) -> list[int]:
    """``ladder.gate``'s table: round(16384 * exp(-d * scale / T)) for d = 0..255."""
    if logit_scale <= 0 or temperature <= 0:
        raise ConfigError(f"logit scale {logit_scale} and temperature {temperature} must be > 0")
    return [round(gate.EXP_ONE * math.exp(-d * logit_scale / temperature)) for d in range(256)]


def model_version(build_dir: Path) -> int:
    """A u32 naming one build: the first 4 bytes of the sha256 of its manifest's cache key."""
    manifest = Path(build_dir) / "manifest.json"
    try:
        key = json.loads(manifest.read_text())["cache_key"]
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot read the build's cache key ({e})", manifest) from e
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


def load(path: str | Path) -> LadderConfig:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError("not found; run `edgeladder calibrate` first", path) from e
    except (OSError, ValueError) as e:
        raise ConfigError(f"unreadable ({e})", path) from e
    return parse(raw, path)


def parse(raw: Any, path: str | Path = "ladder.json") -> LadderConfig:
    def fail(msg: str):
        raise ConfigError(msg, path)

    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        fail(f"not a ladder config of format {FORMAT}")
    try:
        stages = [_stage(s, fail) for s in raw["stages"]]
        cfg = LadderConfig(
            task=str(raw["task"]),
            model_version=int(raw["model_version"]),
            classes=int(raw["classes"]),
            deadline_ms=int(raw["deadline_ms"]),
            input_scale=float(raw["input"]["scale"]),
            input_zero_point=int(raw["input"]["zero_point"]),
            stages=stages,
        )
    except (KeyError, TypeError, ValueError) as e:
        fail(f"missing or invalid field ({e})")
    if not cfg.stages or cfg.stages[0].where != "edge":
        fail("the first stage must run on the board (where = edge)")
    seen_remote = False
    for s in cfg.stages:
        if seen_remote and not s.remote:
            fail(f"stage {s.name!r}: board stages must come before remote ones")
        seen_remote = seen_remote or s.remote
    if not 0 <= cfg.model_version < 2**32:
        fail("model_version must be a u32")
    if not 0 < cfg.deadline_ms < 65536:
        fail("deadline_ms must be 1..65535 (it travels as a u16)")
    return cfg


def _stage(s: dict[str, Any], fail) -> Stage:
    st = Stage(
        name=str(s["name"]),
        where=str(s["where"]),
        measure=str(s["measure"]),
        threshold=int(s["threshold"]),
        temperature=float(s["temperature"]),
        exp_lut=[int(v) for v in s["exp_lut"]],
        budget_ms=int(s["budget_ms"]),
        model=s.get("model"),
        tflite=s.get("tflite"),
        expected_rtt_ms=int(s.get("expected_rtt_ms", 0)),
    )
    if st.where not in WHERE:
        fail(f"stage {st.name!r}: where must be one of {', '.join(WHERE)}")
    if st.measure not in gate.MEASURES:
        fail(f"stage {st.name!r}: measure must be one of {', '.join(gate.MEASURES)}")
    if not 0 <= st.threshold <= gate.ONE:
        fail(f"stage {st.name!r}: threshold must be 0..65536 (Q16)")
    if len(st.exp_lut) != 256 or st.exp_lut[0] != gate.EXP_ONE:
        fail(f"stage {st.name!r}: exp_lut must have 256 entries starting at {gate.EXP_ONE}")
    if st.where == "edge" and not st.model:
        fail(f"stage {st.name!r}: a board stage needs `model` (the .ldr file)")
    if st.remote and not st.tflite:
        fail(f"stage {st.name!r}: a remote stage needs `tflite`")
    return st


def save(path: str | Path, cfg: LadderConfig) -> Path:
    """Write atomically (temp file + rename), compact: a board parses it with little RAM."""
    return write_text(Path(path), json.dumps(cfg.to_json(), separators=(",", ":")) + "\n")


def device_json(
    device: int,
    *,
    fleet: str,
    link: dict[str, Any],
    sensor: dict[str, Any] | None = None,
    gateway: str = "gateway",
) -> str:
    """A board's /device.json: its id, fleet, link (mqtt host/port or serial) and sensor."""
    if not 0 <= device < 2**32:
        raise ConfigError(f"device id {device} is not a u32")
    if link.get("kind") not in ("mqtt", "serial"):
        raise ConfigError(f"link kind {link.get('kind')!r}: use mqtt or serial")
    out: dict[str, Any] = {"device": device, "fleet": fleet, "link": link, "gateway": gateway}
    if sensor is not None:
        out["sensor"] = sensor
    return json.dumps(out, separators=(",", ":")) + "\n"
