"""The rivers and their gauges: river lines for maps, and the gauge view.

* ``/city/rivers``: each river of the registry as a GeoJSON LineString through its gauges in
  ``river_km`` order, so the coordinates run downstream (a river with one gauge is a Point).
* ``/gauges/{id}``: what the gauge view draws, in one answer: the last hours of water level and
  rainfall from the rollups, the thresholds, the alert service's fitted rise and its forecast to
  the next threshold (the ``flood_forecast`` view, which the Grafana flood dashboard draws too),
  and the alert changes of the gauge as markers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CacheDep, RegistryDep, SettingsDep
from api.errors import Problem
from api.history.pages import fetch_page
from api.history.query import HistoryQuery, resolve
from api.pools import async_connection
from api.registry import SensorInfo
from api.responses import Answer, Body, answer_key, cached_json
from api.schemas import GEOJSON, PointGeometry, ThresholdsOut, alternatives
from pantau import freshness
from pantau.catalogue import Family
from pantau.city import FloodLevel
from pantau.levels import level_label
from pantau.settings import Settings

router = APIRouter(tags=["city"])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- river lines -------------------------------------------------------------------------------


class LineStringGeometry(_Model):
    type: Literal["LineString"]
    coordinates: list[list[float]] = Field(
        min_length=2, description="[longitude, latitude] of each gauge, upstream first."
    )


class RiverProperties(_Model):
    name: str = Field(examples=["Welang"])
    gauges: list[str] = Field(description="Gauge ids, upstream first (by `river_km`).")
    river_km: list[float | None] = Field(description="Each gauge's distance downstream.")
    length_km: float | None = Field(description="From the first gauge to the last.")


class RiverFeature(_Model):
    type: Literal["Feature"]
    id: str
    geometry: LineStringGeometry | PointGeometry = Field(
        description="A LineString whose coordinates run downstream (the flow direction); a "
        "Point for a river with a single gauge."
    )
    properties: RiverProperties


class RiverCollection(_Model):
    type: Literal["FeatureCollection"]
    features: list[RiverFeature]


def river_features(sensors: list[SensorInfo]) -> list[dict[str, Any]]:
    """The rivers of ``sensors``' flood gauges, by name, each through its gauges downstream."""
    rivers: dict[str, list[SensorInfo]] = {}
    for sensor in sensors:
        if sensor.family is Family.FLOOD_GAUGE and sensor.river:
            rivers.setdefault(sensor.river, []).append(sensor)
    features = []
    for name in sorted(rivers):
        gauges = sorted(rivers[name], key=lambda s: (s.river_km or 0.0, s.id))
        points = [[g.lon, g.lat] for g in gauges]
        kms = [g.river_km for g in gauges]
        known = [k for k in kms if k is not None]
        geometry: dict[str, Any] = (
            {"type": "LineString", "coordinates": points}
            if len(points) > 1
            else {"type": "Point", "coordinates": points[0]}
        )
        features.append(
            {
                "type": "Feature",
                "id": name,
                "geometry": geometry,
                "properties": {
                    "name": name,
                    "gauges": [g.id for g in gauges],
                    "river_km": kms,
                    "length_km": max(known) - min(known) if known else None,
                },
            }
        )
    return features


@router.get(
    "/city/rivers",
    response_model=RiverCollection,
    summary="The rivers as lines through their gauges, upstream first (GeoJSON, for maps)",
    responses=alternatives({GEOJSON: RiverCollection}),
)
async def rivers(request: Request, registry: RegistryDep, settings: SettingsDep) -> Response:
    """Each river of the flood gauges as a LineString through its gauges in `river_km` order:
    the coordinates run in the direction of flow."""
    body = Body.of(
        {
            "type": "FeatureCollection",
            "features": river_features(list(registry.sensors.values())),
        }
    )
    return cached_json(request, body, max_age_s=settings.api.cache_ttl_s, media_type=GEOJSON)


# --- the gauge view ----------------------------------------------------------------------------

MAX_HOURS = 168
# Bucket of the series by span: about 300 points or fewer per series.
_RESOLUTIONS = ((6, "1m"), (48, "5m"), (MAX_HOURS, "15m"))
_BUCKET_S = {"1m": 60, "5m": 300, "15m": 900}


