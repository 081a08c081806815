"""CSV exports of a readings history, streamed from COPY on a connection of their own."""

from __future__ import annotations

import itertools
from collections.abc import Generator
from typing import Any

import psycopg
from fastapi import Request
from psycopg import sql

from api.history.query import ZONES, HistoryQuery
from api.pools import Exports
from api.responses import DownloadResponse

CSV_CHUNK_BYTES = 256 * 1024


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
