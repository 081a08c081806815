"""How Pantau's registry and readings appear as SensorThings entities.

- Thing: a sensor (``Things('fg-welang-1')``), with its family, kecamatan, river or road.
- Location, FeatureOfInterest, HistoricalLocation: one per sensor, with the sensor's id: where
  it stands (a GeoJSON point) and what it observes; the historical location is the time the
  sensor was last registered there.
- Sensor: a family of devices (``Sensors('flood_gauge')``).
- ObservedProperty: a catalogue metric (``ObservedProperties('water_level')``).
- Datastream: one metric of one sensor (``Datastreams('fg-welang-1:water_level')``).
- Observation: one stored reading (``Observations('fg-welang-1:water_level:1764464400000000')``:
  sensor, metric and observation time in microseconds since 1970 UTC), so an id leads straight
  to the readings' key (sensor_id, metric, time).

Each entity set is a SQL source (a constant SELECT, no user text) with the properties that
``$filter``, ``$orderby`` and ``$select`` may name, the columns forming its key, and its
navigation properties as column equalities between parent and child.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from psycopg import sql

from pantau.catalogue import CATALOGUE, Family, Metric

PropType = Literal["string", "number", "datetime", "boolean"]
Row = dict[str, Any]

OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
GEO_JSON = "application/geo+json"

_QUDT = "http://qudt.org/vocab/unit/"
# unitOfMeasurement of each catalogue unit (SenML symbol -> name, QUDT definition).
UNITS: dict[str, tuple[str, str]] = {
    "m": ("metre", _QUDT + "M"),
    "mm": ("millimetre", _QUDT + "MilliM"),
    "V": ("volt", _QUDT + "V"),
    "count": ("count", _QUDT + "NUM"),
    "km/h": ("kilometre per hour", _QUDT + "KiloM-PER-HR"),
    "/": ("ratio", _QUDT + "UNITLESS"),
    "1": ("on/off state", _QUDT + "UNITLESS"),
    "W": ("watt", _QUDT + "W"),
    "ug/m3": ("microgram per cubic metre", _QUDT + "MicroGM-PER-M3"),
    "dB": ("decibel (A-weighted)", _QUDT + "DeciB"),
    "Cel": ("degree Celsius", _QUDT + "DEG_C"),
    "%RH": ("percent relative humidity", _QUDT + "PERCENT_RH"),
}

FAMILY_TEXT: dict[Family, tuple[str, str]] = {
    Family.FLOOD_GAUGE: (
        "Flood gauge",
        "River water-level gauge (pos duga air) with a rain gauge; solar and battery powered.",
    ),
    Family.TRAFFIC_COUNTER: (
        "Traffic counter",
        "Roadside counter of vehicles by class (motorcycle, car, bus, truck), with average "
        "speed and occupancy.",
    ),
    Family.STREET_NODE: (
        "Street node",
        "Street-light controller with lamp state and power, air quality (PM2.5, PM10), noise, "
        "temperature and humidity sensors.",
    ),
}

METRICS: dict[str, Metric] = {m.name: m for ms in CATALOGUE.values() for m in ms.values()}
if len(METRICS) != sum(len(ms) for ms in CATALOGUE.values()):  # pragma: no cover
    raise RuntimeError("ObservedProperties need metric names unique across families")
_MISSING_UNITS = {m.unit for m in METRICS.values()} - UNITS.keys()
if _MISSING_UNITS:  # pragma: no cover - a catalogue change must add its unit here
    raise RuntimeError(f"no unitOfMeasurement for units {sorted(_MISSING_UNITS)}")


@dataclass(frozen=True, slots=True)
class Property:
    """A property ``$filter``/``$orderby`` may name: a column of the source and its type."""

    column: str
    type: PropType
    nullable: bool = False


@dataclass(frozen=True, slots=True)
class Relation:
    """A navigation property: child rows whose columns equal the parent's."""

    target: str
    pairs: tuple[tuple[str, str], ...]  # (parent column, child column)
    single: bool = False


@dataclass(frozen=True, slots=True)
class EntitySet:
    name: str
    singular: str
    source: sql.Composable
    key: tuple[str, ...]
    properties: dict[str, Property]
    fields: tuple[str, ...]  # top-level JSON members besides @iot.id, for $select
    navigation: dict[str, Relation]
    render: Callable[[Row], dict[str, Any]]
    id_of: Callable[[Row], str]
    parse_id: Callable[[str], Row | None]


