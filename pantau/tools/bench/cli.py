"""`pantau bench`: benchmarks, printed as tables (or one JSON object)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from pantau.settings import DEFAULT_CITY_FILE, SettingsError, get_settings
from pantau.tools.bench.decode import DecodeRow, measure
from pantau.tools.bench.ingest import BenchConfig, BenchError, BenchResult, machine, run_bench

app = typer.Typer(help="Benchmarks.", no_args_is_help=True, pretty_exceptions_enable=False)
# Wide enough for the table when the output is a file or a pipe.
console = Console(width=None if Console().is_terminal else 140)
err = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Benchmarks (run as commands, never as timed tests)."""


def _fmt(value: float | None, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


def _print_machine(info: dict[str, str]) -> None:
    console.print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))


def print_result(result: BenchResult) -> None:
    """The results table, the targets and the machine."""
    table = Table(title="pantau bench ingest")
    for column in ("", "scenario", "readings", "readings/s", "p50", "p99", "lost", "dup",
                   "peak RSS"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("", "scenario") else "right")
    for row in result.rows:
        table.add_row(
            f"({row.key})", row.name, f"{row.readings:,}", f"{row.readings_per_s:,.0f}",
            _fmt(row.p50_s, "{:.3f} s"), _fmt(row.p99_s, "{:.3f} s"),
            _fmt(row.lost, "{:,}"), _fmt(row.duplicated, "{:,}"),
            _fmt(row.peak_rss_mb, "{:.0f} MB"),
        )  # fmt: skip
    console.print(table)
    targets = Table(title="targets")
    for column in ("target", "measured", "required", "result"):
        targets.add_column(column)
    for target in result.targets:
        targets.add_row(
            target.name, _fmt(target.measured, "{:.3f}"), f"{target.required:g}",
            "[green]PASS[/green]" if target.passed else "[red]FAIL[/red]",
        )  # fmt: skip
    console.print(targets)
    for row in result.rows:
        for note in row.notes:
            console.print(f"({row.key}) {note}")
    _print_machine(result.machine)


R = TypeVar("R")


def _given(base: dict[str, object], **options: object) -> dict[str, object]:
    """``base`` plus every option that was given (the others keep the config's defaults)."""
    return {**base, **{name: value for name, value in options.items() if value is not None}}


def _measure(run: Callable[[], R], *, failure: type[Exception] = BenchError) -> R:
    """Run a benchmark; a failure is a message and exit status 1, not a traceback."""
    try:
        return run()
    except failure as error:
        err.print(f"[red]benchmark failed:[/red] {error}")
        raise typer.Exit(1) from None


def _server_url(option: str | None) -> str:
    """The server to measure: the option, else PANTAU_DATABASE_URL like every command."""
    if option:
        return option
    try:
        settings = get_settings()
    except SettingsError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return BenchConfig.admin_url


@app.command("ingest")
def ingest(
    quick: Annotated[
        bool, typer.Option(help="Small counts: a smoke run, not a measurement.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="The PostgreSQL/TimescaleDB server to measure: a URL of any database on it, "
            "with a role that may create databases (the bench makes its own and drops them). "
            "Default: PANTAU_DATABASE_URL, else the local server on port 5432."
        ),
    ] = None,
    city: Annotated[
        Path, typer.Option(help="City file the load is drawn from.")
    ] = DEFAULT_CITY_FILE,
    messages: Annotated[int | None, typer.Option(help="Messages for (a), (c), (d).")] = None,
    packs: Annotated[int | None, typer.Option(help="SenML packs of 50 for (e).")] = None,
    copy_rows: Annotated[int | None, typer.Option(help="Rows for (b).")] = None,
    publishers: Annotated[int | None, typer.Option(help="Publishing processes.")] = None,
    load_niceness: Annotated[
        int | None,
        typer.Option(min=0, max=19, help="Niceness of the load processes (0: same priority)."),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(min=1, help="Times (b) and the drain of (e) alternate; medians count."),
    ] = None,
) -> None:
    """Throughput, latency, loss and memory of ingest against its ceilings and a naive baseline.

    The storage mode is the server's: TimescaleDB where it preloads the extension, else plain
    PostgreSQL. To compare the modes, run it once against each server, e.g.
    `PANTAU_DATABASE_URL=postgresql://postgres@127.0.0.1:5433/postgres pantau bench ingest`;
    the note of (e) gives the cost of refreshing the rollups in that mode.
    """
    overrides = _given(
        {"admin_url": _server_url(database_url), "city_file": city,
         "log": err.print if as_json else console.print},
        messages=messages, packs=packs, copy_rows=copy_rows, publishers=publishers,
        load_niceness=load_niceness, rounds=rounds,
    )  # fmt: skip
    config = BenchConfig.quick(**overrides) if quick else BenchConfig(**overrides)  # type: ignore[arg-type]
    result = _measure(partial(run_bench, config))
    if as_json:
        print(result.to_json())
    else:
        print_result(result)


