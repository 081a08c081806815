"""The sensor registry: loading a city file, the lookups ingest decodes against, and the one
loader of the registered sensors (:func:`registered_sensors`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from pantau.catalogue import Family
from pantau.city import City, Gateway, Sensor, Thresholds


@dataclass(frozen=True, slots=True)
class LoadResult:
    kecamatan: int
    sensors: int
    thresholds_changed: int
    gateways: int = 0


def load_city(conn: psycopg.Connection, city: City) -> LoadResult:
    """Upsert a city's kecamatan, sensors and gateways; idempotent.

    A flood gauge whose thresholds differ from its current ones gets a new threshold version,
    so the history of thresholds is kept. Sensors missing from the file are left in place:
    their readings still refer to them. A gateway's links are only added: a link the file no
    longer lists is revoked with :func:`unlink_gateway` (``pantau devices unlink``).
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            _UPSERT_KECAMATAN,
            [(k.name, k.lat, k.lon, k.flood_prone, k.landslide_prone) for k in city.kecamatan],
        )
        cur.executemany(_UPSERT_SENSOR, [_sensor_row(s) for s in city.sensors])
        changed = sum(_version_thresholds(cur, s) for s in city.sensors)
        for gateway in city.gateways:
            _upsert_gateway(cur, gateway)
    return LoadResult(len(city.kecamatan), len(city.sensors), changed, len(city.gateways))


_UPSERT_KECAMATAN = """
INSERT INTO kecamatan (name, lat, lon, flood_prone, landslide_prone)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (name) DO UPDATE SET lat = EXCLUDED.lat, lon = EXCLUDED.lon,
    flood_prone = EXCLUDED.flood_prone, landslide_prone = EXCLUDED.landslide_prone
"""

# Only a sensor whose description changed is rewritten, so its updated_at tells when.
_UPSERT_SENSOR = """
INSERT INTO sensors (id, family, name, kecamatan, lat, lon, interval_s,
                     river, river_km, road, road_class, downstream, travel_time_min,
                     quality)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET family = EXCLUDED.family, name = EXCLUDED.name,
    kecamatan = EXCLUDED.kecamatan, lat = EXCLUDED.lat, lon = EXCLUDED.lon,
    interval_s = EXCLUDED.interval_s, river = EXCLUDED.river,
    river_km = EXCLUDED.river_km, road = EXCLUDED.road,
    road_class = EXCLUDED.road_class, downstream = EXCLUDED.downstream,
    travel_time_min = EXCLUDED.travel_time_min, quality = EXCLUDED.quality,
    updated_at = now()
WHERE (sensors.family, sensors.name, sensors.kecamatan, sensors.lat, sensors.lon,
       sensors.interval_s, sensors.river, sensors.river_km, sensors.road,
       sensors.road_class, sensors.downstream, sensors.travel_time_min,
       sensors.quality)
    IS DISTINCT FROM
      (EXCLUDED.family, EXCLUDED.name, EXCLUDED.kecamatan, EXCLUDED.lat,
       EXCLUDED.lon, EXCLUDED.interval_s, EXCLUDED.river, EXCLUDED.river_km,
       EXCLUDED.road, EXCLUDED.road_class, EXCLUDED.downstream,
       EXCLUDED.travel_time_min, EXCLUDED.quality)
"""

# A new version only when the gauge's thresholds differ from its current ones.
_VERSION_THRESHOLDS = """
INSERT INTO flood_thresholds (sensor_id, waspada, siaga, awas)
SELECT %(id)s, %(w)s, %(s)s, %(a)s
WHERE NOT EXISTS (
    SELECT 1 FROM current_flood_thresholds
    WHERE sensor_id = %(id)s AND waspada = %(w)s AND siaga = %(s)s
      AND awas = %(a)s)
"""


