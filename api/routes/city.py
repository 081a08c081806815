"""The city at a glance, per kecamatan: flood level, congestion, lamps, air quality.

- Flood: the worst level of the kecamatan's gauges with current data, from the alert service's
  ``gauge_status`` where it has rows, else from each gauge's latest water level against its
  current thresholds. A gauge whose newest reading is older than its offline deadline
  (``pantau.freshness``, the same one the alert service's `offline` rule uses), or whose
  readings the alert service has not evaluated within that time, shows no level: "no data",
  with the time of its last reading. A stale level is never shown as current.
- Congestion index (0 free flow .. 1 jammed) of a counter: its latest occupancy scaled so that
  50 % occupancy is 1, averaged with ``1 - speed / free-flow speed`` of its road class (national
  60, provincial 50, town 35 km/h) when vehicles passed; a kecamatan's index is the mean of its
  counters. Categories: lancar (< 0.35), padat (< 0.65), macet.
- Lamps: of the street nodes whose lamp is switched on, the share drawing power.
- Air: ISPU of the latest PM2.5 and PM10 (worst pollutant, worst node); an indication from
  current readings, not the regulation's 24-hour average.

Other readings older than an hour are left out: a silent sensor says nothing about now.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Query, Request, Response
from psycopg.rows import tuple_row

from api.deps import CacheDep, RegistryDep, SettingsDep
from api.pools import connection
from api.registry import Registry, SensorInfo
from api.responses import Body, cached_json
from api.routes.latest import Latest, cached_latest
from api.schemas import GEOJSON, CityStatus, CityStatusCollection, KecamatanCollection, alternatives
from pantau import freshness, ispu
from pantau.catalogue import Family
from pantau.city import FloodLevel

router = APIRouter(prefix="/city", tags=["city"])

FRESH_FOR = timedelta(hours=1)
FREE_FLOW_KMH = {"national": 60.0, "provincial": 50.0, "town": 35.0}
JAMMED_OCCUPANCY = 0.5
LAMP_MIN_WATTS = 1.0


def congestion(occupancy: float, speed: float | None, road_class: str | None) -> float:
    """The congestion index of one counter (see the module's description)."""
    occupancy_term = min(max(occupancy / JAMMED_OCCUPANCY, 0.0), 1.0)
    if not speed:
        return occupancy_term
    free = FREE_FLOW_KMH.get(road_class or "town", FREE_FLOW_KMH["town"])
    speed_term = min(max(1.0 - speed / free, 0.0), 1.0)
    return (occupancy_term + speed_term) / 2


def congestion_category(index: float) -> str:
    if index < 0.35:
        return "lancar"
    if index < 0.65:
        return "padat"
    return "macet"


# The alert service's word on a gauge: level, observation time, value, when it wrote it.
GaugeRow = tuple[int, datetime, float, datetime]


def _gauge_status(conn: psycopg.Connection) -> dict[str, GaugeRow]:
    """The alert service's gauge levels, when its table exists (empty otherwise)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        exists = cur.execute("SELECT to_regclass('gauge_status') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return {}
        rows = cur.execute(
            "SELECT sensor_id, level, observed_at, value, updated_at FROM gauge_status"
        )
        return {sid: (int(level), at, value, updated) for sid, level, at, value, updated in rows}


def gauge_state(
    sensor: SensorInfo,
    reading: tuple[float, datetime] | None,
    status: GaugeRow | None,
    *,
    use_status: bool,
    now: datetime,
    intervals_k: float,
) -> dict[str, Any]:
    """One flood gauge as shown (the ``GaugeState`` schema): its level only while current."""

    def current(at: datetime | None) -> bool:
        return freshness.is_current(at, now, interval_s=sensor.interval_s, intervals_k=intervals_k)

    last = max((t for t in (reading and reading[1], status and status[1]) if t), default=None)
    level: int | None = None
    value: float | None = None
    observed: datetime | None = None
    reason: str | None = None
    if use_status:
        if status is not None:
            level, observed, value = status[0], status[1], status[2]
            if not (current(status[1]) and current(status[3])):
                reason = "not_evaluated" if reading and current(reading[1]) else "silent"
    elif reading is not None and sensor.current_thresholds is not None:
        value, observed = reading
        level = int(sensor.current_thresholds.level(value))
        if not current(observed):
            reason = "silent"
    if level is None and reason is None:
        reason = "never_reported" if last is None else "not_evaluated"
    shown = reason is None
    return {
        "sensor_id": sensor.id,
        "level": level if shown else None,
        "label": FloodLevel(level).label if shown and level is not None else None,
        "value": value if shown else None,
        "observed_at": observed if shown else None,
        "source": ("gauge_status" if use_status else "latest_water_level") if shown else None,
        "no_data": not shown,
        "no_data_reason": reason,
        "last_reading_at": last,
    }


def _flood(states: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A kecamatan's flood status from its gauges' (None: it has no flood gauge)."""
    if not states:
        return None
    current = [g for g in states if not g["no_data"]]
    if not current:
        newest = max((g["last_reading_at"] for g in states if g["last_reading_at"]), default=None)
        return {
            "level": None, "label": None, "sensor_id": None, "source": None,
            "observed_at": newest, "gauges": 0, "no_data": True, "by_gauge": states,
        }  # fmt: skip
    worst = max(current, key=lambda g: (g["level"], g["observed_at"]))
    return {
        "level": worst["level"],
        "label": worst["label"],
        "sensor_id": worst["sensor_id"],
        "source": worst["source"],
        "observed_at": worst["observed_at"],
        "gauges": len(current),
        "no_data": False,
        "by_gauge": states,
    }


# The fresh reading of a sensor's metric (value, time), or None.
Fresh = Callable[[str, str], tuple[float, datetime] | None]


def city_status(
    registry: Registry,
    latest: Latest,
    gauges: dict[str, GaugeRow],
    now: datetime,
    *,
    intervals_k: float,
) -> list[dict[str, Any]]:
    """Status of every kecamatan (the ``KecamatanStatus`` schema)."""
    since = now - FRESH_FOR

    def fresh(sensor_id: str, metric: str) -> tuple[float, datetime] | None:
        found = latest.get(sensor_id, {}).get(metric)
        return found if found is not None and found[1] >= since else None

    out = []
    for name, kec in registry.kecamatan.items():
        sensors = [s for s in registry.sensors.values() if s.kecamatan == name]
        flood = _flood(
            [
                gauge_state(
                    s,
                    latest.get(s.id, {}).get("water_level"),
                    gauges.get(s.id),
                    use_status=bool(gauges),
                    now=now,
                    intervals_k=intervals_k,
                )
                for s in sensors
                if s.family is Family.FLOOD_GAUGE
            ]
        )
        nodes = [s for s in sensors if s.family is Family.STREET_NODE]
        out.append(
            {
                "kecamatan": name,
                "lat": kec.lat,
                "lon": kec.lon,
                "flood": flood,
                "traffic": _traffic(
                    [s for s in sensors if s.family is Family.TRAFFIC_COUNTER], fresh
                ),
                "lamps": _lamps(nodes, fresh),
                "air": _air(nodes, fresh),
            }
        )
    return out


def _traffic(counters: list[SensorInfo], fresh: Fresh) -> dict[str, Any] | None:
    """A kecamatan's congestion from its traffic counters' fresh readings."""
    indices = []
    times = []
    for s in counters:
        occupancy = fresh(s.id, "occupancy")
        if occupancy is None:
            continue
        speed = fresh(s.id, "avg_speed")
        indices.append(congestion(occupancy[0], speed[0] if speed else None, s.road_class))
        times.append(occupancy[1])
    if not indices:
        return None
    index = sum(indices) / len(indices)
    return {
        "congestion_index": round(index, 3),
        "category": congestion_category(index),
        "counters": len(indices),
        "observed_at": max(times),
    }


def _lamps(nodes: list[SensorInfo], fresh: Fresh) -> dict[str, Any] | None:
    """A kecamatan's street lights: how many are on, and of those how many draw power."""
    on = working = off = 0
    for s in nodes:
        state = fresh(s.id, "lamp_state")
        if state is None:
            continue
        if state[0] >= 0.5:
            on += 1
            power = fresh(s.id, "lamp_power")
            working += power is not None and power[0] >= LAMP_MIN_WATTS
        else:
            off += 1
    if not (on or off):
        return None
    return {
        "working_share": round(working / on, 3) if on else None,
        "on": on,
        "working": working,
        "off": off,
        "reporting": on + off,
    }


def _air(nodes: list[SensorInfo], fresh: Fresh) -> dict[str, Any] | None:
    """A kecamatan's air: the worst ISPU of its street nodes' fresh particulate readings."""
    air: list[tuple[ispu.Ispu, str, datetime]] = []
    for s in nodes:
        concentrations = {}
        observed = []
        for pollutant in ("pm25", "pm10"):
            reading = fresh(s.id, pollutant)
            if reading is not None:
                concentrations[pollutant] = reading[0]
                observed.append(reading[1])
        site = ispu.worst(concentrations)
        if site is not None:
            air.append((site, s.id, max(observed)))
    if not air:
        return None
    site, sensor_id, at = max(air, key=lambda item: item[0].index)
    return {
        "ispu": round(site.index, 1),
        "category": site.category.label,
        "category_en": site.category.label_en,
        "pollutant": site.pollutant,
        "sensor_id": sensor_id,
        "observed_at": at,
    }


def _point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


FormatQuery = Annotated[
    Literal["json", "geojson"],
    Query(description="`geojson`: a FeatureCollection of kecamatan points."),
]


@router.get(
    "/status",
    response_model=CityStatus,
    summary="Per kecamatan: worst flood level, congestion index, lamps working, ISPU category",
    responses=alternatives({GEOJSON: CityStatusCollection}),
)
async def status(
    request: Request,
    registry: RegistryDep,
    cache: CacheDep,
    settings: SettingsDep,
    format: FormatQuery = "json",
) -> Response:
    def build() -> Body:
        latest = cached_latest(request, cache)
        with connection(request.app.state.pool, settings.api.pool_timeout_s) as conn:
            gauges = _gauge_status(conn)
        now = datetime.now(UTC)
        rows = city_status(
            registry, latest, gauges, now, intervals_k=settings.alerts.offline_intervals_k
        )
        if format == "geojson":
            return Body.of(
                {
                    "type": "FeatureCollection",
                    "features": [
                        {
                            "type": "Feature",
                            "id": row["kecamatan"],
                            "geometry": _point(row["lon"], row["lat"]),
                            "properties": {k: v for k, v in row.items() if k not in {"lat", "lon"}},
                        }
                        for row in rows
                    ],
                }
            )
        return Body.of({"generated_at": now, "kecamatan": rows})

    body: Body = await cache.aget(("city-status", format), build)
    media = GEOJSON if format == "geojson" else "application/json"
    return cached_json(request, body, max_age_s=settings.api.cache_ttl_s, media_type=media)


@router.get(
    "/kecamatan",
    response_model=KecamatanCollection,
    summary="The kecamatan as GeoJSON points (a layer for offline maps)",
    responses=alternatives({GEOJSON: KecamatanCollection}),
)
async def kecamatan(request: Request, registry: RegistryDep, settings: SettingsDep) -> Response:
    counts: dict[str, int] = {}
    for s in registry.sensors.values():
        counts[s.kecamatan] = counts.get(s.kecamatan, 0) + 1
    body = Body.of(
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "id": k.name,
                    "geometry": _point(k.lon, k.lat),
                    "properties": {
                        "name": k.name,
                        "flood_prone": k.flood_prone,
                        "landslide_prone": k.landslide_prone,
                        "sensors": counts.get(k.name, 0),
                    },
                }
                for k in registry.kecamatan.values()
            ],
        }
    )
    return cached_json(request, body, max_age_s=settings.api.cache_ttl_s, media_type=GEOJSON)