@app.command("decode")
def decode_bench(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    city: Annotated[
        Path, typer.Option(help="City file whose sensors the payloads name.")
    ] = DEFAULT_CITY_FILE,
    messages: Annotated[int, typer.Option(min=1, help="Single-observation messages.")] = 100_000,
    packs: Annotated[int, typer.Option(min=1, help="SenML packs of 50.")] = 4_000,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats; the fastest counts.")] = 5,
) -> None:
    """Decoding and COPY encoding alone: ingest's decoding thread, per reading, no services."""
    rows: list[DecodeRow] = []
    with Progress(console=err, transient=True) as progress:
        for shape, count in (("single", messages), ("senml", packs)):
            task = progress.add_task(f"decoding {shape}", total=repeats)
            step = partial(progress.advance, task)
            rows.append(measure(city, shape=shape, messages=count, repeats=repeats, progress=step))
    if as_json:
        shown = [{**asdict(r), "us_per_reading": r.us_per_reading} for r in rows]
        print(json.dumps({"machine": machine(), "rows": shown}))
        return
    table = Table(title="pantau bench decode (best of repeats)")
    for column in ("shape", "messages", "readings", "readings/s", "µs/reading"):
        table.add_column(column, justify="left" if column == "shape" else "right")
    for r in rows:
        table.add_row(
            r.shape, f"{r.messages:,}", f"{r.readings:,}", f"{r.readings_per_s:,.0f}",
            f"{r.us_per_reading:.2f}",
        )  # fmt: skip
    console.print(table)
    _print_machine(machine())


@app.command("alerts")
def alerts_bench(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    database_url: Annotated[
        str | None, typer.Option(help="Admin URL of the server to use (as for `ingest`).")
    ] = None,
    rate: Annotated[float, typer.Option(min=1, help="Load, readings per second.")] = 5_000.0,
    duration_s: Annotated[float, typer.Option(min=15, help="Length of the load.")] = 40.0,
) -> None:
    """Publish-to-alert latency (committed, on MQTT, and at an Alertmanager webhook) of
    threshold crossings under load."""
    from pantau.tools.bench.alerts import AlertBenchConfig, run_alert_bench

    config = AlertBenchConfig(
        admin_url=_server_url(database_url), rate_per_s=rate, duration_s=duration_s,
        log=err.print if as_json else console.print,
    )  # fmt: skip
    result = _measure(partial(run_alert_bench, config))
    if as_json:
        print(result.to_json())
        return
    console.print(
        f"probes {result.answered}/{result.probes} answered under "
        f"{result.load_readings_per_s:,.0f} readings/s: on MQTT p50 "
        f"{_fmt(result.p50_s, '{:.3f} s')}, p99 {_fmt(result.p99_s, '{:.3f} s')}; committed p50 "
        f"{_fmt(result.commit_p50_s, '{:.3f} s')}, p99 {_fmt(result.commit_p99_s, '{:.3f} s')}; "
        f"target p99 < {result.target_p99_s:g} s: "
        + ("[green]PASS[/green]" if result.passed else "[red]FAIL[/red]")
    )
    if result.notified is None:
        console.print("notifications: not measured (Alertmanager is not installed)")
    else:
        console.print(
            f"notified at the webhook (Alertmanager, group_wait 0): {result.notified}/"
            f"{result.probes}, p50 {_fmt(result.webhook_p50_s, '{:.3f} s')}, p99 "
            f"{_fmt(result.webhook_p99_s, '{:.3f} s')}"
        )
    _print_machine(result.machine)