def _sensor_row(s: Sensor) -> tuple[object, ...]:
    quality = None if s.quality is None else Jsonb(s.quality.model_dump(exclude_none=True))
    return (
        s.id, s.family.value, s.name, s.kecamatan, s.lat, s.lon, s.interval_s,
        s.river, s.river_km, s.road, s.road_class, list(s.downstream), s.travel_time_min,
        quality,
    )  # fmt: skip


def _version_thresholds(cur: psycopg.Cursor, sensor: Sensor) -> int:
    """1 where the sensor's thresholds became a new version, else 0."""
    t = sensor.thresholds
    if t is None:
        return 0
    cur.execute(_VERSION_THRESHOLDS, {"id": sensor.id, "w": t.waspada, "s": t.siaga, "a": t.awas})
    return cur.rowcount


def _upsert_gateway(cur: psycopg.Cursor, gateway: Gateway) -> None:
    cur.execute(
        """
        INSERT INTO gateways (id, name, kecamatan) VALUES (%s, %s, %s)
        ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, kecamatan = EXCLUDED.kecamatan,
            updated_at = now()
        WHERE (gateways.name, gateways.kecamatan) IS DISTINCT FROM
              (EXCLUDED.name, EXCLUDED.kecamatan)
        """,
        [gateway.id, gateway.name, gateway.kecamatan],
    )
    cur.execute(
        "INSERT INTO gateway_sensors (gateway_id, sensor_id) SELECT %s, unnest(%s::text[]) "
        "ON CONFLICT DO NOTHING",
        [gateway.id, list(gateway.sensors)],
    )


class RegistryError(ValueError):
    """A registry change cannot be made; the message says why."""


def register_gateway(
    conn: psycopg.Connection,
    gateway_id: str,
    sensors: Iterable[str],
    *,
    name: str | None = None,
    kecamatan: str | None = None,
) -> list[str]:
    """Register a gateway (if new) and link it to ``sensors``; returns the links added.

    Every sensor must be registered, and the gateway must not be a sensor itself: a device
    that is a sensor reports only for itself.
    """
    wanted = sorted(set(sensors))
    with conn.transaction(), conn.cursor() as cur:
        if cur.execute("SELECT 1 FROM sensors WHERE id = %s", [gateway_id]).fetchone():
            raise RegistryError(f"{gateway_id} is a sensor: a sensor reports only for itself")
        known = {
            sensor_id
            for (sensor_id,) in cur.execute(
                "SELECT id FROM sensors WHERE id = ANY(%s)", [wanted]
            ).fetchall()
        }
        missing = [s for s in wanted if s not in known]
        if missing:
            raise RegistryError(f"not in the sensor registry: {', '.join(missing)}")
        cur.execute(
            """
            INSERT INTO gateways (id, name, kecamatan) VALUES (%s, %s, %s)
            ON CONFLICT (id) DO UPDATE SET
                name = coalesce(%s, gateways.name),
                kecamatan = coalesce(%s, gateways.kecamatan), updated_at = now()
            """,
            [gateway_id, name or gateway_id, kecamatan, name, kecamatan],
        )
        added = cur.execute(
            "INSERT INTO gateway_sensors (gateway_id, sensor_id) SELECT %s, unnest(%s::text[]) "
            "ON CONFLICT DO NOTHING RETURNING sensor_id",
            [gateway_id, wanted],
        ).fetchall()
    return sorted(sensor_id for (sensor_id,) in added)


def unlink_gateway(conn: psycopg.Connection, gateway_id: str, sensors: Iterable[str]) -> list[str]:
    """Revoke a gateway's right to report for ``sensors``; returns the links removed."""
    with conn.transaction():
        removed = conn.execute(
            "DELETE FROM gateway_sensors WHERE gateway_id = %s AND sensor_id = ANY(%s) "
            "RETURNING sensor_id",
            [gateway_id, sorted(set(sensors))],
        ).fetchall()
    return sorted(sensor_id for (sensor_id,) in removed)


def sensor_families(conn: psycopg.Connection) -> dict[str, Family]:
    """Every registered sensor's family, for decoding."""
    return {
        sensor_id: Family(family)
        for sensor_id, family in conn.execute("SELECT id, family FROM sensors").fetchall()
    }


