"""The simulated clock: real time, accelerated, or backfill (as fast as the broker takes it)."""

from __future__ import annotations

import time
from collections.abc import Callable


class SimClock:
    """Maps simulated time (epoch seconds) to wall time.

    ``speed`` 1 with ``start`` = now is real time; ``speed`` 60 runs one simulated minute per
    second from ``start``. The simulated time never overtakes the wall clock (a reading from
    the future would be refused by ingest): once caught up, the run continues in real time.
    ``backfill`` never waits.
    """

    def __init__(
        self,
        *,
        start: float,
        speed: float = 1.0,
        backfill: bool = False,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.start = start
        self.speed = speed
        self.backfill = backfill
        self._wall = wall
        self._wall_start = wall()

    def now(self) -> float:
        """Simulated time now."""
        wall = self._wall()
        return min(self.start + (wall - self._wall_start) * self.speed, wall)

    def delay_s(self, t: float) -> float:
        """Wall seconds until simulated time reaches ``t`` (0 when it has, or in backfill)."""
        if self.backfill:
            return 0.0
        wall = self._wall()
        target = max(self._wall_start + (t - self.start) / self.speed, t)
        return max(0.0, target - wall)