def _values(rows: list[tuple[Any, ...]], names: tuple[str, ...]) -> sql.Composable:
    """A constant ``(VALUES ...) AS v(names)`` of server-side data, quoted by psycopg."""
    body = sql.SQL(", ").join(
        sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(v) for v in row)) for row in rows
    )
    composed = sql.SQL("(VALUES {}) AS v({})").format(
        body, sql.SQL(", ").join(map(sql.Identifier, names))
    )
    # Rendered once; '%' doubled because these sources go into queries with parameters.
    return sql.SQL(composed.as_string(None).replace("%", "%%"))


_FAMILIES = _values(
    [(f.value, label, text) for f, (label, text) in FAMILY_TEXT.items()],
    ("family", "label", "text"),
)
_METRIC_COLUMNS = (
    "family",
    "metric",
    "description",
    "unit_symbol",
    "unit_name",
    "unit_definition",
    "sdm_entity",
    "sdm_attribute",
)
_METRICS = _values(
    [
        (
            family.value,
            m.name,
            m.description,
            m.unit,
            *UNITS[m.unit],
            m.sdm_entity,
            m.sdm_attribute,
        )
        for family, metrics in CATALOGUE.items()
        for m in metrics.values()
    ],
    _METRIC_COLUMNS,
)


def quoted_key(text: str) -> str | None:
    """The string inside an OData key: ``'fg-welang-1'`` (quotes doubled inside); bare is
    accepted too."""
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        inner = text[1:-1]
        if "'" in inner.replace("''", ""):
            return None
        return inner.replace("''", "'")
    return text or None


def _single_id(column: str) -> Callable[[str], Row | None]:
    def parse(text: str) -> Row | None:
        key = quoted_key(text)
        return None if key is None else {column: key}

    return parse


def _row_id(row: Row) -> str:
    return str(row["id"])


def _text_props(*names: str) -> dict[str, Property]:
    return {name: Property(name, "string") for name in names}


_ID_PROPS = {"id": Property("id", "string"), "@iot.id": Property("id", "string")}

# --- Things -----------------------------------------------------------------------------------

_THINGS = sql.SQL(
    "SELECT s.id, s.name, s.name || ': ' || v.label || ' in Kecamatan ' || s.kecamatan "
    "AS description, s.family, s.kecamatan, s.river, s.river_km, s.road, s.road_class, "
    "s.interval_s FROM sensors s JOIN {} ON v.family = s.family"
).format(_FAMILIES)


def _thing(row: Row) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "family": row["family"],
        "kecamatan": row["kecamatan"],
        "reportingInterval_s": row["interval_s"],
    }
    for key in ("river", "river_km", "road", "road_class"):
        if row[key] is not None:
            properties[key] = row[key]
    return {"name": row["name"], "description": row["description"], "properties": properties}


THINGS = EntitySet(
    name="Things",
    singular="Thing",
    source=_THINGS,
    key=("id",),
    properties={
        **_ID_PROPS,
        **_text_props("name", "description"),
        "properties/family": Property("family", "string"),
        "properties/kecamatan": Property("kecamatan", "string"),
        "properties/river": Property("river", "string", nullable=True),
        "properties/river_km": Property("river_km", "number", nullable=True),
        "properties/road": Property("road", "string", nullable=True),
        "properties/road_class": Property("road_class", "string", nullable=True),
        "properties/reportingInterval_s": Property("interval_s", "number"),
    },
    fields=("name", "description", "properties"),
    navigation={
        "Locations": Relation("Locations", (("id", "id"),)),
        "HistoricalLocations": Relation("HistoricalLocations", (("id", "id"),)),
        "Datastreams": Relation("Datastreams", (("id", "sensor_id"),)),
    },
    render=_thing,
    id_of=_row_id,
    parse_id=_single_id("id"),
)

# --- Locations, HistoricalLocations, FeaturesOfInterest: one per sensor ------------------------

_LOCATIONS = sql.SQL(
    "SELECT s.id, s.name, 'Kecamatan ' || s.kecamatan AS description, s.kecamatan, s.lat, "
    "s.lon, {} AS encoding_type FROM sensors s"
).format(sql.Literal(GEO_JSON))


def _point(row: Row) -> dict[str, Any]:
    # GeoJSON (RFC 7946) orders coordinates longitude first.
    return {"type": "Point", "coordinates": [row["lon"], row["lat"]]}


def _location(row: Row) -> dict[str, Any]:
    return {
        "name": row["name"],
        "description": row["description"],
        "encodingType": GEO_JSON,
        "location": _point(row),
        "properties": {"kecamatan": row["kecamatan"]},
    }


LOCATIONS = EntitySet(
    name="Locations",
    singular="Location",
    source=_LOCATIONS,
    key=("id",),
    properties={
        **_ID_PROPS,
        **_text_props("name", "description"),
        "encodingType": Property("encoding_type", "string"),
        "properties/kecamatan": Property("kecamatan", "string"),
    },
    fields=("name", "description", "encodingType", "location", "properties"),
    navigation={
        "Things": Relation("Things", (("id", "id"),)),
        "HistoricalLocations": Relation("HistoricalLocations", (("id", "id"),)),
    },
    render=_location,
    id_of=_row_id,
    parse_id=_single_id("id"),
)

