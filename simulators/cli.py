"""The simulator command line: `pantau simulate` (also `python -m simulators`)."""

from __future__ import annotations

import json
import signal
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from pantau import logs, stack
from pantau.cli_support import city_or_exit
from pantau.settings import MqttSettings, Settings, SettingsError, get_settings
from simulators.config import SHAPES, RunConfig, parse_duration, parse_time
from simulators.faults import FaultConfig
from simulators.load import LoadError, run_load
from simulators.manifest import ManifestError, load_manifest
from simulators.publisher import Credentials, CredentialsError, PublishError
from simulators.runner import RunStats, Simulation, simulated_span
from simulators.scenarios import SCENARIOS, ScenarioError
from simulators.send import SendError, parse_values, send_and_confirm
from simulators.verify import VerifyReport, report_counts, verify

app = typer.Typer(
    help="Simulate the city's sensors over MQTT, send one reading, generate load, verify.",
    pretty_exceptions_enable=False,
    add_completion=False,
    # Options before a subcommand belong to the simulation; `simulate send ...` works too.
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
err = Console(stderr=True)
log = logs.get_logger(__name__)


def _settings() -> Settings:
    try:
        settings = get_settings()
    except SettingsError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    # The stack `pantau up` runs from this directory, where no database or broker is configured.
    return stack.adopt(
        settings,
        announce=lambda line: err.print(line, style="dim", highlight=False, soft_wrap=True),
    )


def _mqtt(settings: Settings, url: str | None, topic_root: str | None) -> MqttSettings:
    update: dict[str, object] = {}
    if url is not None:
        update["url"] = url
    if topic_root is not None:
        update["topic_root"] = topic_root
    try:
        return MqttSettings.model_validate({**settings.mqtt.model_dump(), **update})
    except ValueError as error:
        err.print(f"[red]invalid MQTT option:[/red] {error}")
        raise typer.Exit(2) from None


MqttUrl = Annotated[
    str | None, typer.Option("--mqtt-url", help="Broker, mqtt://HOST:PORT (PANTAU_MQTT__URL).")
]
TopicRoot = Annotated[
    str | None, typer.Option("--topic-root", help="Topic root (PANTAU_MQTT__TOPIC_ROOT).")
]
CityFile = Annotated[
    Path | None, typer.Option("--city", help="City file (PANTAU_CITY_FILE).", dir_okay=False)
]


def _credentials(path: Path | None, template: str | None) -> Credentials | None:
    if path is not None and template is not None:
        err.print("[red]give --credentials or --password-template, not both[/red]")
        raise typer.Exit(2)
    try:
        if path is not None:
            return Credentials.from_file(path)
        if template is not None:
            return Credentials.from_template(template)
    except CredentialsError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    return None


CredentialsFile = Annotated[
    Path | None,
    typer.Option(
        "--credentials",
        help="Device passwords (YAML mapping or CSV device,password): each device logs in "
        "with its own id as user name.",
        dir_okay=False,
    ),
]
PasswordTemplate = Annotated[
    str | None,
    typer.Option(help="Device password template instead of a file, e.g. 'secret-{device}'."),
]


@app.callback(invoke_without_command=True)
def simulate(
    ctx: typer.Context,
    scenario: Annotated[str, typer.Option(help=f"Scenario: {', '.join(SCENARIOS)}.")] = "normal",
    speed: Annotated[
        float, typer.Option(help="Simulated seconds per real second (60: a minute a second).")
    ] = 1.0,
    backfill: Annotated[
        str | None, typer.Option(help="Write the past (e.g. 30d) as fast as the broker takes it.")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Simulated start, ISO 8601 (no offset: WIB).")
    ] = None,
    duration: Annotated[
        str | None, typer.Option(help="Simulated length (e.g. 6h); default depends on scenario.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same readings.")] = 0,
    shape: Annotated[str, typer.Option(help="Payloads: single, list or senml.")] = "single",
    list_size: Annotated[int, typer.Option(help="Observations per list (shape list).")] = 5,
    pack_size: Annotated[int, typer.Option(help="Records per SenML pack (shape senml).")] = 50,
    interval_s: Annotated[
        float, typer.Option("--interval-s", help="Fastest interval (stress scenario).")
    ] = 1.0,
    max_messages: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
    malformed: Annotated[float, typer.Option(help="Rate of malformed payloads.")] = 0.0,
    duplicates: Annotated[float, typer.Option(help="Rate of messages sent twice.")] = 0.0,
    out_of_order: Annotated[float, typer.Option(help="Rate of swapped readings.")] = 0.0,
    late: Annotated[float, typer.Option(help="Rate of readings delivered late.")] = 0.0,
    clock_skew_s: Annotated[
        float, typer.Option("--clock-skew-s", help="Device clocks off by up to this many s.")
    ] = 0.0,
    silent: Annotated[
        float, typer.Option(help="Chance per sensor and hour of falling silent (10-60 min).")
    ] = 0.0,
    burst_after_reconnect: Annotated[
        bool, typer.Option(help="Silent devices keep readings and flush them on return.")
    ] = False,
    out_of_range: Annotated[float, typer.Option(help="Rate of out-of-range values.")] = 0.0,
    spikes: Annotated[
        float, typer.Option(help="Rate of flood-gauge readings that start a spike (1-2 wild).")
    ] = 0.0,
    dropouts: Annotated[
        float, typer.Option(help="Rate of flood-gauge readings that start a dropout (1-5 lost).")
    ] = 0.0,
    manifest: Annotated[
        Path | None, typer.Option(help="Write a manifest of everything sent (for verify).")
    ] = None,
    credentials: CredentialsFile = None,
    password_template: PasswordTemplate = None,
    mqtt_url: MqttUrl = None,
    topic_root: TopicRoot = None,
    city: CityFile = None,
    quiet: Annotated[bool, typer.Option(help="No progress display (logs only).")] = False,
) -> None:
    """Run a scenario: `pantau simulate --scenario flood --speed 60`."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        config = RunConfig(
            scenario=scenario,
            seed=seed,
            speed=speed,
            backfill=None if backfill is None else parse_duration(backfill),
            start=None if start is None else parse_time(start),
            duration=None if duration is None else parse_duration(duration),
            shape=shape,  # type: ignore[arg-type]
            list_size=list_size,
            pack_size=pack_size,
            faults=_faults(ctx.params),
            credentials=_credentials(credentials, password_template),
            manifest=manifest,
            fastest_interval_s=interval_s,
            max_messages=max_messages,
        )
    except ValueError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    settings = _settings()
    the_city = city_or_exit(settings, city)
    mqtt = _mqtt(settings, mqtt_url, topic_root)
    try:
        simulation = Simulation(city=the_city, mqtt=mqtt, config=config)
    except ScenarioError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    logs.configure(settings.log_level, json=settings.log_json)
    log.info(
        "simulation starting", scenario=scenario, speed=speed, sensors=len(the_city.sensors),
        broker=mqtt.url, topic_root=mqtt.topic_root, shape=shape,
    )  # fmt: skip
    stats = _run_until_stopped(simulation, quiet=quiet)
    _print_summary(stats, simulation, manifest)
    log.info(
        "simulation ended", scenario=stats.scenario, messages=stats.messages,
        readings=stats.readings, errors=stats.errors, wall_s=round(stats.wall_elapsed_s, 1),
        faults=dict(stats.faults) or None, last_error=stats.last_error,
    )  # fmt: skip
    if stats.errors:
        raise typer.Exit(1)


def _run_until_stopped(simulation: Simulation, *, quiet: bool) -> RunStats:
    """Run to the end, or until Ctrl-C or SIGTERM (from `pantau up`, a service manager), which
    end it alike: with a summary."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _run_with_display(simulation, quiet=quiet or not console.is_terminal)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _faults(options: dict[str, Any]) -> FaultConfig:
    """The faults to inject, from the options of the same names (ValueError if one is off)."""
    return FaultConfig(**{f.name: options[f.name] for f in fields(FaultConfig)})


def _run_with_display(simulation: Simulation, *, quiet: bool) -> RunStats:
    from rich.live import Live

    def render(stats: RunStats) -> Table:
        table = Table(show_header=False, box=None)
        table.add_row("scenario", stats.scenario)
        table.add_row("simulated time", _sim_time(stats.sim_now or stats.sim_start))
        table.add_row("sent", f"{stats.messages:,} messages, {stats.readings:,} readings")
        table.add_row("rate", f"{stats.rate_per_s:,.1f} msg/s")
        table.add_row("errors", f"[red]{stats.errors}[/red]" if stats.errors else "0")
        if stats.faults:
            table.add_row("faults", ", ".join(f"{k} {v}" for k, v in sorted(stats.faults.items())))
        return table

    try:
        if quiet:
            return simulation.run()
        with Live(render(simulation.stats), console=console, refresh_per_second=4) as live:
            simulation.on_progress = lambda stats: live.update(render(stats))
            return simulation.run()
    except PublishError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None


def _sim_time(t: float) -> str:
    from datetime import datetime

    from simulators.config import WIB

    return datetime.fromtimestamp(t, WIB).strftime("%Y-%m-%d %H:%M:%S WIB")


def _print_summary(stats: RunStats, simulation: Simulation, manifest: Path | None) -> None:
    table = Table(title=f"Simulation summary: {stats.scenario}", show_header=False)
    table.add_row("simulated", f"{_sim_time(stats.sim_start)} + {simulated_span(stats)}")
    table.add_row("messages", f"{stats.messages:,}")
    table.add_row("readings", f"{stats.readings:,}")
    table.add_row("wall time", f"{stats.wall_elapsed_s:.1f} s")
    table.add_row(
        "errors", str(stats.errors) + (f" ({stats.last_error})" if stats.last_error else "")
    )
    for kind, count in sorted(stats.faults.items()):
        table.add_row(f"fault: {kind}", str(count))
    if manifest is not None:
        table.add_row("manifest", str(manifest))
    console.print(table)


@app.command("send")
def send_command(
    sensor: Annotated[str, typer.Argument(help="Sensor id from the city file.")],
    values: Annotated[list[str], typer.Argument(help="METRIC=VALUE pairs.")],
    ts: Annotated[
        str | None, typer.Option(help="Reading time, ISO 8601 (no offset: WIB); default now.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Send out-of-range values anyway.")] = False,
    credentials: CredentialsFile = None,
    password_template: PasswordTemplate = None,
    mqtt_url: MqttUrl = None,
    topic_root: TopicRoot = None,
    city: CityFile = None,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Wait for the PUBACK.")] = 10.0,
    wait_s: Annotated[
        float,
        typer.Option(
            "--wait-s",
            help="Then wait this long for the outcome: stored (seen in the database) or "
            "rejected (ingest's notice, exit 1). 0: do not wait.",
            min=0,
        ),
    ] = 3.0,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Where to look for it (PANTAU_DATABASE_URL)."),
    ] = None,
) -> None:
    """Publish one reading: `pantau simulate send fg-welang-1 water_level=2.7`."""
    settings = _settings()
    the_city = city_or_exit(settings, city)
    try:
        when = None if ts is None else parse_time(ts)
        topic, payload, outcome = send_and_confirm(
            mqtt=_mqtt(settings, mqtt_url, topic_root),
            city=the_city,
            sensor_id=sensor,
            values=parse_values(values),
            ts=when,
            credentials=_credentials(credentials, password_template),
            check_range=not force,
            timeout_s=timeout_s,
            wait_s=wait_s,
            database_url=database_url
            or (settings.database_url.get_secret_value() if settings.database_url else None),
        )
    except (SendError, ValueError) as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    except PublishError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"sent to {topic}: {payload.decode()}", highlight=False, soft_wrap=True)
    if outcome.stored:
        console.print("[green]stored[/green]")
    for notice in outcome.rejections:
        console.print(f"[red]{notice.describe()}[/red]", highlight=False, soft_wrap=True)
    if outcome.rejected:
        raise typer.Exit(1)
    if not outcome.stored and wait_s > 0:
        err.print(f"[yellow]outcome unknown: {outcome.unknown}[/yellow]", soft_wrap=True)


