"""PyEvseManager's over-current check judges the PSU against the setpoint it took, not one
still waiting in the effect queue (found with the broker outage of tests/e2e/test_faults.py:
a budget that lapsed while the broker was away made the core's setpoint 0 A; the PSU's
readings after the reconnect still showed the old current and tripped MREC4)."""

from __future__ import annotations

from everkit.framework.effects import RaiseError
from tests.unit.evse_world import World


def charging_at_100_A() -> World:
    world = World.make(dc_ramp_ampere_per_second=1000.0)
    world.enforce(50000.0)
    world.plug_in_and_authorize()
    world.through_cable_check()
    world.pre_charge_and_charge(current=100.0)
    world.feed(world.core.setpoint_delivered(100.0, world.now))
    return world


def over_current(world: World) -> bool:
    return any(isinstance(e, RaiseError) and "OverCurrent" in e.error_type for _, e in world.log)


def test_a_decrease_the_psu_has_not_taken_does_not_trip_over_current() -> None:
    world = charging_at_100_A()
    world.enforce(10000.0)  # about 26 A; the call waits (the broker is away)
    world.hlc(
        "dc_ev_target_voltage_current",
        {"dc_ev_target_voltage": 390.0, "dc_ev_target_current": 100.0},
    )
    lower = world.calls("powersupply_DC", "setExportVoltageCurrent")[-1].args["current"]
    assert lower < 30.0
    for _ in range(40):  # 6 s of readings at the old current the PSU still runs at
        world.now += 0.15
        world.feed(world.core.on_supply(390.0, 100.0, world.now))
    assert not over_current(world)
    # taken at last: the usual grace for the output to follow, then a real over-current
    world.feed(world.core.setpoint_delivered(lower, world.now))
    for _ in range(4):
        world.now += 0.15
        world.feed(world.core.on_supply(390.0, 100.0, world.now))
    assert not over_current(world)
    for _ in range(14):
        world.now += 0.15
        world.feed(world.core.on_supply(390.0, 100.0, world.now))
    assert over_current(world)


def test_more_than_the_taken_setpoint_still_trips() -> None:
    world = charging_at_100_A()
    for _ in range(10):
        world.now += 0.15
        world.feed(world.core.on_supply(390.0, 120.0, world.now))
    assert over_current(world)
