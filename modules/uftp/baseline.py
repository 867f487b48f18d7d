"""A station's baseline: what it would draw without an order, estimated from its recent
consumption (the time-weighted mean of its meter's power over a window), bounded by its
rating and by what its energy tree has scheduled for the ISP (a CSMS limit that starts
later lowers the baseline of the ISPs it covers). Sans-IO: samples come with their time."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ..energy import tree

NOMINAL_VOLTAGE_V = 230.0  # amperes in a schedule count at EVerest's default voltage


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


def scheduled_cap(request: Mapping[str, Any], moment: datetime) -> float | None:
    """The tightest power limit the tree beneath a node has scheduled for ``moment``: its
    children's fuses, the CSMS's limits on them, the EVSEs' own ratings. The node's own
    entries are left out: they carry the caps this adapter set."""
    caps = []
    for child in request.get("children") or []:
        for node in tree.walk(child):
            entry = tree.entry_in_force(node.get("schedule_import") or [], moment)
            cap = tree.entry_cap(entry, NOMINAL_VOLTAGE_V) if entry else None
            if cap is not None:
                caps.append(cap.watts)
    return min(caps) if caps else None
