"""City files: the YAML description of one deployment (its kecamatan, sensors and gateways)."""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, model_validator

from pantau.catalogue import Family

SENSOR_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"


class FloodLevel(IntEnum):
    """Indonesia's four flood warning levels (BNPB/BPBD wording), lowest first."""

    NORMAL = 0
    WASPADA = 1
    SIAGA = 2
    AWAS = 3

    @property
    def label(self) -> str:
        return self.name.capitalize()


class Thresholds(BaseModel):
    """Water levels (metres above the gauge zero) at which each warning level starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    waspada: float
    siaga: float
    awas: float

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.waspada < self.siaga < self.awas:
            raise ValueError("thresholds must rise: waspada < siaga < awas")
        return self

    def level(self, water_level: float) -> FloodLevel:
        """The warning level a water level falls in."""
        if water_level >= self.awas:
            return FloodLevel.AWAS
        if water_level >= self.siaga:
            return FloodLevel.SIAGA
        if water_level >= self.waspada:
            return FloodLevel.WASPADA
        return FloodLevel.NORMAL


class GaugeQuality(BaseModel):
    """What a flood gauge can measure and how fast its river can move: the alert service's
    quality control (docs/alerts.md) takes a reading beyond these as suspect. Unset limits
    are the service's settings (the rate) or none (the range beyond the catalogue's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    range_min_m: float | None = Field(
        default=None, description="Lowest level the sensor measures (m above the gauge zero)."
    )
    range_max_m: float | None = Field(default=None, description="Highest level it measures.")
    max_rate_m_per_h: PositiveFloat | None = Field(
        default=None, description="Fastest rise or fall of the river at this gauge."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        low, high = self.range_min_m, self.range_max_m
        if low is not None and high is not None and not low < high:
            raise ValueError("quality: range_min_m must be below range_max_m")
        return self


class Kecamatan(BaseModel):
    """A district of the regency, with an approximate centre."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    flood_prone: bool = False
    landslide_prone: bool = False


class Sensor(BaseModel):
    """One device in the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=SENSOR_ID_PATTERN)
    family: Family
    name: str
    kecamatan: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    interval_s: PositiveFloat = Field(description="Expected reporting interval.")
    # Flood gauges: the river, the distance downstream from the first gauge on it (orders gauges
    # for upstream-to-downstream flood travel), and the four-level thresholds.
    river: str | None = None
    river_km: float | None = Field(default=None, ge=0)
    thresholds: Thresholds | None = None
    # Flood gauges: the gauges a flood wave reaches next, and its travel time to them (unset:
    # derived from the river_km difference and the alert service's wave speed).
    downstream: tuple[str, ...] = ()
    travel_time_min: PositiveFloat | None = None
    # Flood gauges: the sensor's range and the river's fastest plausible change, for quality
    # control of its readings (unset: the alert service's defaults).
    quality: GaugeQuality | None = None
    # Traffic counters: the road and its class (national roads carry the most traffic).
    road: str | None = None
    road_class: Literal["national", "provincial", "town"] | None = None

    @model_validator(mode="after")
    def _family_fields(self) -> Self:
        if self.family is Family.FLOOD_GAUGE:
            if self.thresholds is None or self.river is None:
                raise ValueError(f"flood gauge {self.id} needs river and thresholds")
        elif self.thresholds is not None or self.quality is not None:
            raise ValueError(f"{self.id}: only flood gauges carry thresholds and quality")
        if self.family is Family.TRAFFIC_COUNTER and self.road_class is None:
            raise ValueError(f"traffic counter {self.id} needs road_class")
        return self


class Gateway(BaseModel):
    """A device that reports for other sensors (a LoRaWAN network server, a river post's data
    logger): it may report only for the sensors listed here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=SENSOR_ID_PATTERN)
    name: str
    kecamatan: str | None = None
    sensors: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if len(set(self.sensors)) != len(self.sensors):
            raise ValueError(f"gateway {self.id} lists a sensor twice")
        return self


class City(BaseModel):
    """A whole deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    timezone: str = "Asia/Jakarta"
    kecamatan: tuple[Kecamatan, ...]
    sensors: tuple[Sensor, ...]
    gateways: tuple[Gateway, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [k.name for k in self.kecamatan]
        if len(set(names)) != len(names):
            raise ValueError("kecamatan names must be unique")
        ids = [s.id for s in self.sensors]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"duplicate sensor ids: {', '.join(duplicated)}")
        unknown = sorted({s.kecamatan for s in self.sensors} - set(names))
        if unknown:
            raise ValueError(f"sensors placed in unknown kecamatan: {', '.join(unknown)}")
        dangling = sorted({d for s in self.sensors for d in s.downstream} - set(ids))
        if dangling:
            raise ValueError(f"downstream of unknown sensors: {', '.join(dangling)}")
        self._consistent_gateways(set(ids), set(names))
        return self

    def _consistent_gateways(self, sensors: set[str], kecamatan: set[str]) -> None:
        ids = [g.id for g in self.gateways]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"duplicate gateway ids: {', '.join(duplicated)}")
        # A device that is a sensor reports only for itself: it can never be a gateway too.
        both = sorted(set(ids) & sensors)
        if both:
            raise ValueError(f"gateway ids that are sensor ids: {', '.join(both)}")
        unknown = sorted({s for g in self.gateways for s in g.sensors} - sensors)
        if unknown:
            raise ValueError(f"gateways list unknown sensors: {', '.join(unknown)}")
        places = sorted({g.kecamatan for g in self.gateways if g.kecamatan} - kecamatan)
        if places:
            raise ValueError(f"gateways placed in unknown kecamatan: {', '.join(places)}")

    def sensor(self, sensor_id: str) -> Sensor:
        for sensor in self.sensors:
            if sensor.id == sensor_id:
                return sensor
        raise KeyError(sensor_id)

    def of_family(self, family: Family) -> list[Sensor]:
        return [s for s in self.sensors if s.family is family]

    def gateway_sensors(self) -> dict[str, frozenset[str]]:
        """Each gateway's sensors, as decoding takes them."""
        return {g.id: frozenset(g.sensors) for g in self.gateways}

    def gateway_of(self, sensor_id: str) -> str | None:
        """The first gateway that reports for a sensor, or None when it reports only itself."""
        for gateway in self.gateways:
            if sensor_id in gateway.sensors:
                return gateway.id
        return None


class CityFileError(ValueError):
    """A city file could not be read; the message says where and why."""


def load_city(path: Path | str) -> City:
    """Read and validate a city file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CityFileError(f"{path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise CityFileError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("city"), dict):
        raise CityFileError(f"{path}: expected a mapping with a `city` section")
    try:
        return City.model_validate({**raw["city"], **{k: v for k, v in raw.items() if k != "city"}})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'city'}: {e['msg']}" for e in error.errors()
        )
        raise CityFileError(f"{path}: {problems}") from None
