"""Pages of the readings history, fetched: as rows, or as JSON the database writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from api.history.query import HistoryQuery
from api.history.sql import build_sql, decode_cursor
from api.pools import async_connection


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
