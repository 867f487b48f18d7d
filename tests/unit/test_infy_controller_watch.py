"""PyInfyPowerDC's watch on the MQTT link to the controller (controller_watch.py): a broker
that stays away must not leave the modules exporting with nobody watching the session, and
EvseManager must learn of it once it can hear it."""

from __future__ import annotations

from everkit.power_supply_infy.controller_watch import (
    CONTROLLER_LOSS_OFF_S,
    SETTLE_S,
    Action,
    ControllerWatch,
)
from everkit.power_supply_infy.core import Publish
from everkit.power_supply_infy.module import EffectsToBus


def tripped_at(now: float) -> ControllerWatch:
    watch = ControllerWatch()
    watch.update(connected=False, exporting=True, now=now - CONTROLLER_LOSS_OFF_S)
    assert watch.update(connected=False, exporting=True, now=now) is Action.SWITCH_OFF
    return watch


def test_an_outage_while_exporting_switches_off_once_after_the_bound() -> None:
    watch = ControllerWatch()
    assert watch.update(connected=False, exporting=True, now=100.0) is None
    late = 100.0 + CONTROLLER_LOSS_OFF_S
    assert watch.update(connected=False, exporting=True, now=late - 0.1) is None
    assert watch.update(connected=False, exporting=True, now=late) is Action.SWITCH_OFF
    assert watch.update(connected=False, exporting=True, now=late + 60) is None


def test_a_short_outage_does_nothing_and_a_reconnect_restarts_the_count() -> None:
    watch = ControllerWatch()
    watch.update(connected=False, exporting=True, now=0.0)
    watch.update(connected=True, exporting=True, now=CONTROLLER_LOSS_OFF_S - 1)
    assert watch.update(connected=False, exporting=True, now=CONTROLLER_LOSS_OFF_S + 1) is None
    assert watch.command("Export") is None
    assert watch.command(None) is None
    assert not watch.tripped


def test_no_switch_off_while_the_output_is_off() -> None:
    watch = ControllerWatch()
    watch.update(connected=False, exporting=False, now=0.0)
    assert watch.update(connected=False, exporting=False, now=60.0) is None


def test_the_error_goes_out_with_the_controllers_first_command_and_ends_with_its_off() -> None:
    watch = tripped_at(20.0)
    assert watch.update(connected=True, exporting=False, now=25.0) is None  # peers reconnecting
    assert watch.command(None) is Action.RAISE  # a (stale) setpoint: the controller is back
    assert watch.command("Export") is None
    assert watch.update(connected=True, exporting=True, now=40.0) is None  # raised once
    assert watch.command("Off") is Action.CLEAR
    assert watch.command("Off") is None


def test_without_a_command_the_error_goes_out_after_the_settle_time() -> None:
    watch = tripped_at(20.0)
    assert watch.update(connected=True, exporting=False, now=30.0) is None
    assert watch.update(connected=True, exporting=False, now=30.0 + SETTLE_S) is Action.RAISE
    assert watch.command("Fault") is Action.CLEAR


def test_a_controller_that_already_commands_off_needs_no_error() -> None:
    watch = tripped_at(20.0)
    watch.update(connected=True, exporting=False, now=21.0)
    assert watch.command("Off") is None
    assert watch.update(connected=True, exporting=False, now=21.0 + SETTLE_S) is None


class FakeModule:
    """What EffectsToBus uses of a Module: vars out, and the link state."""

    def __init__(self) -> None:
        self.broker_connected = True
        self.published: list[tuple[str, object]] = []

    def error_factory(self, _impl: str) -> None:
        return None

    def publish_variable(self, _impl: str, var: str, value: object) -> None:
        self.published.append((var, value))


def test_vars_made_while_the_broker_is_away_go_out_once_as_the_newest_value() -> None:
    """A burst of stale readings after the reconnect would make EvseManager judge the
    output by values from before the outage."""
    module = FakeModule()
    sink = EffectsToBus(module)  # type: ignore[arg-type]
    sink.ready()
    sink(Publish("voltage_current", {"voltage_V": 400.0, "current_A": 20.0}))
    module.broker_connected = False
    for current in (20.0, 10.0, 0.0):
        sink(Publish("voltage_current", {"voltage_V": 400.0, "current_A": current}))
    sink(Publish("mode", "Off"))
    sink.flush()  # still away: nothing
    assert len(module.published) == 1
    module.broker_connected = True
    sink.flush()
    assert module.published[1:] == [
        ("voltage_current", {"voltage_V": 400.0, "current_A": 0.0}),
        ("mode", "Off"),
    ]
