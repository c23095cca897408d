"""``edgeladder demo``: the whole ladder on one machine, measured.

build (cached) → calibrate → broker → gateway and cloud tiers (``edgeladder serve`` processes)
→ N virtual ESP32s running our firmware and the tiny model → the held-out set streamed to them
(phase ``main``) → the same stream again with the gateway killed mid-run and restarted
(``before_kill``, ``gateway_down``, ``recovered``) → a report that compares the ladder with each
tier alone and with the fixed thresholds we started from.

The accuracy, escalation rate and latency figures are what the boards answered; the tiers-alone
and fixed-threshold figures are the same int8 models and the same integer gate run on the host
over the same inputs (``cascade_eval``), so that they come from this run too.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgeladder.errors import EdgeladderError
from edgeladder.model.quantmath import quantize
from edgeladder.policy import replay as cascade_eval
from edgeladder.policy.config import LadderConfig
from edgeladder_sim.demo.records import Answer, DemoReport, Phase, SweepPoint
from edgeladder_sim.demo.stats import json_payload_bytes

FLEET = "demo"
GATEWAY, CLOUD = "gateway", "cloud"
TIER_READY_TIMEOUT_S = 90.0
ANSWER_TIMEOUT_S = 60.0


class DemoRunError(EdgeladderError):
    """A part of the demo did not come up or did not answer in time."""


@dataclass
class DemoOptions:
    task: Path = Path("models/digits")
    build_dir: Path | None = None  # default build/<task>
    boards: int = 4
    rate_hz: float = 40.0  # frames per second per board
    broker: str = "amqtt"  # embedded by default; "mosquitto" as in CI
    mqtt_url: str | None = None  # an external broker instead of starting one
    # The calibration target: accuracy within 0.3 points of the large tier on the validation
    # split (docs/calibration.md), or instead a cap on the escalation rate.
    target_accuracy: float | None = -0.003
    max_escalation: float | None = None
    outage: bool = True
    kill_after_s: float = 0.6  # into the second pass, with traffic in flight
    down_for_s: float = 2.5
    recovered_s: float = 2.5  # of answers after the gateway is back
    workdir: Path | None = None
    out_dir: Path | None = None  # report.html and demo.json; default build/<task>/demo
    quiet: bool = False


@dataclass
class Offline:
    """Figures computed on the host over the same test inputs."""

    tier_accuracy: dict[str, float]
    fixed_accuracy: float
    fixed_escalation_rate: float
    replay_accuracy: float
    replay_escalation_rate: float
    replay_labels: np.ndarray
    sweep: list[SweepPoint]  # the board threshold swept over the same inputs


@dataclass
class Run:
    """What the live part of the demo recorded."""

    t0: float
    answers: list[Answer] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    killed_at: float | None = None
    restored_at: float | None = None

    def ms(self, t: float | None) -> float | None:
        return None if t is None else (t - self.t0) * 1000.0


Step = Callable[[str], None]


def run_demo(
    opts: DemoOptions, *, step: Step = lambda s: None, dashboard=None
) -> tuple[DemoReport, dict]:
    """Run everything; return the report and extra facts (paths, calibration figures)."""
    build_dir = ensure_build(opts, step)
    cfg, calibration = ensure_ladder(build_dir, opts, step)
    step("scoring the tiers on the test split (board engine for the board tier, LiteRT above)")
    rows, truth, offline = offline_figures(build_dir, cfg)

    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="edgeladder-demo-"))
    with contextlib.ExitStack() as stack:
        url = opts.mqtt_url
        if url is None:
            from edgeladder_sim.broker import start_broker

            step(f"starting the {opts.broker} broker")
            broker = start_broker(opts.broker, workdir=workdir / "broker")
            stack.callback(broker.stop)
            url = broker.url
        from edgeladder_sim.demo.monitor import Monitor

        monitor = Monitor(url, FLEET).start()
        stack.callback(monitor.stop)
        tiers = start_tiers(build_dir, cfg, url, workdir, step)
        for t in tiers.values():
            stack.callback(t.stop)
        for name in tiers:
            monitor.wait_status(name, "online", TIER_READY_TIMEOUT_S)
        step(f"powering on {opts.boards} virtual ESP32 boards")
        boards = start_boards(build_dir, rows, url, workdir, opts)
        for b in boards:
            stack.callback(b.close)
        run = stream(opts, boards, truth, tiers[GATEWAY], monitor, dashboard, step)

    report = make_report(cfg, offline, run, monitor, rows)
    facts = {
        "build_dir": str(build_dir),
        "workdir": str(workdir),
        "offline_replay_accuracy": offline.replay_accuracy,
        "offline_replay_escalation_rate": offline.replay_escalation_rate,
        "live_matches_replay": _agreement(run.answers, offline.replay_labels),
        "escalation_payload_bytes": sorted({b for _, _, b in monitor.traffic.escalations}),
        "escalation_mqtt_packet_bytes": _mean(monitor.traffic.escalation_packets),
        "escalations_on_the_wire": len(monitor.traffic.escalations),
        "board_heap_free_min": min(monitor.traffic.heap_free.values(), default=None),
        "calibration": calibration,
    }
    if not opts.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return report, facts


# -- steps -------------------------------------------------------------------------------


def ensure_build(opts: DemoOptions, step: Step) -> Path:
    from edgeladder.build.pipeline import build
    from edgeladder.build.recipe import load_recipe

    recipe = load_recipe(opts.task)
    build_dir = opts.build_dir or Path("build") / recipe.task
    step(f"build {recipe.task} (reused when the recipe and data are unchanged)")
    from edgeladder.commands.progress import RichProgress

    with RichProgress(title=f"build {recipe.task}", quiet=opts.quiet) as progress:
        build(recipe, build_dir, progress=progress)
    return build_dir


def ensure_ladder(build_dir: Path, opts: DemoOptions, step: Step) -> tuple[LadderConfig, dict]:
    from edgeladder.policy.calibrate.run import Options, calibrate

    how = (
        f"at most {opts.max_escalation:.0%} escalated"
        if opts.max_escalation is not None
        else f"accuracy within {-(opts.target_accuracy or 0):.1%} of the large tier"
    )
    step(f"calibrating the gates on the validation split ({how})")
    result = calibrate(
        build_dir,
        Options(
            max_escalation=opts.max_escalation,
            target_accuracy=None if opts.max_escalation is not None else opts.target_accuracy,
        ),
    )
    return result.config, result.report


def offline_figures(build_dir: Path, cfg: LadderConfig) -> tuple[np.ndarray, np.ndarray, Offline]:
    from edgeladder.policy.calibrate import scores

    info = scores.load_build(build_dir)
    x, y = scores.split_inputs(info, "test")
    stage_tiers = [s.name for s in cfg.stages]
    tiers = list(info.task["tiers"])
    got = {s.name: s for s in (scores.score_tier(info, t, x) for t in tiers)}
    tier_accuracy = {t: float(np.mean(got[t].predictions == y)) for t in tiers}
    logits = [got[t].logits for t in stage_tiers]
    outputs = [got[t].outputs for t in stage_tiers]
    replay = cascade_eval.evaluate(cfg, logits, outputs, y)
    fixed_cfg = cascade_eval.fixed_threshold_ladder(cfg, [got[t].logit_scale for t in stage_tiers])
    fixed = cascade_eval.evaluate(fixed_cfg, logits, outputs, y)
    sweep = board_threshold_sweep(cfg, logits, outputs, y)
    rows = quantize(x, cfg.input_scale, cfg.input_zero_point).reshape(len(x), -1)
    return (
        rows.astype(np.int8),
        y,
        Offline(
            tier_accuracy=tier_accuracy,
            fixed_accuracy=float(fixed.accuracy),
            fixed_escalation_rate=fixed.escalation_rate,
            replay_accuracy=float(replay.accuracy),
            replay_escalation_rate=replay.escalation_rate,
            replay_labels=replay.labels,
            sweep=sweep,
        ),
    )


def board_threshold_sweep(cfg: LadderConfig, logits, outputs, y) -> list[SweepPoint]:
    """Accuracy vs escalation over the board stage's threshold, the other gates as calibrated."""
    conf = cascade_eval.confidences(cfg, logits)
    points = []
    for t in np.unique(np.concatenate([conf[:, 0], [0, 65537]])):
        stages = [replace(cfg.stages[0], threshold=int(min(t, 65536))), *cfg.stages[1:]]
        r = cascade_eval.evaluate(replace(cfg, stages=stages), logits, outputs, y, conf=conf)
        points.append(SweepPoint(min(t, 65536) / 65536.0, float(r.accuracy), r.escalation_rate))
    return points


