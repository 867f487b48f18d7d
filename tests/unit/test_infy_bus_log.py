"""The commanded output replayed from CAN frames, as the bench and the e2e test read it."""

from __future__ import annotations

import can
import pytest

from everkit.power_supply_infy.bus_log import CONTROLLER, bus_states
from everkit.power_supply_infy.codec import OnOff, Output, OutputSetpoint, Payload, encode


def frame(payload: Payload, destination: int, source: int, at: float) -> can.Message:
    encoded = encode(payload, destination, source)
    return can.Message(
        timestamp=at, arbitration_id=encoded.id.pack(), data=encoded.data, is_extended_id=True
    )


def test_the_commanded_power_sums_the_modules_that_are_on() -> None:
    frames = [
        frame(Output(360.0, 0.0), CONTROLLER, 1, 0.0),  # module 1 reports 360 V
        frame(Output(362.0, 0.0), CONTROLLER, 2, 0.0),
        frame(OutputSetpoint.of(370.0, 20.0), 1, CONTROLLER, 1.0),
        frame(OutputSetpoint.of(370.0, 20.0), 2, CONTROLLER, 1.0),
        frame(OnOff(on=False), 2, CONTROLLER, 2.0),  # module 2 leaves the split
        frame(OutputSetpoint.of(370.0, 30.0), 1, CONTROLLER, 2.0),
    ]
    states = bus_states(frames)
    assert [s.at for s in states] == [1.0, 1.0, 2.0]
    both = states[1]
    assert both.current_A == pytest.approx(40.0)
    assert both.power_W == pytest.approx(2 * 370 * 20)
    assert both.battery_W == pytest.approx(20 * 360 + 20 * 362)
    alone = states[2]
    assert alone.current_A == pytest.approx(30.0)
    assert alone.power_W == pytest.approx(370 * 30)


def test_the_modules_answers_are_not_commands() -> None:
    """An answer echoes the command number back to the controller: not a setpoint."""
    echo = frame(OutputSetpoint.of(370.0, 99.0), CONTROLLER, 1, 0.5)
    assert bus_states([echo]) == []
