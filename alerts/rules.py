"""The rules, as pure functions of a sensor's rule state (a JSON-able dict) and one reading.

Each returns the level it wants now (0: no alert) as a :class:`Target`; the evaluator turns a
change of wanted level into an alert transition. Every rule debounces: a level starts only once
wanted for its ``on`` time and ends only once lower for its ``off`` time, so noise at a
threshold cannot make an alert flap. State only moves forward in observation time: the
evaluator never applies a reading older than the state it would change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from alerts.fit import Fit
from alerts.model import Target
from pantau import freshness, ispu
from pantau.city import FloodLevel, Thresholds
from pantau.levels import level_label

US = 1_000_000
WIB_OFFSET_S = 7 * 3_600
State = dict[str, Any]


def flood_label(level: int, lang: str = "id") -> str:
    """Normal, Waspada, Siaga or Awas (in English with its meaning)."""
    return level_label("flood_level", level, "en" if lang == "en" else "id")


def debounce(state: State, time_us: int, *, up: int, down: int, on_s: float, off_s: float) -> int:
    """The debounced level: rises to ``up`` once wanted for ``on_s``, falls to ``down`` (the
    highest seen meanwhile) once lower for ``off_s``. ``state`` keeps ``level`` and the pending
    change."""
    level = int(state.get("level", 0))
    if up > level:
        state.pop("down_since", None)
        state.pop("down_to", None)
        since = state.setdefault("up_since", time_us)
        if time_us - since >= on_s * US:
            level = up
            state.pop("up_since", None)
    elif down < level:
        state.pop("up_since", None)
        since = state.setdefault("down_since", time_us)
        state["down_to"] = max(int(state.get("down_to", down)), down)
        if time_us - since >= off_s * US:
            level = int(state["down_to"])
            state.pop("down_since", None)
            state.pop("down_to", None)
    else:
        for key in ("up_since", "down_since", "down_to"):
            state.pop(key, None)
    state["level"] = level
    return level


def confirmed(state: State, level: int, readings: int, *, earlier: Sequence[int] = ()) -> int:
    """The level that each of the last ``readings`` readings reached, the newest wanting
    ``level`` (``earlier``: readings accepted just before it, oldest first): a rise counts only
    once that many consecutive readings confirm it. ``state`` keeps the others' levels."""
    recent = [*state.get("recent", []), *earlier, level][-readings:]
    if readings > 1:
        state["recent"] = recent[-(readings - 1) :]
    return min(recent) if len(recent) == readings else 0


def minutes_until(at_us: int, now_us: int) -> int:
    """Whole minutes from now to ``at_us``, at least 0."""
    return max(0, round((at_us - now_us) / (60 * US)))


# ----------------------------------------------------------------------------------- flood


def flood_level(
    state: State,
    time_us: int,
    value: float,
    thresholds: Thresholds,
    *,
    name: str,
    margin_m: float,
    dwell_s: float,
    confirm_readings: int = 1,
    earlier: Sequence[float] = (),
) -> Target:
    """Normal..Awas from the thresholds: up once ``confirm_readings`` consecutive readings
    reach a level (``earlier``: values accepted just before this one), down only once the water
    is ``margin_m`` below a threshold for ``dwell_s``."""
    up = confirmed(
        state,
        int(thresholds.level(value)),
        confirm_readings,
        earlier=[int(thresholds.level(v)) for v in earlier],
    )
    down = int(thresholds.level(value + margin_m))
    before = int(state.get("level", 0))
    level = debounce(state, time_us, up=up, down=down, on_s=0, off_s=dwell_s)
    if level != before:
        state["since"] = time_us
    return Target(
        level=level,
        value=value,
        message=f"{name}: status {flood_label(level)}, tinggi muka air {value:.2f} m",
        message_en=f"{name}: {flood_label(level, 'en')}, water level {value:.2f} m",
        details={"thresholds": thresholds.model_dump()},
    )


def threshold_of(thresholds: Thresholds, level: int) -> float:
    return {1: thresholds.waspada, 2: thresholds.siaga, 3: thresholds.awas}[level]