@app.command("verify")
def verify_command(
    manifests: Annotated[list[Path], typer.Argument(help="Manifest file(s) of one run.")],
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="Database (PANTAU_DATABASE_URL).")
    ] = None,
    show: Annotated[int, typer.Option(help="List at most this many problem keys.")] = 10,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the counts as one JSON object instead.")
    ] = False,
) -> None:
    """Check the database against a run's manifest: lost, duplicated, unexpected readings."""
    url = database_url
    if url is None:
        try:
            url = _settings().require_database_url()
        except SettingsError as error:
            err.print(f"[red]{error}[/red] (or pass --database-url)")
            raise typer.Exit(2) from None
    try:
        manifest = load_manifest(manifests)
    except ManifestError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    try:
        report = verify(url, manifest)
    except psycopg.Error as error:
        err.print(f"[red]cannot read the database:[/red] {error}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(report_counts(report)))
    else:
        _print_report(report, show=show)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: VerifyReport, *, show: int) -> None:
    table = Table(title="Verification against the manifest", show_header=False)
    if report.time_range is not None:
        first, last = report.time_range
        table.add_row("time range", f"{first.isoformat()} .. {last.isoformat()}")
    table.add_row("expected readings", f"{report.expected:,}")
    table.add_row("stored", f"{report.stored:,}")

    def flag(count: int) -> str:
        return f"[red]{count:,}[/red]" if count else "0"

    table.add_row("lost", flag(len(report.lost)))
    table.add_row("duplicated", flag(report.duplicated))
    table.add_row("  of which rollup double counts", str(report.rollup_excess))
    table.add_row("value mismatch", flag(len(report.value_mismatch)))
    table.add_row("unexpected", flag(len(report.unexpected)))
    table.add_row(
        "rejections missing",
        f"{flag(len(report.rejected_missing))} of {report.faults_expected_rejected} expected",
    )
    if report.rollup_missing:
        table.add_row("rows not yet in the 1-minute rollup", str(report.rollup_missing))
    table.add_row("result", "[green]OK[/green]" if report.ok else "[red]NOT OK[/red]")
    console.print(table)
    for title, keys in (
        ("lost", report.lost),
        ("value mismatch", report.value_mismatch),
        ("unexpected", report.unexpected),
    ):
        for sensor, metric, time in keys[:show]:
            console.print(f"  {title}: {sensor} {metric} {time.isoformat()}")
        if len(keys) > show:
            console.print(f"  {title}: ... and {len(keys) - show:,} more")
    for fault in report.rejected_missing[:show]:
        console.print(f"  not rejected: {fault.kind} on {fault.topic}")


