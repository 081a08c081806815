"""The SQL of a readings history: a page (with its keyset cursor) and an export."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from psycopg import sql

from api.errors import bad_request
from api.history.query import ROLLUP_COLUMNS, STEP, HistoryQuery, floor_bucket


def _series_filter(query: HistoryQuery) -> tuple[sql.Composable, dict[str, Any]]:
    ids = [s.id for s in query.sensors]
    # A single series compares with `=`, so the index on (sensor, metric, time) also gives
    # the order and the planner needs no sort.
    if len(ids) == 1 and len(query.metrics) == 1:
        clause = sql.SQL("sensor_id = %(sensor)s AND metric = %(metric)s")
        return clause, {"sensor": ids[0], "metric": query.metrics[0]}
    clause = sql.SQL("sensor_id = ANY(%(sensors)s) AND metric = ANY(%(metrics)s)")
    return clause, {"sensors": ids, "metrics": list(query.metrics)}


def _raw_body(
    where: sql.Composable, keyset: sql.Composable, *, cursor: bool, desc: bool
) -> sql.Composable:
    """Readings as stored."""
    if cursor:
        # Redundant with the row comparison, but usable by the index: no rescan of the
        # pages already served.
        keyset = sql.Composed([keyset, sql.SQL(" AND time {} %(ct)s").format(
            sql.SQL("<=" if desc else ">="))])  # fmt: skip
    return sql.SQL(
        "SELECT time, sensor_id, metric, value FROM readings "
        "WHERE {where} AND time >= %(start)s AND time < %(end)s{keyset}"
    ).format(where=where, keyset=keyset)


def _rollup_body(
    resolution: str,
    where: sql.Composable,
    keyset: sql.Composable,
    *,
    cursor: bool,
    desc: bool,
) -> sql.Composable:
    """Buckets of one rollup (``readings_1m``, ``readings_1h`` or ``readings_1d``) as they are."""
    bucket_keyset: sql.Composable = sql.SQL("")
    if cursor:
        bucket_keyset = sql.SQL(" AND bucket {} %(ct)s").format(sql.SQL("<=" if desc else ">="))
    return sql.SQL(
        "SELECT * FROM (SELECT bucket AS time, sensor_id, metric, value_avg, value_min, "
        "value_max, value_count, value_last FROM {table} WHERE {where} "
        "AND bucket >= %(start)s AND bucket < %(end)s{bucket_keyset}) b WHERE true{keyset}"
    ).format(
        table=sql.Identifier(f"readings_{resolution}"),
        where=where,
        bucket_keyset=bucket_keyset,
        keyset=keyset,
    )


def _combined_body(
    query: HistoryQuery,
    where: sql.Composable,
    keyset: sql.Composable,
    params: dict[str, Any],
    *,
    cursor: bool,
    desc: bool,
) -> sql.Composable:
    """Buckets of 5 or 15 minutes, combined from ``readings_1m`` (adds their parameters)."""
    params["step"] = STEP[query.resolution]
    # Whole buckets: the last one takes its minutes past `end` too, as 1h and 1d do.
    last_start = floor_bucket(query.end - timedelta(microseconds=1), query.resolution)
    params["inner_end"] = last_start + STEP[query.resolution]
    inner_keyset: sql.Composable = sql.SQL("")
    if cursor:
        inner_keyset = sql.SQL(
            " AND bucket < %(ct)s::timestamptz + %(step)s" if desc else " AND bucket >= %(ct)s"
        )
    # Combining minutes gives what raw readings would: the average weighted by the counts, the
    # last value of the newest minute.
    return sql.SQL(
        "SELECT * FROM (SELECT date_bin(%(step)s, bucket, TIMESTAMPTZ '2000-01-01Z') "
        "AS time, sensor_id, metric, "
        "sum(value_avg * value_count) / sum(value_count) AS value_avg, "
        "min(value_min) AS value_min, max(value_max) AS value_max, "
        "sum(value_count)::bigint AS value_count, "
        "(array_agg(value_last ORDER BY last_time DESC))[1] AS value_last "
        "FROM readings_1m WHERE {where} AND bucket >= %(start)s AND bucket < %(inner_end)s"
        "{inner_keyset} GROUP BY 1, 2, 3) b WHERE true{keyset}"
    ).format(where=where, inner_keyset=inner_keyset, keyset=keyset)


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
    keyset: sql.Composable = sql.SQL("")
    if cursor is not None:
        params |= {"ct": cursor[0], "cs": cursor[1], "cm": cursor[2]}
        keyset = sql.SQL(" AND (time, sensor_id, metric) {} (%(ct)s, %(cs)s, %(cm)s)").format(
            sql.SQL("<" if desc else ">")
        )
    paged = cursor is not None
    columns: tuple[str, ...]
    if query.raw:
        columns = ("value",)
        body = _raw_body(where, keyset, cursor=paged, desc=desc)
    elif query.resolution in ("1m", "1h", "1d"):
        columns = ROLLUP_COLUMNS
        body = _rollup_body(query.resolution, where, keyset, cursor=paged, desc=desc)
    else:
        columns = ROLLUP_COLUMNS
        body = _combined_body(query, where, keyset, params, cursor=paged, desc=desc)
    order = (
        "{body} ORDER BY sensor_id, metric, time {d}"
        if by_series
        else "{body} ORDER BY time {d}, sensor_id {d}, metric {d}"
    )
    ordered: sql.Composed = sql.SQL(order).format(body=body, d=sql.SQL("DESC" if desc else "ASC"))
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


def time_sql() -> sql.Composable:
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
    ).format(time=time_sql(), unit=_unit_sql(query), value=sql.Identifier(value), q=statement)
    return outer, params


def series_export_sql(query: HistoryQuery, unit: str) -> tuple[sql.Composed, dict[str, Any]]:
    """One sensor's metric for CSV, by series: every aggregate of each bucket (or the raw value),
    named for the file's header."""
    statement, params, columns = build_sql(query, cursor=None, limit=None, by_series=True)
    names = ("value",) if query.resolution == "raw" else ("avg", "min", "max", "count", "last")
    values = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(sql.Identifier(c), sql.Identifier(n))
        for c, n in zip(columns, names, strict=True)
    )
    outer = sql.SQL(
        "SELECT sensor_id, metric, {unit} AS unit, {time} AS time, {values} FROM ({q}) r"
    ).format(unit=sql.Literal(unit), time=time_sql(), values=values, q=statement)
    return outer, params
