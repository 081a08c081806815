"""The evaluator: readings in, alert transitions out, all on observation time.

It holds every sensor's rule state, the open alerts and the service's clock. The clock is the
newest observation time seen; while the stream is live (readings close to the wall clock) it
also follows the wall clock, so a city-wide silence still raises offline alerts. Nothing here
touches the database or the broker: :meth:`Evaluator.take` hands over what a batch changed, and
the store commits it before anything is acknowledged or published.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from alerts import quality, rules
from alerts.fit import Fit, Window
from alerts.model import (
    Change,
    Flag,
    GaugeStatus,
    OpenAlert,
    Rule,
    SensorInfo,
    Target,
    Transition,
)
from pantau import freshness
from pantau.catalogue import Family
from pantau.city import Thresholds
from pantau.payload import Reading
from pantau.settings import AlertSettings

US = rules.US
StateKey = tuple[str, str]
FlagKey = tuple[str, str, int]
# Rules that speak for a flood gauge's area: they drive its warning post.
WARNING_RULES = (Rule.FLOOD_LEVEL, Rule.RISING_FAST, Rule.UPSTREAM)
# The state key of a gauge's quality control (stored with the rules' states; raises no alert).
QUALITY = "quality"


@dataclass(slots=True)
class Outcome:
    """What one batch changed: transitions in order, rule states and gauge statuses to store."""

    transitions: list[Transition] = field(default_factory=list)
    states: dict[StateKey, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    gauges: dict[str, GaugeStatus] = field(default_factory=dict)
    clock_us: int = 0
    live: bool = False
    # Suspect readings to record (or relabel), and earlier ones now believed (flags to drop).
    flags: dict[FlagKey, Flag] = field(default_factory=dict)
    unflagged: set[FlagKey] = field(default_factory=set)
    # For the metrics: readings marked suspect by reason; suspect series settled by verdict.
    suspects: Counter[str] = field(default_factory=Counter)
    settled: Counter[str] = field(default_factory=Counter)

    @property
    def empty(self) -> bool:
        return not (self.transitions or self.states or self.gauges or self.flags or self.unflagged)


class Evaluator:
    """Every rule over every sensor; see the module docstring."""

    def __init__(
        self,
        *,
        settings: AlertSettings,
        sensors: dict[str, SensorInfo],
        states: dict[StateKey, tuple[int, dict[str, Any]]] | None = None,
        open_alerts: dict[StateKey, OpenAlert] | None = None,
        gauges: dict[str, GaugeStatus] | None = None,
        windows: dict[str, list[tuple[int, float]]] | None = None,
        clock_us: int = 0,
        max_future_s: float = 300.0,
        live: bool = False,
    ) -> None:
        self.settings = settings
        self.sensors = sensors
        # (sensor, rule) -> (observation time the state is current at, state).
        self.states: dict[StateKey, tuple[int, dict[str, Any]]] = dict(states or {})
        self.open: dict[StateKey, OpenAlert] = dict(open_alerts or {})
        self.gauges: dict[str, GaugeStatus] = dict(gauges or {})
        self.clock_us = clock_us
        self.max_future_us = int(max_future_s * US)
        # Whether the stream is live: the clock then follows the wall clock through a silence.
        # A restart resumes what the last instance saw, so a silence that began before it still
        # raises offline alerts by the wall clock, without waiting for a reading.
        self.live = live
        self.windows: dict[str, Window] = {}
        for sensor_id, points in (windows or {}).items():
            window = self._window(sensor_id)
            # Readings newer than the gauge's state were not evaluated yet: they come again
            # from the broker, in their order, and join the fit then.
            applied = self.states.get((sensor_id, Rule.FLOOD_LEVEL), (2**62, {}))[0]
            for time_us, value in points:
                if time_us <= applied:
                    window.add(time_us, value)
        self._outcome = Outcome(clock_us=clock_us, live=live)
        # The clock time of the next offline deadline (sooner is harmless: it re-checks).
        self._next_check_us = 0
        # Rule levels follow the open alerts (the database's word after a restart).
        for (sensor_id, rule), alert in self.open.items():
            at, state = self.states.get((sensor_id, rule), (alert.updated_us, {}))
            state["level"] = alert.level
            self.states[(sensor_id, rule)] = (at, state)

    # ------------------------------------------------------------------------------- state

    def _state(self, sensor_id: str, rule: str) -> tuple[int, dict[str, Any]]:
        return self.states.get((sensor_id, rule), (0, {}))

    def _save(self, sensor_id: str, rule: str, time_us: int, state: dict[str, Any]) -> None:
        self.states[(sensor_id, rule)] = (time_us, state)
        # The same dict, not a copy: the store writes the outcome before the next reading.
        self._outcome.states[(sensor_id, rule)] = (time_us, state)

    def take(self) -> Outcome:
        """Everything changed since the last call, for the store."""
        outcome, self._outcome = self._outcome, Outcome(clock_us=self.clock_us, live=self.live)
        outcome.clock_us, outcome.live = self.clock_us, self.live
        return outcome

    # ------------------------------------------------------------------------------- clock

    def _advance(self, time_us: int, wall_us: int) -> None:
        self.clock_us = max(self.clock_us, min(time_us, wall_us + self.max_future_us))

    def tick(self, *, wall_us: int) -> None:
        """A quiet moment: while the stream is live the clock follows the wall clock (less the
        live window, the lag a reading may have), so a silence still raises offline alerts."""
        if self.live:
            self._advance(wall_us - int(self.settings.live_window_s * US), wall_us)
        self.check_time()

    # ----------------------------------------------------------------------------- readings

    def observe(self, readings: Iterable[Reading], *, received_us: int, wall_us: int) -> None:
        """Apply the readings of one message, in arrival order of messages.

        The clock moves to each reading's time as it comes, so offline checks happen when the
        stream passes a sensor's deadline, not later; each sensor's state only moves forward in
        its own observation time (a late reading is not applied to it).
        """
        for reading in sorted(readings):
            sensor = self.sensors.get(reading.sensor_id)
            if sensor is None:
                continue
            self.live = received_us - reading.time_us <= self.settings.live_window_s * US
            self._advance(reading.time_us, wall_us)
            self._seen(sensor, reading.time_us)
            if self.clock_us >= self._next_check_us:
                self.check_time()
            if reading.metric in self.settings.stuck_metrics:
                self._stuck(sensor, reading)
            if sensor.family is Family.FLOOD_GAUGE and reading.metric == "water_level":
                self._flood(sensor, reading)
            elif sensor.family is Family.TRAFFIC_COUNTER and reading.metric in (
                "occupancy",
                "avg_speed",
            ):
                self._congestion(sensor, reading)
            elif sensor.family is Family.STREET_NODE:
                if reading.metric == "lamp_power":
                    self._lamp(sensor, reading)
                elif reading.metric in ("pm25", "pm10"):
                    self._air(sensor, reading)

    def rejected(self, counts: dict[str, int]) -> None:
        """Count rejected payloads per device (the device id ends the topic)."""
        s = self.settings
        for device, added in counts.items():
            sensor = self.sensors.get(device)
            if sensor is None:
                continue
            _, state = self._state(device, Rule.REJECTED)
            target = rules.rejected(
                state,
                self.clock_us,
                added,
                name=sensor.name,
                count_min=s.rejected_count_min,
                window_s=s.rejected_window_s,
            )
            self._save(device, Rule.REJECTED, self.clock_us, state)
            self._apply(sensor.id, Rule.REJECTED, target, self.clock_us)

    def check_time(self) -> None:
        """Rules driven by the clock alone: offline sensors, rejection windows draining."""
        s = self.settings
        next_check = 2**62
        for sensor in self.sensors.values():
            key = (sensor.id, Rule.OFFLINE)
            if key not in self.states:
                continue
            _, state = self.states[key]
            before = state.get("level", 0)
            if not before and "last_seen" in state:
                deadline = int(state["last_seen"]) + freshness.deadline_us(
                    sensor.interval_s, s.offline_intervals_k
                )
                if deadline >= self.clock_us:
                    next_check = min(next_check, deadline + 1)
                    continue
            target = rules.offline(
                state,
                self.clock_us,
                name=sensor.name,
                interval_s=sensor.interval_s,
                k=s.offline_intervals_k,
            )
            if target is not None and target.level != before:
                self._save(sensor.id, Rule.OFFLINE, self.states[key][0], state)
                self._apply(sensor.id, Rule.OFFLINE, target, self.clock_us)
        for sensor_id, rule in list(self.open):
            if rule == Rule.REJECTED:
                self.rejected({sensor_id: 0})
        self._next_check_us = next_check

    # -------------------------------------------------------------------------------- rules

    def _seen(self, sensor: SensorInfo, time_us: int) -> None:
        t, state = self._state(sensor.id, Rule.OFFLINE)
        if time_us <= t:
            return
        state["last_seen"] = time_us
        self._save(sensor.id, Rule.OFFLINE, time_us, state)
        deadline = time_us + freshness.deadline_us(
            sensor.interval_s, self.settings.offline_intervals_k
        )
        self._next_check_us = min(self._next_check_us, deadline + 1)
        if state.get("level"):
            target = rules.offline(
                state,
                self.clock_us,
                name=sensor.name,
                interval_s=sensor.interval_s,
                k=self.settings.offline_intervals_k,
            )
            if target is not None:
                self._apply(sensor.id, Rule.OFFLINE, target, max(self.clock_us, time_us))

    def _stuck(self, sensor: SensorInfo, reading: Reading) -> None:
        t, state = self._state(sensor.id, Rule.STUCK)
        metrics = state.get("metrics", {})
        last = metrics.get(reading.metric)
        if last is not None and reading.time_us <= last[1] and reading.value == last[0]:
            return
        if reading.time_us < t and last is not None:
            return
        target = rules.stuck(
            state,
            reading.time_us,
            reading.metric,
            reading.value,
            name=sensor.name,
            duration_s=self.settings.stuck_min_duration_s,
        )
        self._save(sensor.id, Rule.STUCK, max(t, reading.time_us), state)
        self._apply(sensor.id, Rule.STUCK, target, reading.time_us)

    def _limits(self, sensor: SensorInfo) -> quality.Limits:
        s, own = self.settings, sensor.quality
        return quality.Limits(
            max_rate_m_per_h=(own and own.max_rate_m_per_h) or s.qc_max_rate_m_per_h,
            tolerance_m=s.qc_tolerance_m,
            step_readings=s.qc_step_readings,
            range_min_m=own.range_min_m if own else None,
            range_max_m=own.range_max_m if own else None,
        )

    def _quality(self, sensor: SensorInfo, reading: Reading) -> quality.Verdict:
        """Quality control before the rules; records what it found about this and earlier
        suspect readings of the gauge."""
        t, state = self._state(sensor.id, QUALITY)
        verdict = quality.check(state, reading.time_us, reading.value, self._limits(sensor))
        if reading.time_us > t:
            self._save(sensor.id, QUALITY, reading.time_us, state)
        out = self._outcome
        ref_us, ref_value = verdict.reference or (None, None)

        def flag(time_us: int, value: float, reason: str) -> None:
            found = Flag(
                sensor_id=sensor.id,
                metric=reading.metric,
                time_us=time_us,
                value=value,
                reason=reason,
                reference_us=ref_us,
                reference_value=ref_value,
            )
            out.flags[found.key] = found
            out.unflagged.discard(found.key)

        if verdict.reason is not None:
            flag(reading.time_us, reading.value, verdict.reason)
            out.suspects[verdict.reason] += 1
        for time_us, value in verdict.spikes:
            flag(time_us, value, quality.Reason.SPIKE)
        for time_us, _ in verdict.believed:
            key = (sensor.id, reading.metric, time_us)
            out.flags.pop(key, None)
            out.unflagged.add(key)
        if verdict.settled:
            out.settled[verdict.settled] += 1
        return verdict

    def _flood(self, sensor: SensorInfo, reading: Reading) -> None:
        thresholds = sensor.thresholds_at(reading.time_us)
        if thresholds is None:
            return
        verdict = self._quality(sensor, reading)
        if not verdict.accepted:
            return  # stored as it came, recorded as suspect: it moves nothing
        window = self._window(sensor.id)
        # A late reading still feeds the fit, but never moves the gauge's state back in time.
        for time_us, value in verdict.believed:
            window.add(time_us, value)
        window.add(reading.time_us, reading.value)
        t, state = self._state(sensor.id, Rule.FLOOD_LEVEL)
        if reading.time_us <= t:
            return
        earlier = [value for time_us, value in verdict.believed if time_us > t]
        level = self._flood_level(sensor, reading, thresholds, state, earlier)
        fit = window.fit(min_points=self.settings.rise_min_points)
        rising = self._rising_fast(sensor, reading, thresholds, fit, level)
        self._gauge_status(sensor, reading, thresholds, fit, level, state)
        self._fold_upstream(sensor, reading, level)
        self._signal_downstream(sensor, reading, level, rising)

    def _window(self, sensor_id: str) -> Window:
        window = self.windows.get(sensor_id)
        if window is None:
            window = self.windows[sensor_id] = Window(int(self.settings.rise_window_s * US))
        return window

    def _flood_level(
        self,
        sensor: SensorInfo,
        reading: Reading,
        thresholds: Thresholds,
        state: dict[str, Any],
        earlier: list[float],
    ) -> int:
        """The gauge's level after ``reading`` (``earlier``: believed readings not yet seen)."""
        s = self.settings
        target = rules.flood_level(
            state,
            reading.time_us,
            reading.value,
            thresholds,
            name=sensor.name,
            margin_m=s.flood_step_down_margin_m,
            dwell_s=s.flood_min_dwell_s,
            confirm_readings=s.flood_confirm_readings,
            earlier=earlier,
        )
        self._save(sensor.id, Rule.FLOOD_LEVEL, reading.time_us, state)
        self._apply(sensor.id, Rule.FLOOD_LEVEL, target, reading.time_us)
        return target.level

    def _rising_fast(
        self,
        sensor: SensorInfo,
        reading: Reading,
        thresholds: Thresholds,
        fit: Fit | None,
        level: int,
    ) -> int:
        """The rising-fast rule's level after ``reading``."""
        s = self.settings
        _, state = self._state(sensor.id, Rule.RISING_FAST)
        rise = rules.rising_fast(
            state,
            reading.time_us,
            reading.value,
            fit,
            level,
            thresholds,
            name=sensor.name,
            rate_m_per_h=s.rising_fast_rate_m_per_h,
            horizon_s=s.rising_fast_horizon_s,
            clear_rate_m_per_h=s.rising_fast_clear_rate_m_per_h,
            clear_s=s.rising_fast_clear_s,
            confirm_readings=s.flood_confirm_readings,
        )
        self._save(sensor.id, Rule.RISING_FAST, reading.time_us, state)
        self._apply(sensor.id, Rule.RISING_FAST, rise, reading.time_us)
        return rise.level

    def _gauge_status(
        self,
        sensor: SensorInfo,
        reading: Reading,
        thresholds: Thresholds,
        fit: Fit | None,
        level: int,
        state: dict[str, Any],
    ) -> None:
        """The gauge as the control room shows it: level, trend and the next level's time."""
        next_level, next_at, _ = rules.prediction(fit, level, thresholds)
        rising = fit is not None and fit.rate_m_per_h > 0
        self.gauges[sensor.id] = self._outcome.gauges[sensor.id] = GaugeStatus(
            sensor_id=sensor.id,
            level=level,
            since_us=int(state.get("since", reading.time_us)),
            observed_us=reading.time_us,
            value=reading.value,
            rate_m_per_h=None if fit is None else round(fit.rate_m_per_h, 4),
            next_level=next_level if rising else None,
            next_level_at_us=next_at if rising else None,
        )

    def _fold_upstream(self, sensor: SensorInfo, reading: Reading, level: int) -> None:
        """The gauge's own level against what its upstream advisory announces."""
        t, state = self._state(sensor.id, Rule.UPSTREAM)
        if not state.get("sources"):
            return
        target = rules.upstream_advisory(
            state, reading.time_us, name=sensor.name, own_level=level, value=reading.value
        )
        self._save(sensor.id, Rule.UPSTREAM, max(t, reading.time_us), state)
        self._apply(sensor.id, Rule.UPSTREAM, target, reading.time_us)

    def _own_level(self, gauge_id: str) -> int:
        flood = self.open.get((gauge_id, Rule.FLOOD_LEVEL))
        return flood.level if flood else 0

    def _signal_downstream(
        self, sensor: SensorInfo, reading: Reading, level: int, rising: int
    ) -> None:
        s = self.settings
        # A high enough level upstream carries its own level; a fast rise alone is advisory.
        signal = level if level >= s.upstream_min_level else (1 if rising else 0)
        for down_id in sensor.downstream:
            down = self.sensors.get(down_id)
            if down is None:
                continue
            travel_s = self._travel_s(sensor, down)
            t, state = self._state(down_id, Rule.UPSTREAM)
            sources = state.get("sources", {})
            previous = sources.get(sensor.id)
            if previous is not None and reading.time_us <= previous[1] - travel_s * US:
                continue  # an older reading of this upstream gauge than the one applied
            if previous is None and signal == 0:
                continue
            target = rules.upstream(
                state,
                sensor.id,
                signal,
                reading.time_us + int(travel_s * US),
                reading.time_us,
                reading.value,
                name=down.name,
                source_name=sensor.name,
                source_flood_level=level if signal else 0,
                own_level=self._own_level(down_id),
            )
            target.details["travel_time_min"] = round(travel_s / 60, 1)
            self._save(down_id, Rule.UPSTREAM, max(t, reading.time_us), state)
            self._apply(down_id, Rule.UPSTREAM, target, reading.time_us)

    def _travel_s(self, up: SensorInfo, down: SensorInfo) -> float:
        if up.travel_time_min is not None:
            return up.travel_time_min * 60
        if up.river_km is not None and down.river_km is not None:
            distance = abs(down.river_km - up.river_km)
            return distance / self.settings.wave_speed_km_per_h * 3_600
        return 0.0

    def _congestion(self, sensor: SensorInfo, reading: Reading) -> None:
        t, state = self._state(sensor.id, Rule.CONGESTION)
        if reading.time_us < t:
            return
        state[reading.metric] = [reading.value, reading.time_us]
        occupancy, speed = state.get("occupancy"), state.get("avg_speed")
        if occupancy is None or speed is None or occupancy[1] != speed[1]:
            self._save(sensor.id, Rule.CONGESTION, reading.time_us, state)
            return  # the other half of this observation is still to come
        s = self.settings
        target = rules.congestion(
            state,
            reading.time_us,
            occupancy[0],
            speed[0],
            name=sensor.name,
            occupancy_min=s.congestion_occupancy_min,
            speed_max_kmh=s.congestion_speed_max_kmh,
            duration_s=s.congestion_min_duration_s,
        )
        self._save(sensor.id, Rule.CONGESTION, reading.time_us, state)
        self._apply(sensor.id, Rule.CONGESTION, target, reading.time_us)

    def _lamp(self, sensor: SensorInfo, reading: Reading) -> None:
        t, state = self._state(sensor.id, Rule.LAMP)
        if reading.time_us <= t:
            return
        s = self.settings
        target = rules.lamp(
            state,
            reading.time_us,
            reading.value,
            name=sensor.name,
            night_start_h=s.lamp_night_start_h,
            night_end_h=s.lamp_night_end_h,
            power_min_w=s.lamp_power_min_w,
            power_max_w=s.lamp_power_max_w,
            duration_s=s.lamp_min_duration_s,
        )
        self._save(sensor.id, Rule.LAMP, reading.time_us, state)
        self._apply(sensor.id, Rule.LAMP, target, reading.time_us)

    def _air(self, sensor: SensorInfo, reading: Reading) -> None:
        t, state = self._state(sensor.id, Rule.AIR_QUALITY)
        last = state.get("avg", {}).get(reading.metric)
        if last is not None and reading.time_us <= last[1]:
            return
        s = self.settings
        target = rules.air_quality(
            state,
            reading.time_us,
            reading.metric,
            reading.value,
            name=sensor.name,
            average_s=s.air_average_s,
            clear_s=s.air_clear_s,
        )
        self._save(sensor.id, Rule.AIR_QUALITY, max(t, reading.time_us), state)
        self._apply(sensor.id, Rule.AIR_QUALITY, target, reading.time_us)

    # --------------------------------------------------------------------------- lifecycle

    def _apply(self, sensor_id: str, rule: Rule, target: Target, observed_us: int) -> None:
        """Turn a rule's wanted level into a transition of its (sensor, rule) alert."""
        key = (sensor_id, rule)
        current = self.open.get(key)
        level = max(0, min(3, target.level))
        if current is None:
            if level == 0:
                return
            change, previous = Change.OPENED, None
            self.open[key] = OpenAlert(
                level=level,
                opened_us=observed_us,
                updated_us=observed_us,
                message=target.message,
                message_en=target.message_en,
            )
        elif level == current.level:
            return
        elif level == 0:
            change, previous, level = Change.RESOLVED, current.level, current.level
            del self.open[key]
            if not target.message:
                target.message = f"Selesai: {current.message}"
                target.message_en = f"Resolved: {current.message_en}"
        else:
            change = Change.ESCALATED if level > current.level else Change.DE_ESCALATED
            previous = current.level
            current.level, current.updated_us = level, observed_us
            current.message, current.message_en = target.message, target.message_en
        if not target.message:
            target.message = target.message_en = f"{sensor_id}: {rule.value}"
        self._outcome.transitions.append(
            Transition(
                sensor_id=sensor_id,
                rule=rule,
                change=change,
                level=level,
                previous_level=previous,
                observed_us=observed_us,
                target=target,
            )
        )

    def last_seen_us(self, sensor_id: str) -> int | None:
        """Observation time of the sensor's newest reading, if it ever reported."""
        last = self._state(sensor_id, Rule.OFFLINE)[1].get("last_seen")
        return None if last is None else int(last)

    def no_data(self, sensor_id: str) -> bool:
        """The sensor is past its offline deadline: what it last reported is not current."""
        return (sensor_id, Rule.OFFLINE) in self.open

    def warning(self, gauge_id: str) -> dict[str, Any]:
        """The command for the warning posts following a gauge (contract: ROOT/warning/ID)."""
        flood = self.open.get((gauge_id, Rule.FLOOD_LEVEL))
        level = self._own_level(gauge_id)
        others = [r for r in WARNING_RULES[1:] if (gauge_id, r) in self.open]
        if level >= 3:
            light, siren = "red", True
        elif level or others:
            light, siren = "yellow", False
        else:
            light, siren = "off", False
        reason = flood.message if flood else ""
        for rule in others:
            reason = reason or self.open[(gauge_id, rule)].message
        return {
            "gauge_id": gauge_id,
            "light": light,
            "siren": siren,
            "level": rules.flood_label(level),
            "reason": reason or "Normal",
            "rules": [r.value for r in WARNING_RULES if (gauge_id, r) in self.open],
        }
