"""OCPP limits to the energy tree and limits from outside OCPP back to the CSMS (K11-K13)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ocpp
from jsonschema import Draft4Validator

from everkit.ocpp201.ev_needs import charging_needs
from everkit.ocpp201.limits import (
    ExternalLimitReporter,
    RateChangeWatch,
    changed_significantly,
    external_limits,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SCHEDULE = {
    "evseId": 1,
    "duration": 600,
    "scheduleStart": "2024-05-01T12:00:00.000Z",
    "chargingRateUnit": "W",
    "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": 11000.0},
        {"startPeriod": 300, "limit": 5500},
    ],
}


def enforced(watts: float, source: str) -> dict[str, Any]:
    return {
        "uuid": "evse_manager",
        "valid_for": 10,
        "schedule": [],
        "limits_root_side": {"total_power_W": {"value": watts, "source": source}},
    }


def test_a_composite_schedule_becomes_import_slots_on_the_leaf_side() -> None:
    limits = external_limits(SCHEDULE)
    assert limits["schedule_export"] == []
    assert limits["schedule_setpoints"] == []
    assert limits["schedule_import"] == [
        {
            "timestamp": "2024-05-01T12:00:00.000Z",
            "limits_to_root": {},
            "limits_to_leaves": {"total_power_W": {"value": 11000.0, "source": "CSO"}},
        },
        {
            "timestamp": "2024-05-01T12:05:00.000Z",
            "limits_to_root": {},
            "limits_to_leaves": {"total_power_W": {"value": 5500.0, "source": "CSO"}},
        },
    ]


def test_an_ampere_schedule_limits_current_and_phases() -> None:
    amps = {
        **SCHEDULE,
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16, "numberPhases": 3}],
    }
    (slot,) = external_limits(amps, source="SO")["schedule_import"]
    assert slot["limits_to_leaves"] == {
        "ac_max_current_A": {"value": 16.0, "source": "SO"},
        "ac_max_phase_count": {"value": 3, "source": "SO"},
    }


def test_limit_change_significance_is_a_percentage_of_the_old_value() -> None:
    assert changed_significantly(None, 5.0, 10)
    assert not changed_significantly(10000, 10900, 10)
    assert changed_significantly(10000, 11001, 10)
    assert changed_significantly(0, 1, 10)


def test_K11_a_grid_limit_is_notified_and_K13_cleared_when_it_stops_binding() -> None:
    reporter = ExternalLimitReporter(evse_id=1)
    assert reporter.update(enforced(50000, "PyEnergyNode grid fuse"), 10) == []
    assert reporter.update(enforced(11000, "SO"), 10) == [
        ("NotifyChargingLimit", {"chargingLimit": {"chargingLimitSource": "SO"}, "evseId": 1})
    ]
    assert reporter.update(enforced(10500, "SO"), 10) == []  # within the significance
    (notify,) = reporter.update(enforced(7000, "SO"), 10)
    assert notify[0] == "NotifyChargingLimit"
    assert reporter.update(enforced(22000, "CSO"), 10) == [
        ("ClearedChargingLimit", {"chargingLimitSource": "SO", "evseId": 1})
    ]


def test_a_change_of_external_source_clears_the_old_and_notifies_the_new() -> None:
    reporter = ExternalLimitReporter(evse_id=2)
    reporter.update(enforced(11000, "SO"), 10)
    assert [a for a, _ in reporter.update(enforced(11000, "EMS"), 10)] == [
        "ClearedChargingLimit",
        "NotifyChargingLimit",
    ]


def test_K11_rate_change_needs_more_than_the_significance() -> None:
    watch = RateChangeWatch()
    assert not watch.update(enforced(50000, "CSO"), 10)  # the first value is the baseline
    assert not watch.update(enforced(46000, "CSO"), 10)
    assert watch.update(enforced(30000, "CSO"), 10)
    assert not watch.update(enforced(29000, "CSO"), 10)


def test_K15_ev_charging_needs_come_from_ev_info_once_limits_are_known() -> None:
    assert charging_needs(1, {"soc": 30}) is None
    needs = charging_needs(
        1,
        {
            "maximum_current_limit": 300.0,
            "maximum_voltage_limit": 900.0,
            "maximum_power_limit": 150000.0,
            "soc": 30.5,
            "battery_capacity": 60000.0,
            "departure_time": "2024-05-01T18:00:00.000Z",
        },
    )
    assert needs == {
        "evseId": 1,
        "chargingNeeds": {
            "requestedEnergyTransfer": "DC",
            "departureTime": "2024-05-01T18:00:00.000Z",
            "dcChargingParameters": {
                "evMaxCurrent": 300,
                "evMaxVoltage": 900,
                "evMaxPower": 150000,
                "stateOfCharge": 30,
                "evEnergyCapacity": 60000,
            },
        },
    }
    schema = Path(ocpp.__file__).parent / "v201/schemas/NotifyEVChargingNeedsRequest.json"
    Draft4Validator(json.loads(schema.read_text(encoding="utf-8-sig"))).validate(needs)