@app.command("load")
def load_command(
    messages: Annotated[int, typer.Option(help="Messages to publish in total.", min=0)] = 10_000,
    processes: Annotated[int, typer.Option(help="Publishing processes.", min=1)] = 2,
    rate: Annotated[
        float | None, typer.Option(help="Total messages per second (default: flat out).")
    ] = None,
    shape: Annotated[str, typer.Option(help="single, list or senml.")] = "single",
    readings_per_message: Annotated[int, typer.Option(help="Readings in each message.", min=1)] = 1,
    qos: Annotated[int, typer.Option(help="MQTT QoS (0 or 1).", min=0, max=1)] = 1,
    manifest: Annotated[
        Path | None, typer.Option(help="Write manifest parts FILE.0, FILE.1, ...")
    ] = None,
    mqtt_url: MqttUrl = None,
    topic_root: TopicRoot = None,
    city: CityFile = None,
    seed: Annotated[int, typer.Option(help="Seed of the values.")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON line, last.")
    ] = False,
) -> None:
    """Publish a fixed number of messages from several processes (for benchmarks)."""
    if shape not in SHAPES:
        err.print(f"[red]--shape must be one of {', '.join(SHAPES)}[/red]")
        raise typer.Exit(2)
    if rate is not None and rate <= 0:
        err.print("[red]--rate must be positive[/red]")
        raise typer.Exit(2)
    settings = _settings()
    try:
        result = run_load(
            mqtt=_mqtt(settings, mqtt_url, topic_root),
            city=city_or_exit(settings, city),
            messages=messages,
            processes=processes,
            rate_per_s=rate,
            shape=shape,
            readings_per_message=readings_per_message,
            qos=qos,
            manifest=manifest,
            seed=seed,
            progress=not as_json and console.is_terminal,
        )
    except LoadError as error:
        err.print(f"[red]load failed:[/red] {error}")
        raise typer.Exit(1) from None
    if as_json:
        print(result.to_json(), flush=True)
    else:
        table = Table(title="Load", show_header=False)
        table.add_row("messages", f"{result.messages:,}")
        table.add_row("readings", f"{result.readings:,}")
        table.add_row("elapsed", f"{result.elapsed_s:.2f} s")
        table.add_row(
            "rate", f"{result.messages_per_s:,.0f} msg/s, {result.readings_per_s:,.0f} readings/s"
        )
        table.add_row("errors", str(result.errors))
        for path in result.manifests:
            table.add_row("manifest", str(path))
        console.print(table)
    if result.errors:
        raise typer.Exit(1)


def main() -> None:
    app()
