"""Quality control of a gauge's water levels, before any flood rule sees them.

A gauge can physically do only so much: its sensor measures within a range, and a river rises
or falls only so fast. A reading that breaks either is *suspect*: it stays stored as it came
(the raw data is the raw data), it is recorded with its reason, and it moves no level and
feeds no rise-rate fit. The checks follow FloodNet's published filters
(`floodnet-nyc/flood-filters`: range, gradient, blip), adapted to a stream that must also
let a real step through:

* **range**: outside the gauge's measuring range (``range_min_m``, ``range_max_m``);
* **gradient**: further from the last accepted reading than the gauge can move in the time
  between them (``tolerance_m`` plus ``max_rate_m_per_h`` times that time);
* **spike** (FloodNet's blip): gradient-suspect readings after which the series came back
  within the plausible band: they are relabelled once it does.

A suspect series that instead stays away from the last accepted reading, on the same side, for
``step_readings`` consecutive readings is believed: a real step (a flash flood, a recalibrated
sensor) raises its warning after that many readings, never later; a move that goes on in the
same direction after it was believed is the same move, and is accepted reading by reading. Everything here is a pure
function of a JSON-able state, as the rules are; the evaluator stores the state with the rules'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

US_PER_H = 3_600_000_000
# Suspect readings remembered for relabelling as a spike; a gauge that sends nothing but
# garbage keeps its older ones as `gradient`.
MAX_SUSPECTS = 64
State = dict[str, Any]


class Reason(StrEnum):
    """Why a reading is suspect (the `reason` column of `reading_flags`)."""

    RANGE = "range"
    GRADIENT = "gradient"
    SPIKE = "spike"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What one gauge can physically do."""

    max_rate_m_per_h: float
    tolerance_m: float
    step_readings: int
    range_min_m: float | None = None
    range_max_m: float | None = None

    def allowed_m(self, dt_us: int) -> float:
        """The largest plausible change over ``dt_us``."""
        return self.tolerance_m + self.max_rate_m_per_h * abs(dt_us) / US_PER_H

    def in_range(self, value: float) -> bool:
        low, high = self.range_min_m, self.range_max_m
        return (low is None or value >= low) and (high is None or value <= high)


@dataclass(slots=True, kw_only=True)
class Verdict:
    """What one reading turned out to be, and what it says about earlier suspect ones."""

    accepted: bool
    reason: Reason | None = None
    # The last accepted reading it was compared with: (time µs, value).
    reference: tuple[int, float] | None = None
    # Earlier suspect readings the series came back from: now spikes, (time, value) each.
    spikes: list[tuple[int, float]] = field(default_factory=list)
    # Earlier suspect readings now believed (a real step), oldest first; this one is too.
    believed: list[tuple[int, float]] = field(default_factory=list)
    # Earlier suspect readings that were neither: they stay `gradient` (nothing to do).

    @property
    def settled(self) -> str | None:
        """`spike` or `step` when this reading ended a suspect series."""
        if self.spikes:
            return "spike"
        return "step" if self.believed else None


def check(state: State, time_us: int, value: float, limits: Limits) -> Verdict:
    """Check one reading against the gauge's last accepted one. A reading newer than every one
    checked before moves ``state``; an older one (late, or delivered again) is only compared."""
    if not limits.in_range(value):
        return Verdict(accepted=False, reason=Reason.RANGE)
    ref = state.get("ref")
    if ref is None:
        state["ref"] = [time_us, value]
        state["seen"] = time_us
        return Verdict(accepted=True)
    ref_us, ref_value = int(ref[0]), float(ref[1])
    reference = (ref_us, ref_value)
    plausible = abs(value - ref_value) <= limits.allowed_m(time_us - ref_us)
    if time_us <= int(state.get("seen", ref_us)):
        if plausible:
            return Verdict(accepted=True, reference=reference)
        return Verdict(accepted=False, reason=Reason.GRADIENT, reference=reference)
    state["seen"] = time_us
    suspects: list[list[Any]] = state.get("suspects", [])
    side = 1 if value > ref_value else -1
    if plausible or state.get("momentum") == side:
        state["ref"] = [time_us, value]
        for key in ("suspects", "away", "side"):
            state.pop(key, None)
        if plausible:
            state.pop("momentum", None)
        spikes = [(int(t), float(v)) for t, v in suspects]
        return Verdict(accepted=True, reference=reference, spikes=spikes)
    state.pop("momentum", None)
    # A series that crosses to the other side of the last accepted reading starts again.
    away: list[list[Any]] = state.get("away", []) if state.get("side") == side else []
    away.append([time_us, value])
    if len(away) >= limits.step_readings:
        believed = [(int(t), float(v)) for t, v in away[:-1]]
        state["ref"] = [time_us, value]
        state["momentum"] = side
        for key in ("suspects", "away", "side"):
            state.pop(key, None)
        return Verdict(accepted=True, reference=reference, believed=believed)
    suspects.append([time_us, value])
    state["suspects"] = suspects[-MAX_SUSPECTS:]
    state["away"], state["side"] = away, side
    return Verdict(accepted=False, reason=Reason.GRADIENT, reference=reference)
