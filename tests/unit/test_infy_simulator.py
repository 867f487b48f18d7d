"""The pure Infy simulator model (sim_model.py), driven by a fake clock."""

from __future__ import annotations

import random

import pytest

from everkit.power_supply_infy.codec import (
    BROADCAST,
    Available,
    Command,
    Decoded,
    Device,
    ErrorCode,
    Frame,
    FrameId,
    Ignored,
    Limits,
    ModuleCount,
    OnOff,
    Output,
    OutputSetpoint,
    Payload,
    Read,
    Refused,
    Status,
    decode_answer,
    encode,
)
from everkit.power_supply_infy.sim_model import (
    ADDRESS_DUPLICATED,
    COMM_LOST,
    DC_OFF,
    POWER_LIMITING,
)
from everkit.power_supply_infy.simulator import (
    GARBAGE_KINDS,
    Load,
    ModuleStack,
    SimulatedModule,
    garbage_message,
)
from everkit.power_supply_infy.status import bit_named, is_set

CONTROLLER = 0xF0
RESISTOR_10_OHM = Load(resistance_ohm=10.0, battery_emf_V=None)


class Rig:
    """A stack and a fake clock; sends requests as the controller would."""

    def __init__(self, stack: ModuleStack) -> None:
        self.stack = stack
        self.now = 0.0
        stack.advance(0.0)

    def at(self, now: float) -> None:
        self.now = now
        self.stack.advance(now)

    def raw(self, arbitration_id: int, data: bytes, is_extended: bool = True) -> list[Frame]:
        replies = self.stack.handle(arbitration_id, data, self.now, is_extended)
        return [reply.frame for reply in replies]

    def send(
        self, payload: Payload, destination: int = 1, device: Device = Device.SINGLE
    ) -> list[Frame]:
        frame = encode(payload, destination, CONTROLLER, device)
        return self.raw(frame.arbitration_id, frame.data)

    def ask(self, payload: Payload, destination: int = 1) -> Decoded:
        """Exactly one answer, decoded the way the driver would."""
        (frame,) = self.send(payload, destination)
        decoded = decode_answer(frame.arbitration_id, frame.data)
        assert isinstance(decoded, Decoded)
        return decoded

    def read(self, command: Command, destination: int = 1) -> Payload | Refused:
        return self.ask(Read(command), destination).payload

    def status(self, destination: int = 1) -> Status:
        status = self.read(Command.READ_MODULE_STATUS, destination)
        assert isinstance(status, Status)
        return status

    def output(self, destination: int = 1) -> Output:
        output = self.read(Command.READ_MODULE_OUTPUT, destination)
        assert isinstance(output, Output)
        return output

    def export(self, voltage: float, current: float, destination: int = 1) -> None:
        assert self.ask(OutputSetpoint.of(voltage, current), destination).id.error == 0
        assert self.ask(OnOff(on=True), destination).id.error == 0


def single(load: Load = RESISTOR_10_OHM, accept_zero_current: bool = False) -> Rig:
    module = SimulatedModule(1, accept_zero_current=accept_zero_current)
    return Rig(ModuleStack([module], load))


def payload_of(frame: Frame) -> Payload | Refused:
    decoded = decode_answer(frame.arbitration_id, frame.data)
    assert isinstance(decoded, Decoded)
    return decoded.payload


# answers


def test_reads_are_answered_with_the_documented_layouts() -> None:
    rig = single()
    limits = rig.ask(Read(Command.READ_LIMITS))
    assert limits.id == FrameId(Command.READ_LIMITS, CONTROLLER, 1, Device.SINGLE)
    assert limits.payload == Limits(1000, 150, 1000, 3000)
    assert rig.read(Command.READ_MODULE_OUTPUT) == Output(0.0, 0.0)
    assert rig.read(Command.READ_AVAILABLE) == Available(0, 1000)
    status = rig.status()
    assert (status.group, status.temperature_C) == (0, 30)
    assert is_set(status, DC_OFF)


def test_set_commands_are_echoed_and_applied() -> None:
    rig = single()
    request = encode(OutputSetpoint.of(400, 25.5), 1, CONTROLLER)
    (echo,) = rig.raw(request.arbitration_id, request.data)
    assert echo.id == FrameId(Command.SET_MODULE_OUTPUT, CONTROLLER, 1)
    assert echo.data == request.data
    module = rig.stack.module(1)
    assert (module.v_set, module.i_set) == (400.0, 25.5)
    assert rig.ask(OnOff(on=True)).payload == OnOff(on=True)
    assert module.on
    assert not is_set(rig.status(), DC_OFF)


