"""A station's baseline: what it would draw without an order, estimated from its recent
consumption (the time-weighted mean of its meter's power over a window) and bounded by its
rating. Sans-IO: samples come with their time."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta


class PowerHistory:
    def __init__(self, window: timedelta) -> None:
        self.window = window
        self.samples: deque[tuple[datetime, float]] = deque()

    def add(self, watts: float, now: datetime) -> None:
        if self.samples and now < self.samples[-1][0]:
            self.samples.clear()  # the clock stepped back: older samples would weigh wrongly
        self.samples.append((now, max(0.0, watts)))
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()

    def mean(self, now: datetime) -> float:
        """Mean power over the window (the part of it that readings cover); 0 without any."""
        if not self.samples:
            return 0.0
        start = max(self.samples[0][0], now - self.window)
        if now <= start:
            return self.samples[-1][1]
        energy = 0.0
        points = list(self.samples)
        for (t0, watts), (t1, _) in zip(points, [*points[1:], (now, 0.0)], strict=True):
            begin, end = max(t0, start), min(t1, now)
            if end > begin:
                energy += watts * (end - begin).total_seconds()
        return energy / (now - start).total_seconds()
