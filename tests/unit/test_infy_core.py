"""PyInfyPowerDC driver core with a fake clock. The four guidelines of
interfaces/power_supply_DC.yaml are named tests here; so are the upstream bugs we avoid
(shared/reference/can-psu.md 2.1, 2.8)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import pytest

from everkit.framework.effects import ClearError, RaiseError
from everkit.power_supply_infy import codec
from everkit.power_supply_infy.codec import Command, Limits, OnOff, OutputSetpoint, Read
from everkit.power_supply_infy.core import (
    COMM_FAULT,
    DriverConfig,
    DriverCore,
    Effect,
    Publish,
    Send,
    SetpointRefused,
)
from everkit.power_supply_infy.status import bit_named, with_bits

T0 = 1000.0


@dataclass
class Fake:
    """A module that answers exactly what a test tells it to."""

    address: int
    limits: Limits = field(default_factory=lambda: Limits(1000, 150, 1000, 3000))  # 100 A, 30 kW
    voltage_V: float = 0.0
    current_A: float = 0.0
    available_dA: int = 1000
    bits: tuple = ()
    silent: bool = False
    received: list[codec.Decoded] = field(default_factory=list)

    def answer(self, frame: codec.Frame) -> list[codec.Frame]:
        request = codec.decode_request(frame.arbitration_id, frame.data)
        assert isinstance(request, codec.Decoded), request
        self.received.append(request)
        if self.silent:
            return []
        payload: codec.Payload
        match request.payload:
            case Read(Command.READ_MODULE_OUTPUT):
                payload = codec.Output(self.voltage_V, self.current_A)
            case Read(Command.READ_MODULE_STATUS):
                payload = with_bits(*self.bits)
            case Read(Command.READ_LIMITS):
                payload = self.limits
            case Read(Command.READ_AVAILABLE):
                payload = codec.Available(int(self.voltage_V * 10), self.available_dA)
            case OnOff() | OutputSetpoint() as echo:
                payload = echo
            case _:
                return []
        return [codec.encode(payload, request.id.source, self.address)]


class Rig:
    """The core and its fake modules, stepped by hand: nothing runs unless a test says."""

    def __init__(self, *addresses: int, **config: float) -> None:
        self.core = DriverCore(DriverConfig(module_addresses=addresses, **config))  # type: ignore[arg-type]
        self.fakes = {a: Fake(a) for a in addresses}
        self.now = T0
        self.effects: list[tuple[float, Effect]] = []
        self.pending: list[codec.Frame] = []
        self.last_answer: float | None = None

    def record(self, effects: list[Effect]) -> list[Effect]:
        self.effects += [(self.now, e) for e in effects]
        self.pending += [e.frame for e in effects if isinstance(e, Send)]
        return effects

    def deliver(self) -> list[Effect]:
        """Hand every frame sent so far to the modules and their answers to the core."""
        produced: list[Effect] = []
        while self.pending:
            frame = self.pending.pop(0)
            fake = self.fakes.get(frame.id.destination)
            for answer in fake.answer(frame) if fake else []:
                self.last_answer = self.now
                produced += self.record(
                    self.core.on_frame(answer.arbitration_id, answer.data, True, self.now)
                )
        return produced

    def run(self, seconds: float, step: float = 0.01) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + step, 6)
            self.record(self.core.tick(self.now))
            self.deliver()

    def call(self, method: str, *args: object) -> list[Effect]:
        return self.record(getattr(self.core, method)(*args, self.now))

    def of(self, kind: type, since: float = 0.0) -> list[Effect]:
        return [e for t, e in self.effects if isinstance(e, kind) and t >= since]

    def published(self, var: str, since: float = 0.0) -> list[object]:
        return [e.value for e in self.of(Publish, since) if e.var == var]

    def sent(self, payload_type: type, since: float = 0.0) -> list[tuple[int, object]]:
        found = []
        for t, e in self.effects:
            if isinstance(e, Send) and t >= since:
                decoded = codec.decode_request(e.frame.arbitration_id, e.frame.data)
                if isinstance(decoded, codec.Decoded) and isinstance(decoded.payload, payload_type):
                    found.append((decoded.id.destination, decoded.payload))
        return found


def test_guideline_1_capabilities_are_published_as_soon_as_known_and_again_on_derating() -> None:
    rig = Rig(1, 2)
    rig.run(0.02)
    caps = rig.published("capabilities")
    assert caps[-1] == {
        "bidirectional": False,
        "current_regulation_tolerance_A": 1.0,
        "peak_current_ripple_A": 0.5,
        "max_export_voltage_V": 1000.0,
        "min_export_voltage_V": 150.0,
        "max_export_current_A": 200.0,
        "min_export_current_A": 2.0,
        "max_export_power_W": 60000.0,
    }
    first = next(t for t, e in rig.effects if isinstance(e, Publish) and e.var == "capabilities")
    assert first <= T0 + 0.01, "published on the first answers, not after a delay"
    count = len(caps)
    rig.run(2.0)
    assert len(rig.published("capabilities")) == count, "unchanged capabilities are not re-sent"
    rig.fakes[2].available_dA = 500  # module 2 derates to 50 A
    rig.run(1.0)
    latest = rig.published("capabilities")[-1]
    assert latest["max_export_current_A"] == 150.0
    assert latest["max_export_power_W"] == 45000.0


def test_guideline_2_comm_fault_caches_the_state_replays_it_then_clears() -> None:
    rig = Rig(1)
    rig.run(0.5)
    rig.call("set_export", 400.0, 20.0)
    rig.call("set_mode", "Export", "Charging")
    rig.deliver()
    rig.fakes[1].silent = True
    rig.run(1.5)
    raised = [e for e in rig.of(RaiseError) if e.error_type == COMM_FAULT]
    assert len(raised) == 1
    assert rig.core.desired_mode == "Export", "a fault must never overwrite the desired mode"
    rig.call("set_export", 450.0, 10.0)  # while the modules are gone: cached
    back = rig.now
    rig.fakes[1].silent = False
    rig.run(0.3)
    replayed = rig.sent(OutputSetpoint, since=back)
    assert replayed[0] == (1, OutputSetpoint(450_000, 10_000))
    assert (1, OnOff(on=True)) in rig.sent(OnOff, since=back)
    cleared = [
        (t, e) for t, e in rig.effects if isinstance(e, ClearError) and e.error_type == COMM_FAULT
    ]
    assert len(cleared) == 1
    first_replay = min(
        t
        for t, e in rig.effects
        if isinstance(e, Send) and t >= back and e.frame.id.command == Command.SET_MODULE_OUTPUT
    )
    assert cleared[0][0] >= first_replay
    # the clear comes after the replay frames within the same step
    order = [e for t, e in rig.effects if t == cleared[0][0]]
    assert order.index(cleared[0][1]) > max(
        i
        for i, e in enumerate(order)
        if isinstance(e, Send) and e.frame.id.command == Command.ON_OFF
    ) or any(isinstance(e, Send) for t, e in rig.effects if back <= t < cleared[0][0])


def test_guideline_3_off_returns_only_once_the_current_is_below_the_safe_threshold() -> None:
    rig = Rig(1, 2, safe_off_current_A=2.0)
    rig.fakes[1].current_A = rig.fakes[2].current_A = 50.0
    rig.run(0.5)
    rig.call("set_export", 400.0, 100.0)
    rig.call("set_mode", "Export", "Charging")
    rig.run(0.5)
    rig.call("set_mode", "Off", "Charging")
    assert not rig.core.off_settled(rig.now), "readings from before the Off do not count"
    rig.fakes[1].current_A = rig.fakes[2].current_A = 10.0
    rig.run(0.1)
    assert not rig.core.off_settled(rig.now)
    rig.fakes[1].current_A = rig.fakes[2].current_A = 0.9  # 1.8 A in all: below 2 A
    rig.run(0.1)
    assert rig.core.off_settled(rig.now)
    assert (1, OnOff(on=False)) in rig.sent(OnOff)


def test_guideline_3_off_never_blocks_longer_than_the_bound_when_modules_are_silent() -> None:
    rig = Rig(1, off_timeout_s=1.5, comm_fault_timeout_s=5.0)
    rig.fakes[1].current_A = 80.0
    rig.run(0.5)
    rig.fakes[1].silent = True
    rig.call("set_mode", "Off", "Charging")
    start = rig.now
    while not rig.core.off_settled(rig.now):
        rig.run(0.05)
    assert rig.now - start == pytest.approx(1.5, abs=0.06)


def test_guideline_3_off_returns_at_once_during_a_communication_fault() -> None:
    rig = Rig(1)
    rig.run(0.2)
    rig.fakes[1].silent = True
    rig.run(1.5)
    assert rig.core.comm_fault
    rig.call("set_mode", "Off", "Charging")
    assert rig.core.off_settled(rig.now)


def test_guideline_4_voltage_current_is_published_at_4_hz_also_when_nothing_changes() -> None:
    rig = Rig(1)
    rig.fakes[1].voltage_V = 400.0
    rig.run(10.0, step=0.013)  # ticks not aligned with the publication grid
    times = [t for t, e in rig.effects if isinstance(e, Publish) and e.var == "voltage_current"]
    assert len(times) in (40, 41)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 0.25 + 0.013 + 1e-6
    assert sum(gaps) / len(gaps) == pytest.approx(0.25, abs=0.002)
    assert rig.published("voltage_current")[-1] == {"voltage_V": 400.0, "current_A": 0.0}


def test_setpoints_are_split_among_modules_and_clamped_to_capabilities() -> None:
    rig = Rig(1, 2)
    rig.run(0.3)
    rig.call("set_mode", "Export", "Charging")
    since = rig.now
    rig.call("set_export", 500.0, 300.0)  # 300 A asked; 200 A exist; 60 kW / 500 V = 120 A
    assert rig.sent(OutputSetpoint, since=since) == [
        (1, OutputSetpoint(500_000, 60_000)),
        (2, OutputSetpoint(500_000, 60_000)),
    ]


def test_a_module_dropping_out_leaves_the_current_split_and_capabilities() -> None:
    rig = Rig(1, 2, module_timeout_s=3.0)
    rig.run(0.3)
    rig.call("set_export", 400.0, 100.0)
    rig.call("set_mode", "Export", "Charging")
    rig.fakes[2].silent = True
    since = rig.now
    rig.run(4.0)
    # all current to module 1, which alone is power-limited: 30 kW / 400 V = 75 A
    assert rig.sent(OutputSetpoint, since=since)[-1] == (1, OutputSetpoint(400_000, 75_000))
    dropped = rig.now
    rig.run(1.5)
    assert all(dest == 1 for dest, _ in rig.sent(OutputSetpoint, since=dropped))
    # the silent module is told to stay off, in case it still hears us
    assert rig.sent(OnOff, since=dropped)[-2:] == [(1, OnOff(on=True)), (2, OnOff(on=False))]
    assert rig.published("capabilities")[-1]["max_export_current_A"] == 100.0
    warnings = [e for e in rig.of(RaiseError) if e.sub_type == "module 2 silent"]
    assert [w.error_type for w in warnings] == ["power_supply_DC/VendorWarning"]
    assert not rig.core.comm_fault, "one module answering is not a communication fault"

    rig.fakes[2].silent = False
    back = rig.now
    rig.run(0.5)
    assert rig.sent(OutputSetpoint, since=back)[-2:] == [
        (1, OutputSetpoint(400_000, 50_000)),
        (2, OutputSetpoint(400_000, 50_000)),
    ], "a module that answers again rejoins the split"
    assert rig.published("capabilities")[-1]["max_export_current_A"] == 200.0
    assert [(e.error_type, e.sub_type) for e in rig.of(ClearError, back)] == [
        ("power_supply_DC/VendorWarning", "module 2 silent")
    ]


@pytest.mark.parametrize(
    ("voltage", "current", "reason"),
    [
        (1200.0, 10.0, "above the modules' maximum"),
        (100.0, 10.0, "below the modules' minimum"),
        (-1.0, 10.0, "negative"),
        (400.0, -5.0, "negative"),
        (math.nan, 10.0, "finite"),
    ],
)
def test_out_of_range_setpoints_are_refused_and_nothing_is_sent(
    voltage: float, current: float, reason: str
) -> None:
    rig = Rig(1)
    rig.run(0.3)
    rig.call("set_mode", "Export", "Charging")
    since = rig.now
    with pytest.raises(SetpointRefused, match=reason):
        rig.call("set_export", voltage, current)
    assert rig.sent(OutputSetpoint, since=since) == []


def test_import_is_refused_by_a_unidirectional_supply() -> None:
    rig = Rig(1)
    with pytest.raises(SetpointRefused, match="cannot import"):
        rig.call("set_mode", "Import", "Charging")
    with pytest.raises(SetpointRefused, match="cannot import"):
        rig.call("set_import", 400.0, 10.0)


def test_status_bits_map_to_ac_and_dc_errors_per_module() -> None:
    """Upstream maps input under/over-voltage to DC errors (can-psu.md 2.1): not here."""
    rig = Rig(1, 2)
    rig.fakes[1].bits = (bit_named("over-temperature"), bit_named("input over-voltage"))
    rig.fakes[2].bits = (bit_named("input under-voltage"), bit_named("output over-voltage"))
    rig.run(0.3)
    raised = {(e.error_type, e.sub_type) for e in rig.of(RaiseError)}
    assert raised == {
        ("power_supply_DC/OverTemperature", "module 1"),
        ("power_supply_DC/OverVoltageAC", "module 1"),
        ("power_supply_DC/UnderVoltageAC", "module 2"),
        ("power_supply_DC/OverVoltageDC", "module 2"),
    }
    rig.fakes[1].bits = ()
    since = rig.now
    rig.run(0.3)
    cleared = {(e.error_type, e.sub_type) for e in rig.of(ClearError, since)}
    assert cleared == {
        ("power_supply_DC/OverTemperature", "module 1"),
        ("power_supply_DC/OverVoltageAC", "module 1"),
    }, "module 1 clearing must not clear module 2's faults"


def test_communication_fault_is_raised_within_the_configured_silence() -> None:
    rig = Rig(1, comm_fault_timeout_s=1.0)
    rig.run(0.3)
    rig.fakes[1].silent = True
    last_answer = rig.last_answer
    assert last_answer is not None
    rig.run(2.0)
    raised = [
        (t, e) for t, e in rig.effects if isinstance(e, RaiseError) and e.error_type == COMM_FAULT
    ]
    assert len(raised) == 1
    # the rig ticks every 10 ms; the adapter wakes at core.next_deadline(), i.e. on time
    assert 1.0 < raised[0][0] - last_answer <= 1.0 + 0.01 + 1e-6


def test_silent_modules_are_still_polled_so_they_can_come_back() -> None:
    """Upstream InfyPower never polls an expired module again (can-psu.md 2.1)."""
    rig = Rig(1, module_timeout_s=2.0)
    rig.run(0.3)
    rig.fakes[1].silent = True
    rig.run(5.0)
    rig.fakes[1].received.clear()
    rig.run(1.0)
    assert any(r.payload == Read(Command.READ_MODULE_OUTPUT) for r in rig.fakes[1].received)


def test_malformed_and_foreign_frames_are_counted_and_ignored() -> None:
    rig = Rig(1)
    core = rig.core
    assert core.on_frame(0x123, bytes(8), False, T0) == []
    assert core.on_frame(0x0283F001, bytes(4), True, T0) == []
    assert core.on_frame(0x02BFF001, bytes(8), True, T0) == []  # command 0x3F
    assert core.on_frame(0x0283F005, bytes(8), True, T0) == []  # module 5 is not ours
    assert core.on_frame(0x028301F1, bytes(8), True, T0) == []  # not addressed to us
    nan = codec.encode(codec.Output(0.0, 0.0), 0xF0, 1)
    assert core.on_frame(nan.arbitration_id, bytes.fromhex("7fc0000000000000"), True, T0) == []
    assert core.ignored == {
        "standard-id": 1,
        "bad-length": 1,
        "unknown-command": 1,
        "unknown-module": 1,
        "not-for-us": 1,
        "non-finite": 1,
    }


def test_the_timer_wakes_exactly_when_silence_becomes_a_fault() -> None:
    """The adapter sleeps until next_deadline(); the fault must not wait for the next poll."""
    rig = Rig(1, poll_interval_s=0.4, comm_fault_timeout_s=1.0)
    rig.run(0.02)
    rig.fakes[1].silent = True
    assert rig.last_answer is not None
    while not rig.core.comm_fault:  # tick only when the core asks to be woken
        rig.now = rig.core.next_deadline()
        rig.record(rig.core.tick(rig.now))
        rig.deliver()
    assert rig.now == pytest.approx(rig.last_answer + 1.0 + 1e-3)


def test_current_is_shared_in_proportion_to_what_each_module_can_give() -> None:
    rig = Rig(1, 2)
    rig.fakes[2].available_dA = 500  # module 2 derates to 50 A
    rig.run(0.6)
    rig.call("set_mode", "Export", "Charging")
    since = rig.now
    rig.call("set_export", 300.0, 120.0)  # 36 kW: within the 45 kW left
    assert rig.sent(OutputSetpoint, since=since) == [
        (1, OutputSetpoint(300_000, 80_000)),
        (2, OutputSetpoint(300_000, 40_000)),
    ]


def test_a_module_that_never_answers_is_reported() -> None:
    rig = Rig(1, 2)
    rig.fakes[2].silent = True
    rig.run(1.5)
    warnings = [(e.sub_type, e.message) for e in rig.of(RaiseError)]
    assert warnings == [("module 2 silent", "module 2 never answered")]


def test_status_warnings_and_the_silence_warning_of_one_module_are_independent() -> None:
    rig = Rig(1, 2)
    rig.fakes[2].bits = (bit_named("fan fault"),)
    rig.run(0.3)
    rig.fakes[2].silent = True
    rig.run(1.5)
    rig.fakes[2].silent = False
    rig.run(0.5)
    cleared = [e.sub_type for e in rig.of(ClearError)]
    assert cleared == ["module 2 silent"], "the fan-fault warning must stay raised"


def test_off_wait_polls_only_the_output_to_spare_the_bus() -> None:
    rig = Rig(1, 2)
    rig.fakes[1].current_A = rig.fakes[2].current_A = 40.0
    rig.run(0.3)
    rig.call("set_mode", "Off", "Charging")
    since = rig.now
    rig.run(0.2)
    reads = [p.command for _, p in rig.sent(Read, since=since)]
    assert set(reads) == {Command.READ_MODULE_OUTPUT}
    assert len(reads) >= 2 * 3  # 50 ms off-poll for two modules


def test_poll_interval_must_leave_room_before_a_comm_fault() -> None:
    with pytest.raises(ValueError, match="at least twice the poll interval"):
        DriverConfig(module_addresses=(1,), comm_fault_timeout_s=0.2, poll_interval_s=0.25)