@pytest.mark.parametrize(
    ("voltage", "current"),
    [(100, 10), (1001, 10), (400, 100.1), (400, 0)],
    ids=["below Vmin", "above Vmax", "above Imax", "zero current"],
)
def test_out_of_range_setpoints_are_refused_with_data_invalid(
    voltage: float, current: float
) -> None:
    rig = single()
    answer = rig.ask(OutputSetpoint.of(voltage, current))
    assert answer.payload == Refused(Command.SET_MODULE_OUTPUT, ErrorCode.DATA_INVALID)
    assert answer.id.source == 1
    module = rig.stack.module(1)
    assert (module.v_set, module.i_set) == (0.0, 0.0)


def test_zero_current_is_accepted_when_configured() -> None:
    rig = single(accept_zero_current=True)
    assert rig.ask(OutputSetpoint.of(400, 0)).payload == OutputSetpoint(400_000, 0)


def test_unknown_commands_are_refused_with_command_invalid() -> None:
    rig = single()
    (answer,) = rig.raw(FrameId(0x3E, 1, CONTROLLER).pack(), bytes(8))
    assert answer.arbitration_id == 0x0ABEF001  # the worked example of can-psu.md 3.7


@pytest.mark.parametrize(
    ("command", "data", "code"),
    [
        (Command.ON_OFF, b"\x02" + bytes(7), ErrorCode.DATA_INVALID),
        (Command.READ_MODULE_OUTPUT, b"\x00\x01" + bytes(6), ErrorCode.DATA_INVALID),
        (Command.READ_SYSTEM_OUTPUT, bytes(8), ErrorCode.COMMAND_INVALID),  # unicast
        (Command.SET_SYSTEM_OUTPUT, encode(OutputSetpoint.of(400, 10, system=True), 1, 0xF0).data,
         ErrorCode.COMMAND_INVALID),
    ],
    ids=["bad on/off byte", "non-zero read", "0x01 to one module", "0x1B to one module"],
)  # fmt: skip
def test_malformed_requests_are_refused(command: int, data: bytes, code: ErrorCode) -> None:
    rig = single()
    (answer,) = rig.raw(FrameId(command, 1, CONTROLLER).pack(), data)
    assert decode_answer(answer.arbitration_id, answer.data) == Decoded(
        FrameId(command, CONTROLLER, 1, Device.SINGLE, code), Refused(command, code)
    )
    assert answer.data == data


def test_refuse_next_refuses_one_request_without_applying_it() -> None:
    rig = single()
    rig.stack.module(1).refuse_next(ErrorCode.STARTING)
    assert rig.ask(OnOff(on=True)).payload == Refused(Command.ON_OFF, ErrorCode.STARTING)
    assert not rig.stack.module(1).on
    assert rig.ask(OnOff(on=True)).payload == OnOff(on=True)


# the output model


def test_voltage_ramps_to_the_setpoint_at_the_slew_rate() -> None:
    rig = single()  # 10 ohm: 400 V takes 40 A, within every limit
    rig.export(400, 100)
    rig.at(0.7)
    assert rig.output().voltage_V == pytest.approx(350, abs=1)  # 500 V/s
    rig.at(0.85)
    output = rig.output()
    assert output.voltage_V == pytest.approx(400, abs=0.01)
    assert output.current_A == pytest.approx(40, abs=0.01)


def test_current_is_limited_by_the_cc_setpoint() -> None:
    rig = single(Load(resistance_ohm=2.0, battery_emf_V=None))
    rig.export(400, 50)
    rig.at(2.0)
    output = rig.output()
    assert output.current_A == pytest.approx(50, abs=0.01)
    assert output.voltage_V == pytest.approx(100, abs=0.01)  # 50 A into 2 ohm


def test_into_a_battery_the_current_is_set_by_the_cc_limit() -> None:
    rig = single(Load())  # the default: a 350 V battery behind 0.1 ohm
    rig.export(500, 20)
    rig.at(0.5)  # still below the battery: nothing flows
    assert rig.output().current_A == 0.0
    rig.at(2.0)
    output = rig.output()
    assert output.current_A == pytest.approx(20, abs=0.01)
    assert output.voltage_V == pytest.approx(352, abs=0.01)


def test_current_is_limited_by_the_rated_power() -> None:
    rig = single(Load())
    rig.export(500, 100)
    rig.at(2.0)
    output = rig.output()
    assert output.voltage_V * output.current_A == pytest.approx(30_000, rel=1e-3)
    assert output.current_A < 100