def prediction(
    fit: Fit | None, level: int, thresholds: Thresholds
) -> tuple[int | None, int | None, list[tuple[int, int]]]:
    """The next level up and when the fitted rise reaches it, and every higher level's time."""
    if fit is None or level >= FloodLevel.AWAS:
        return None, None, []
    times = []
    for higher in range(level + 1, 4):
        eta = fit.eta_us(threshold_of(thresholds, higher))
        if eta is None:
            break
        times.append((higher, eta))
    if not times:
        return level + 1, None, []
    return times[0][0], times[0][1], times


def rising_fast(
    state: State,
    time_us: int,
    value: float,
    fit: Fit | None,
    level: int,
    thresholds: Thresholds,
    *,
    name: str,
    rate_m_per_h: float,
    horizon_s: float,
    clear_rate_m_per_h: float,
    clear_s: float,
    confirm_readings: int = 1,
) -> Target:
    """Rising at least ``rate_m_per_h`` with a higher level due within ``horizon_s``: the level
    of the highest one due (1 Waspada .. 3 Awas), carrying its predicted time, once
    ``confirm_readings`` consecutive readings say so. It only rises while open; it ends at Awas
    (the flood level rules then) or after ``clear_s`` of a slower rise."""
    _, _, etas = prediction(fit, level, thresholds)
    due = [(lvl, at) for lvl, at in etas if at - time_us <= horizon_s * US]
    current = int(state.get("level", 0))
    rate = fit.rate_m_per_h if fit is not None else 0.0
    rising = level < FloodLevel.AWAS and rate >= rate_m_per_h and bool(due)
    wanted = confirmed(state, due[-1][0] if rising else 0, confirm_readings)
    if level >= FloodLevel.AWAS:
        state.pop("clear_since", None)
        current = 0
    elif rising and wanted:
        state.pop("clear_since", None)
        current = max(current, wanted)
        shown = [d for d in due if d[0] <= current] or due[:1]
        state["predicted"] = list(shown[-1])
    elif current and rate < clear_rate_m_per_h:
        since = state.setdefault("clear_since", time_us)
        if time_us - since >= clear_s * US:
            current = 0
            state.pop("clear_since", None)
    else:
        state.pop("clear_since", None)
    state["level"] = current
    predicted = state.get("predicted") if current else None
    if not current:
        state.pop("predicted", None)
    target = Target(level=current, value=value, details={"rate_m_per_h": round(rate, 4)})
    if predicted:
        label = flood_label(int(predicted[0]))
        minutes = minutes_until(int(predicted[1]), time_us)
        target.predicted_level, target.predicted_at_us = int(predicted[0]), int(predicted[1])
        target.message = (
            f"{name}: air naik cepat ({rate:.2f} m/jam); {label} diperkirakan dalam sekitar "
            f"{minutes} menit"
        )
        target.message_en = (
            f"{name}: rising fast ({rate:.2f} m/h); {label} expected in about {minutes} minutes"
        )
    return target


def upstream(
    state: State,
    source: str,
    source_level: int,
    arrival_us: int | None,
    time_us: int,
    value: float,
    *,
    name: str,
    source_name: str,
    source_flood_level: int,
    own_level: int = 0,
) -> Target:
    """The downstream advisory: the worst of what each upstream gauge signals (its flood level
    when high enough, else 1 for a fast rise), expected after the travel time; folded once the
    gauge itself (at ``own_level``) has reached what it announces."""
    sources: dict[str, list[Any]] = state.setdefault("sources", {})
    if source_level > 0 and arrival_us is not None:
        previous = sources.get(source)
        folded = int(previous[5]) if previous is not None and len(previous) > 5 else 0
        sources[source] = [
            source_level, arrival_us, source_name, value, source_flood_level, folded,
        ]  # fmt: skip
    else:
        sources.pop(source, None)
    return upstream_advisory(state, time_us, name=name, own_level=own_level, value=value)


def _announced(source: list[Any]) -> int:
    """The flood level an upstream signal announces: its own, at least Waspada."""
    return max(1, int(source[4]))


