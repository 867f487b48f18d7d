"""PyEvseManager's charging core through whole DC sessions, with a fake clock."""

from __future__ import annotations

import itertools

import pytest

from everkit.evse_manager.core import CABLE_CHECK_FAULT, INOPERATIVE
from everkit.evse_manager.effects import Call, Publish
from everkit.evse_manager.table import State
from everkit.framework.definitions import Definitions
from everkit.framework.effects import ClearError, RaiseError
from everkit.framework.error_model import Severity
from everkit.framework.validation import ValidatorCache
from tests.unit.evse_world import World

#: PSU capabilities as power_supply_DC publishes them (checked against its schema below)
CAPS = {
    "bidirectional": False,
    "current_regulation_tolerance_A": 1.0,
    "peak_current_ripple_A": 0.5,
    "max_export_voltage_V": 1000.0,
    "min_export_voltage_V": 150.0,
    "max_export_current_A": 200.0,
    "min_export_current_A": 2.0,
    "max_export_power_W": 60000.0,
}
ValidatorCache(Definitions.from_dirs())["power_supply_DC"].check_var("capabilities", CAPS)


def started_world(**config: object) -> World:
    world = World.make(**config)
    world.enforce(50000.0)
    return world


def test_a_full_dc_session_publishes_everest_session_events_in_order() -> None:
    world = started_world()
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge()
    assert world.core.state == State.CHARGING
    world.ev_stops()
    assert world.core.state == State.CHARGING_PAUSED_EV
    world.cp("A")
    world.step()
    assert world.core.state == State.IDLE
    assert world.events() == [
        "Enabled",
        "SessionStarted",
        "AuthRequired",
        "Authorized",
        "TransactionStarted",
        "PrepareCharging",
        "ChargingStarted",
        "StoppingCharging",
        "ChargingPausedEV",
        "StoppingCharging",
        "ChargingFinished",
        "TransactionFinished",
        "SessionFinished",
    ]
    finished = next(e for _, e in world.log if getattr(e, "event", "") == "TransactionFinished")
    assert finished.details["transaction_finished"]["reason"] == "EVDisconnected"


@pytest.mark.parametrize(("status", "told"), [("Blocked", "Blocked"), ("Rejected", "Invalid")])
def test_a_refused_token_tells_the_car_a_status_the_iso15118_interface_knows(
    status: str, told: str
) -> None:
    """ISO15118_charger.authorization_response takes authorization/AuthorizationStatus:
    the validator's reason is passed on, anything else (found by tests/fuzz) as Invalid."""
    world = started_world()
    world.cp("B")
    world.run(1.0)
    token = {"id_token": {"value": "T", "type": "Central"}}
    world.feed(world.core.authorize(token, False, world.now, refused_as=status))
    (call,) = world.calls("hlc", "authorization_response")
    assert call.args == {
        "authorization_status": told,
        "certificate_status": "NoCertificateAvailable",
    }
    iso = ValidatorCache(Definitions.from_dirs())["ISO15118_charger"]
    iso.check_args("authorization_response", call.args)
    assert world.core.state == State.WAITING_FOR_AUTHENTICATION


def test_cable_check_follows_everest_steps() -> None:
    """Wait < 60 V, close relays in C, test voltage at 2 A, IMD self-test, measure, ramp
    down, then report (reference 1.6 step 5)."""
    world = started_world()
    world.plug_in_and_authorize(max_voltage=450.0)
    world.through_cable_check()
    names = [(c.requirement, c.cmd) for c in world.calls() if "dc_present" not in c.cmd]
    order = [
        ("bsp", "allow_power_on"),
        ("powersupply_DC", "setExportVoltageCurrent"),
        ("powersupply_DC", "setMode"),
        ("imd", "start_self_test"),
        ("imd", "start"),
        ("hlc", "update_isolation_status"),
        ("powersupply_DC", "setMode"),
        ("hlc", "cable_check_finished"),
    ]
    cursor = -1
    for step in order:
        later = [i for i, name in enumerate(names) if name == step and i > cursor]
        assert later, f"{step} missing after step {cursor} of the cable check: {names}"
        cursor = later[0]
    test_setpoint = world.calls("powersupply_DC", "setExportVoltageCurrent")[0].args
    assert test_setpoint == {"voltage": 500.0, "current": 2.0}  # min(450 + 50, 500)
    assert world.calls("hlc", "cable_check_finished")[-1].args == {"status": True}
    assert world.calls("bsp", "allow_power_on")[0].args["value"]["reason"] == "DCCableCheck"


def test_low_insulation_fails_the_cable_check_and_raises_mrec11() -> None:
    world = started_world()
    world.resistance_ohm = 50_000.0
    world.plug_in_and_authorize()
    world.through_cable_check()
    assert world.calls("hlc", "cable_check_finished")[-1].args == {"status": False}
    raised = [e.error_type for _, e in world.log if isinstance(e, RaiseError)]
    assert CABLE_CHECK_FAULT in raised
    assert INOPERATIVE in raised
    assert world.psu_mode == "Off"


