"""K15: the EV's charging needs, from EvseManager's ev_info, as NotifyEVChargingNeeds.

An ISO 15118 DC car tells the charger its maximum current and voltage (and maybe power,
capacity, SoC, energy needed, departure time); EvseManager passes them on in ``ev_info``.
Once both required values are known during a transaction, the bridge sends the needs once
(per transaction) so that a CSMS can plan a TxProfile for the car. Integers where the schema
wants integers (it does for every DC value).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_DC_FIELDS = (  # ev_info key -> DCChargingParametersType key
    ("maximum_power_limit", "evMaxPower"),
    ("remaining_energy_needed", "energyAmount"),
    ("battery_capacity", "evEnergyCapacity"),
    ("soc", "stateOfCharge"),
    ("battery_full_soc", "fullSoC"),
)


def charging_needs(evse_id: int, ev_info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The NotifyEVChargingNeedsRequest, or None while the EV's limits are not known."""
    current, voltage = ev_info.get("maximum_current_limit"), ev_info.get("maximum_voltage_limit")
    if current is None or voltage is None:
        return None
    dc: dict[str, Any] = {"evMaxCurrent": int(current), "evMaxVoltage": int(voltage)}
    for source, target in _DC_FIELDS:
        value = ev_info.get(source)
        if value is not None:
            dc[target] = int(value)
    needs: dict[str, Any] = {"requestedEnergyTransfer": "DC", "dcChargingParameters": dc}
    if ev_info.get("departure_time"):
        needs["departureTime"] = ev_info["departure_time"]
    return {"evseId": evse_id, "chargingNeeds": needs}