def upstream_advisory(
    state: State, time_us: int, *, name: str, own_level: int, value: float | None = None
) -> Target:
    """The advisory from what the upstream gauges last signalled. A source whose announced
    level the gauge itself has reached is folded into the gauge's own flood level (and stays
    folded until it announces more): "the flood is coming" is no news where it has come."""
    sources: dict[str, list[Any]] = state.setdefault("sources", {})
    for entry in sources.values():
        if len(entry) < 6:
            entry.append(0)
        if own_level >= _announced(entry):
            entry[5] = max(int(entry[5]), _announced(entry))
    pending = {sid: e for sid, e in sources.items() if _announced(e) > int(e[5])}
    before = int(state.get("level", 0))
    if not pending:
        state["level"] = 0
        if before and sources:
            label = flood_label(own_level)
            return Target(
                level=0,
                value=value,
                message=f"Selesai: banjir kiriman dari hulu sudah sampai di {name} "
                f"(status {label})",
                message_en=f"Resolved: the flood wave from upstream has reached {name} "
                f"({flood_label(own_level, 'en')})",
                details={"folded": sorted(sources)},
            )
        return Target(level=0, value=value)
    worst_id, (level, arrival, worst_name, worst_value, flood, _) = max(
        pending.items(), key=lambda item: (item[1][0], -item[1][1])
    )
    state["level"] = level
    minutes = minutes_until(int(arrival), time_us)
    what = flood_label(int(flood)) if flood else "naik cepat"
    what_en = flood_label(int(flood)) if flood else "rising fast"
    if minutes > 0:
        when = f"banjir diperkirakan tiba dalam sekitar {minutes} menit"
        when_en = f"the flood is expected in about {minutes} minutes"
    else:
        when, when_en = "banjir kiriman diperkirakan sudah tiba", "the flood wave is due now"
    return Target(
        level=int(level),
        value=float(worst_value),
        predicted_level=int(flood) or None,
        predicted_at_us=int(arrival),
        message=f"{name}: hulu ({worst_name}) {what}; {when}",
        message_en=f"{name}: upstream ({worst_name}) {what_en}; {when_en}",
        details={"upstream": worst_id, "sources": sorted(pending)},
    )


# ---------------------------------------------------------------------------------- city


def congestion(
    state: State,
    time_us: int,
    occupancy: float,
    speed_kmh: float,
    *,
    name: str,
    occupancy_min: float,
    speed_max_kmh: float,
    duration_s: float,
) -> Target:
    """Occupancy above and speed below their limits for ``duration_s`` (and clear as long)."""
    jammed = occupancy >= occupancy_min and 0 < speed_kmh <= speed_max_kmh
    want = 2 if jammed else 0
    level = debounce(state, time_us, up=want, down=want, on_s=duration_s, off_s=duration_s)
    return Target(
        level=level,
        value=occupancy,
        message=f"{name}: macet (okupansi {occupancy:.0%}, kecepatan {speed_kmh:.0f} km/jam)",
        message_en=f"{name}: congested (occupancy {occupancy:.0%}, speed {speed_kmh:.0f} km/h)",
        details={"occupancy": occupancy, "avg_speed_kmh": speed_kmh},
    )


def is_night(time_us: int, start_h: float, end_h: float) -> bool:
    """Whether ``time_us`` falls in the night (WIB hours; the night may wrap midnight)."""
    hour = ((time_us / US + WIB_OFFSET_S) % 86_400) / 3_600
    return hour >= start_h or hour < end_h if start_h > end_h else start_h <= hour < end_h


def lamp(
    state: State,
    time_us: int,
    power_w: float,
    *,
    name: str,
    night_start_h: float,
    night_end_h: float,
    power_min_w: float,
    power_max_w: float,
    duration_s: float,
) -> Target:
    """A lamp off at night (1) or drawing abnormal power (2), for ``duration_s``."""
    if power_w > power_max_w:
        want = 2
    elif power_w < power_min_w and is_night(time_us, night_start_h, night_end_h):
        want = 1
    else:
        want = 0
    level = debounce(state, time_us, up=want, down=want, on_s=duration_s, off_s=duration_s)
    if level >= 2:
        message = f"{name}: daya lampu tidak wajar ({power_w:.0f} W)"
        message_en = f"{name}: abnormal lamp power ({power_w:.0f} W)"
    else:
        message = f"{name}: lampu jalan padam pada malam hari ({power_w:.0f} W)"
        message_en = f"{name}: street lamp off at night ({power_w:.0f} W)"
    return Target(level=level, value=power_w, message=message, message_en=message_en)