def gateway_sensors(conn: psycopg.Connection) -> dict[str, frozenset[str]]:
    """Each gateway's sensors, for decoding: whom a device may report for besides itself.

    A gateway id that is also a sensor's is left out (a sensor reports only for itself).
    """
    links: dict[str, set[str]] = {}
    for gateway_id, sensor_id in conn.execute(
        "SELECT gateway_id, sensor_id FROM gateway_sensors "
        "WHERE gateway_id NOT IN (SELECT id FROM sensors)"
    ).fetchall():
        links.setdefault(gateway_id, set()).add(sensor_id)
    return {gateway_id: frozenset(sensors) for gateway_id, sensors in links.items()}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What decoding needs of the registry: each sensor's family, each gateway's sensors."""

    families: dict[str, Family]
    gateways: dict[str, frozenset[str]]


def snapshot(conn: psycopg.Connection) -> Snapshot:
    """The registry as decoding needs it, read in one transaction."""
    with conn.transaction():
        return Snapshot(sensor_families(conn), gateway_sensors(conn))


@dataclass(frozen=True, slots=True)
class RegisteredSensor:
    """A sensor as the registry holds it, with its flood threshold versions."""

    id: str
    family: Family
    name: str
    kecamatan: str
    lat: float
    lon: float
    interval_s: float
    river: str | None
    river_km: float | None
    road: str | None
    road_class: str | None
    downstream: tuple[str, ...]
    travel_time_min: float | None
    quality: dict[str, Any] | None  # as stored (a flood gauge's GaugeQuality)
    # (valid from, thresholds), oldest first; the last is the current one.
    thresholds: tuple[tuple[datetime, Thresholds], ...]

    @property
    def current_thresholds(self) -> Thresholds | None:
        return self.thresholds[-1][1] if self.thresholds else None


_SENSORS = sql.SQL(
    "SELECT id, family, name, kecamatan, lat, lon, interval_s, river, river_km, road, "
    "road_class, downstream, travel_time_min, quality FROM sensors {} ORDER BY id"
)
_THRESHOLDS = sql.SQL(
    "SELECT sensor_id, valid_from, waspada, siaga, awas FROM flood_thresholds {} "
    "ORDER BY sensor_id, valid_from"
)


def registered_sensors(
    conn: psycopg.Connection, *, sensor_id: str | None = None
) -> dict[str, RegisteredSensor]:
    """Every registered sensor (or only ``sensor_id``) by id, in id order, with its threshold
    history: what the alert service, the API and the operator routes read of the registry."""
    params = {} if sensor_id is None else {"id": sensor_id}
    only = sql.SQL("") if sensor_id is None else sql.SQL("WHERE {} = %(id)s")
    versions: dict[str, list[tuple[datetime, Thresholds]]] = {}
    sensors: dict[str, RegisteredSensor] = {}
    with conn.cursor(row_factory=tuple_row) as cur:
        for sid, valid_from, waspada, siaga, awas in cur.execute(
            _THRESHOLDS.format(only.format(sql.Identifier("sensor_id"))), params
        ):
            versions.setdefault(sid, []).append(
                (valid_from, Thresholds(waspada=waspada, siaga=siaga, awas=awas))
            )
        for row in cur.execute(_SENSORS.format(only.format(sql.Identifier("id"))), params):
            (sid, family, name, kecamatan, lat, lon, interval_s, river, river_km, road,
             road_class, downstream, travel_time_min, quality) = row  # fmt: skip
            sensors[sid] = RegisteredSensor(
                id=sid, family=Family(family), name=name, kecamatan=kecamatan, lat=lat,
                lon=lon, interval_s=interval_s, river=river, river_km=river_km, road=road,
                road_class=road_class, downstream=tuple(downstream or ()),
                travel_time_min=travel_time_min, quality=quality,
                thresholds=tuple(versions.get(sid, ())),
            )  # fmt: skip
    return sensors
