"""Accepted orders as what a station's energy node takes: EVerest ExternalLimits.

The first entry applies at once and the last stays in force after the schedule (types/
energy.yaml), so the schedule starts with an entry without limits at ``now`` (nothing capped
before the first ordered ISP), caps each run of ISPs from its UTC start, and ends with an
entry without limits at the end of the last ordered ISP, which restores the default: the
node's own fuse and whatever other limits apply. A gap between ordered ISPs gets such an
entry too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..framework.error_model import rfc3339_ms
from .market import Slot

SOURCE = "SO"  # OCPP's ChargingLimitSourceEnumType for a grid operator


def _entry(moment: datetime, cap_W: float | None, source: str) -> dict[str, Any]:
    root = {} if cap_W is None else {"total_power_W": {"value": cap_W, "source": source}}
    return {"timestamp": rfc3339_ms(moment), "limits_to_root": root, "limits_to_leaves": {}}


def external_limits(
    caps: Sequence[tuple[Slot, float]], now: datetime, source: str = SOURCE
) -> dict[str, Any]:
    """ExternalLimits for one station from its (ISP, cap W) pairs in time order."""
    steps: list[tuple[datetime, float | None]] = []
    open_until: datetime | None = None
    for slot, cap in caps:
        if open_until is not None and slot.start > open_until:
            steps.append((open_until, None))
        watts = round(cap, 1)
        if not steps or steps[-1][1] != watts:
            steps.append((max(slot.start, now), watts))
        open_until = slot.end
    if open_until is not None:
        steps.append((open_until, None))
    if not steps or steps[0][0] > now:
        steps.insert(0, (now, None))
    entries = [_entry(moment, cap, source) for moment, cap in steps]
    return {"schedule_import": entries, "schedule_export": [], "schedule_setpoints": []}
