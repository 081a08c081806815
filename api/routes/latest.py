"""Latest values of every sensor, or of a family or some sensors, for pollers (ETag, 304)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Query, Request, Response
from psycopg.rows import tuple_row

from api.deps import CacheDep, RegistryDep, SettingsDep
from api.pools import connection
from api.responses import Body, cached_json
from api.schemas import LatestReadings
from pantau.catalogue import Family, find_metric

router = APIRouter(tags=["readings"])

Latest = dict[str, dict[str, tuple[float, datetime]]]


def read_latest(conn: psycopg.Connection, sensor_ids: Iterable[str] | None = None) -> Latest:
    """Latest (value, time) by sensor and metric; all sensors when ``sensor_ids`` is None."""
    found: Latest = {}
    with conn.cursor(row_factory=tuple_row) as cur:
        if sensor_ids is None:
            cur.execute("SELECT sensor_id, metric, value, time FROM latest_readings")
        else:
            cur.execute(
                "SELECT sensor_id, metric, value, time FROM latest_readings "
                "WHERE sensor_id = ANY(%s)",
                [list(sensor_ids)],
            )
        for sensor_id, metric, value, time in cur:
            found.setdefault(sensor_id, {})[metric] = (value, time)
    return found


def cached_latest(request: Request, cache: Any) -> Latest:
    """Every sensor's latest values, read at most once per cache period."""
    settings = request.app.state.settings

    def load() -> Latest:
        with connection(request.app.state.pool, settings.api.pool_timeout_s) as conn:
            return read_latest(conn)

    latest: Latest = cache.get("latest", load)
    return latest


@router.get(
    "/latest",
    response_model=LatestReadings,
    summary="Latest value of every metric of every sensor (or of a family, or some sensors)",
    description="Served with an `ETag`: send it back in `If-None-Match` and an unchanged "
    "answer is a bodiless 304. Values are refreshed at most every few seconds "
    "(`Cache-Control: max-age`).",
    responses={304: {"description": "Not modified since the `ETag` sent."}},
)
async def latest(
    request: Request,
    registry: RegistryDep,
    cache: CacheDep,
    settings: SettingsDep,
    family: Annotated[
        Family | None, Query(description="Only sensors of this family.", examples=["flood_gauge"])
    ] = None,
    sensor: Annotated[
        list[str] | None,
        Query(description="Only these sensors (repeat the parameter).", examples=[["fg-welang-1"]]),
    ] = None,
) -> Response:
    wanted = sorted({registry.sensor(s).id for s in sensor}) if sensor else None
    key = ("latest-body", family, tuple(wanted) if wanted else None)

    def build() -> Body:
        values = cached_latest(request, cache)
        readings = []
        for sensor_id in wanted or sorted(values):
            info = registry.sensors.get(sensor_id)
            if info is None or (family is not None and info.family is not family):
                continue
            for metric, (value, time) in sorted(values.get(sensor_id, {}).items()):
                found = find_metric(info.family, metric)
                readings.append(
                    {
                        "sensor_id": sensor_id,
                        "family": info.family.value,
                        "metric": metric,
                        "unit": found.unit if found else "",
                        "value": value,
                        "time": time,
                    }
                )
        return Body.of({"count": len(readings), "readings": readings})

    body: Body = await cache.aget(key, build)
    return cached_json(request, body, max_age_s=settings.api.cache_ttl_s)
