"""``edgeladder demo``: parse, delegate to :mod:`edgeladder_sim.demo.run`, print."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeladder.commands.options import json_option, target_options


@click.command()
@click.argument("task", required=False, default="models/digits", type=click.Path(path_type=Path))
@click.option(
    "--build-dir",
    type=click.Path(path_type=Path),
    help="Where the task's build lives (default build/<task>).",
)
@click.option("--boards", default=4, show_default=True, help="Virtual ESP32 boards.")
@click.option(
    "--rate", "rate_hz", default=40.0, show_default=True, help="Frames per second per board."
)
@click.option(
    "--broker",
    type=click.Choice(["amqtt", "mosquitto"]),
    default="amqtt",
    show_default=True,
    help="The broker to start: embedded amqtt, or Debian's mosquitto.",
)
@click.option("--mqtt", "mqtt_url", help="Use this broker (mqtt://host:port) instead.")
@target_options(
    "Calibrate for accuracy within DELTA of the large tier (validation split).",
    "Calibrate for at most this share escalated instead.",
    -0.003,
)
@click.option("--no-outage", is_flag=True, help="Skip the pass with the gateway killed.")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Report folder (default build/<task>/demo)."
)
@click.option("--keep", type=click.Path(path_type=Path), help="Keep boards' flash and logs here.")
@json_option("the summary only")
def demo(
    task: Path,
    build_dir: Path | None,
    boards: int,
    rate_hz: float,
    broker: str,
    mqtt_url: str | None,
    target_accuracy: float,
    max_escalation: float | None,
    no_outage: bool,
    out: Path | None,
    keep: Path | None,
    as_json: bool,
) -> None:
    """Run the whole ladder on this machine and report what it bought.

    Builds TASK (cached), calibrates the gates, starts a broker, a gateway tier and a cloud
    tier (`edgeladder serve`), powers on N virtual ESP32s running the firmware and the tiny
    model, streams the held-out set to them with a live dashboard, then streams again with
    the gateway killed and restarted. Prints the comparison with each tier alone and with
    fixed thresholds 0.95/0.90, and writes report.html and demo.json.
    """
    from rich.console import Console

    from edgeladder_sim.demo.dashboard import Dashboard, print_final
    from edgeladder_sim.demo.report_html import write_html
    from edgeladder_sim.demo.run import DemoOptions, run_demo
    from edgeladder_sim.demo.stats import ISSUE_KEYS, demo_json

    if boards < 1:
        raise click.BadParameter("at least one board", param_hint="--boards")
    opts = DemoOptions(
        task=task,
        build_dir=build_dir,
        boards=boards,
        rate_hz=rate_hz,
        broker=broker,
        mqtt_url=mqtt_url,
        target_accuracy=target_accuracy,
        max_escalation=max_escalation,
        outage=not no_outage,
        workdir=keep,
        quiet=as_json,
    )
    console = Console(stderr=as_json)

    def step(text: str) -> None:
        if not as_json:
            console.print(f"[bold cyan]›[/] {text}")

    with Dashboard(console if not as_json else Console(quiet=True)) as dash:
        report, facts = run_demo(opts, step=step, dashboard=dash)
    summary = demo_json(report)
    summary["facts"] = {k: v for k, v in facts.items() if k != "calibration"}
    out_dir = out or Path(facts["build_dir"]) / "demo"
    from edgeladder.util.atomic import write_text

    write_text(out_dir / "demo.json", json.dumps(summary, indent=2) + "\n")
    html = write_html(out_dir / "report.html", report)
    if as_json:
        click.echo(json.dumps({k: summary[k] for k in ISSUE_KEYS}, indent=2))
        return
    print_final(console, report)
    f = facts
    console.print(
        f"live ladder = offline replay on {f['live_matches_replay']:.1%} of the main-pass answers"
        f" (replay: {f['offline_replay_accuracy']:.2%} accuracy,"
        f" {f['offline_replay_escalation_rate']:.1%} escalated);"
        f" {f['escalations_on_the_wire']} escalations on the wire,"
        f" {f['escalation_mqtt_packet_bytes']:.0f} B per MQTT PUBLISH with its topic"
    )
    console.print(f"report: {html}  summary: {out_dir / 'demo.json'}")