def air_quality(
    state: State,
    time_us: int,
    pollutant: str,
    value: float,
    *,
    name: str,
    average_s: float,
    clear_s: float,
) -> Target:
    """ISPU of the averaged PM2.5/PM10: 1 Tidak Sehat, 2 Sangat Tidak Sehat, 3 Berbahaya."""
    averages: dict[str, list[float]] = state.setdefault("avg", {})
    previous = averages.get(pollutant)
    if previous is None:
        mean = value
    else:
        dt_s = max(0.0, (time_us - previous[1]) / US)
        mean = previous[0] + (1 - math.exp(-dt_s / average_s)) * (value - previous[0])
    averages[pollutant] = [mean, time_us]
    site = ispu.worst({p: v[0] for p, v in averages.items()})
    want = 0 if site is None else max(0, min(3, int(site.category) - 1))
    level = debounce(state, time_us, up=want, down=want, on_s=0, off_s=clear_s)
    if site is None:
        return Target(level=level, value=value)
    return Target(
        level=level,
        value=round(site.index, 1),
        message=f"{name}: kualitas udara {site.category.label} (ISPU {site.index:.0f}, "
        f"{site.pollutant.upper()})",
        message_en=f"{name}: air quality {site.category.label_en} (ISPU {site.index:.0f}, "
        f"{site.pollutant.upper()})",
        details={"ispu": round(site.index, 1), "pollutant": site.pollutant},
    )


# -------------------------------------------------------------------------------- health


def offline(
    state: State, clock_us: int, *, name: str, interval_s: float, k: float
) -> Target | None:
    """No reading for ``k`` intervals (by the service's clock); None before the first one."""
    last = state.get("last_seen")
    if last is None:
        return None
    silent_us = clock_us - int(last)
    level = 2 if silent_us > freshness.deadline_us(interval_s, k) else 0
    state["level"] = level
    minutes = silent_us / (60 * US)
    if level:
        message = f"{name}: tidak ada data selama {minutes:.0f} menit"
        message_en = f"{name}: no reading for {minutes:.0f} minutes"
    else:
        message, message_en = f"{name}: mengirim data lagi", f"{name}: reporting again"
    return Target(
        level=level, message=message, message_en=message_en, details={"last_seen_us": int(last)}
    )


def stuck(
    state: State, time_us: int, metric: str, value: float, *, name: str, duration_s: float
) -> Target:
    """A metric repeating the very same value for ``duration_s``."""
    seen: dict[str, list[float]] = state.setdefault("metrics", {})
    previous = seen.get(metric)
    if previous is None or previous[0] != value:
        seen[metric] = [value, time_us]
    stuck_metrics = sorted(
        m for m, (_, since) in seen.items() if time_us - since >= duration_s * US
    )
    level = 1 if stuck_metrics else 0
    state["level"] = level
    return Target(
        level=level,
        value=value,
        message=f"{name}: nilai macet ({', '.join(stuck_metrics)})",
        message_en=f"{name}: value stuck ({', '.join(stuck_metrics)})",
        details={"metrics": stuck_metrics},
    )


def rejected(
    state: State, clock_us: int, added: int, *, name: str, count_min: int, window_s: float
) -> Target:
    """At least ``count_min`` rejected payloads within ``window_s`` (by the service's clock)."""
    times = [t for t in state.get("times", []) if t > clock_us - window_s * US]
    times.extend([clock_us] * added)
    state["times"] = times[-count_min * 2 :]
    level = 1 if len(times) >= count_min else 0
    state["level"] = level
    return Target(
        level=level,
        value=float(len(times)),
        message=f"{name}: {len(times)} data ditolak dalam {window_s / 60:.0f} menit",
        message_en=f"{name}: {len(times)} payloads rejected within {window_s / 60:.0f} minutes",
    )
