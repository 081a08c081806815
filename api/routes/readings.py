"""History of readings: raw or bucketed, one or several sensors, paged by cursor or streamed.

Buckets of one minute and more read the rollups (``readings_1m``, ``readings_1h``,
``readings_1d``; 5 and 15 minutes combine ``readings_1m``). Day buckets are WIB days
(Asia/Jakarta): a day bucket starts at 00:00+07:00, i.e. 17:00 UTC the day before. A time given
without an offset is read as WIB, as ``pantau simulate send --ts`` does.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import orjson
import psycopg
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from api.deps import (
    CacheDep,
    Exports,
    Registry,
    RegistryDep,
    SensorInfo,
    SettingsDep,
    async_connection,
)
from api.errors import Problem, bad_request
from api.responses import Answer, Body, DownloadResponse, answer_key, json_response
from api.schemas import CSV, ReadingsPage, SensorReadings, alternatives, text_schema
from pantau.catalogue import Family, find_metric, metrics_of
from pantau.settings import Settings

router = APIRouter(tags=["readings"])

WIB = ZoneInfo("Asia/Jakarta")
ZONES = {"UTC": UTC, "Asia/Jakarta": WIB}
Resolution = Literal["raw", "1m", "5m", "15m", "1h", "1d"]
Agg = Literal["avg", "min", "max", "last", "count"]
STEP = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
# Longest range one query may span, per resolution (JSON pages and CSV exports alike).
MAX_RANGE = {
    "raw": timedelta(days=32),
    "1m": timedelta(days=367),
    "5m": timedelta(days=367),
    "15m": timedelta(days=367),
    "1h": timedelta(days=3700),
    "1d": timedelta(days=3700),
}
MAX_SENSORS = 2000
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
AGG_COLUMN = {
    "avg": "value_avg",
    "min": "value_min",
    "max": "value_max",
    "last": "value_last",
    "count": "value_count",
}
COARSE = frozenset({"1h", "1d"})
ROLLUP_COLUMNS = ("value_avg", "value_min", "value_max", "value_count", "value_last")
CSV_CHUNK_BYTES = 256 * 1024


def cache_period_s(settings: Settings, resolution: str) -> float:
    """How long a page of ``resolution`` is kept: hourly and daily buckets longer, as their
    newest bucket moves by minutes while a page of them costs the most to make."""
    period = settings.api.cache_ttl_s
    if period > 0 and resolution in COARSE:
        return max(period, settings.api.cache_ttl_coarse_s)
    return period


def parse_time(text: str, name: str) -> datetime:
    """An RFC 3339 / ISO 8601 time or date; without an offset it is WIB (UTC+7)."""
    value = text.strip()
    try:
        if len(value) == 10:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(
            f"{name} is not a time: expected e.g. 2026-01-31T07:00:00+07:00 (without an offset, "
            "WIB is assumed) or a date 2026-01-31",
            kind="bad-time",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=WIB)
    try:
        moment = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise bad_request(f"{name} is out of range (1970 to 2200)", kind="bad-time") from None
    if not EARLIEST <= moment <= LATEST:
        raise bad_request(f"{name} must lie between 1970 and 2200", kind="bad-time")
    return moment


def floor_bucket(moment: datetime, resolution: str) -> datetime:
    """The start of the bucket holding ``moment`` (days are WIB days)."""
    if resolution == "raw":
        return moment
    if resolution == "1d":
        local = moment.astimezone(WIB)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    step = STEP[resolution]
    return EARLIEST + ((moment - EARLIEST) // step) * step


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """One history query, validated."""

    sensors: tuple[SensorInfo, ...]
    metrics: tuple[str, ...]
    start: datetime
    end: datetime
    resolution: str
    order: str

    @property
    def raw(self) -> bool:
        """Readings as stored, not buckets of the rollups."""
        return self.resolution == "raw"

    @property
    def series(self) -> list[tuple[SensorInfo, str, str]]:
        """(sensor, metric, unit) of every series the query covers."""
        found = []
        for sensor in self.sensors:
            for metric in self.metrics:
                known = find_metric(sensor.family, metric)
                if known is not None:
                    found.append((sensor, metric, known.unit))
        return found


def resolve(
    registry: Registry,
    *,
    sensor: list[str] | None,
    family: Family | None,
    metric: list[str] | None,
    start: str | None,
    end: str | None,
    resolution: str,
    order: str,
    now: datetime | None = None,
) -> HistoryQuery:
    """Validate a history query, with 400/404 problems that say what is wrong."""
    if sensor:
        chosen = {registry.sensor(s).id: registry.sensor(s) for s in sensor}
        if family is not None:
            other = sorted(s.id for s in chosen.values() if s.family is not family)
            if other:
                raise bad_request(f"not {family.value} sensors: {', '.join(other)[:200]}")
        sensors = tuple(chosen[k] for k in sorted(chosen))
    elif family is not None:
        sensors = tuple(s for s in registry.sensors.values() if s.family is family)
    else:
        raise bad_request("name at least one `sensor` or a `family`", kind="no-sensor")
    if not sensors:
        raise Problem(404, "no sensors match", kind="no-sensor")
    if len(sensors) > MAX_SENSORS:
        raise bad_request(f"at most {MAX_SENSORS} sensors per query", kind="too-many-sensors")
    offered = {m for s in sensors for m in metrics_of(s.family)}
    if metric:
        unknown = sorted(set(metric) - offered)
        if unknown:
            raise bad_request(
                f"no such metric for these sensors: {', '.join(unknown)[:200]}; "
                f"they report: {', '.join(sorted(offered))}",
                kind="unknown-metric",
            )
        metrics = tuple(sorted(set(metric)))
    else:
        metrics = tuple(sorted(offered))
    now = now or datetime.now(UTC)
    end_at = parse_time(end, "end") if end else now
    start_at = parse_time(start, "start") if start else end_at - timedelta(days=1)
    start_at = floor_bucket(start_at, resolution)
    if start_at >= end_at:
        raise bad_request("start must be before end", kind="bad-range")
    if end_at - start_at > MAX_RANGE[resolution]:
        raise bad_request(
            f"range too long for resolution {resolution}: at most "
            f"{MAX_RANGE[resolution].days} days; ask for a coarser resolution or split it",
            kind="range-too-long",
        )
    return HistoryQuery(sensors, metrics, start_at, end_at, resolution, order)


def _series_filter(query: HistoryQuery) -> tuple[sql.Composable, dict[str, Any]]:
    ids = [s.id for s in query.sensors]
    # A single series compares with `=`, so the index on (sensor, metric, time) also gives
    # the order and the planner needs no sort.
    if len(ids) == 1 and len(query.metrics) == 1:
        clause = sql.SQL("sensor_id = %(sensor)s AND metric = %(metric)s")
        return clause, {"sensor": ids[0], "metric": query.metrics[0]}
    clause = sql.SQL("sensor_id = ANY(%(sensors)s) AND metric = ANY(%(metrics)s)")
    return clause, {"sensors": ids, "metrics": list(query.metrics)}


def build_sql(
    query: HistoryQuery,
    *,
    cursor: tuple[datetime, str, str] | None,
    limit: int | None,
    by_series: bool = False,
) -> tuple[sql.Composed, dict[str, Any], tuple[str, ...]]:
    """The query and its parameters; the value columns it returns after time, sensor, metric.

    Rows come by time, then sensor and metric; ``by_series`` orders them by sensor, metric,
    then time instead: for raw readings the order of the key index, so that a whole export
    streams without a sort (see ``export_session``).
    """
    where, params = _series_filter(query)
    params |= {"start": query.start, "end": query.end}
    desc = query.order == "desc"
    direction = sql.SQL("DESC" if desc else "ASC")
    keyset: sql.Composable = sql.SQL("")
    if cursor is not None:
        params |= {"ct": cursor[0], "cs": cursor[1], "cm": cursor[2]}
        keyset = sql.SQL(" AND (time, sensor_id, metric) {} (%(ct)s, %(cs)s, %(cm)s)").format(
            sql.SQL("<" if desc else ">")
        )
    if query.raw:
        columns: tuple[str, ...] = ("value",)
        if cursor is not None:
            # Redundant with the row comparison, but usable by the index: no rescan of the
            # pages already served.
            keyset = sql.Composed([keyset, sql.SQL(" AND time {} %(ct)s").format(
                sql.SQL("<=" if desc else ">="))])  # fmt: skip
        source = sql.SQL(
            "SELECT time, sensor_id, metric, value FROM readings "
            "WHERE {where} AND time >= %(start)s AND time < %(end)s{keyset}"
        ).format(where=where, keyset=keyset)
        body: sql.Composable = source
    else:
        columns = ROLLUP_COLUMNS
        if query.resolution in ("1m", "1h", "1d"):
            table = sql.Identifier(f"readings_{query.resolution}")
            bucket_keyset: sql.Composable = sql.SQL("")
            if cursor is not None:
                bucket_keyset = sql.SQL(" AND bucket {} %(ct)s").format(
                    sql.SQL("<=" if desc else ">=")
                )
            body = sql.SQL(
                "SELECT * FROM (SELECT bucket AS time, sensor_id, metric, value_avg, value_min, "
                "value_max, value_count, value_last FROM {table} WHERE {where} "
                "AND bucket >= %(start)s AND bucket < %(end)s{bucket_keyset}) b WHERE true{keyset}"
            ).format(table=table, where=where, bucket_keyset=bucket_keyset, keyset=keyset)
        else:
            params["step"] = STEP[query.resolution]
            # Whole buckets: the last one takes its minutes past `end` too, as 1h and 1d do.
            last_start = floor_bucket(query.end - timedelta(microseconds=1), query.resolution)
            params["inner_end"] = last_start + STEP[query.resolution]
            inner_keyset: sql.Composable = sql.SQL("")
            if cursor is not None:
                inner_keyset = sql.SQL(
                    " AND bucket < %(ct)s::timestamptz + %(step)s"
                    if desc
                    else " AND bucket >= %(ct)s"
                )
            # Combining minutes gives what raw readings would: the average weighted by the
            # counts, the last value of the newest minute.
            body = sql.SQL(
                "SELECT * FROM (SELECT date_bin(%(step)s, bucket, TIMESTAMPTZ '2000-01-01Z') "
                "AS time, sensor_id, metric, "
                "sum(value_avg * value_count) / sum(value_count) AS value_avg, "
                "min(value_min) AS value_min, max(value_max) AS value_max, "
                "sum(value_count)::bigint AS value_count, "
                "(array_agg(value_last ORDER BY last_time DESC))[1] AS value_last "
                "FROM readings_1m WHERE {where} AND bucket >= %(start)s AND bucket < %(inner_end)s"
                "{inner_keyset} GROUP BY 1, 2, 3) b WHERE true{keyset}"
            ).format(where=where, inner_keyset=inner_keyset, keyset=keyset)
    order = (
        "{body} ORDER BY sensor_id, metric, time {d}"
        if by_series
        else "{body} ORDER BY time {d}, sensor_id {d}, metric {d}"
    )
    ordered: sql.Composed = sql.SQL(order).format(body=body, d=direction)
    if limit is not None:
        ordered = sql.SQL("{} LIMIT %(limit)s").format(ordered)
        params["limit"] = limit
    return ordered, params, columns


def encode_cursor(row: tuple[datetime, str, str]) -> str:
    raw = orjson.dumps([row[0].isoformat(), row[1], row[2]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, str, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        moment, sensor_id, metric = orjson.loads(raw)
        parsed = datetime.fromisoformat(moment)
        if parsed.tzinfo is None or not isinstance(sensor_id, str) or not isinstance(metric, str):
            raise ValueError("bad cursor")
        if any(ord(c) < 0x20 for c in sensor_id + metric):
            raise ValueError("bad cursor")
        return parsed.astimezone(UTC), sensor_id, metric
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError, OverflowError):
        raise bad_request(
            "cursor is not one this API gave out; follow the `next` link as it is",
            kind="bad-cursor",
        ) from None


async def _query(
    pool: AsyncConnectionPool, timeout_s: float, statement: sql.Composed, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    async with (
        async_connection(pool, timeout_s) as conn,
        conn.cursor(row_factory=tuple_row) as cur,
    ):
        # Prepared, with the pool's generic plans (see make_async_pool); binary rows: times
        # and floats arrive without being parsed from text.
        await cur.execute(statement, params, prepare=True, binary=True)
        return await cur.fetchall()


async def fetch_page(
    pool: AsyncConnectionPool,
    timeout_s: float,
    query: HistoryQuery,
    cursor: str | None,
    limit: int,
) -> tuple[list[tuple[Any, ...]], tuple[str, ...], bool]:
    """One page of rows (time, sensor, metric, values...), and whether more follow."""
    after = decode_cursor(cursor) if cursor else None
    statement, params, columns = build_sql(query, cursor=after, limit=limit + 1)
    rows = await _query(pool, timeout_s, statement, params)
    more = len(rows) > limit
    return rows[:limit], columns, more


# The time of a reading in the answer's zone, with its offset (both zones offered have a fixed
# one): UTC is the connections' zone.
_TIME_IN = {
    "UTC": "r.time",
    "Asia/Jakarta": "(to_json(r.time AT TIME ZONE 'Asia/Jakarta') #>> '{}') || '+07:00'",
}


async def fetch_page_json(
    pool: AsyncConnectionPool,
    timeout_s: float,
    query: HistoryQuery,
    *,
    cursor: str | None,
    limit: int,
    value: str,
    tz: str,
) -> tuple[bytes, int, tuple[datetime, str, str] | None]:
    """One page as a JSON array of readings (time, sensor_id, metric and the ``value``
    column), its length, and where the next page starts after (None: this is the last).

    The database writes the JSON: a page then crosses into Python as one string, not as an
    object per reading, and the work runs in the database's processes instead of the one
    event loop that answers every client.
    """
    after = decode_cursor(cursor) if cursor else None
    statement, params, _ = build_sql(query, cursor=after, limit=limit + 1)
    d = sql.SQL("DESC" if query.order == "desc" else "ASC")
    # The extra row says whether more follow; the last row of the page is the cursor's.
    wrapped = sql.SQL(
        "SELECT count(*), coalesce(json_agg(x ORDER BY r.n) FILTER (WHERE r.n <= %(page)s), "
        "'[]')::text, max(r.time) FILTER (WHERE r.n = %(page)s), "
        "max(r.sensor_id) FILTER (WHERE r.n = %(page)s), "
        "max(r.metric) FILTER (WHERE r.n = %(page)s) "
        "FROM (SELECT p.*, row_number() OVER (ORDER BY time {d}, sensor_id {d}, metric {d}) "
        "AS n FROM ({statement}) p) r, "
        "LATERAL (SELECT {time} AS time, r.sensor_id, r.metric, r.{value} AS value) x"
    ).format(d=d, statement=statement, time=sql.SQL(_TIME_IN[tz]), value=sql.Identifier(value))
    params["page"] = limit
    # One row: an aggregate always gives one. The JSON comes as text, passed through unparsed.
    [(rows, readings, last_time, last_sensor, last_metric)] = await _query(
        pool, timeout_s, wrapped, params
    )
    more = rows > limit
    following = (last_time, last_sensor, last_metric) if more else None
    return readings.encode(), min(rows, limit), following


def _next_link(request: Request, query: HistoryQuery, last: tuple[datetime, str, str]) -> str:
    return str(
        request.url.include_query_params(
            cursor=encode_cursor(last),
            start=query.start.isoformat(),
            end=query.end.isoformat(),
        )
    )


def _time_sql() -> sql.Composable:
    # RFC 3339 from PostgreSQL's ISO output in the transaction's zone ("2026-01-31 07:00:00.5+07"):
    # a T for the space and the offset's minutes, whole hours in both zones offered (UTC, WIB).
    # Several times cheaper than to_char, and fractions of a second appear only where there are.
    return sql.SQL("replace(time::text, ' ', 'T') || ':00'")


def _unit_sql(query: HistoryQuery) -> sql.Composable:
    units = {metric: unit for _, metric, unit in query.series}
    cases = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(m), sql.Literal(u)) for m, u in units.items()
    )
    return sql.SQL("CASE metric {} END").format(cases)


def export_sql(query: HistoryQuery, value: str) -> tuple[sql.Composed, dict[str, Any]]:
    """The rows of an export of ``query`` (time, sensor, metric, unit and the ``value``
    column), series by series, and their parameters."""
    statement, params, _ = build_sql(query, cursor=None, limit=None, by_series=True)
    outer = sql.SQL(
        "SELECT {time} AS time, sensor_id, metric, {unit} AS unit, {value} AS value FROM ({q}) r"
    ).format(time=_time_sql(), unit=_unit_sql(query), value=sql.Identifier(value), q=statement)
    return outer, params


def export_session(query: HistoryQuery, tz: str) -> dict[str, str]:
    """The settings an export of ``query`` runs with, for its transaction alone.

    Raw readings are exported in the order of their key (sensor, metric, time): the planner
    is told not to sort, so that rows stream from the index as it is read instead of after the
    whole range, and not to start parallel workers: an export is bound by the database's CPU,
    and the other cores serve the API and its clients.
    """
    session = {"statement_timeout": "0", "TimeZone": tz, "DateStyle": "ISO"}
    if query.raw:
        session |= {"enable_sort": "off", "max_parallel_workers_per_gather": "0"}
    return session


def set_local(conn: psycopg.Connection, session: dict[str, str]) -> None:
    """Apply ``session`` (see ``export_session``) to the current transaction alone, in one
    round trip."""
    conn.execute(
        "SELECT set_config(name, value, true) FROM unnest(%s::text[], %s::text[]) s(name, value)",
        [list(session), list(session.values())],
    )


def stream_csv(
    exports: Exports,
    timeout_s: float,
    statement: sql.Composable,
    params: dict[str, Any],
    session: dict[str, str],
) -> Generator[bytes]:
    """The rows of ``statement`` as CSV, streamed by COPY in chunks: never all in memory. On a
    connection of the exports' own (a 503 problem while all are in use); closing the generator
    cancels the COPY and gives it back. ``session``: settings for the export's transaction
    (see ``export_session``)."""
    with exports.connection(timeout_s) as conn, conn.transaction():
        set_local(conn, session)
        copy_sql = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(statement)
        with conn.cursor() as cur, cur.copy(copy_sql, params) as copy:
            buffer = bytearray()
            for data in copy:
                buffer += data
                if len(buffer) >= CSV_CHUNK_BYTES:
                    yield bytes(buffer)
                    buffer.clear()
            if buffer:
                yield bytes(buffer)


def csv_response(
    request: Request, query: HistoryQuery, outer: sql.Composable, params: dict[str, Any], tz: str
) -> DownloadResponse:
    settings = request.app.state.settings
    names = "-".join(s.id for s in query.sensors[:3]) + ("-etc" if len(query.sensors) > 3 else "")
    stamp = query.start.astimezone(ZONES[tz]).strftime("%Y%m%dT%H%M")
    filename = f"pantau-{names}-{query.resolution}-{stamp}.csv"
    chunks = stream_csv(
        request.app.state.exports, settings.api.pool_timeout_s, outer, params,
        export_session(query, tz),
    )  # fmt: skip
    # The query starts before the answer does: a failure to start (all export connections in
    # use included) is still a problem detail, not a cut-off body.
    first = next(chunks, b"")
    return DownloadResponse(
        itertools.chain([first], chunks),
        send_timeout_s=settings.api.export_send_timeout_s,
        close=chunks.close,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


SensorQuery = Annotated[
    list[str] | None,
    Query(description="Sensor id; repeat for several sensors.", examples=[["fg-welang-1"]]),
]
MetricQuery = Annotated[
    list[str] | None,
    Query(
        max_length=64,
        description="Metric; repeat for several (default: every metric of the sensors).",
        examples=[["water_level"]],
    ),
]
StartQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        description="Start (inclusive; aligned down to its bucket). RFC 3339; without an "
        "offset the time is WIB (UTC+7). Default: 24 hours before `end`.",
        examples=["2026-01-31T00:00:00+07:00"],
    ),
]
EndQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        description="End (exclusive). RFC 3339; without an offset WIB. Default: now.",
        examples=["2026-02-01T00:00:00+07:00"],
    ),
]
ResolutionQuery = Annotated[
    Resolution,
    Query(description="`raw`, or buckets of 1m, 5m, 15m, 1h or 1d (WIB days)."),
]
OrderQuery = Annotated[Literal["asc", "desc"], Query(description="Oldest or newest first.")]
TzQuery = Annotated[
    Literal["UTC", "Asia/Jakarta"],
    Query(description="Time zone the answer's times are written in (always with the offset)."),
]
FormatQuery = Annotated[
    Literal["json", "csv"],
    Query(
        description="`csv` streams the whole range as one file, by sensor and metric, each "
        "series in `order`; `limit` and `cursor` are ignored then."
    ),
]


def _limit(settings: Any, limit: int) -> int:
    if limit > settings.api.page_rows_max:
        raise bad_request(
            f"limit is at most {settings.api.page_rows_max} rows per page; follow the `next` "
            "link for more",
            kind="page-too-large",
        )
    return limit


@router.get(
    "/readings",
    response_model=ReadingsPage,
    summary="History of one or several sensors' metrics: raw or bucketed, paged or as CSV",
    responses=alternatives(
        {
            CSV: text_schema(
                "time,sensor_id,metric,unit,value rows, streamed.",
                "time,sensor_id,metric,unit,value\n"
                "2026-01-31T00:00:00+00:00,fg-welang-1,water_level,m,1.23\n",
            )
        }
    ),
)
async def readings(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    cache: CacheDep,
    sensor: SensorQuery = None,
    family: Annotated[
        Family | None, Query(description="Every sensor of this family (or only those named).")
    ] = None,
    metric: MetricQuery = None,
    start: StartQuery = None,
    end: EndQuery = None,
    resolution: ResolutionQuery = "raw",
    agg: Annotated[
        Agg, Query(description="Aggregate of each bucket (ignored for raw readings).")
    ] = "avg",
    order: OrderQuery = "asc",
    cursor: Annotated[
        str | None,
        Query(max_length=512, description="Where the previous page ended (from `next`)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, description="Rows per page (at most 10,000).")] = 1000,
    format: FormatQuery = "json",
    tz: TzQuery = "UTC",
) -> Response:
    def validated() -> HistoryQuery:
        return resolve(
            registry, sensor=sensor, family=family, metric=metric, start=start, end=end,
            resolution=resolution, order=order,
        )  # fmt: skip

    value = "value" if resolution == "raw" else AGG_COLUMN[agg]
    if format == "csv":

        def export() -> DownloadResponse:
            query = validated()
            outer, params = export_sql(query, value)
            return csv_response(request, query, outer, params, tz)

        return await run_in_threadpool(export)
    limit = _limit(settings, limit)
    period = cache_period_s(settings, resolution)

    async def page() -> Answer:
        query = validated()
        readings, count, after = await fetch_page_json(
            request.app.state.async_pool,
            settings.api.pool_timeout_s,
            query,
            cursor=cursor,
            limit=limit,
            value=value,
            tz=tz,
        )
        zone = ZONES[tz]
        following = _next_link(request, query, after) if after is not None else None
        body = {
            "resolution": resolution,
            "agg": None if resolution == "raw" else agg,
            "order": order,
            "tz": tz,
            "bucket_timezone": "Asia/Jakarta" if resolution == "1d" else None,
            "start": query.start.astimezone(zone),
            "end": query.end.astimezone(zone),
            "series": [{"sensor_id": s.id, "metric": m, "unit": u} for s, m, u in query.series],
            "count": count,
            "truncated": after is not None,
            "next": following,
            "readings": orjson.Fragment(readings),
        }
        return Answer(
            Body.of(body),
            max_age_s=period,
            headers=(("Link", f'<{following}>; rel="next"'),) if following else (),
            route=request.scope.get("route"),
        )

    # The same question within the cache period gets the same answer (with an ETag): a page of
    # history costs a query, an answer from memory costs almost nothing.
    answer: Answer = await cache.aload(answer_key(request), page, ttl_s=period)
    return answer.response(request)


@router.get(
    "/sensors/{sensor_id}/readings",
    response_model=SensorReadings,
    summary="Readings of one sensor and metric (every aggregate per bucket); see /readings",
    responses=alternatives(
        {CSV: text_schema("sensor_id,metric,unit,time,value (raw) or avg,min,max,count,last.")}
    ),
)
async def sensor_readings(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    sensor_id: Annotated[
        str, Path(max_length=200, description="Sensor id.", examples=["fg-welang-1"])
    ],
    metric: Annotated[
        str, Query(max_length=64, description="Metric of the sensor.", examples=["water_level"])
    ],
    start: StartQuery = None,
    end: EndQuery = None,
    resolution: ResolutionQuery = "raw",
    order: OrderQuery = "asc",
    cursor: Annotated[
        str | None, Query(max_length=512, description="Where the previous page ended.")
    ] = None,
    limit: Annotated[int, Query(ge=1, description="Rows per page (at most 10,000).")] = 1000,
    format: FormatQuery = "json",
    tz: TzQuery = "UTC",
) -> Response:
    sensor = registry.sensor(sensor_id)
    found = find_metric(sensor.family, metric)
    if found is None:
        raise Problem(
            422, f"{sensor.family.value} has no metric {metric[:64]!r}", kind="unknown-metric"
        )
    query = resolve(
        registry, sensor=[sensor.id], family=None, metric=[metric], start=start, end=end,
        resolution=resolution, order=order,
    )  # fmt: skip
    if format == "csv":
        statement, params, columns = build_sql(query, cursor=None, limit=None, by_series=True)
        names = ("value",) if resolution == "raw" else ("avg", "min", "max", "count", "last")
        values = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(sql.Identifier(c), sql.Identifier(n))
            for c, n in zip(columns, names, strict=True)
        )
        outer = sql.SQL(
            "SELECT sensor_id, metric, {unit} AS unit, {time} AS time, {values} FROM ({q}) r"
        ).format(unit=sql.Literal(found.unit), time=_time_sql(), values=values, q=statement)
        return await run_in_threadpool(csv_response, request, query, outer, params, tz)
    limit = _limit(settings, limit)
    rows, columns, more = await fetch_page(
        request.app.state.async_pool, settings.api.pool_timeout_s, query, cursor, limit
    )
    zone = ZONES[tz]
    if resolution == "raw":
        points = [{"time": r[0].astimezone(zone), "value": r[3]} for r in rows]
    else:
        points = [
            {"time": r[0].astimezone(zone), "avg": r[3], "min": r[4], "max": r[5],
             "count": r[6], "last": r[7]}
            for r in rows
        ]  # fmt: skip
    body = {
        "sensor_id": sensor.id,
        "metric": metric,
        "unit": found.unit,
        "resolution": resolution,
        "start": query.start.astimezone(zone),
        "end": query.end.astimezone(zone),
        "truncated": more,
        "next": _next_link(request, query, rows[-1][:3]) if more else None,
        "readings": points,
    }
    return json_response(body, headers={"Link": f'<{body["next"]}>; rel="next"'} if more else None)
