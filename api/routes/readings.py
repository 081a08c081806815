"""Readings of one sensor over time: raw or rolled up, as JSON or CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from psycopg import sql

from api.deps import ConnDep
from pantau.catalogue import Family, find_metric

router = APIRouter(tags=["readings"])

ROLLUP_TABLES = {"1m": "readings_1m", "1h": "readings_1h", "1d": "readings_1d"}


@router.get(
    "/sensors/{sensor_id}/readings",
    summary="Readings of one sensor and metric in a time range",
    responses={200: {"content": {"text/csv": {}}}, 404: {}, 422: {}},
)
def sensor_readings(
    conn: ConnDep,
    sensor_id: str,
    metric: str,
    start: datetime | None = None,
    end: datetime | None = None,
    resolution: Literal["raw", "1m", "1h", "1d"] = "raw",
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    format: Literal["json", "csv"] = "json",
) -> Response:
    row = conn.execute("SELECT family FROM sensors WHERE id = %s", [sensor_id]).fetchone()
    if row is None:
        raise HTTPException(status_code=404, detail=f"no sensor {sensor_id!r}")
    family = Family(row["family"])  # type: ignore[call-overload]
    found = find_metric(family, metric)
    if found is None:
        raise HTTPException(status_code=422, detail=f"{family.value} has no metric {metric!r}")
    end = _aware(end) if end else datetime.now(UTC)
    start = _aware(start) if start else end - timedelta(days=1)
    if start > end:
        raise HTTPException(status_code=422, detail="start must not be after end")
    query: sql.Composable
    if resolution == "raw":
        query = sql.SQL(
            "SELECT time, value FROM readings WHERE sensor_id = %s AND metric = %s "
            "AND time >= %s AND time < %s ORDER BY time LIMIT %s"
        )
        columns = ["time", "value"]
    else:
        query = sql.SQL(
            "SELECT bucket AS time, value_avg AS avg, value_min AS min, value_max AS max, "
            "value_count AS count, value_last AS last FROM {} WHERE sensor_id = %s "
            "AND metric = %s AND bucket >= %s AND bucket < %s ORDER BY bucket LIMIT %s"
        ).format(sql.Identifier(ROLLUP_TABLES[resolution]))
        columns = ["time", "avg", "min", "max", "count", "last"]
    rows = conn.execute(query, [sensor_id, metric, start, end, limit]).fetchall()
    if format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["sensor_id", "metric", "unit", *columns])
        for r in rows:
            cells = [r[c].isoformat() if c == "time" else r[c] for c in columns]  # type: ignore[call-overload]
            writer.writerow([sensor_id, metric, found.unit, *cells])
        return Response(buffer.getvalue(), media_type="text/csv")
    return JSONResponse(
        {
            "sensor_id": sensor_id,
            "metric": metric,
            "unit": found.unit,
            "resolution": resolution,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "readings": [
                {c: (r[c].isoformat() if c == "time" else r[c]) for c in columns}  # type: ignore[call-overload]
                for r in rows
            ],
        }
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