HISTORICAL_LOCATIONS = EntitySet(
    name="HistoricalLocations",
    singular="HistoricalLocation",
    source=sql.SQL("SELECT s.id, s.updated_at AS time FROM sensors s"),
    key=("id",),
    properties={**_ID_PROPS, "time": Property("time", "datetime")},
    fields=("time",),
    navigation={
        "Thing": Relation("Things", (("id", "id"),), single=True),
        "Locations": Relation("Locations", (("id", "id"),)),
    },
    render=lambda row: {"time": rfc3339(row["time"])},
    id_of=_row_id,
    parse_id=_single_id("id"),
)

_FEATURES = sql.SQL(
    "SELECT s.id, s.name, coalesce('River ' || s.river || ' at km ' || s.river_km::text, "
    "s.road, 'Surroundings of the sensor') || ', Kecamatan ' || s.kecamatan AS description, "
    "{} AS encoding_type, s.lat, s.lon FROM sensors s"
).format(sql.Literal(GEO_JSON))

FEATURES_OF_INTEREST = EntitySet(
    name="FeaturesOfInterest",
    singular="FeatureOfInterest",
    source=_FEATURES,
    key=("id",),
    properties={
        **_ID_PROPS,
        **_text_props("name", "description"),
        "encodingType": Property("encoding_type", "string"),
    },
    fields=("name", "description", "encodingType", "feature"),
    navigation={"Observations": Relation("Observations", (("id", "sensor_id"),))},
    render=lambda row: {
        "name": row["name"],
        "description": row["description"],
        "encodingType": GEO_JSON,
        "feature": _point(row),
    },
    id_of=_row_id,
    parse_id=_single_id("id"),
)

# --- Sensors (families) and ObservedProperties (metrics) ---------------------------------------

SENSORS = EntitySet(
    name="Sensors",
    singular="Sensor",
    source=sql.SQL(
        "SELECT v.family AS id, v.label AS name, v.text AS description, "
        "'text/plain' AS encoding_type FROM {}"
    ).format(_FAMILIES),
    key=("id",),
    properties={
        **_ID_PROPS,
        **_text_props("name", "description"),
        "encodingType": Property("encoding_type", "string"),
    },
    fields=("name", "description", "encodingType", "metadata", "properties"),
    navigation={"Datastreams": Relation("Datastreams", (("id", "family"),))},
    render=lambda row: {
        "name": row["name"],
        "description": row["description"],
        "encodingType": "text/plain",
        "metadata": row["description"],
        "properties": {"family": row["id"]},
    },
    id_of=_row_id,
    parse_id=_single_id("id"),
)


def _observed_property(row: Row) -> dict[str, Any]:
    return {
        "name": row["id"],
        "definition": row["definition"],
        "description": row["description"],
        "properties": {
            "smartDataModels": {"entity": row["sdm_entity"], "attribute": row["sdm_attribute"]}
        },
    }


OBSERVED_PROPERTIES = EntitySet(
    name="ObservedProperties",
    singular="ObservedProperty",
    source=sql.SQL(
        "SELECT DISTINCT ON (v.metric) v.metric AS id, v.description, v.sdm_entity, "
        "v.sdm_attribute, 'urn:pantau:metric:' || v.metric AS definition FROM {}"
    ).format(_METRICS),
    key=("id",),
    properties={
        **_ID_PROPS,
        "name": Property("id", "string"),
        **_text_props("description", "definition"),
        "properties/smartDataModels/entity": Property("sdm_entity", "string"),
        "properties/smartDataModels/attribute": Property("sdm_attribute", "string"),
    },
    fields=("name", "definition", "description", "properties"),
    navigation={"Datastreams": Relation("Datastreams", (("id", "metric"),))},
    render=_observed_property,
    id_of=_row_id,
    parse_id=_single_id("id"),
)

# --- Datastreams: (sensor, metric) ------------------------------------------------------------

_DATASTREAMS = sql.SQL(
    "SELECT s.id AS sensor_id, v.metric, s.id || ':' || v.metric AS id, "
    "v.metric || ' of ' || s.name AS name, v.description, s.family, v.unit_symbol, "
    "v.unit_name, v.unit_definition, {} AS observation_type "
    "FROM sensors s JOIN {} ON v.family = s.family"
).format(sql.Literal(OM_MEASUREMENT), _METRICS)