def start_tiers(build_dir: Path, cfg: LadderConfig, url: str, workdir: Path, step: Step) -> dict:
    from edgeladder.serve.process import ServeProcess

    remote = [s for s in cfg.stages if s.remote]
    if [s.where for s in remote] != [GATEWAY, CLOUD]:
        raise DemoRunError(
            "the demo runs a gateway and a cloud tier; the ladder has "
            + (", ".join(s.where for s in remote) or "no remote stage")
        )
    tiers = {}
    for s in remote:
        step(f"starting the {s.where} tier: edgeladder serve --stage {s.name} (LiteRT)")
        # a child process each, as on a gateway: killing it is real (the broker sends its will)
        t = ServeProcess(
            build_dir, s.name, "--tier-name", s.where, "--mqtt", url, "--fleet", FLEET,
            log=workdir / f"{s.where}.log", name=s.where,
        ).start()  # fmt: skip
        tiers[s.where] = t
    return tiers


def start_boards(build_dir, rows, url, workdir, opts):
    from urllib.parse import urlparse

    from edgeladder_sim.demo.fleet import start_fleet

    u = urlparse(url)
    return start_fleet(
        build_dir,
        opts.task,
        rows,
        boards=opts.boards,
        rate_hz=opts.rate_hz,
        mqtt_host=u.hostname or "127.0.0.1",
        mqtt_port=u.port or 1883,
        fleet=FLEET,
        gateway=GATEWAY,
        workdir=workdir / "boards",
    )


