"""Benchmark `edgeladder serve`: micro-batching vs batch size 1 at the same p99 latency bound.

    python bench/tiers.py [--json] [--p99-ms 20] [--step-s 2] [--devices 64] [--stage medium]

Through a real Mosquitto broker (``edgeladder_sim.broker.start_broker("mosquitto")``), one
``edgeladder serve`` child process serves a digits tier (*medium*, the gateway, by default),
once with micro-batching (``--max-batch 16 --max-delay-ms 1``), once without (``--max-batch 1
--max-delay-ms 0``), and once batching only what is already queued (``greedy``: ``--max-batch 16
--max-delay-ms 0``); everything else is the same (queue 64, LiteRT reference kernels).

A load generator (paho) plays many boards: open loop, ESCALATEs published at a fixed rate
whatever comes back (QoS 0, as boards send them) from ``--devices`` device ids in turn, real
digits inputs; RESULTs are timed by a second paho client in a child process (so that receiving
does not wait behind the publishing loop for the GIL). Per rate step: latency = publish ->
RESULT received (p50, p99), throughput = RESULTs received per second, the mean batch the tier
ran (from its /metrics), and what was rejected (queue_full) or lost. Rates climb until two steps
in a row fail the bound (p99 over ``--p99-ms``, or anything rejected or lost). Per mode: the
highest throughput of a step within the bound, and the most answers/s at any load; the ratios
batched / unbatched of both.

With two or more CPUs the tier gets one to itself and the generator and the broker share the
rest (``sched_setaffinity``): otherwise the generator's own MQTT work, as costly per message as
the tier's, would decide the figure. Nothing here asserts a time; figures vary run to run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [
    str(REPO / "host"),
    str(REPO / "simulator"),
    str(REPO / "firmware"),
]

import paho.mqtt.client as mqtt  # noqa: E402

from edgeladder.policy import config as ladderconfig  # noqa: E402
from edgeladder.serve.links.mqtt import nodelay, parse_url  # noqa: E402
from edgeladder.serve.process import ServeProcess, ServeProcessError  # noqa: E402
from edgeladder_sim.broker import free_port, start_broker  # noqa: E402
from edgeladder_sim.fixtures.ladder import digits_inputs, write_ladder  # noqa: E402
from ladder import topics, wire  # noqa: E402

FLEET = "bench"
RATES = (250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2500, 3000, 3500, 4000, 5000, 6000, 8000)
MISSES = 2  # rate steps over the bound in a row before a mode stops climbing (noise allowance)
# name -> (--max-batch, --max-delay-ms). "greedy" batches only what is already queued: no wait.
MODES = {"batched": ("16", "1"), "unbatched": ("1", "0"), "greedy": ("16", "0")}
DEADLINE_MS = 1000  # generous: the bound under test is the p99, not the board's deadline
GRACE_S = 0.5  # after a step, how long late RESULTs may still arrive


def pin(pid: int, which: str) -> None:
    """Keep the tier and the load (generator + broker) on separate CPUs where there are two or
    more: otherwise the generator's own MQTT work takes CPU from the tier it measures."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(pid, {cpus[0]} if which == TIER_CPU else set(cpus[1:]))


TIER_CPU, LOAD_CPUS = "tier", "load"


def start_tier(ladder_dir: Path, stage: str, broker_url: str, max_batch: str, delay: str,
               log: Path) -> ServeProcess:  # fmt: skip
    """The served tier: an `edgeladder serve` child on its own CPU, ready."""
    tier = ServeProcess(
        ladder_dir, stage, "--mqtt", broker_url, "--fleet", FLEET, "--allow-unknown",
        "--max-batch", max_batch, "--max-delay-ms", delay, "--reload-interval", "0",
        log=log, http_port=free_port(),
    ).start()  # fmt: skip
    pin(tier.proc.pid, TIER_CPU)
    try:
        return tier.wait_ready(60)
    except ServeProcessError as e:
        tier.stop()
        raise SystemExit(f"serve did not start: {e}") from e


def _receive(url: str, got, why, ready, stop) -> None:
    # The receiving half of the generator, in its own process: timestamps taken here do not
    # wait for the GIL behind the publishing loop. perf_counter is CLOCK_MONOTONIC on Linux,
    # the same clock in both processes.
    host, port = parse_url(url)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-rx-{os.getpid()}")

    def on_message(client, userdata, msg) -> None:
        t = time.perf_counter()
        p = msg.payload
        try:
            mtype = wire.header(p)[0]
        except ValueError:
            return  # not a reply (the tier only sends good ones)
        if mtype == wire.RESULT:
            ref = wire.unpack_result(p)[0]
            if 0 < ref < len(got):
                got[ref] = t
        elif mtype == wire.REJECT:
            ref, reason, _ = wire.unpack_reject(p)
            if 0 < ref < len(got):
                why[ref] = reason

    c.on_message = on_message
    c.connect(host, port, keepalive=60)
    nodelay(c)
    # QoS 0 on our side: the tier still publishes QoS 1 (that cost is measured), but the
    # generator spends no CPU acknowledging
    c.subscribe(topics.device_filter(FLEET, topics.DOWN), qos=0)
    c.loop_start()
    time.sleep(0.3)  # the subscription is in place
    ready.set()
    stop.wait()
    c.loop_stop()
    c.disconnect()


