"""The sensor registry, as JSON or GeoJSON, with each sensor's latest values."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from api.deps import CacheDep, RegistryDep, SettingsDep
from api.errors import bad_request
from api.registry import Registry, SensorInfo
from api.responses import Body, cached_json
from api.routes.latest import Latest, cached_latest, read_latest
from api.schemas import GEOJSON, Sensor, SensorCollection, alternatives
from pantau import freshness
from pantau.catalogue import Family

router = APIRouter(prefix="/sensors", tags=["sensors"])

BBox = tuple[float, float, float, float]


def parse_bbox(text: str) -> BBox:
    """``minlon,minlat,maxlon,maxlat`` as four numbers, or a 400 problem saying what is wrong."""
    parts = text.split(",")
    if len(parts) != 4:
        raise bad_request("bbox must be four numbers: minlon,minlat,maxlon,maxlat", kind="bbox")
    try:
        min_lon, min_lat, max_lon, max_lat = (float(p) for p in parts)
    except ValueError:
        raise bad_request(
            "bbox must be four numbers: minlon,minlat,maxlon,maxlat", kind="bbox"
        ) from None
    if not all(math.isfinite(v) for v in (min_lon, min_lat, max_lon, max_lat)):
        raise bad_request("bbox numbers must be finite", kind="bbox")
    if not (-180 <= min_lon <= max_lon <= 180):
        raise bad_request(
            "bbox longitudes must satisfy -180 <= minlon <= maxlon <= 180", kind="bbox"
        )
    if not (-90 <= min_lat <= max_lat <= 90):
        raise bad_request("bbox latitudes must satisfy -90 <= minlat <= maxlat <= 90", kind="bbox")
    return min_lon, min_lat, max_lon, max_lat


def describe(
    sensor: SensorInfo, latest: dict[str, Any], *, now: datetime, intervals_k: float
) -> dict[str, Any]:
    """A sensor as the API shows it (the ``Sensor`` schema); a gauge's level only while its
    latest water level is current (``pantau.freshness``)."""
    out: dict[str, Any] = {
        "id": sensor.id,
        "family": sensor.family.value,
        "name": sensor.name,
        "kecamatan": sensor.kecamatan,
        "lat": sensor.lat,
        "lon": sensor.lon,
        "interval_s": sensor.interval_s,
    }
    if sensor.family is Family.FLOOD_GAUGE:
        out["river"] = sensor.river
        out["river_km"] = sensor.river_km
        if sensor.current_thresholds is not None:
            t = sensor.current_thresholds
            out["thresholds"] = {"waspada": t.waspada, "siaga": t.siaga, "awas": t.awas}
            level = latest.get("water_level")
            if level is not None and freshness.is_current(
                level[1], now, interval_s=sensor.interval_s, intervals_k=intervals_k
            ):
                out["flood_level"] = t.level(level[0]).label
    elif sensor.family is Family.TRAFFIC_COUNTER:
        out["road"] = sensor.road
        out["road_class"] = sensor.road_class
    out["latest"] = {m: {"value": v, "time": t} for m, (v, t) in sorted(latest.items())}
    return out


def feature(sensor: dict[str, Any]) -> dict[str, Any]:
    properties = {k: v for k, v in sensor.items() if k not in {"id", "lat", "lon"}}
    return {
        "type": "Feature",
        "id": sensor["id"],
        # GeoJSON (RFC 7946) orders coordinates longitude first.
        "geometry": {"type": "Point", "coordinates": [sensor["lon"], sensor["lat"]]},
        "properties": properties,
    }


def select(
    registry: Registry, family: Family | None, kecamatan: str | None, bbox: BBox | None
) -> list[SensorInfo]:
    chosen = []
    for sensor in registry.sensors.values():
        if family is not None and sensor.family is not family:
            continue
        if kecamatan is not None and sensor.kecamatan != kecamatan:
            continue
        if bbox is not None and not (
            bbox[0] <= sensor.lon <= bbox[2] and bbox[1] <= sensor.lat <= bbox[3]
        ):
            continue
        chosen.append(sensor)
    return chosen


FamilyQuery = Annotated[
    Family | None, Query(description="Only sensors of this family.", examples=["flood_gauge"])
]
KecamatanQuery = Annotated[
    str | None,
    Query(
        max_length=100,
        description="Only sensors in this kecamatan (any case). An unknown name is a 404.",
        examples=["Bangil"],
    ),
]
BBoxQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description="Only sensors inside `minlon,minlat,maxlon,maxlat` (WGS 84 degrees).",
        examples=["112.7,-7.7,112.9,-7.5"],
    ),
]


@router.get(
    "",
    response_model=list[Sensor],
    summary="All sensors, with their latest values",
    responses=alternatives({GEOJSON: SensorCollection}),
)
async def list_sensors(
    request: Request,
    registry: RegistryDep,
    cache: CacheDep,
    settings: SettingsDep,
    family: FamilyQuery = None,
    kecamatan: KecamatanQuery = None,
    bbox: BBoxQuery = None,
    format: Annotated[
        Literal["json", "geojson"],
        Query(description="`geojson`: a FeatureCollection (`application/geo+json`)."),
    ] = "json",
) -> Response:
    where = registry.kecamatan_named(kecamatan) if kecamatan is not None else None
    box = parse_bbox(bbox) if bbox is not None else None

    def build() -> Body:
        latest: Latest = cached_latest(request, cache)
        now, k = datetime.now(UTC), settings.alerts.offline_intervals_k
        sensors = [
            describe(s, latest.get(s.id, {}), now=now, intervals_k=k)
            for s in select(registry, family, where, box)
        ]
        if format == "geojson":
            return Body.of({"type": "FeatureCollection", "features": [feature(s) for s in sensors]})
        return Body.of(sensors)

    body: Body = await cache.aget(("sensors", family, where, box, format), build)
    media = GEOJSON if format == "geojson" else "application/json"
    return cached_json(request, body, max_age_s=settings.api.cache_ttl_s, media_type=media)


@router.get("/{sensor_id}", response_model=Sensor, summary="One sensor, with its latest values")
def get_sensor(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    sensor_id: Annotated[
        str, Path(max_length=200, description="Sensor id.", examples=["fg-welang-1"])
    ],
) -> Response:
    from api.pools import connection

    sensor = registry.sensor(sensor_id)
    with connection(request.app.state.pool, settings.api.pool_timeout_s) as conn:
        latest = read_latest(conn, [sensor.id]).get(sensor.id, {})
    shown = describe(
        sensor, latest, now=datetime.now(UTC), intervals_k=settings.alerts.offline_intervals_k
    )
    return cached_json(request, Body.of(shown), max_age_s=0)
