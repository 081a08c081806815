"""The sensor catalogue: which families exist, what each one measures, in which unit and range.

Each metric names the FIWARE Smart Data Models entity and attribute it maps to, so the open-data
API can publish readings in the vocabulary other cities and agencies already use, and says how a
person reads it: its name in Indonesian and English, the unit symbol shown, the decimals.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Family(StrEnum):
    """The three kinds of device Pantau knows."""

    FLOOD_GAUGE = "flood_gauge"
    TRAFFIC_COUNTER = "traffic_counter"
    STREET_NODE = "street_node"


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    """One measured quantity: name, unit (SenML unit symbol where one exists) and valid range."""

    name: str
    unit: str
    minimum: float
    maximum: float
    description: str
    sdm_entity: str
    sdm_attribute: str
    integer: bool = False
    # How pages show it: "Tinggi muka air 1,53 m". ``symbol`` is the unit as people write it
    # (empty for counts), after multiplying by ``scale``; ``states`` name the values of a state.
    label: str
    label_en: str
    symbol: str
    symbol_en: str | None = None
    scale: float = 1.0
    decimals: int = 0
    states: tuple[tuple[int, str, str], ...] = ()

    def in_range(self, value: float) -> bool:
        return self.minimum <= value <= self.maximum

    @property
    def shown_unit_en(self) -> str:
        """The unit symbol on English pages."""
        return self.symbol if self.symbol_en is None else self.symbol_en


def _m(**kwargs: object) -> Metric:
    return Metric(**kwargs)  # type: ignore[arg-type]


FLOOD_GAUGE_METRICS = (
    _m(
        name="water_level",
        unit="m",
        minimum=-2.0,
        maximum=15.0,
        description="River water level above the gauge's zero.",
        sdm_entity="FloodMonitoring",
        sdm_attribute="currentLevel",
        label="Tinggi muka air",
        label_en="Water level",
        symbol="m",
        decimals=2,
    ),
    _m(
        name="rainfall",
        unit="mm",
        minimum=0.0,
        maximum=300.0,
        description="Rain fallen since the previous report.",
        sdm_entity="WeatherObserved",
        sdm_attribute="precipitation",
        label="Curah hujan",
        label_en="Rainfall",
        symbol="mm",
        decimals=1,
    ),
    _m(
        name="battery",
        unit="V",
        minimum=0.0,
        maximum=30.0,
        description="Supply voltage of the gauge (solar and battery powered).",
        sdm_entity="Device",
        sdm_attribute="batteryLevel",
        label="Tegangan baterai",
        label_en="Battery voltage",
        symbol="V",
        decimals=1,
    ),
)

_VEHICLE_CLASSES = (
    ("motorcycle", "motorcycle", "Motorcycles (sepeda motor), counted separately.",
     "Sepeda motor", "Motorcycles"),
    ("car", "car", "Cars, vans and pick-ups.", "Mobil", "Cars"),
    ("bus", "bus", "Buses and minibuses.", "Bus", "Buses"),
    ("truck", "lorry", "Trucks and lorries.", "Truk", "Trucks"),
)  # fmt: skip

TRAFFIC_COUNTER_METRICS = (
    *(
        _m(
            name=f"count_{name}",
            unit="count",
            minimum=0,
            maximum=10_000,
            description=f"{text} Vehicles passing in the reporting interval.",
            sdm_entity="TrafficFlowObserved",
            sdm_attribute=f"intensity[vehicleType={sdm}]",
            integer=True,
            label=label,
            label_en=label_en,
            symbol="",
        )
        for name, sdm, text, label, label_en in _VEHICLE_CLASSES
    ),
    _m(
        name="avg_speed",
        unit="km/h",
        minimum=0.0,
        maximum=200.0,
        description="Average speed of the vehicles counted in the interval.",
        sdm_entity="TrafficFlowObserved",
        sdm_attribute="averageVehicleSpeed",
        label="Kecepatan rata-rata",
        label_en="Average speed",
        symbol="km/jam",
        symbol_en="km/h",
    ),
    _m(
        name="occupancy",
        unit="/",
        minimum=0.0,
        maximum=1.0,
        description="Fraction of the interval the detection zone was occupied.",
        sdm_entity="TrafficFlowObserved",
        sdm_attribute="occupancy",
        label="Okupansi lajur",
        label_en="Lane occupancy",
        symbol="%",
        scale=100.0,
    ),
)

STREET_NODE_METRICS = (
    _m(
        name="lamp_state",
        unit="1",
        minimum=0,
        maximum=1,
        description="Lamp switched on (1) or off (0).",
        sdm_entity="Streetlight",
        sdm_attribute="powerState",
        integer=True,
        label="Lampu",
        label_en="Lamp",
        symbol="",
        states=((0, "padam", "off"), (1, "menyala", "on")),
    ),
    _m(
        name="lamp_power",
        unit="W",
        minimum=0.0,
        maximum=1_000.0,
        description="Electrical power drawn by the lamp; 0 while on means a failed lamp.",
        sdm_entity="Streetlight",
        sdm_attribute="powerConsumption",
        label="Daya lampu",
        label_en="Lamp power",
        symbol="W",
    ),
    _m(
        name="pm25",
        unit="ug/m3",
        minimum=0.0,
        maximum=1_000.0,
        description="Fine particulate matter PM2.5 concentration.",
        sdm_entity="AirQualityObserved",
        sdm_attribute="pm25",
        label="PM2,5",
        label_en="PM2.5",
        symbol="µg/m³",
    ),
    _m(
        name="pm10",
        unit="ug/m3",
        minimum=0.0,
        maximum=2_000.0,
        description="Particulate matter PM10 concentration.",
        sdm_entity="AirQualityObserved",
        sdm_attribute="pm10",
        label="PM10",
        label_en="PM10",
        symbol="µg/m³",
    ),
    _m(
        name="noise",
        unit="dB",
        minimum=20.0,
        maximum=140.0,
        description="Equivalent continuous A-weighted sound level over the interval.",
        sdm_entity="NoiseLevelObserved",
        sdm_attribute="LAeq",
        label="Kebisingan",
        label_en="Noise",
        symbol="dB(A)",
    ),
    _m(
        name="temperature",
        unit="Cel",
        minimum=-10.0,
        maximum=60.0,
        description="Air temperature.",
        sdm_entity="AirQualityObserved",
        sdm_attribute="temperature",
        label="Suhu udara",
        label_en="Air temperature",
        symbol="°C",
        decimals=1,
    ),
    _m(
        name="humidity",
        unit="%RH",
        minimum=0.0,
        maximum=100.0,
        description="Relative humidity.",
        sdm_entity="AirQualityObserved",
        sdm_attribute="relativeHumidity",
        label="Kelembapan udara",
        label_en="Humidity",
        symbol="%",
    ),
)

CATALOGUE: dict[Family, dict[str, Metric]] = {
    Family.FLOOD_GAUGE: {m.name: m for m in FLOOD_GAUGE_METRICS},
    Family.TRAFFIC_COUNTER: {m.name: m for m in TRAFFIC_COUNTER_METRICS},
    Family.STREET_NODE: {m.name: m for m in STREET_NODE_METRICS},
}


def metrics_of(family: Family | str) -> dict[str, Metric]:
    """The metrics a family of sensors reports, by name."""
    return CATALOGUE[Family(family)]


def find_metric(family: Family | str, name: str) -> Metric | None:
    """The metric called ``name`` in ``family``, or None when the family has no such metric."""
    # Family is a StrEnum, so a plain string finds its entry too; this is on the hot path.
    metrics = CATALOGUE.get(family)  # type: ignore[arg-type]
    if metrics is None:
        metrics = CATALOGUE[Family(family)]  # raises ValueError for an unknown family
    return metrics.get(name)


def _shown(m: Metric) -> str:
    """How pages write a value of ``m``, for the catalogue's table."""
    if m.states:
        return ", ".join(f"{v}: {text} / {text_en}" for v, text, text_en in m.states)
    unit = m.symbol if m.symbol_en is None else f"{m.symbol} / {m.symbol_en}"
    scaled = f"×{m.scale:g}, " if m.scale != 1 else ""
    places = f"{m.decimals} decimal{'s' if m.decimals != 1 else ''}"
    return f"{scaled}{places}" + (f", {unit}" if unit else "")


def catalogue_markdown() -> str:
    """The catalogue as Markdown tables, one per family (docs/catalogue.md is this text)."""
    lines = [
        "# Sensor catalogue",
        "",
        "Generated by `pantau catalogue` from `pantau/catalogue.py`; a test keeps this file in",
        "step. Units are SenML unit symbols where one exists (RFC 8428, section 12.1). The last",
        "column names the FIWARE Smart Data Models entity and attribute each metric maps to.",
        'Pages write each value with its label and in the unit of the "shown as" column, with',
        'Indonesian number formatting on Indonesian pages ("Tinggi muka air 1,53 m").',
    ]
    for family, metrics in CATALOGUE.items():
        lines += [
            "",
            f"## {family.value}",
            "",
            "| metric | label (Indonesian / English) | unit | shown as | valid range | meaning "
            "| Smart Data Models |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for m in metrics.values():
            kind = " (whole number)" if m.integer else ""
            lines.append(
                f"| `{m.name}` | {m.label} / {m.label_en} | `{m.unit}` | {_shown(m)} | "
                f"{m.minimum:g} to {m.maximum:g}{kind} | {m.description} | "
                f"{m.sdm_entity}.`{m.sdm_attribute}` |"
            )
    return "\n".join(lines) + "\n"