class LevelPoint(_Model):
    time: datetime = Field(description="Start of the bucket.")
    avg: float
    min: float
    max: float = Field(description="What the chart draws: the highest level in the bucket.")
    last: float


class RainPoint(_Model):
    time: datetime
    mm: float = Field(description="Rain fallen in the bucket.")


class GaugeSeries(_Model):
    unit: str
    points: list[LevelPoint]


class RainSeries(_Model):
    unit: str
    points: list[RainPoint]


class ChartPoint(_Model):
    time: datetime
    value: float


class GaugeState(_Model):
    level: int = Field(ge=0, le=3)
    level_label: str
    since: datetime
    observed_at: datetime = Field(description="Time of the reading it was judged on.")
    value: float
    rate_m_per_h: float | None = Field(description="The fitted rise (negative: falling).")
    next_level: int | None
    next_level_label: str | None
    next_level_at: datetime | None = Field(description="When the rise reaches the next level.")


class AlertMark(_Model):
    event_id: int
    alert_id: int
    rule: str
    change: str
    level: int
    level_label: str
    observed_at: datetime
    message: str
    message_en: str


class SensorBrief(_Model):
    id: str
    name: str
    kecamatan: str
    river: str | None
    river_km: float | None
    interval_s: float


class GaugeView(_Model):
    sensor: SensorBrief
    start: datetime
    end: datetime
    resolution: str = Field(description="Bucket of the series (rollups).")
    thresholds: ThresholdsOut | None
    water_level: GaugeSeries
    rainfall: RainSeries
    latest: ChartPoint | None = Field(description="The newest water level reading.")
    stale: bool = Field(
        description="No reading for longer than the alert service's offline limit "
        "(PANTAU_ALERTS__OFFLINE_INTERVALS_K reporting intervals)."
    )
    status: GaugeState | None = Field(description="The alert service's view of the gauge.")
    fit: list[ChartPoint] = Field(
        description="The fitted rise over the span it was fitted on (PANTAU_ALERTS__"
        "RISE_WINDOW_S), while the gauge rises towards a level; else empty."
    )
    forecast: list[ChartPoint] = Field(
        description="The fitted rise from the newest reading to the predicted crossing of the "
        "next threshold (the `flood_forecast` view); empty when none is predicted."
    )
    alerts: list[AlertMark] = Field(description="The gauge's alert changes in the span.")


_STATUS = """
SELECT level, since, observed_at, value, rate_m_per_h, next_level, next_level_at
FROM gauge_status WHERE sensor_id = %(id)s
"""
_FORECAST = """
SELECT time, value FROM flood_forecast WHERE sensor_id = %(id)s
ORDER BY point = 'crossing', time
"""
_MARKS = """
SELECT id AS event_id, alert_id, rule, change, level, observed_at, message, message_en
FROM alert_events
WHERE sensor_id = %(id)s AND change <> 'acknowledged'
  AND observed_at >= %(start)s AND observed_at < %(end)s
ORDER BY observed_at, id
LIMIT 500
"""
_LATEST = """
SELECT time, value FROM latest_readings WHERE sensor_id = %(id)s AND metric = 'water_level'
"""

GaugeId = Annotated[str, Path(max_length=200, description="A flood gauge's id.")]


def _fit_line(forecast: list[dict[str, Any]], rate: float, window_s: float) -> list[ChartPoint]:
    """The fitted line back over its window, from where the forecast starts."""
    start = forecast[0]
    before = start["time"] - timedelta(seconds=window_s)
    return [
        ChartPoint(time=before, value=start["value"] - rate * window_s / 3600),
        ChartPoint(time=start["time"], value=start["value"]),
    ]


@dataclass(frozen=True, slots=True)
class _GaugeRows:
    """What the gauge view is drawn from, as the database gave it."""

    series: list[tuple[Any, ...]]  # rollup rows of water level and rainfall
    status: dict[str, Any] | None
    forecast: list[dict[str, Any]]
    marks: list[dict[str, Any]]
    latest: dict[str, Any] | None


