"""What the charging core asks the outside world to do. The adapter carries calls out
one after the other, each waiting for the previous to return: that is what makes
"setMode(Off) before allow_power_on(false)" hold on the wire, not just in the list."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..framework.effects import ClearError, RaiseError


@dataclass(frozen=True)
class Call:
    """A command of a requirement: ``requirement`` is the manifest's id (psu, bsp, hlc, imd)."""

    requirement: str
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Publish:
    """A var of one of our implementations (evse or energy_grid)."""

    impl: str
    var: str
    value: Any


@dataclass(frozen=True)
class SessionEvent:
    """A session_event; the adapter adds uuid (the session id) and timestamp."""

    event: str
    session_id: str
    details: dict[str, Any] = field(default_factory=dict)


Effect = Call | Publish | SessionEvent | RaiseError | ClearError


def psu_mode(mode: str, phase: str) -> Call:
    return Call("powersupply_DC", "setMode", {"mode": mode, "phase": phase})


def psu_setpoint(voltage: float, current: float) -> Call:
    return Call(
        "powersupply_DC", "setExportVoltageCurrent", {"voltage": voltage, "current": current}
    )


def allow_power_on(allowed: bool, reason: str) -> Call:
    return Call("bsp", "allow_power_on", {"value": {"allow_power_on": allowed, "reason": reason}})