class Boards:
    """Many boards: ESCALATEs published open loop from here, RESULTs timed in a child process.

    Every ESCALATE has a sequence number unique in the run; it indexes shared arrays of send
    and receive times (and reject reasons)."""

    def __init__(
        self, broker_url: str, devices: int, inputs: np.ndarray, version: int, n: int, tier: str
    ):
        host, port = parse_url(broker_url)
        ctx = mp.get_context("fork")
        self.sent = ctx.Array("d", n + 1, lock=False)
        self.got = ctx.Array("d", n + 1, lock=False)
        self.why = ctx.Array("b", n + 1, lock=False)
        self._stop = ctx.Event()
        ready = ctx.Event()
        self.rx = ctx.Process(
            target=_receive, args=(broker_url, self.got, self.why, ready, self._stop), daemon=True
        )
        self.rx.start()
        pin(self.rx.pid, LOAD_CPUS)
        if not ready.wait(10):
            raise SystemExit("the receiving client did not connect")
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-tx-{os.getpid()}"
        )
        self.client.connect(host, port, keepalive=60)
        nodelay(self.client)  # as the tier and the broker: no Nagle waits
        self.client.loop_start()
        self.devices = [0x1000 + i for i in range(devices)]
        if tier == "gateway":  # the first remote stage: boards escalate to it directly
            self.topics = [topics.device_topic(FLEET, d, topics.UP, "esc") for d in self.devices]
        else:  # a later stage gets chained escalations from the tier below
            self.topics = [topics.tier_topic(FLEET, tier, topics.IN)] * len(self.devices)
        self.inputs = [row.tobytes() for row in inputs]
        self.version = version
        self.capacity = n
        self.seq = 0
        self.buf = bytearray(wire.MAX_MESSAGE)

    def run(self, rate: float, seconds: float) -> dict:
        n = int(rate * seconds)
        if self.seq + n >= self.capacity:
            raise SystemExit("bench: more messages than the arrays hold")
        first = self.seq + 1
        pub = self.client.publish
        t0 = time.perf_counter()
        i = 0
        while i < n:
            due = min(n, int((time.perf_counter() - t0) * rate) + 1)
            while i < due:  # open loop: everything due by now goes out now
                self.seq += 1
                k = self.seq % len(self.devices)
                m = wire.pack_escalate(
                    self.buf, self.devices[k], self.seq, self.version, DEADLINE_MS, 1000, 1,
                    b"\x03\xc8\x05\x64", self.inputs[self.seq % len(self.inputs)],
                )  # fmt: skip
                self.sent[self.seq] = time.perf_counter()
                pub(self.topics[k], bytes(self.buf[:m]), qos=0)
                i += 1
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0.0005:
                time.sleep(wait - 0.0003)
        send_s = time.perf_counter() - t0
        seqs = range(first, first + n)
        end = time.perf_counter() + GRACE_S + 2.0
        while time.perf_counter() < end:
            if all(self.got[q] or self.why[q] for q in seqs[-50:]):
                break
            time.sleep(0.02)
        time.sleep(GRACE_S)
        got = np.array([self.got[q] for q in seqs])
        sent = np.array([self.sent[q] for q in seqs])
        rejected = sum(1 for q in seqs if self.why[q])
        ok = got > 0
        lat = (got[ok] - sent[ok]) * 1000
        last = got[ok].max() if ok.any() else t0
        return {
            "rate": rate,
            "sent_per_s": n / send_s,
            "answered": int(ok.sum()),
            "rejected": rejected,
            "lost": int(n - ok.sum() - rejected),
            "throughput": float(ok.sum() / max(last - t0, 1e-9)),
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        }

    def stop(self) -> None:
        self._stop.set()
        self.rx.join(5)
        self.client.loop_stop()
        self.client.disconnect()


def run_mode(name, ladder_dir, broker, boards, args, workdir) -> dict:
    max_batch, delay = MODES[name]
    log = workdir / f"serve-{name}.log"
    tier = start_tier(ladder_dir, args.stage, broker.url, max_batch, delay, log)
    steps = []
    try:
        boards.run(200, 0.5)  # warm the path (connections, caches), not reported
        for rate in RATES:
            before = tier.metrics()
            step = boards.run(rate, args.step_s)
            after = tier.metrics()
            count = after["edgeladder_batch_size_count"] - before["edgeladder_batch_size_count"]
            total = after["edgeladder_batch_size_sum"] - before["edgeladder_batch_size_sum"]
            step["mean_batch"] = total / count if count else 0.0
            step["ok"] = (
                step["p99_ms"] is not None
                and step["p99_ms"] <= args.p99_ms
                and step["rejected"] == 0
                and step["lost"] == 0
            )
            steps.append(step)
            if not args.json:
                print(_row(name, step), flush=True)
            if not any(s["ok"] for s in steps[-MISSES:]):
                break
            time.sleep(0.2)
    finally:
        tier.stop()
    passing = [s for s in steps if s["ok"]]
    best = max(passing, key=lambda s: s["throughput"]) if passing else None
    return {
        "max_batch": int(max_batch),
        "max_delay_ms": float(delay),
        "steps": steps,
        "best": best,
        # answers/s at the heaviest load tried, whatever the latency: what the tier can do
        "capacity": max(s["throughput"] for s in steps),
    }


