"""History of readings: raw or bucketed, one or several sensors, paged by cursor or streamed.

Buckets of one minute and more read the rollups (``readings_1m``, ``readings_1h``,
``readings_1d``; 5 and 15 minutes combine ``readings_1m``). Day buckets are WIB days
(Asia/Jakarta): a day bucket starts at 00:00+07:00, i.e. 17:00 UTC the day before. A time given
without an offset is read as WIB, as ``pantau simulate send --ts`` does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.deps import CacheDep, RegistryDep, SettingsDep
from api.errors import Problem, bad_request
from api.history.export import csv_response
from api.history.pages import fetch_page, fetch_page_json
from api.history.query import (
    AGG_COLUMN,
    ZONES,
    Agg,
    HistoryQuery,
    Resolution,
    cache_period_s,
    resolve,
)
from api.history.sql import encode_cursor, export_sql, series_export_sql
from api.responses import Answer, Body, DownloadResponse, answer_key, json_response
from api.schemas import CSV, ReadingsPage, SensorReadings, alternatives, text_schema
from pantau.catalogue import Family, find_metric

router = APIRouter(tags=["readings"])


def _next_link(request: Request, query: HistoryQuery, last: tuple[datetime, str, str]) -> str:
    return str(
        request.url.include_query_params(
            cursor=encode_cursor(last),
            start=query.start.isoformat(),
            end=query.end.isoformat(),
        )
    )


def _page_body(
    query: HistoryQuery, *, agg: Agg, tz: str, count: int, following: str | None
) -> dict[str, Any]:
    """A page's description of itself: what was asked, in the answer's zone, and what follows."""
    zone = ZONES[tz]
    return {
        "resolution": query.resolution,
        "agg": None if query.resolution == "raw" else agg,
        "order": query.order,
        "tz": tz,
        "bucket_timezone": "Asia/Jakarta" if query.resolution == "1d" else None,
        "start": query.start.astimezone(zone),
        "end": query.end.astimezone(zone),
        "series": [{"sensor_id": s.id, "metric": m, "unit": u} for s, m, u in query.series],
        "count": count,
        "truncated": following is not None,
        "next": following,
    }


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
        following = _next_link(request, query, after) if after is not None else None
        body = _page_body(query, agg=agg, tz=tz, count=count, following=following)
        body["readings"] = orjson.Fragment(readings)
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
        outer, params = series_export_sql(query, found.unit)
        return await run_in_threadpool(csv_response, request, query, outer, params, tz)
    limit = _limit(settings, limit)
    rows, _, more = await fetch_page(
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
