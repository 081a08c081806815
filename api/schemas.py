"""Response models of the API (the OpenAPI document's schemas) and media-type helpers.

Routes answer with pre-serialised bodies for speed; these models describe exactly what they
send, and the schema fuzz test holds every answer to them. Other route modules import them and
declare their own non-JSON media types with :func:`alternatives`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

GEOJSON = "application/geo+json"
CSV = "text/csv"
SSE = "text/event-stream"
XML = "application/xml"
ATOM = "application/atom+xml"
CAP_XML = "application/cap+xml"
TEXT = "text/plain"

# Models referenced only from non-JSON media types; added to the document's components.
_EXTRA_MODELS: dict[str, type[BaseModel]] = {}


def alternatives(
    media: dict[str, type[BaseModel] | dict[str, Any]],
    *,
    status: int = 200,
    description: str = "Successful response",
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entry declaring more media types of one status.

    Each media type maps to a response model (referenced in the components) or to a plain
    JSON schema, e.g. ``{"type": "string"}`` for CSV, XML or an event stream::

        @router.get("/x", response_model=X, responses=alternatives({GEOJSON: XFeatures}))
    """
    content: dict[str, Any] = {}
    for media_type, schema in media.items():
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            _EXTRA_MODELS[schema.__name__] = schema
            content[media_type] = {"schema": {"$ref": f"#/components/schemas/{schema.__name__}"}}
        else:
            content[media_type] = {"schema": schema}
    return {status: {"description": description, "content": content}}


def text_schema(description: str, example: str | None = None) -> dict[str, Any]:
    """Schema of a text body (CSV, XML, SSE)."""
    schema: dict[str, Any] = {"type": "string", "description": description}
    if example is not None:
        schema["example"] = example
    return schema


