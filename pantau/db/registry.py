"""The sensor registry: loading a city file, and the lookups ingest decodes against."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from pantau.catalogue import Family
from pantau.city import City


@dataclass(frozen=True, slots=True)
class LoadResult:
    kecamatan: int
    sensors: int
    thresholds_changed: int


def load_city(conn: psycopg.Connection, city: City) -> LoadResult:
    """Upsert a city's kecamatan and sensors; idempotent.

    A flood gauge whose thresholds differ from its current ones gets a new threshold version,
    so the history of thresholds is kept. Sensors missing from the file are left in place:
    their readings still refer to them.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO kecamatan (name, lat, lon, flood_prone, landslide_prone)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (name) DO UPDATE SET lat = EXCLUDED.lat, lon = EXCLUDED.lon,
                flood_prone = EXCLUDED.flood_prone, landslide_prone = EXCLUDED.landslide_prone
            """,
            [(k.name, k.lat, k.lon, k.flood_prone, k.landslide_prone) for k in city.kecamatan],
        )
        cur.executemany(
            """
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
            """,
            [
                (
                    s.id,
                    s.family.value,
                    s.name,
                    s.kecamatan,
                    s.lat,
                    s.lon,
                    s.interval_s,
                    s.river,
                    s.river_km,
                    s.road,
                    s.road_class,
                    list(s.downstream),
                    s.travel_time_min,
                    None if s.quality is None else Jsonb(s.quality.model_dump(exclude_none=True)),
                )
                for s in city.sensors
            ],
        )
        changed = 0
        for sensor in city.sensors:
            if sensor.thresholds is None:
                continue
            t = sensor.thresholds
            cur.execute(
                """
                INSERT INTO flood_thresholds (sensor_id, waspada, siaga, awas)
                SELECT %(id)s, %(w)s, %(s)s, %(a)s
                WHERE NOT EXISTS (
                    SELECT 1 FROM current_flood_thresholds
                    WHERE sensor_id = %(id)s AND waspada = %(w)s AND siaga = %(s)s
                      AND awas = %(a)s)
                """,
                {"id": sensor.id, "w": t.waspada, "s": t.siaga, "a": t.awas},
            )
            changed += cur.rowcount
    return LoadResult(len(city.kecamatan), len(city.sensors), changed)


def sensor_families(conn: psycopg.Connection) -> dict[str, Family]:
    """Every registered sensor's family, for decoding."""
    return {
        sensor_id: Family(family)
        for sensor_id, family in conn.execute("SELECT id, family FROM sensors").fetchall()
    }