def test_off_decays_the_current_below_2_a_within_a_second() -> None:
    rig = single(Load())
    rig.export(500, 80)
    rig.at(2.0)
    assert rig.output().current_A == pytest.approx(80, abs=0.01)
    assert rig.ask(OnOff(on=False)).payload == OnOff(on=False)
    rig.at(2.1)
    assert rig.output().current_A > 2  # a gradual fall, so the driver has something to wait for
    rig.at(3.0)
    output = rig.output()
    assert output.current_A < 2
    assert output.voltage_V < 350  # the module's own output bleeds behind its diode
    assert is_set(rig.status(), DC_OFF)
    available = rig.read(Command.READ_AVAILABLE)
    assert isinstance(available, Available)
    assert available.external_voltage_V == pytest.approx(350)  # the battery stays


def test_keep_alive_switches_off_after_10_s_without_frames() -> None:
    rig = single()
    rig.export(400, 50)
    rig.at(9.99)
    assert rig.stack.module(1).on
    rig.at(10.05)
    assert not rig.stack.module(1).on
    status = rig.status()
    assert is_set(status, COMM_LOST)
    assert is_set(status, DC_OFF)
    assert is_set(rig.status(), COMM_LOST)  # latched until the controller takes over again
    rig.export(400, 50)
    assert not is_set(rig.status(), COMM_LOST)


def test_any_frame_feeds_the_keep_alive() -> None:
    rig = single()
    rig.export(400, 50)
    for second in range(1, 30):
        rig.at(second * 1.0)
        rig.output()
    assert rig.stack.module(1).on


def test_derating_shows_in_status_available_current_and_output() -> None:
    rig = single(Load())
    rig.export(500, 80)
    rig.stack.module(1).derate(0.5)
    rig.at(2.0)
    assert is_set(rig.status(), POWER_LIMITING)
    available = rig.read(Command.READ_AVAILABLE)
    assert isinstance(available, Available)
    assert available.available_current_A == 50.0
    assert rig.output().current_A == pytest.approx(50, abs=0.01)
    rig.stack.module(1).derate(1.0)
    rig.at(2.1)
    assert not is_set(rig.status(), POWER_LIMITING)
    assert rig.output().current_A == pytest.approx(80, abs=0.01)


def test_injected_status_bits_and_temperature_are_reported() -> None:
    rig = single()
    module = rig.stack.module(1)
    fan, phase = bit_named("fan fault"), bit_named("input phase lost")
    module.inject_status(fan, phase)
    module.set_temperature(-5)
    status = rig.status()
    assert is_set(status, fan)
    assert is_set(status, phase)
    assert status.temperature_C == -5
    module.clear_status(fan)
    assert not is_set(rig.status(), fan)
    module.clear_status()
    assert not is_set(rig.status(), phase)


# several modules


def group_rig() -> Rig:
    """Modules 3, 1, 2 in group 2 and module 4 in group 5, on the default battery."""
    modules = [SimulatedModule(a, group=2) for a in (3, 1, 2)] + [SimulatedModule(4, group=5)]
    return Rig(ModuleStack(modules))


def test_the_lowest_address_answers_system_and_group_reads() -> None:
    rig = group_rig()
    (answer,) = rig.send(Read(Command.READ_MODULE_COUNT), BROADCAST)
    assert answer.id == FrameId(Command.READ_MODULE_COUNT, CONTROLLER, BROADCAST, Device.SINGLE)
    assert payload_of(answer) == ModuleCount(4)
    (answer,) = rig.send(Read(Command.READ_MODULE_COUNT), 2, Device.GROUP)
    assert answer.id == FrameId(Command.READ_MODULE_COUNT, CONTROLLER, 2, Device.GROUP)
    assert payload_of(answer) == ModuleCount(3)
    rig.stack.module(1).go_silent()
    (answer,) = rig.send(Read(Command.READ_MODULE_COUNT), 2, Device.GROUP)
    assert payload_of(answer) == ModuleCount(2)