def document_models(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the models named by :func:`alternatives` to an OpenAPI document's components."""
    if not _EXTRA_MODELS:
        return schema
    _, top = models_json_schema(
        [(model, "serialization") for model in _EXTRA_MODELS.values()],
        ref_template="#/components/schemas/{model}",
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in top.get("$defs", {}).items():
        components.setdefault(name, definition)
    return schema


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Health


class Liveness(_Model):
    status: Literal["ok"] = Field(description="The process is up.")


class Readiness(_Model):
    status: Literal["ready"]
    database: Literal["up"]


class Health(_Model):
    status: Literal["ok"]
    database: Literal["up"]
    mode: str = Field(description="Storage mode: `timescaledb` or `postgres`.")
    schema_version: int


# Catalogue


class MetricState(_Model):
    value: int
    label: str = Field(examples=["menyala"])
    label_en: str = Field(examples=["on"])


class MetricInfo(_Model):
    name: str = Field(examples=["water_level"])
    unit: str = Field(description="SenML unit symbol where one exists.", examples=["m"])
    description: str
    minimum: float = Field(description="Lowest valid value.")
    maximum: float = Field(description="Highest valid value.")
    integer: bool = Field(description="Whole numbers only.")
    sdm_entity: str = Field(description="FIWARE Smart Data Models entity.")
    sdm_attribute: str = Field(description="Attribute of that entity.")
    label: str = Field(description="Its name in Indonesian.", examples=["Tinggi muka air"])
    label_en: str = Field(description="Its name in English.", examples=["Water level"])
    symbol: str = Field(
        description="Unit as Indonesian pages write it, after multiplying by `scale` (empty for "
        "counts and states).",
        examples=["m"],
    )
    symbol_en: str = Field(description="Unit as English pages write it.", examples=["m"])
    scale: float = Field(description="Factor from the stored value to the shown one.")
    decimals: int = Field(description="Decimals shown.")
    states: list[MetricState] = Field(description="Names of the values of a state (lamps).")


class FamilyInfo(_Model):
    family: str = Field(examples=["flood_gauge"])
    metrics: list[MetricInfo]


class Catalogue(_Model):
    families: list[FamilyInfo]


# Sensors


class LatestValue(_Model):
    value: float
    time: datetime = Field(description="Observation time.")


class ThresholdsOut(_Model):
    waspada: float = Field(description="Water level (m) where Waspada starts.")
    siaga: float
    awas: float


class Sensor(_Model):
    id: str = Field(examples=["fg-welang-1"])
    family: Literal["flood_gauge", "traffic_counter", "street_node"]
    name: str
    kecamatan: str
    lat: float
    lon: float
    interval_s: float = Field(description="Expected reporting interval.")
    river: str | None = None
    river_km: float | None = None
    thresholds: ThresholdsOut | None = None
    flood_level: Literal["Normal", "Waspada", "Siaga", "Awas"] | None = Field(
        default=None,
        description="Level of the latest water level against the thresholds (flood gauges), "
        "as measured (before the alert service's quality control: `/city/status` gives the "
        "confirmed level); absent once that reading is older than the gauge's offline "
        "deadline.",
    )
    road: str | None = None
    road_class: str | None = None
    latest: dict[str, LatestValue] = Field(description="Latest value of each metric.")


class PointGeometry(_Model):
    type: Literal["Point"]
    coordinates: list[float] = Field(
        min_length=2, max_length=2, description="[longitude, latitude] (RFC 7946 order)."
    )


class SensorProperties(_Model):
    family: str
    name: str
    kecamatan: str
    interval_s: float
    river: str | None = None
    river_km: float | None = None
    thresholds: ThresholdsOut | None = None
    flood_level: str | None = None
    road: str | None = None
    road_class: str | None = None
    latest: dict[str, LatestValue]


class SensorFeature(_Model):
    type: Literal["Feature"]
    id: str
    geometry: PointGeometry
    properties: SensorProperties


class SensorCollection(_Model):
    type: Literal["FeatureCollection"]
    features: list[SensorFeature]


# Latest values


class LatestReading(_Model):
    sensor_id: str
    family: str
    metric: str
    unit: str
    value: float
    time: datetime


class LatestReadings(_Model):
    count: int
    readings: list[LatestReading]


# History


class Series(_Model):
    sensor_id: str
    metric: str
    unit: str


class Reading(_Model):
    time: datetime = Field(description="Observation time, or the start of the bucket.")
    sensor_id: str
    metric: str
    value: float = Field(description="The reading, or the bucket's aggregate (`agg`).")


class ReadingsPage(_Model):
    resolution: Literal["raw", "1m", "5m", "15m", "1h", "1d"]
    agg: Literal["avg", "min", "max", "last", "count"] | None = Field(
        description="Aggregate of each bucket; null for raw readings."
    )
    order: Literal["asc", "desc"]
    tz: str = Field(description="Time zone the times are written in.")
    bucket_timezone: str | None = Field(
        description="Zone whose days the 1d buckets follow (Asia/Jakarta: WIB days); "
        "null when buckets are not days."
    )
    start: datetime = Field(description="Start of the range (inclusive), aligned to buckets.")
    end: datetime = Field(description="End of the range (exclusive).")
    series: list[Series]
    count: int = Field(description="Rows in this page.")
    truncated: bool = Field(description="More rows follow: fetch `next`.")
    next: str | None = Field(description="URL of the next page, or null on the last page.")
    readings: list[Reading]


class SensorReading(_Model):
    time: datetime
    value: float | None = None
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    count: int | None = None
    last: float | None = None


class SensorReadings(_Model):
    sensor_id: str
    metric: str
    unit: str
    resolution: Literal["raw", "1m", "5m", "15m", "1h", "1d"]
    start: datetime
    end: datetime
    truncated: bool = Field(description="The range holds more rows than `limit`.")
    next: str | None
    readings: list[SensorReading]


# City status


FloodLabel = Literal["Normal", "Waspada", "Siaga", "Awas"]
FloodSource = Literal["gauge_status", "latest_water_level"]


class GaugeState(_Model):
    sensor_id: str
    level: int | None = Field(
        ge=0, le=3, description="0 Normal .. 3 Awas; null when the gauge has no current data."
    )
    label: FloodLabel | None
    value: float | None = Field(description="The water level (m) the level is from.")
    observed_at: datetime | None = Field(description="Time of the reading the level is from.")
    source: FloodSource | None
    no_data: bool = Field(
        description="True when the gauge's newest reading is older than its offline deadline "
        "(`PANTAU_ALERTS__OFFLINE_INTERVALS_K` reporting intervals), or the alert service has "
        "not evaluated it within that time: its last level is history, not the state now."
    )
    no_data_reason: Literal["silent", "not_evaluated", "never_reported"] | None = Field(
        description="`silent`: no reading within the deadline; `not_evaluated`: readings "
        "arrive but the alert service has not evaluated them; `never_reported`."
    )
    last_reading_at: datetime | None = Field(description="Time of the gauge's newest reading.")


class FloodStatus(_Model):
    level: int | None = Field(
        ge=0,
        le=3,
        description="The worst level of the gauges with current data: 0 Normal, 1 Waspada, "
        "2 Siaga, 3 Awas; null when none has current data (see `no_data`).",
    )
    label: FloodLabel | None
    sensor_id: str | None = Field(description="The gauge at that level.")
    source: FloodSource | None
    observed_at: datetime | None = Field(
        description="Time of the reading at that level; with no data, of the newest reading."
    )
    gauges: int = Field(description="Gauges with a current level in the kecamatan.")
    no_data: bool = Field(description="No gauge of the kecamatan has current data.")
    by_gauge: list[GaugeState] = Field(description="Every flood gauge of the kecamatan.")


class TrafficStatus(_Model):
    congestion_index: float = Field(ge=0, le=1, description="0 free flow to 1 jammed.")
    category: Literal["lancar", "padat", "macet"]
    counters: int
    observed_at: datetime


class LampStatus(_Model):
    working_share: float | None = Field(
        description="Share of the lamps switched on that draw power; null when none is on."
    )
    on: int
    working: int
    off: int
    reporting: int


class AirStatus(_Model):
    ispu: float = Field(description="ISPU index (worst pollutant, worst site).")
    category: Literal["Baik", "Sedang", "Tidak Sehat", "Sangat Tidak Sehat", "Berbahaya"]
    category_en: str
    pollutant: Literal["pm25", "pm10"]
    sensor_id: str
    observed_at: datetime


class KecamatanStatus(_Model):
    kecamatan: str
    lat: float
    lon: float
    flood: FloodStatus | None
    traffic: TrafficStatus | None
    lamps: LampStatus | None
    air: AirStatus | None


class CityStatus(_Model):
    generated_at: datetime
    kecamatan: list[KecamatanStatus]


class KecamatanStatusProperties(_Model):
    kecamatan: str
    flood: FloodStatus | None
    traffic: TrafficStatus | None
    lamps: LampStatus | None
    air: AirStatus | None


class KecamatanStatusFeature(_Model):
    type: Literal["Feature"]
    id: str
    geometry: PointGeometry
    properties: KecamatanStatusProperties


class CityStatusCollection(_Model):
    type: Literal["FeatureCollection"]
    features: list[KecamatanStatusFeature]


class KecamatanProperties(_Model):
    name: str
    flood_prone: bool
    landslide_prone: bool
    sensors: int


class KecamatanFeature(_Model):
    type: Literal["Feature"]
    id: str
    geometry: PointGeometry
    properties: KecamatanProperties


class KecamatanCollection(_Model):
    type: Literal["FeatureCollection"]
    features: list[KecamatanFeature]