def _row(name: str, s: dict) -> str:
    p50 = f"{s['p50_ms']:.2f}" if s["p50_ms"] is not None else "-"
    p99 = f"{s['p99_ms']:.2f}" if s["p99_ms"] is not None else "-"
    return (
        f"{name:10} {s['rate']:>7.0f} {s['sent_per_s']:>8.0f} {p50:>8} {p99:>8} "
        f"{s['throughput']:>10.0f} {s['mean_batch']:>6.2f} {s['rejected']:>5} {s['lost']:>5} "
        f"{'ok' if s['ok'] else 'over'}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--p99-ms", type=float, default=20.0, help="the latency bound (p99, ms)")
    ap.add_argument("--step-s", type=float, default=2.0, help="seconds per rate step")
    ap.add_argument("--stage", default="medium", choices=("medium", "large"), help="tier served")
    ap.add_argument("--devices", type=int, default=64, help="device ids the load comes from")
    ap.add_argument("--build", type=Path, default=REPO / "build" / "digits")
    args = ap.parse_args(argv)
    # As in `edgeladder serve`: the thread that receives RESULTs must not wait 5 ms for the GIL
    # while the publishing loop holds it, or the generator adds its own latency.
    sys.setswitchinterval(0.0005)
    if not (args.build / "medium" / "digits_medium.tflite").exists():
        print(f"error: no digits build at {args.build}: run `edgeladder build models/digits`")
        return 1
    cpus = len(os.sched_getaffinity(0))  # before pinning this process to the load CPUs
    workdir = Path(tempfile.mkdtemp(prefix="edgeladder-bench-tiers-"))
    broker = start_broker("mosquitto", workdir=workdir / "broker")
    pin(broker.proc.pid, LOAD_CPUS)
    pin(0, LOAD_CPUS)  # this process: the generator
    boards = None
    try:
        # threshold 0: the tier answers everything itself (this measures one tier)
        lad = write_ladder(args.build, workdir / "ladder", thresholds={args.stage: 0})
        cfg = ladderconfig.load(lad)
        x, _ = digits_inputs(args.build, 200)
        total = int(sum(RATES) * args.step_s * len(MODES) + 200 * len(MODES)) + 1
        where = cfg.stage(args.stage).where
        boards = Boards(broker.url, args.devices, x, cfg.model_version, total, where)
        if not args.json:
            print(
                f"stage {args.stage}, p99 bound {args.p99_ms:g} ms, {args.devices} devices, "
                f"{args.step_s:g} s steps, {cpus} CPUs (tier on one, load on the rest)"
            )
            print(f"{'mode':10} {'rate/s':>7} {'sent/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
                  f"{'answers/s':>10} {'batch':>6} {'rej':>5} {'lost':>5}")  # fmt: skip
        modes = {name: run_mode(name, lad.parent, broker, boards, args, workdir) for name in MODES}
    finally:
        if boards is not None:
            boards.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    b, u = modes["batched"]["best"], modes["unbatched"]["best"]
    ratio = b["throughput"] / u["throughput"] if b and u else None
    cap_b, cap_u = modes["batched"]["capacity"], modes["unbatched"]["capacity"]
    capacity_ratio = cap_b / cap_u if cap_u else None
    result = {
        "stage": args.stage,
        "p99_bound_ms": args.p99_ms,
        "devices": args.devices,
        "modes": modes,
        "ratio": ratio,
        "capacity_ratio": capacity_ratio,
        "cpus": cpus,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print()
    for name, m in modes.items():
        best = m["best"]
        if best is None:
            print(f"{name}: no step within the bound")
            continue
        print(
            f"{name} (max batch {m['max_batch']}, {m['max_delay_ms']:g} ms): "
            f"{best['throughput']:.0f} answers/s at p99 {best['p99_ms']:.2f} ms "
            f"(mean batch {best['mean_batch']:.2f}); most answers/s at any load "
            f"{m['capacity']:.0f}"
        )
    if ratio is not None:
        print(f"batched / unbatched throughput at p99 <= {args.p99_ms:g} ms: {ratio:.2f}x")
    if capacity_ratio is not None:
        print(f"batched / unbatched answers/s at the heaviest load: {capacity_ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
