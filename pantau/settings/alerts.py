"""`PANTAU_ALERTS__*`: the alert service's rules and their thresholds."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    Field,
    PositiveInt,
)


class AlertSettings(BaseModel):
    """The early-warning service (`pantau alerts`): its MQTT session and every rule's knobs."""

    client_id: str = Field(
        default="pantau-alerts-1",
        min_length=1,
        max_length=64,
        description="Fixed client id of the alert service's own persistent MQTT session.",
    )
    max_inflight_messages: int = Field(
        default=5_000,
        ge=2,
        le=65_535,
        description="Unacknowledged uplink messages held at most; the Receive Maximum asked of "
        "the broker.",
    )
    batch_max_messages: PositiveInt = Field(
        default=2_000, description="Evaluate and commit at most this many messages at once."
    )
    batch_max_age_ms: int = Field(
        default=20, ge=0, description="Commit a batch once its oldest message is this old."
    )
    lock_retry_s: float = Field(
        default=2.0,
        ge=0,
        description="A standby instance tries to take over the evaluation this often.",
    )
    lock_timeout_s: float = Field(
        default=20.0,
        ge=1,
        le=300,
        description="Bound on losing the evaluation lock unnoticed: the database ends the "
        "lock's session once idle this long (the active instance confirms the lock four times "
        "as often), and the active instance stops publishing and exits (status 1) once it "
        "could not confirm the lock for three quarters of it. A standby takes over within "
        "about this time plus `LOCK_RETRY_S` when the active instance is cut off.",
    )
    tick_s: float = Field(
        default=5.0,
        gt=0,
        description="How often time-driven rules (offline) are checked when no message comes.",
    )
    live_window_s: float = Field(
        default=120.0,
        ge=0,
        description="Readings this close to the wall clock mean the stream is live: the "
        "service's clock then follows the wall clock through quiet spells.",
    )
    metrics_port: int = Field(
        default=9110, ge=0, le=65535, description="Prometheus metrics and health port (0: off)."
    )
    metrics_host: str = Field(
        default="0.0.0.0",  # exporters listen on every interface, for Prometheus
        description="Address the alert service's metrics endpoint listens on.",
    )
    db_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Timeout of one database connection attempt."
    )
    registry_refresh_s: float = Field(
        default=60.0,
        gt=0,
        description="How often the sensor registry and flood thresholds are read again.",
    )
    flood_step_down_margin_m: float = Field(
        default=0.05,
        ge=0,
        description="Hysteresis: a gauge steps down a level only once the water is this far "
        "below that level's threshold.",
    )
    flood_min_dwell_s: float = Field(
        default=600.0,
        ge=0,
        description="A gauge steps down only after its readings stayed lower for this long.",
    )
    flood_confirm_readings: int = Field(
        default=2,
        ge=1,
        le=10,
        description="A gauge rises to a level (and `rising_fast` to a forecast) only once this "
        "many consecutive accepted readings reach it; it costs that many reporting intervals "
        "less one of lead time.",
    )
    qc_max_rate_m_per_h: float = Field(
        default=3.0,
        gt=0,
        description="Quality control: a water level moving faster than this from the last "
        "accepted reading is suspect (a gauge's `quality.max_rate_m_per_h` overrides it) ...",
    )
    qc_tolerance_m: float = Field(
        default=0.1,
        ge=0,
        description="... give or take this much (noise, waves) on top of the rate.",
    )
    qc_step_readings: int = Field(
        default=3,
        ge=2,
        le=60,
        description="Suspect readings staying this many in a row on the same side of the last "
        "accepted one are believed (a real step); a series that comes back sooner is a spike.",
    )
    rise_window_s: float = Field(
        default=1_800.0, gt=0, description="Span of readings the rise-rate fit uses."
    )
    rise_min_points: int = Field(
        default=6, ge=3, description="Readings the rise-rate fit needs at least."
    )
    rising_fast_rate_m_per_h: float = Field(
        default=0.5, gt=0, description="A rise at least this fast may raise `rising_fast` ..."
    )
    rising_fast_horizon_s: float = Field(
        default=3_600.0,
        gt=0,
        description="... when the next level is predicted within this time.",
    )
    rising_fast_clear_rate_m_per_h: float = Field(
        default=0.1, ge=0, description="`rising_fast` resolves once the rise is below this ..."
    )
    rising_fast_clear_s: float = Field(
        default=900.0, ge=0, description="... for this long (or the gauge is at Awas)."
    )
    upstream_min_level: int = Field(
        default=2,
        ge=1,
        le=3,
        description="An upstream gauge at this flood level (2: Siaga) or rising fast raises an "
        "advisory on its downstream gauges.",
    )
    wave_speed_km_per_h: float = Field(
        default=4.0,
        gt=0,
        description="Flood-wave speed giving the travel time between gauges where the city "
        "file gives none.",
    )
    congestion_occupancy_min: float = Field(
        default=0.7, gt=0, le=1, description="Congestion: occupancy at least this ..."
    )
    congestion_speed_max_kmh: float = Field(
        default=20.0, gt=0, description="... and average speed at most this ..."
    )
    congestion_min_duration_s: float = Field(
        default=600.0, ge=0, description="... for this long (and clear for this long)."
    )
    lamp_night_start_h: float = Field(
        default=18.5, ge=0, lt=24, description="Night for the lamp rule starts (WIB hour) ..."
    )
    lamp_night_end_h: float = Field(default=5.0, ge=0, lt=24, description="... and ends.")
    lamp_power_min_w: float = Field(
        default=20.0, ge=0, description="At night, a lamp drawing less than this is off."
    )
    lamp_power_max_w: float = Field(
        default=250.0, gt=0, description="A lamp drawing more than this is abnormal."
    )
    lamp_min_duration_s: float = Field(
        default=900.0, ge=0, description="A lamp condition must last this long to alert."
    )
    air_average_s: float = Field(
        default=3_600.0,
        gt=0,
        description="PM2.5/PM10 are averaged (exponentially) over about this long before "
        "their ISPU category is taken.",
    )
    air_clear_s: float = Field(
        default=1_800.0, ge=0, description="Air quality must be better for this long to resolve."
    )
    offline_intervals_k: float = Field(
        default=3.0,
        gt=1,
        description="A sensor is offline after this many of its reporting intervals without a "
        "reading.",
    )
    stuck_metrics: list[str] = Field(
        default=["water_level", "temperature", "humidity", "noise", "pm25"],
        description="Metrics checked for a value stuck at the same number.",
    )
    stuck_min_duration_s: float = Field(
        default=7_200.0, gt=0, description="A value unchanged this long is stuck."
    )
    rejected_count_min: PositiveInt = Field(
        default=10, description="A device with this many rejected payloads ..."
    )
    rejected_window_s: float = Field(
        default=600.0, gt=0, description="... within this long raises `rejected`."
    )
