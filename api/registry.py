"""The sensor registry as the routes need it: sensors with their current thresholds, kecamatan."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg.rows import tuple_row

from api.errors import Problem
from pantau.db.registry import RegisteredSensor, registered_sensors

# One sensor of the registry, as the routes need it (its current thresholds included).
SensorInfo = RegisteredSensor


@dataclass(frozen=True, slots=True)
class KecamatanInfo:
    name: str
    lat: float
    lon: float
    flood_prone: bool
    landslide_prone: bool


@dataclass(frozen=True)
class Registry:
    """The sensor registry and the kecamatan, read at once."""

    sensors: dict[str, SensorInfo]
    kecamatan: dict[str, KecamatanInfo]
    # Lower-case name -> name, for case-insensitive filters.
    kecamatan_names: dict[str, str] = field(default_factory=dict)

    def kecamatan_named(self, name: str) -> str:
        """The kecamatan called ``name`` (any case), or a 404 problem listing the known ones."""
        found = self.kecamatan_names.get(name.strip().lower())
        if found is None:
            known = ", ".join(sorted(self.kecamatan))
            raise Problem(
                404, f"unknown kecamatan {name[:60]!r}; known: {known}", kind="unknown-kecamatan"
            )
        return found

    def sensor(self, sensor_id: str) -> SensorInfo:
        found = self.sensors.get(sensor_id)
        if found is None:
            raise Problem(404, f"no sensor {sensor_id[:80]!r}", kind="unknown-sensor")
        return found


def load_registry(conn: psycopg.Connection) -> Registry:
    """Read the registry (sensors with current thresholds, kecamatan)."""
    sensors = registered_sensors(conn)
    with conn.cursor(row_factory=tuple_row) as cur:
        kecamatan = {
            name: KecamatanInfo(name, lat, lon, flood, landslide)
            for name, lat, lon, flood, landslide in cur.execute(
                "SELECT name, lat, lon, flood_prone, landslide_prone FROM kecamatan ORDER BY name"
            )
        }
    return Registry(sensors, kecamatan, {k.lower(): k for k in kecamatan})
