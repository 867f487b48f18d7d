"""From OCPP to the energy tree and back: composite schedules as external limits, and
charging limits set outside OCPP reported to the CSMS (K11-K13). Sans-IO: time is passed in.

Sources. A NumberWithSource's ``source`` names who set a limit. PyOCPP201 writes ``CSO``
(the CSMS's profiles) on what it pushes; a grid operator or a local EMS writes ``SO`` or
``EMS`` (OCPP's ChargingLimitSourceEnumType names) on what it sets on an EnergyNode. Whatever
limits an EVSE comes back in EvseManager's ``enforced_limits`` with that source, which is how
the bridge learns that a limit it did not set is in force.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .timestamps import parse_wire_timestamp, wire_timestamp

CSO = "CSO"
EXTERNAL_SOURCES = frozenset({"SO", "EMS", "Other"})  # ChargingLimitSourceEnumType minus CSO


def external_limits(schedule: Mapping[str, Any], source: str = CSO) -> dict[str, Any]:
    """A composite schedule (camelCase, as GetCompositeSchedule answers) as EVerest's
    ExternalLimits: one import slot per period, on the leaf side; the last slot stays in
    force after the schedule ends, as the type says."""
    start = parse_wire_timestamp(str(schedule["scheduleStart"]))
    unit = schedule["chargingRateUnit"]
    slots = []
    for period in schedule["chargingSchedulePeriod"]:
        moment = start + timedelta(seconds=int(period["startPeriod"]))
        value = {"value": float(period["limit"]), "source": source}
        leaves: dict[str, Any] = (
            {"total_power_W": value} if unit == "W" else {"ac_max_current_A": value}
        )
        if unit == "A" and "numberPhases" in period:
            leaves["ac_max_phase_count"] = {"value": int(period["numberPhases"]), "source": source}
        slots.append(
            {"timestamp": wire_timestamp(moment), "limits_to_root": {}, "limits_to_leaves": leaves}
        )
    return {"schedule_import": slots, "schedule_export": [], "schedule_setpoints": []}


def binding_power(enforced: Mapping[str, Any]) -> tuple[float, str] | None:
    """(W, source) of an EnforcedLimits' root-side power limit, if it has one."""
    power = (enforced.get("limits_root_side") or {}).get("total_power_W")
    if not power:
        return None
    return float(power["value"]), str(power.get("source", ""))


def changed_significantly(old: float | None, new: float, significance_percent: float) -> bool:
    """LimitChangeSignificance: a change by more than this percentage of the old value."""
    if old is None:
        return True
    if old == 0:
        return new != 0
    return abs(new - old) / abs(old) * 100.0 > significance_percent


@dataclass
class ExternalLimitReporter:
    """K11-K13 for one EVSE: NotifyChargingLimit when a limit from outside OCPP starts to
    bind or changes by more than LimitChangeSignificance, ClearedChargingLimit when it stops.
    ``update`` returns the (action, payload) pairs to send."""

    evse_id: int
    source: str | None = None  # the external source reported as binding, if any
    reported_W: float | None = None

    def update(
        self, enforced: Mapping[str, Any], significance_percent: float, grid_critical: bool = False
    ) -> list[tuple[str, dict[str, Any]]]:
        binding = binding_power(enforced)
        source = binding[1] if binding and binding[1] in EXTERNAL_SOURCES else None
        out: list[tuple[str, dict[str, Any]]] = []
        if self.source is not None and source != self.source:
            out.append(
                (
                    "ClearedChargingLimit",
                    {"chargingLimitSource": self.source, "evseId": self.evse_id},
                )
            )
            self.source, self.reported_W = None, None
        if source is not None and binding is not None:
            value = binding[0]
            if source != self.source or changed_significantly(
                self.reported_W, value, significance_percent
            ):
                limit: dict[str, Any] = {"chargingLimitSource": source}
                if grid_critical:
                    limit["isGridCritical"] = True
                out.append(
                    ("NotifyChargingLimit", {"chargingLimit": limit, "evseId": self.evse_id})
                )
                self.source, self.reported_W = source, value
        return out


@dataclass
class RateChangeWatch:
    """K11/K13 during a transaction: the applied limit changed by more than
    LimitChangeSignificance → the bridge sends TransactionEvent Updated ChargingRateChanged."""

    applied_W: float | None = None

    def update(self, enforced: Mapping[str, Any], significance_percent: float) -> bool:
        binding = binding_power(enforced)
        if binding is None:
            return False
        value = binding[0]
        if self.applied_W is None:
            self.applied_W = value
            return False
        if changed_significantly(self.applied_W, value, significance_percent):
            self.applied_W = value
            return True
        return False