def stream(opts, boards, truth, gateway, monitor, dashboard, step) -> Run:
    """Phase main: every test row once. Then, if asked, the outage pass."""
    run = Run(t0=time.monotonic())
    total_main = sum(len(b.indices) for b in boards)
    expected_total = total_main
    phase = ["main"]

    def collect() -> list[Answer]:
        out = []
        for b in boards:
            n_main = len(b.indices)
            for a in list(b.feed.answers):
                if a.ref < n_main:
                    idx, ph = int(b.indices[a.ref]), "main"
                else:
                    idx = int(b.pass2[(a.ref - n_main) % len(b.pass2)])
                    ph = _phase_at(a.t, run)
                out.append(
                    Answer(
                        index=idx,
                        device=b.device,
                        truth=int(truth[idx]),
                        label=a.label,
                        source=a.source,
                        latency_ms=a.latency_us / 1000.0,
                        phase=ph,
                        escalated=a.source != "edge",
                        at_ms=(a.t - run.t0) * 1000.0,
                    )
                )
        return out

    def show() -> None:
        if dashboard is not None:
            dashboard.update(
                collect(),
                phase=phase[0],
                gateway_up=monitor.status(GATEWAY) == "online",
                total=max(expected_total, 1),
            )

    def wait(pred, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise DemoRunError(f"{what}: timed out after {timeout:.0f} s")
            if phase[0] != "gateway_down":  # a tier that dies on its own is an error
                gateway.check_alive()
            show()
            time.sleep(0.1)

    for b in boards:
        b.feed.start_main()
    run.phases.append(Phase("main", 0.0))
    wait(
        lambda: all(len(b.feed.answers) >= len(b.indices) for b in boards),
        ANSWER_TIMEOUT_S,
        "waiting for the boards to answer every test input",
    )
    run.phases[-1] = Phase("main", 0.0, run.ms(time.monotonic()))
    if opts.outage:
        step("second pass: the gateway is killed mid-run, then restarted")
        phase[0] = "before_kill"
        start2 = time.monotonic()
        for b in boards:
            b.feed.start_second()
        # a guess for the progress line: the restart's length is not known in advance
        expected_total = total_main + int(
            opts.rate_hz
            * len(boards)
            * (opts.kill_after_s + opts.down_for_s + 3.0 + opts.recovered_s)
        )
        wait(lambda: time.monotonic() - start2 >= opts.kill_after_s, 10, "second pass")
        gateway.kill()
        run.killed_at = time.monotonic()
        run.phases.append(Phase("before_kill", run.ms(start2), run.ms(run.killed_at)))
        phase[0] = "gateway_down"
        wait(lambda: time.monotonic() - run.killed_at >= opts.down_for_s, 30, "outage")
        gateway.start()
        restored = monitor.wait_status(GATEWAY, "online", TIER_READY_TIMEOUT_S, since=run.killed_at)
        run.restored_at = restored
        run.phases.append(Phase("gateway_down", run.ms(run.killed_at), run.ms(restored)))
        phase[0] = "recovered"
        wait(lambda: time.monotonic() - restored >= opts.recovered_s, 30, "recovery")
        for b in boards:
            b.feed.end_second()
        wait(
            lambda: all(len(b.feed.answers) >= b.feed.sent for b in boards),
            ANSWER_TIMEOUT_S,
            "waiting for the last answers",
        )
        run.phases.append(Phase("recovered", run.ms(restored), run.ms(time.monotonic())))
    expected_total = sum(len(b.feed.answers) for b in boards)
    run.answers = collect()
    show()
    return run


def _phase_at(t: float, run: Run) -> str:
    if run.killed_at is None or t < run.killed_at:
        return "before_kill"
    if run.restored_at is None or t < run.restored_at:
        return "gateway_down"
    return "recovered"


def make_report(cfg, offline, run, monitor, rows) -> DemoReport:
    esc = monitor.traffic.escalations
    escalated_rows = [a.index for a in run.answers if a.escalated and a.phase == "main"]
    json_bytes = [json_payload_bytes(rows[i]) for i in escalated_rows] or [
        json_payload_bytes(rows[0])
    ]
    return DemoReport(
        answers=tuple(run.answers),
        tier_accuracy=offline.tier_accuracy,
        fixed_accuracy=offline.fixed_accuracy,
        fixed_escalation_rate=offline.fixed_escalation_rate,
        bytes_per_escalation=round(_mean([b for _, _, b in esc])) if esc else 0,
        json_bytes_per_escalation=round(_mean(json_bytes)),
        deadline_ms=cfg.deadline_ms,
        thresholds={s.name: s.threshold / 65536.0 for s in cfg.stages if s.threshold},
        sweep=tuple(offline.sweep),
        sweep_stage=cfg.stages[0].name,
        input_bytes=int(rows.shape[1]),
        gateway_killed_ms=run.ms(run.killed_at),
        gateway_restored_ms=run.ms(run.restored_at),
        phases=tuple(run.phases),
    )


def _agreement(answers: list[Answer], replay: np.ndarray) -> float | None:
    main = [a for a in answers if a.phase == "main" and a.source != "edge_fallback"]
    if not main:
        return None
    return float(np.mean([a.label == replay[a.index] for a in main]))


def _mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else 0.0
