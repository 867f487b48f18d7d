"""EVerest readings as OCPP 2.0.1 ``MeterValueType`` payloads (camelCase, as on the wire).

Sources: the ``powermeter`` var (``Powermeter``: energy, power, current, voltage; DC values sit
under the key ``DC`` and are sent without a phase, AC values per phase), the ``ev_info`` var
(``soc``) and the limit the bridge applies (``Current.Offered``/``Power.Offered``). A measurand
whose source is unknown is left out rather than sent as zero: a zero would be a false reading.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .timestamps import wire_timestamp

ENERGY = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"
CURRENT = "Current.Import"
VOLTAGE = "Voltage"
SOC = "SoC"
CURRENT_OFFERED = "Current.Offered"
POWER_OFFERED = "Power.Offered"

MEASURANDS = frozenset({ENERGY, POWER, CURRENT, VOLTAGE, SOC, CURRENT_OFFERED, POWER_OFFERED})

_CURRENT_PHASES = (("L1", "L1"), ("L2", "L2"), ("L3", "L3"), ("N", "N"))
_VOLTAGE_PHASES = (("L1", "L1-N"), ("L2", "L2-N"), ("L3", "L3-N"))


@dataclass(frozen=True)
class Sources:
    """Everything a sample can be made of; any part may be missing."""

    powermeter: Mapping[str, Any] | None = None
    soc: float | None = None
    offered_current_A: float | None = None
    offered_power_W: float | None = None


def meter_value(
    sources: Sources, measurands: Iterable[str], context: str, at: datetime
) -> dict[str, Any] | None:
    """One MeterValueType with the requested measurands, or None when none of them is known
    (the schema wants at least one sampledValue)."""
    sampled: list[dict[str, Any]] = []
    for measurand in measurands:
        for value, unit, extra in _readings(sources, measurand):
            number = _number(value)
            if number is None:
                continue
            sampled.append(
                {
                    "value": number,
                    "context": context,
                    "measurand": measurand,
                    **extra,
                    "unitOfMeasure": {"unit": unit},
                }
            )
    if not sampled:
        return None
    return {"timestamp": wire_timestamp(at), "sampledValue": sampled}


def _readings(sources: Sources, measurand: str) -> list[tuple[Any, str, dict[str, str]]]:
    meter = sources.powermeter or {}
    if measurand == ENERGY:
        return [(_total(meter.get("energy_Wh_import")), "Wh", {})]
    if measurand == POWER:
        return [(_total(meter.get("power_W")), "W", {})]
    if measurand == CURRENT:
        return _per_conductor(meter.get("current_A"), "A", _CURRENT_PHASES)
    if measurand == VOLTAGE:
        return _per_conductor(meter.get("voltage_V"), "V", _VOLTAGE_PHASES)
    if measurand == SOC:
        return [(sources.soc, "Percent", {"location": "EV"})]
    if measurand == CURRENT_OFFERED:
        return [(sources.offered_current_A, "A", {})]
    if measurand == POWER_OFFERED:
        return [(sources.offered_power_W, "W", {})]
    return []


def _total(block: Any) -> Any:
    return block.get("total") if isinstance(block, Mapping) else None


def _per_conductor(
    block: Any, unit: str, phases: tuple[tuple[str, str], ...]
) -> list[tuple[Any, str, dict[str, str]]]:
    if not isinstance(block, Mapping):
        return []
    if "DC" in block:
        return [(block["DC"], unit, {})]
    return [(block[key], unit, {"phase": phase}) for key, phase in phases if key in block]


def _number(value: Any) -> int | float | None:
    """JSON numbers as a CSMS likes them: whole values as ints, at most 3 decimals, and
    nothing that JSON cannot carry (NaN, infinity, booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value):
        return None
    rounded = round(float(value), 3)
    return int(rounded) if rounded.is_integer() else rounded
