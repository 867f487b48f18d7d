"""What the controller commanded, replayed from recorded CAN frames (``can_log_file``).

Pure over the frames: each setpoint frame to a module yields the commanded state of the
whole output at that moment, summed over the modules that are on. A module in
constant-current mode delivers its current at the battery's voltage, a little below the
voltage setpoint (the EV's target), so two powers are given: what the frames ask for
(setpoint V x A, the budget PyEvseManager applied) and the setpoint current at the
voltage the module last reported (what reaches the battery).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import can

from .codec import Decoded, OnOff, Output, OutputSetpoint, decode_answer, decode_request

CONTROLLER = 0xF0  # modules answer to the controller's address (controller_address)


@dataclass(frozen=True)
class BusState:
    at: float  # the frame's timestamp
    current_A: float  # total over the modules that are on
    power_W: float  # sum of setpoint voltage x setpoint current
    battery_W: float  # sum of setpoint current x the module's last reported voltage


def bus_states(frames: Iterable[can.Message], controller: int = CONTROLLER) -> list[BusState]:
    """One BusState per setpoint frame, in order. A module told to switch off delivers
    nothing, whatever its last setpoint was; the modules' answers carry their voltage."""
    setpoint: dict[int, tuple[float, float]] = {}  # module -> (V, A) while on
    volts: dict[int, float] = {}
    states: list[BusState] = []
    for message in frames:
        data = bytes(message.data)
        answer = decode_answer(message.arbitration_id, data, message.is_extended_id)
        if isinstance(answer, Decoded) and isinstance(answer.payload, Output):
            if answer.id.destination == controller and not answer.payload.system:
                volts[answer.id.source] = answer.payload.voltage_V
            continue
        request = decode_request(message.arbitration_id, data, message.is_extended_id)
        if not isinstance(request, Decoded) or request.id.destination == controller:
            continue
        module = request.id.destination
        if isinstance(request.payload, OnOff) and not request.payload.on:
            setpoint.pop(module, None)
        elif isinstance(request.payload, OutputSetpoint):
            setpoint[module] = (request.payload.voltage_V, request.payload.current_A)
            states.append(
                BusState(
                    float(message.timestamp),
                    sum(a for _v, a in setpoint.values()),
                    sum(v * a for v, a in setpoint.values()),
                    sum(a * volts.get(m, 0.0) for m, (_v, a) in setpoint.items()),
                )
            )
    return states


def read_bus_states(log_file: str) -> list[BusState]:
    """``bus_states`` of a file python-can's LogReader reads (.log candump, .asc, .blf...)."""
    with can.LogReader(log_file) as reader:
        return bus_states(list(reader))
