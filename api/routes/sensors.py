"""The sensor registry, as JSON or GeoJSON, with each sensor's latest values."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from api.deps import ConnDep
from pantau.catalogue import Family
from pantau.city import Thresholds

router = APIRouter(prefix="/sensors", tags=["sensors"])

_SENSORS = """
SELECT s.id, s.family, s.name, s.kecamatan, s.lat, s.lon, s.interval_s, s.river, s.road,
       s.road_class, t.waspada, t.siaga, t.awas,
       coalesce((SELECT jsonb_object_agg(l.metric, jsonb_build_object('value', l.value,
                                                                    'time', l.time))
                 FROM latest_readings l WHERE l.sensor_id = s.id), '{}'::jsonb) AS latest
FROM sensors s
LEFT JOIN current_flood_thresholds t ON t.sensor_id = s.id
WHERE (%(family)s::text IS NULL OR s.family = %(family)s)
  AND (%(kecamatan)s::text IS NULL OR s.kecamatan = %(kecamatan)s)
  AND (%(id)s::text IS NULL OR s.id = %(id)s)
ORDER BY s.id
"""


def _describe(row: dict[str, Any]) -> dict[str, Any]:
    sensor = {
        key: row[key] for key in ("id", "family", "name", "kecamatan", "lat", "lon", "interval_s")
    }
    if row["family"] == Family.FLOOD_GAUGE and row["waspada"] is not None:
        thresholds = Thresholds(waspada=row["waspada"], siaga=row["siaga"], awas=row["awas"])
        sensor["river"] = row["river"]
        sensor["thresholds"] = thresholds.model_dump()
        level = row["latest"].get("water_level")
        if level is not None:
            sensor["flood_level"] = thresholds.level(level["value"]).label
    if row["family"] == Family.TRAFFIC_COUNTER:
        sensor["road"] = row["road"]
        sensor["road_class"] = row["road_class"]
    sensor["latest"] = row["latest"]
    return sensor


def _feature(sensor: dict[str, Any]) -> dict[str, Any]:
    properties = {k: v for k, v in sensor.items() if k not in {"lat", "lon"}}
    return {
        "type": "Feature",
        "id": sensor["id"],
        # GeoJSON (RFC 7946) orders coordinates longitude first.
        "geometry": {"type": "Point", "coordinates": [sensor["lon"], sensor["lat"]]},
        "properties": properties,
    }


@router.get(
    "",
    summary="All sensors, with their latest values",
    responses={200: {"content": {"application/geo+json": {}}}},
)
def list_sensors(
    conn: ConnDep,
    family: Family | None = None,
    kecamatan: str | None = None,
    format: Annotated[Literal["json", "geojson"], Query()] = "json",
) -> JSONResponse:
    rows = conn.execute(
        _SENSORS,
        {"family": family and family.value, "kecamatan": kecamatan, "id": None},
    ).fetchall()
    sensors = [_describe(row) for row in rows]  # type: ignore[arg-type]
    if format == "geojson":
        collection = {"type": "FeatureCollection", "features": [_feature(s) for s in sensors]}
        return JSONResponse(collection, media_type="application/geo+json")
    return JSONResponse(jsonable(sensors))


@router.get("/{sensor_id}", summary="One sensor, with its latest values")
def get_sensor(conn: ConnDep, sensor_id: str) -> JSONResponse:
    rows = conn.execute(_SENSORS, {"family": None, "kecamatan": None, "id": sensor_id}).fetchall()
    if not rows:
        raise HTTPException(status_code=404, detail=f"no sensor {sensor_id!r}")
    return JSONResponse(jsonable(_describe(rows[0])))  # type: ignore[arg-type]


def jsonable(value: Any) -> Any:
    """JSON-ready copy (times as RFC 3339)."""
    return jsonable_encoder(value)
