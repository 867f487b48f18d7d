"""Noticing a step of the wall clock (NTP setting the time, an operator's `date -s`).

Timers run on monotonic time, schedules on wall time. A step moves one against the other:
what was due in 2 s by the wall clock is due in an hour, or at once. Comparing how far
both clocks moved between two looks tells a step (seconds at once) from slewing (NTP
speeds the clock up or down by at most 0.05 %) and from scheduling delays (both clocks
move alike)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

STEP_THRESHOLD_S = 1.0


@dataclass
class ClockStep:
    threshold_s: float = STEP_THRESHOLD_S
    _wall: datetime | None = None
    _mono: float | None = None

    def observe(self, wall: datetime, mono: float) -> timedelta | None:
        """The step since the last look (wall minus monotonic progress), if one happened."""
        last_wall, last_mono = self._wall, self._mono
        self._wall, self._mono = wall, mono
        if last_wall is None or last_mono is None:
            return None
        drift = (wall - last_wall).total_seconds() - (mono - last_mono)
        return timedelta(seconds=drift) if abs(drift) >= self.threshold_s else None
