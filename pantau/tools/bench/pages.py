"""`pantau bench pages`: how soon the city page and the control page paint, in a real browser.

A scratch database gets the Kabupaten Pasuruan city file (48 sensors) and a day of synthetic
readings of every metric, every minute (made by the database, as for `pantau bench api`), the
API runs as its own process (``python -m api``), and Debian's Chromium, driven by
Playwright (the test dependencies: ``make test-setup``), opens each page ``rounds`` times in a
fresh browser context (nothing cached). Each load reports the browser's own paint timing
(``first-contentful-paint``) and the moment the page has drawn the sensors (its
``pantau:drawn`` mark: map symbols, table, rivers). Requests leaving the machine are refused.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from pantau.city import load_city
from pantau.db import registry
from pantau.db.migrate import migrate
from pantau.settings import DEFAULT_CITY_FILE, StorageSettings
from pantau.tools.bench.api import ApiBenchConfig, api_process, fill
from pantau.tools.bench.ingest import machine
from pantau.tools.scratch import temporary_database

TARGET_FIRST_PAINT_S = 1.0
PAGES = ("/", "/control")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class PagesBenchError(RuntimeError):
    """The benchmark could not run; the message says why."""


@dataclass(kw_only=True)
class PagesBenchConfig:
    admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    city_file: Path = DEFAULT_CITY_FILE
    rounds: int = 5
    log: Callable[[str], None] = print


@dataclass
class PageRow:
    path: str
    loads: int
    first_paint_ms: list[float] = field(default_factory=list)
    drawn_ms: list[float] = field(default_factory=list)

    @property
    def first_paint_median_ms(self) -> float:
        return statistics.median(self.first_paint_ms)

    @property
    def drawn_median_ms(self) -> float:
        return statistics.median(self.drawn_ms)


@dataclass
class PagesBenchResult:
    rows: list[PageRow]
    sensors: int
    readings: int
    machine: dict[str, str]

    @property
    def passed(self) -> bool:
        return all(max(r.first_paint_ms) / 1000 < TARGET_FIRST_PAINT_S for r in self.rows)

    def to_json(self) -> str:
        rows = [
            {**asdict(r), "first_paint_median_ms": r.first_paint_median_ms,
             "drawn_median_ms": r.drawn_median_ms}
            for r in self.rows
        ]  # fmt: skip
        return json.dumps(
            {
                "rows": rows,
                "sensors": self.sensors,
                "readings": self.readings,
                "target_first_paint_s": TARGET_FIRST_PAINT_S,
                "passed": self.passed,
                "machine": self.machine,
            }
        )


def _fill(url: str, config: PagesBenchConfig, now: datetime) -> tuple[int, int]:
    """The city and a day of synthetic readings every minute, as `pantau bench api` makes them
    (a daily wave within each metric's range: gauges pass their thresholds); (sensors,
    readings)."""
    city = load_city(config.city_file)
    with psycopg.connect(url, autocommit=True) as conn:
        registry.load_city(conn, city)
    readings = fill(url, ApiBenchConfig(days=1, interval_s=60, log=lambda _: None), now=now)
    return len(city.sensors), readings


def _measure(base: str, path: str, rounds: int, browser: Any) -> PageRow:
    row = PageRow(path=path, loads=rounds)
    for _ in range(rounds):
        context = browser.new_context(viewport={"width": 1280, "height": 900})

        def local_only(route: Any) -> None:
            host = urlsplit(route.request.url).hostname or ""
            if host in {"127.0.0.1", "localhost"} or route.request.url.startswith("data:"):
                route.continue_()
            else:
                route.abort()

        context.route("**/*", local_only)
        page = context.new_page()
        page.goto(f"{base}{path}", wait_until="load")
        page.wait_for_function("performance.getEntriesByName('pantau:drawn').length > 0")
        timings = page.evaluate(
            """() => ({
                paint: performance.getEntriesByName('first-contentful-paint')[0]?.startTime,
                drawn: performance.getEntriesByName('pantau:drawn')[0]?.startTime,
            })"""
        )
        context.close()
        if timings["paint"] is None:
            raise PagesBenchError(f"{path}: the browser reported no first-contentful-paint")
        row.first_paint_ms.append(round(float(timings["paint"]), 1))
        row.drawn_ms.append(round(float(timings["drawn"]), 1))
    return row


def run_pages_bench(config: PagesBenchConfig) -> PagesBenchResult:
    """Build the data, start the API, load each page in Chromium."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise PagesBenchError("Chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise PagesBenchError("Playwright is not installed (make test-setup)") from None
    storage = StorageSettings(raw_retention=timedelta(days=7), premake_partitions=2)
    with temporary_database(config.admin_url, prefix="pantau_bench_pages") as url:
        migrate(url, storage)
        now = datetime.now(UTC)
        started = time.monotonic()
        sensors, readings = _fill(url, config, now)
        config.log(f"database: {sensors} sensors, {readings:,} readings of the last day "
                   f"({time.monotonic() - started:.0f} s)")  # fmt: skip
        with (
            api_process(url) as (base, _),
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                _measure(base, "/", 1, browser)  # the API's first answers warm its caches
                rows = [_measure(base, path, config.rounds, browser) for path in PAGES]
            finally:
                browser.close()
    return PagesBenchResult(rows=rows, sensors=sensors, readings=readings, machine=machine())