async def _fetch_gauge(
    pool: AsyncConnectionPool, settings: Settings, query: HistoryQuery, end: datetime, hours: int
) -> _GaugeRows:
    timeout_s = settings.api.pool_timeout_s
    # Two series (level and rain), one row a bucket, with room for the partial ends.
    buckets = 2 * (hours * 3600 // _BUCKET_S[query.resolution] + 2)
    series, _, _ = await fetch_page(pool, timeout_s, query, None, buckets)
    params = {"id": query.sensors[0].id, "start": query.start, "end": end}
    async with async_connection(pool, timeout_s) as conn:
        cur = conn.cursor(row_factory=dict_row)
        return _GaugeRows(
            series=series,
            status=await (await cur.execute(_STATUS, params)).fetchone(),
            forecast=await (await cur.execute(_FORECAST, params)).fetchall(),
            marks=await (await cur.execute(_MARKS, params)).fetchall(),
            latest=await (await cur.execute(_LATEST, params)).fetchone(),
        )


def _gauge_state(status: dict[str, Any] | None) -> GaugeState | None:
    if status is None:
        return None
    nxt = status["next_level"]
    return GaugeState(
        **status,
        level_label=FloodLevel(status["level"]).label,
        next_level_label=None if nxt is None else FloodLevel(nxt).label,
    )


def _gauge_view(
    sensor: SensorInfo, settings: Settings, query: HistoryQuery, end: datetime, found: _GaugeRows
) -> GaugeView:
    status, forecast, latest = found.status, found.forecast, found.latest
    thresholds = sensor.current_thresholds
    return GaugeView(
        sensor=SensorBrief(
            id=sensor.id,
            name=sensor.name,
            kecamatan=sensor.kecamatan,
            river=sensor.river,
            river_km=sensor.river_km,
            interval_s=sensor.interval_s,
        ),
        start=query.start,
        end=end,
        resolution=query.resolution,
        thresholds=None if thresholds is None else ThresholdsOut(**thresholds.model_dump()),
        water_level=GaugeSeries(
            unit="m",
            points=[
                LevelPoint(time=r[0], avg=r[3], min=r[4], max=r[5], last=r[7])
                for r in found.series
                if r[2] == "water_level"
            ],
        ),
        rainfall=RainSeries(
            unit="mm",
            points=[
                RainPoint(time=r[0], mm=r[3] * r[6]) for r in found.series if r[2] == "rainfall"
            ],
        ),
        latest=None if latest is None else ChartPoint(**latest),
        stale=latest is None
        or not freshness.is_current(
            latest["time"],
            end,
            interval_s=sensor.interval_s,
            intervals_k=settings.alerts.offline_intervals_k,
        ),
        status=_gauge_state(status),
        fit=(
            _fit_line(forecast, status["rate_m_per_h"], settings.alerts.rise_window_s)
            if forecast and status is not None
            else []
        ),
        forecast=[ChartPoint(**f) for f in forecast],
        alerts=[
            AlertMark(**m, level_label=level_label(m["rule"], m["level"], "id"))
            for m in found.marks
        ],
    )


@router.get(
    "/gauges/{sensor_id}",
    response_model=GaugeView,
    summary="A flood gauge's view: water level against its thresholds, rise, forecast, rain",
)
async def gauge_view(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    cache: CacheDep,
    sensor_id: GaugeId,
    hours: Annotated[
        int, Query(ge=1, le=MAX_HOURS, description="Hours of history up to now.")
    ] = 24,
) -> Response:
    """Everything the gauge view draws: the series come from the rollups, the rise and its
    forecast from the alert service (`gauge_status`, `flood_forecast`)."""
    sensor = registry.sensor(sensor_id)
    if sensor.family is not Family.FLOOD_GAUGE:
        raise Problem(
            422,
            f"{sensor.id} is a {sensor.family.value}: only flood gauges have a gauge view",
            kind="not-a-flood-gauge",
        )
    resolution = next(r for limit, r in _RESOLUTIONS if hours <= limit)

    async def build() -> Answer:
        end = datetime.now(UTC)
        query = resolve(
            registry, sensor=[sensor.id], family=None, metric=["water_level", "rainfall"],
            start=(end - timedelta(hours=hours)).isoformat(), end=end.isoformat(),
            resolution=resolution, order="asc",
        )  # fmt: skip
        found = await _fetch_gauge(request.app.state.async_pool, settings, query, end, hours)
        view = _gauge_view(sensor, settings, query, end, found)
        return Answer(
            Body.of(view.model_dump(mode="json")),
            max_age_s=settings.api.cache_ttl_s,
            route=request.scope.get("route"),
        )

    answer: Answer = await cache.aload(answer_key(request), build)
    return answer.response(request)