def _datastream(row: Row) -> dict[str, Any]:
    return {
        "name": row["name"],
        "description": row["description"],
        "unitOfMeasurement": {
            "name": row["unit_name"],
            "symbol": row["unit_symbol"],
            "definition": row["unit_definition"],
        },
        "observationType": OM_MEASUREMENT,
        "properties": {
            "sensor": row["sensor_id"],
            "metric": row["metric"],
            "family": row["family"],
        },
    }


def _parse_datastream_id(text: str) -> Row | None:
    key = quoted_key(text)
    if key is None:
        return None
    sensor_id, sep, metric = key.partition(":")
    if not sep or not sensor_id or metric not in METRICS:
        return None
    return {"sensor_id": sensor_id, "metric": metric}


DATASTREAMS = EntitySet(
    name="Datastreams",
    singular="Datastream",
    source=_DATASTREAMS,
    key=("sensor_id", "metric"),
    properties={
        **_ID_PROPS,
        **_text_props("name", "description"),
        "observationType": Property("observation_type", "string"),
        "unitOfMeasurement/name": Property("unit_name", "string"),
        "unitOfMeasurement/symbol": Property("unit_symbol", "string"),
        "unitOfMeasurement/definition": Property("unit_definition", "string"),
        "properties/sensor": Property("sensor_id", "string"),
        "properties/metric": Property("metric", "string"),
        "properties/family": Property("family", "string"),
    },
    fields=("name", "description", "unitOfMeasurement", "observationType", "properties"),
    navigation={
        "Thing": Relation("Things", (("sensor_id", "id"),), single=True),
        "Sensor": Relation("Sensors", (("family", "id"),), single=True),
        "ObservedProperty": Relation("ObservedProperties", (("metric", "id"),), single=True),
        "Observations": Relation(
            "Observations", (("sensor_id", "sensor_id"), ("metric", "metric"))
        ),
    },
    render=_datastream,
    id_of=_row_id,
    parse_id=_parse_datastream_id,
)

# --- Observations: readings -------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    """Microseconds since 1970 UTC, exactly."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def rfc3339(moment: datetime) -> str:
    """UTC with a ``Z``; microseconds only where there are some."""
    text = moment.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _observation(row: Row) -> dict[str, Any]:
    value = row["value"]
    metric = METRICS.get(row["metric"])
    if metric is not None and metric.integer and value.is_integer():
        value = int(value)
    time = rfc3339(row["time"])
    body: dict[str, Any] = {"phenomenonTime": time, "resultTime": time, "result": value}
    if row["time_estimated"]:
        # The device sent no time: the gateway's receive time stands in for it.
        body["parameters"] = {"timeEstimated": True}
    return body


def _observation_id(row: Row) -> str:
    return f"{row['sensor_id']}:{row['metric']}:{micros(row['time'])}"


# Observation times the id may name: PostgreSQL's and Python's common range.
_MIN_US, _MAX_US = micros(datetime(1, 1, 2, tzinfo=UTC)), micros(datetime(9999, 12, 30, tzinfo=UTC))


def _parse_observation_id(text: str) -> Row | None:
    key = quoted_key(text)
    if key is None:
        return None
    parts = key.split(":")
    if len(parts) != 3 or parts[1] not in METRICS:
        return None
    digits = parts[2].removeprefix("-")
    if not digits.isdigit() or len(digits) > 19:
        return None
    value = int(parts[2])
    if not _MIN_US <= value <= _MAX_US:
        return None
    return {"sensor_id": parts[0], "metric": parts[1], "time": from_micros(value)}


OBSERVATIONS = EntitySet(
    name="Observations",
    singular="Observation",
    source=sql.SQL("SELECT sensor_id, metric, time, value, time_estimated FROM readings"),
    key=("sensor_id", "metric", "time"),
    properties={
        "phenomenonTime": Property("time", "datetime"),
        "resultTime": Property("time", "datetime"),
        "result": Property("value", "number"),
    },
    fields=("phenomenonTime", "resultTime", "result", "parameters"),
    navigation={
        "Datastream": Relation(
            "Datastreams", (("sensor_id", "sensor_id"), ("metric", "metric")), single=True
        ),
        "FeatureOfInterest": Relation("FeaturesOfInterest", (("sensor_id", "id"),), single=True),
    },
    render=_observation,
    id_of=_observation_id,
    parse_id=_parse_observation_id,
)

ENTITY_SETS: dict[str, EntitySet] = {
    es.name: es
    for es in (
        THINGS,
        LOCATIONS,
        HISTORICAL_LOCATIONS,
        DATASTREAMS,
        SENSORS,
        OBSERVED_PROPERTIES,
        OBSERVATIONS,
        FEATURES_OF_INTEREST,
    )
}
