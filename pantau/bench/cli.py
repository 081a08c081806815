"""`pantau bench`: benchmarks, printed as tables (or one JSON object)."""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from pantau.bench.decode import DecodeRow, measure
from pantau.bench.ingest import BenchConfig, BenchError, BenchResult, machine, run_bench
from pantau.settings import DEFAULT_CITY_FILE

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


@app.command("ingest")
def ingest(
    quick: Annotated[
        bool, typer.Option(help="Small counts: a smoke run, not a measurement.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    database_url: Annotated[
        str, typer.Option(help="Admin URL of the PostgreSQL/TimescaleDB server to measure.")
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
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
    """Throughput, latency, loss and memory of ingest against its ceilings and a naive baseline."""
    overrides: dict[str, object] = {"admin_url": database_url, "city_file": city}
    for name, value in (("messages", messages), ("packs", packs), ("copy_rows", copy_rows),
                        ("publishers", publishers), ("load_niceness", load_niceness),
                        ("rounds", rounds)):  # fmt: skip
        if value is not None:
            overrides[name] = value
    overrides["log"] = err.print if as_json else console.print
    config = BenchConfig.quick(**overrides) if quick else BenchConfig(**overrides)  # type: ignore[arg-type]
    try:
        result = run_bench(config)
    except BenchError as error:
        err.print(f"[red]benchmark failed:[/red] {error}")
        raise typer.Exit(1) from None
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