def test_current_demand_is_clamped_and_ramped() -> None:
    world = started_world(dc_ramp_ampere_per_second=25.0)
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge(current=300.0)  # EV asks 300 A; it allows 200; 50 kW / 390 V
    currents = [c.args["current"] for c in world.calls("powersupply_DC", "setExportVoltageCurrent")]
    charging = currents[currents.index(2.0) + 1 :]
    increases = [b - a for a, b in itertools.pairwise(charging)]
    assert max(increases) <= 25.0 * 0.25 + 1e-6, "increases ramp at 25 A/s"
    assert max(charging) <= 50000.0 / 390.0 + 1e-6


def test_without_energy_limits_the_current_is_zero() -> None:
    world = World.make()  # no enforce_limits ever
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge(current=100.0)
    currents = [c.args["current"] for c in world.calls("powersupply_DC", "setExportVoltageCurrent")]
    assert currents[-1] == 0.0


def test_an_expired_energy_limit_means_zero_current_not_the_last_value() -> None:
    world = World.make()
    world.enforce(50000.0, 8)
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge(current=100.0)
    world.run(10.0)  # the budget lapses
    world.hlc(
        "dc_ev_target_voltage_current",
        {"dc_ev_target_voltage": 390.0, "dc_ev_target_current": 100.0},
    )
    currents = [c.args["current"] for c in world.calls("powersupply_DC", "setExportVoltageCurrent")]
    assert currents[-1] == 0.0


def test_a_high_severity_error_switches_off_then_opens_relays_at_once() -> None:
    world = started_world()
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge()
    mark = len(world.log)
    world.feed(
        world.core.on_error(
            "powersupply_DC",
            "power_supply_DC/OverTemperature",
            "module 1",
            Severity.HIGH,
            active=True,
            now=world.now,
        )
    )
    after = [e for _, e in world.log[mark:] if isinstance(e, Call)]
    kinds = [(c.requirement, c.cmd) for c in after]
    assert kinds.index(("powersupply_DC", "setMode")) < kinds.index(("bsp", "allow_power_on"))
    assert after[kinds.index(("powersupply_DC", "setMode"))].args["mode"] == "Off"
    assert ("hlc", "send_error") in kinds
    world.step()
    assert world.core.state == State.CHARGING_PAUSED_EVSE
    world.feed(
        world.core.on_error(
            "powersupply_DC",
            "power_supply_DC/OverTemperature",
            "module 1",
            Severity.HIGH,
            active=False,
            now=world.now,
        )
    )
    assert any(isinstance(e, ClearError) and e.error_type == INOPERATIVE for _, e in world.log)


def test_vendor_warnings_do_not_stop_charging() -> None:
    world = started_world()
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge()
    world.feed(
        world.core.on_error(
            "powersupply_DC",
            "power_supply_DC/VendorWarning",
            "module 2 silent",
            Severity.MEDIUM,
            active=True,
            now=world.now,
        )
    )
    world.step()
    assert world.core.state == State.CHARGING


def test_stop_transaction_asks_the_car_to_stop_and_finishes() -> None:
    world = started_world()
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge()
    world.feed(world.core.stop_transaction("Remote", world.now))
    assert world.calls("hlc", "stop_charging")[-1].args == {"stop": True}
    world.ev_stops()
    assert world.core.state == State.FINISHED
    assert world.events()[-3:] == ["StoppingCharging", "ChargingFinished", "TransactionFinished"]
    world.cp("A")
    assert world.events()[-1] == "SessionFinished"


def test_unplug_during_charging_switches_off_before_opening_relays() -> None:
    world = started_world()
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge()
    mark = len(world.log)
    world.cp("A")
    calls = [(e.requirement, e.cmd, e.args) for _, e in world.log[mark:] if isinstance(e, Call)]
    kinds = [(r, c) for r, c, _ in calls]
    assert kinds.index(("powersupply_DC", "setMode")) < kinds.index(("bsp", "allow_power_on"))
    assert world.core.state == State.IDLE
    assert world.events()[-4:] == [
        "StoppingCharging",
        "ChargingFinished",
        "TransactionFinished",
        "SessionFinished",
    ]


def test_inoperative_clears_when_unplugging_clears_our_own_errors() -> None:
    world = started_world()
    world.resistance_ohm = 50_000.0
    world.plug_in_and_authorize()
    world.through_cable_check()
    assert world.core.inoperative
    world.cp("A")
    world.step()
    assert not world.core.inoperative
    cleared = [e.error_type for _, e in world.log if isinstance(e, ClearError)]
    assert INOPERATIVE in cleared
    assert CABLE_CHECK_FAULT in cleared


def test_no_power_without_a_passed_cable_check() -> None:
    """Whatever the ISO stack reports, current demand needs this session's cable check."""
    world = started_world()
    world.plug_in_and_authorize()
    world.cp("C")
    world.hlc("start_pre_charge")
    world.hlc("current_demand_started")
    world.hlc(
        "dc_ev_target_voltage_current",
        {"dc_ev_target_voltage": 390.0, "dc_ev_target_current": 50.0},
    )
    world.run(1.0)
    assert world.core.state == State.PREPARE_CHARGING
    assert world.psu_mode == "Off"
    assert world.calls("powersupply_DC", "setExportVoltageCurrent") == []