def test_a_group_setpoint_shares_the_total_current() -> None:
    rig = group_rig()
    setpoint = OutputSetpoint.of(500, 60, system=True)
    (echo,) = rig.send(setpoint, 2, Device.GROUP)
    assert echo.id == FrameId(Command.SET_SYSTEM_OUTPUT, CONTROLLER, 2, Device.GROUP)
    assert [m.i_set for m in rig.stack.modules] == [20.0, 20.0, 20.0, 0.0]
    assert len(rig.send(OnOff(on=True), 2, Device.GROUP)) == 3  # each module echoes
    rig.at(2.0)
    (answer,) = rig.send(Read(Command.READ_SYSTEM_OUTPUT), 2, Device.GROUP)
    output = payload_of(answer)
    assert isinstance(output, Output)
    assert output.system
    assert output.current_A == pytest.approx(60, abs=0.01)
    assert output.voltage_V == pytest.approx(356, abs=0.01)  # 350 V + 60 A * 0.1 ohm


def test_broadcast_reads_are_answered_by_every_module() -> None:
    rig = group_rig()
    answers = rig.send(Read(Command.READ_MODULE_OUTPUT), BROADCAST)
    assert sorted(a.id.source for a in answers) == [1, 2, 3, 4]


def test_parallel_modules_share_the_current_by_their_limits() -> None:
    rig = Rig(ModuleStack.of(1, 2))
    rig.export(500, 30, 1)
    rig.export(500, 30, 2)
    rig.stack.module(2).derate(0.2)  # 20 A available
    rig.at(2.0)
    assert rig.output(1).current_A == pytest.approx(30, abs=0.01)
    assert rig.output(2).current_A == pytest.approx(20, abs=0.01)
    assert rig.stack.total_current_A == pytest.approx(50, abs=0.01)
    assert rig.stack.bus_voltage_V == pytest.approx(355, abs=0.01)


def test_a_silent_module_neither_hears_nor_answers() -> None:
    rig = Rig(ModuleStack.of(1))
    rig.export(400, 50)
    rig.stack.module(1).go_silent()
    assert rig.send(Read(Command.READ_MODULE_OUTPUT)) == []
    assert rig.stack.ignored["not-addressed"] == 1
    rig.at(9.0)
    assert rig.stack.module(1).on  # still delivering ...
    rig.at(10.1)
    assert not rig.stack.module(1).on  # ... until its keep-alive runs out
    rig.stack.module(1).resume()
    assert is_set(rig.status(), COMM_LOST)


def test_duplicate_addresses_answer_twice_and_report_it() -> None:
    rig = Rig(ModuleStack.of(1, 1))
    answers = rig.send(Read(Command.READ_MODULE_STATUS))
    assert len(answers) == 2
    for answer in answers:
        status = payload_of(answer)
        assert isinstance(status, Status)
        assert is_set(status, ADDRESS_DUPLICATED)


def test_frames_no_module_acts_on_are_counted() -> None:
    rig = single()
    read = encode(Read(Command.READ_MODULE_OUTPUT), 1, CONTROLLER)
    assert rig.raw(0x123, bytes(8), is_extended=False) == []
    assert rig.raw(read.arbitration_id, bytes(4)) == []
    assert (
        rig.raw(FrameId(Command.READ_MODULE_OUTPUT, 1, CONTROLLER, device=5).pack(), bytes(8)) == []
    )
    assert rig.raw(FrameId(Command.READ_MODULE_OUTPUT, 1, 0x02).pack(), bytes(8)) == []
    assert (
        rig.raw(FrameId(Command.READ_MODULE_OUTPUT, 1, CONTROLLER, error=2).pack(), bytes(8)) == []
    )
    assert rig.raw(FrameId(Command.READ_MODULE_OUTPUT, 7, CONTROLLER).pack(), bytes(8)) == []
    assert dict(rig.stack.ignored) == {
        "standard-id": 1,
        "bad-length": 1,
        "unknown-device": 1,
        "not-from-controller": 1,
        "error-set": 1,
        "not-addressed": 1,
    }


def test_reply_delays_follow_the_configured_jitter() -> None:
    stack = ModuleStack.of(1, seed=7)
    stack.set_reply_delay(0.002, jitter_s=0.018)
    read = encode(Read(Command.READ_MODULE_OUTPUT), 1, CONTROLLER)
    delays = [stack.handle(read.arbitration_id, read.data, 0.0)[0].delay_s for _ in range(200)]
    assert all(0.002 <= d <= 0.020 for d in delays)
    assert max(delays) - min(delays) > 0.01


@pytest.mark.parametrize("kind", GARBAGE_KINDS)
def test_garbage_is_ignored_by_the_driver_for_its_named_reason(kind: str) -> None:
    rng = random.Random(kind)
    for _ in range(50):
        message = garbage_message(kind, rng, module=1)
        decoded = decode_answer(message.arbitration_id, bytes(message.data), message.is_extended_id)
        assert decoded == Ignored(kind)