@app.command("api")
def api_bench(
    quick: Annotated[bool, typer.Option(help="Small counts: a smoke run.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    database_url: Annotated[
        str | None, typer.Option(help="Admin URL of the server (default PANTAU_DATABASE_URL).")
    ] = None,
    sensors: Annotated[int | None, typer.Option(min=3, help="Sensors of the city.")] = None,
    days: Annotated[int | None, typer.Option(min=1, help="Days of readings.")] = None,
    interval_s: Annotated[int | None, typer.Option(min=1, help="Seconds between readings.")] = None,
    clients: Annotated[int | None, typer.Option(min=1, help="Concurrent clients.")] = None,
    duration_s: Annotated[float | None, typer.Option(help="Seconds per scenario.")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="API processes (default: as the compose stack).")
    ] = None,
) -> None:
    """Latency of the open-data API under concurrent clients, and CSV export speed."""
    from pantau.tools.bench.api import (
        ApiBenchConfig,
        ApiBenchError,
        print_api_result,
        run_api_bench,
    )

    overrides = _given(
        {"admin_url": _server_url(database_url), "log": err.print if as_json else console.print},
        sensors=sensors, days=days, interval_s=interval_s, clients=clients, duration_s=duration_s,
        workers=workers,
    )  # fmt: skip
    config = ApiBenchConfig.quick(**overrides) if quick else ApiBenchConfig(**overrides)  # type: ignore[arg-type]
    result = _measure(partial(run_api_bench, config), failure=ApiBenchError)
    if as_json:
        print(result.to_json())
        return
    print_api_result(result, console)
    _print_machine(result.machine)


@app.command("pages")
def pages_bench(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    database_url: Annotated[
        str | None, typer.Option(help="Admin URL of the server (default PANTAU_DATABASE_URL).")
    ] = None,
    city: Annotated[Path, typer.Option(help="City file of the pages.")] = DEFAULT_CITY_FILE,
    rounds: Annotated[int, typer.Option(min=1, help="Loads of each page.")] = 5,
) -> None:
    """First paint of the city page and the control page in Chromium (the browser's timing)."""
    from pantau.tools.bench.pages import (
        TARGET_FIRST_PAINT_S,
        PagesBenchConfig,
        PagesBenchError,
        run_pages_bench,
    )

    config = PagesBenchConfig(
        admin_url=_server_url(database_url), city_file=city, rounds=rounds,
        log=err.print if as_json else console.print,
    )  # fmt: skip
    result = _measure(partial(run_pages_bench, config), failure=PagesBenchError)
    if as_json:
        print(result.to_json())
        return
    table = Table(title=f"pantau bench pages ({result.sensors} sensors, {rounds} loads each)")
    for column in ("page", "first paint median", "first paint max", "drawn median", "drawn max"):
        table.add_column(column, justify="left" if column == "page" else "right")
    for row in result.rows:
        table.add_row(
            row.path, f"{row.first_paint_median_ms:.0f} ms", f"{max(row.first_paint_ms):.0f} ms",
            f"{row.drawn_median_ms:.0f} ms", f"{max(row.drawn_ms):.0f} ms",
        )  # fmt: skip
    console.print(table)
    verdict = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
    console.print(f"target: every first paint under {TARGET_FIRST_PAINT_S:g} s: {verdict}")
    _print_machine(result.machine)