def test_disabling_during_a_session_ends_it_and_disables_after_unplug() -> None:
    world = started_world()
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge()
    world.feed(world.core.enable(False, world.now))
    assert world.psu_mode == "Off"
    world.ev_stops()
    finished = next(e for _, e in world.log if getattr(e, "event", "") == "TransactionFinished")
    assert finished.details["transaction_finished"]["reason"] == "Local"
    world.cp("A")
    world.step()
    assert world.core.state == State.DISABLED


def test_limits_without_a_power_budget_mean_zero_current() -> None:
    world = World.make()
    world.enforce(None, 60, current_A=32.0)
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge(current=100.0)
    currents = [c.args["current"] for c in world.calls("powersupply_DC", "setExportVoltageCurrent")]
    assert currents[-1] == 0.0


def test_limits_for_another_evse_are_ignored() -> None:
    world = World.make()
    world.enforce(50000.0, uuid="someone_else")
    assert not world.core.energy.ever_received


def test_a_lapsed_budget_is_reported_once_not_every_tick() -> None:
    world = World.make()
    world.enforce(50000.0, 2)
    world.feed(
        world.core.on_supply_capabilities(
            CAPS,
            world.now,
        )
    )
    mark = len(world.log)
    world.run(10.0)
    updates = [
        c
        for _, c in world.log[mark:]
        if isinstance(c, Call) and c.cmd == "update_dc_maximum_limits"
    ]
    assert len(updates) == 1
    assert updates[0].args["maximum_limits"]["evse_maximum_power_limit"] == 0.0


def test_ev_info_and_limits_describe_the_car_and_the_offer() -> None:
    world = started_world()
    world.feed(
        world.core.on_supply_capabilities(
            CAPS,
            world.now,
        )
    )
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge(current=50.0)
    world.run(5.5)  # the 5 s re-clamp recomputes the offer at the present voltage
    published = {e.var: e.value for _, e in world.log if isinstance(e, Publish)}
    validators = ValidatorCache(Definitions.from_dirs())["evse_manager"]
    info, limits = published["ev_info"], published["limits"]
    validators.check_var("ev_info", info)
    validators.check_var("limits", limits)
    assert info["target_current"] == 50.0
    assert info["maximum_voltage_limit"] == 500.0
    assert limits["max_current"] == pytest.approx(50000.0 / 390.0, rel=0.01)


def test_charging_resumes_when_the_blocking_error_clears() -> None:
    world = started_world()
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge()
    fault = ("powersupply_DC", "power_supply_DC/HardwareFault", "module 1", Severity.MEDIUM)
    world.feed(world.core.on_error(*fault, active=True, now=world.now))
    world.step()
    assert world.core.state == State.CHARGING_PAUSED_EVSE
    world.feed(world.core.on_error(*fault, active=False, now=world.now))
    assert world.core.state == State.PREPARE_CHARGING


def test_a_lower_limit_does_not_trip_over_current_while_the_output_follows() -> None:
    """PSU readings lag the setpoint by up to ~0.5 s; a decrease must not look like a fault."""
    world = started_world(dc_ramp_ampere_per_second=1000.0)
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge(current=100.0)
    world.enforce(10000.0)  # 10 kW / 390 V: about 26 A
    world.hlc(
        "dc_ev_target_voltage_current",
        {"dc_ev_target_voltage": 390.0, "dc_ev_target_current": 100.0},
    )
    assert world.calls("powersupply_DC", "setExportVoltageCurrent")[-1].args["current"] < 30.0
    for _ in range(4):  # the old 100 A still measured for 0.6 s
        world.now += 0.15
        world.feed(world.core.on_supply(390.0, 100.0, world.now))
    assert not any(
        isinstance(e, RaiseError) and "OverCurrent" in e.error_type for _, e in world.log
    )
    for _ in range(14):  # still 100 A 2 s after the decrease: a real over-current
        world.now += 0.15
        world.feed(world.core.on_supply(390.0, 100.0, world.now))
    assert any(isinstance(e, RaiseError) and "OverCurrent" in e.error_type for _, e in world.log)


def test_plug_in_sends_a_priority_energy_request_then_plain_ones() -> None:
    """As EVerest's EvseManager: the energy manager answers a plug-in at once instead of
    at its next round; the following requests are the 1 Hz routine."""
    world = World.make()
    world.run(3)
    world.cp("B")
    world.run(3)
    requests = [
        e.value for _, e in world.log if isinstance(e, Publish) and e.var == "energy_flow_request"
    ]
    flags = [r.get("priority_request", False) for r in requests]
    assert flags.count(True) == 1
    first_after_plug_in = next(r for r in requests if r["evse_state"] != "Unplugged")
    assert first_after_plug_in.get("priority_request") is True
