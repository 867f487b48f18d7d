"""Pure model of one Infypower REG/CEG module, and of modules in parallel on a DC bus.

Follows the research notes (shared/reference/can-psu.md 3.8). Time is passed in as ``now``
(monotonic seconds), so tests drive it with a fake clock; ``simulator.py`` routes CAN frames
to several modules (``ModuleStack``) and hosts them on a python-can bus. Where the notes are
silent, these choices were made [A]:

* Dispatch: a module hears extended frames from a controller (source 0xF0..0xF8) whose
  destination is its address or 0x3F (device 0x0A), or its group (device 0x0B).
* Read requests must carry 8 zero bytes, else DATA_INVALID (Pionix: "otherwise the device
  returns an error").
* 0x01, 0x02 and 0x1B are group/system commands: only the lowest live address of the group
  or system answers, with source 0x3F or the group number and the request's device (so a
  group reply cannot be mistaken for the module of the same number; their refusals come
  from ``codec.refusal``, which always says device 0x0A). Sent to one module they are
  refused with COMMAND_INVALID.
* Every other command sent to 0x3F or a group is answered by each module with its own
  address as source, so the controller learns who heard it.
* 0x1C/0x1B: voltage outside Vmin..Vmax, current above Imax, or a current of 0 A are
  refused with DATA_INVALID and not applied. The notes say Infy modules refuse 0 A, and a
  strict double is what makes the driver's 1 A minimum testable; ``accept_zero_current``
  relaxes it. 0x1B's current is the total, shared equally by the group's modules.
* A module that has heard nothing for ``keepalive_s`` switches off and reports B6 bit 7.
  Any frame restarts the watchdog, but the bit stays set (so the controller can read it)
  until the next 0x1A; the output stays off until the controller switches it on again.
* Injected status bits are only reported; they do not change the output.

The output model: when on, a soft-start reference slews towards v_set and the output
follows it as far as CC/CP allow (``operating_point``); when off, the current decays with
tau_off and the voltage bleeds with tau_bleed. The current itself has no slew: into a
battery it steps to the CC limit as soon as the reference passes the battery voltage.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from .codec import (
    BROADCAST,
    MAX_MODULE_ADDRESS,
    Available,
    Command,
    Device,
    ErrorCode,
    Frame,
    FrameId,
    Ignored,
    ModuleCount,
    OnOff,
    Output,
    OutputSetpoint,
    Payload,
    Read,
    Status,
    decode_request,
    encode,
    refusal,
)
from .codec import Limits as WireLimits
from .status import DC_OFF, POWER_LIMITING, StatusBit, bit_named, with_bits

COMM_LOST = bit_named("module lost CAN communication")
ADDRESS_DUPLICATED = bit_named("address duplicated")

SYSTEM_COMMANDS = frozenset(
    {Command.READ_SYSTEM_OUTPUT, Command.READ_MODULE_COUNT, Command.SET_SYSTEM_OUTPUT}
)
CONTROLLERS = range(0xF0, 0xF9)
MAX_STEP_S = 0.01  # integration step: small enough that the slew looks continuous
_BISECTIONS = 60
# decode_request reasons that still reach a module, which then refuses the frame
REFUSED_REASONS = {
    "unknown-command": ErrorCode.COMMAND_INVALID,
    "bad-on-off": ErrorCode.DATA_INVALID,
}


@dataclass(frozen=True)
class Dynamics:
    """How fast the output moves: soft-start slew, current decay and voltage bleed when off."""

    slew_V_per_s: float = 500.0
    tau_off_s: float = 0.15
    tau_bleed_s: float = 0.5
    keepalive_s: float = 10.0


@dataclass(frozen=True)
class Load:
    """What the bus feeds: a resistor in parallel with a battery (an EMF behind an internal
    resistance); ``None`` removes a branch. The default, a 350 V battery with 0.1 ohm and no
    resistor, pins the voltage near the EMF so the current is set by the CC limit."""

    resistance_ohm: float | None = None
    battery_emf_V: float | None = 350.0
    battery_ohm: float = 0.1

    def __post_init__(self) -> None:
        if self.resistance_ohm is not None and self.resistance_ohm <= 0:
            raise ValueError("resistance_ohm must be positive")
        if self.battery_ohm <= 0:
            raise ValueError("battery_ohm must be positive")

    def open_circuit(self) -> Load:
        """The same load with the battery branch disconnected (the car's contactor open)."""
        return Load(resistance_ohm=self.resistance_ohm, battery_emf_V=None)

    def current(self, voltage: float) -> float:
        """Current the load takes at bus voltage ``voltage``; negative below the resting
        voltage, where the battery would push back (the modules' output diodes block it)."""
        current = 0.0
        if self.resistance_ohm is not None:
            current += voltage / self.resistance_ohm
        if self.battery_emf_V is not None:
            current += (voltage - self.battery_emf_V) / self.battery_ohm
        return current

    @property
    def resting_voltage_V(self) -> float:
        """The bus voltage with no module sourcing: the battery across the resistor."""
        if self.battery_emf_V is None:
            return 0.0
        if self.resistance_ohm is None:
            return self.battery_emf_V
        return self.battery_emf_V * self.resistance_ohm / (self.resistance_ohm + self.battery_ohm)


DEFAULT_LOAD = Load()


class Reply(NamedTuple):
    """A frame a module sends, and how long after the request."""

    frame: Frame
    delay_s: float


@dataclass
class Clock:
    """Turns calls of ``advance(now)`` into integration steps of at most MAX_STEP_S."""

    last: float | None = None

    def steps(self, now: float) -> list[tuple[float, float]]:
        """(time at the end of the step, step length). The first call is one step of
        length 0, which starts the keep-alive watchdogs and settles the bus voltage."""
        start = self.last
        if start is None:
            self.last = now
            return [(now, 0.0)]
        if now <= start:
            return []
        self.last = now
        count = math.ceil((now - start) / MAX_STEP_S - 1e-9)
        return [
            (start + (now - start) * k / count, (now - start) / count) for k in range(1, count + 1)
        ]


@dataclass(eq=False)
class SimulatedModule:
    """One module: its protocol behaviour (``handle``) and output state (see ``step_bus``)."""

    address: int
    group: int = 0
    # what 0x0A reports; the defaults are a REG1K0100G-like 1000 V / 100 A / 30 kW module
    max_voltage_V: float = 1000
    min_voltage_V: float = 150
    max_current_A: float = 100.0
    rated_power_W: float = 30000.0
    dynamics: Dynamics = field(default_factory=Dynamics)
    temperature_C: int = 30
    accept_zero_current: bool = False
    reply_delay_s: float = 0.002
    reply_jitter_s: float = 0.0
    on: bool = False
    v_set: float = 0.0
    i_set: float = 0.0
    derating: float = 1.0
    silent: bool = False
    duplicate_address: bool = False
    comm_lost: bool = False
    last_rx_time: float | None = None
    voltage_V: float = 0.0  # module output, as 0x03 reports it
    current_A: float = 0.0
    external_voltage_V: float = 0.0  # after the output diode: the bus (0x0C)
    v_ref: float = 0.0  # soft-start reference slewing towards v_set
    injected: set[StatusBit] = field(default_factory=set)
    _refuse_next: ErrorCode | None = field(default=None, init=False)
    _clock: Clock = field(default_factory=Clock, init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.address <= MAX_MODULE_ADDRESS:
            raise ValueError(f"module address {self.address} is outside 0..62")
        if not 0 <= self.group < BROADCAST:
            raise ValueError(f"group {self.group} is outside 0..62")

    # fault hooks

    def inject_status(self, *bits: StatusBit) -> None:
        self.injected.update(bits)

    def clear_status(self, *bits: StatusBit) -> None:
        """Clear the given injected bits, or all of them when none is given."""
        if bits:
            self.injected.difference_update(bits)
        else:
            self.injected.clear()

    def set_temperature(self, celsius: int) -> None:
        if not -128 <= celsius <= 127:
            raise ValueError("the status frame carries the temperature as a signed byte")
        self.temperature_C = celsius

    def derate(self, factor: float) -> None:
        """Available current becomes Imax * factor (1.0: no derating); sets B5 bit 0."""
        if not 0.0 <= factor <= 1.0:
            raise ValueError("derating factor must be within 0..1")
        self.derating = factor

    def go_silent(self) -> None:
        """A cut CAN cable: the module neither hears nor answers (and keeps delivering
        until its keep-alive switches it off)."""
        self.silent = True

    def resume(self) -> None:
        self.silent = False

    def set_reply_delay(self, seconds: float, jitter_s: float = 0.0) -> None:
        """Answers leave ``seconds`` plus a uniform 0..``jitter_s`` after the request."""
        if seconds < 0 or jitter_s < 0:
            raise ValueError("delays cannot be negative")
        self.reply_delay_s, self.reply_jitter_s = seconds, jitter_s

    def refuse_next(self, code: ErrorCode) -> None:
        """The next request this module would answer is refused with ``code`` instead (and
        not applied)."""
        self._refuse_next = code

    def draw_delay(self, rng: random.Random) -> float:
        return self.reply_delay_s + rng.uniform(0.0, self.reply_jitter_s)

    # what the module reports

    def status(self) -> Status:
        bits = set(self.injected)
        if not self.on:
            bits.add(DC_OFF)
        if self.comm_lost:
            bits.add(COMM_LOST)
        if self.derating < 1.0:
            bits.add(POWER_LIMITING)
        if self.duplicate_address:
            bits.add(ADDRESS_DUPLICATED)
        return with_bits(*bits, group=self.group, temperature_C=self.temperature_C)

    def wire_limits(self) -> WireLimits:
        return WireLimits(
            round(self.max_voltage_V),
            round(self.min_voltage_V),
            round(self.max_current_A * 10),
            round(self.rated_power_W / 10),
        )

    def available_current_A(self) -> float:
        return self.max_current_A * self.derating

    def available(self) -> Available:
        return Available(
            min(round(self.external_voltage_V * 10), 0xFFFF),
            min(round(self.available_current_A() * 10), 0xFFFF),
        )

    def current_limit_A(self, voltage: float) -> float:
        """CC/CP: I <= min(i_set, Imax * derating, Prated / V)."""
        power_limit = self.rated_power_W / voltage if voltage > 0 else math.inf
        return max(0.0, min(self.i_set, self.available_current_A(), power_limit))

    # protocol

    def addressed_by(self, frame_id: FrameId) -> bool:
        if frame_id.device == Device.GROUP:
            return frame_id.destination == self.group
        return frame_id.destination in (self.address, BROADCAST)

    def handle(
        self, frame_id: FrameId, data: bytes, now: float, peers: Sequence[SimulatedModule] = ()
    ) -> list[Frame]:
        """Answer one request addressed to this module. ``peers`` are all the live modules
        the request reached (this one included) and matter only for group/system commands;
        empty means this module alone."""
        if self.silent:
            return []
        self.last_rx_time = now
        members = list(peers) or [self]
        speaks = frame_id.command not in SYSTEM_COMMANDS or not _fanout(frame_id)
        speaks = speaks or self is min(members, key=lambda m: m.address)
        if self._refuse_next is not None and speaks:
            code, self._refuse_next = self._refuse_next, None
            return [self._refusal(frame_id, data, code)]
        answer = self._respond(frame_id, data, members)
        return [answer] if speaks and answer is not None else []

    def _respond(
        self, frame_id: FrameId, data: bytes, members: list[SimulatedModule]
    ) -> Frame | None:
        decoded = decode_request(frame_id.pack(), data)
        if isinstance(decoded, Ignored):
            code = REFUSED_REASONS.get(decoded.reason)
            return None if code is None else self._refusal(frame_id, data, code)
        if frame_id.command in SYSTEM_COMMANDS and not _fanout(frame_id):
            return self._refusal(frame_id, data, ErrorCode.COMMAND_INVALID)
        match decoded.payload:
            case Read(command):
                if any(data):
                    return self._refusal(frame_id, data, ErrorCode.DATA_INVALID)
                return self._reply(frame_id, self._read(command, members))
            case OnOff(on):
                self._switch(on)
                return self._echo(frame_id, data)
            case OutputSetpoint(voltage_mV, current_mA, system):
                share = current_mA / len(members) if system else float(current_mA)
                if not self._acceptable(voltage_mV, share):
                    return self._refusal(frame_id, data, ErrorCode.DATA_INVALID)
                self.v_set, self.i_set = voltage_mV / 1000, share / 1000
                return self._echo(frame_id, data)
        return None

    def _read(self, command: Command, members: list[SimulatedModule]) -> Payload:
        match command:
            case Command.READ_SYSTEM_OUTPUT:
                voltage = max(m.voltage_V for m in members)
                return Output(voltage, sum(m.current_A for m in members), system=True)
            case Command.READ_MODULE_COUNT:
                return ModuleCount(len(members))
            case Command.READ_MODULE_OUTPUT:
                return Output(self.voltage_V, self.current_A)
            case Command.READ_MODULE_STATUS:
                return self.status()
            case Command.READ_LIMITS:
                return self.wire_limits()
        return self.available()

    def _acceptable(self, voltage_mV: int, current_mA: float) -> bool:
        low, high = self.min_voltage_V * 1000, self.max_voltage_V * 1000
        if not low <= voltage_mV <= high:
            return False
        if current_mA <= 0 and not self.accept_zero_current:
            return False
        return current_mA <= self.max_current_A * 1000

    def _switch(self, on: bool) -> None:
        self.comm_lost = False  # the controller has taken charge again
        if on and not self.on:
            self.v_ref = self.voltage_V  # soft start from where the output is now
        self.on = on

    def _reply_id(self, request: FrameId) -> FrameId:
        """Addresses swapped; group/system answers speak for the group or system."""
        if request.command in SYSTEM_COMMANDS:
            return FrameId(request.command, request.source, request.destination, request.device)
        return FrameId(request.command, request.source, self.address)

    def _reply(self, request: FrameId, payload: Payload) -> Frame:
        reply = self._reply_id(request)
        return encode(payload, reply.destination, reply.source, Device(reply.device))

    def _echo(self, request: FrameId, data: bytes) -> Frame:
        return Frame(self._reply_id(request), bytes(data))

    def _refusal(self, request: FrameId, data: bytes, code: ErrorCode) -> Frame:
        if request.command in SYSTEM_COMMANDS and _fanout(request):
            return refusal(request, data, code)
        return refusal(replace(request, destination=self.address), data, code)

    # output

    def advance(self, now: float, load: Load = DEFAULT_LOAD) -> None:
        """Integrate this module alone on ``load`` up to ``now`` (in a stack, use
        ``ModuleStack.advance`` instead, never both)."""
        for t, dt in self._clock.steps(now):
            step_bus([self], load, t, dt)

    def _watch_keepalive(self, now: float) -> None:
        if self.last_rx_time is None:
            self.last_rx_time = now  # power-on: the watchdog starts with the first step
        elif now - self.last_rx_time > self.dynamics.keepalive_s:
            self.comm_lost, self.on = True, False

    def _slew(self, dt: float) -> None:
        limit = self.dynamics.slew_V_per_s * dt
        self.v_ref += max(-limit, min(limit, self.v_set - self.v_ref))

    def _wind_down(self, dt: float) -> None:
        self.current_A *= math.exp(-dt / self.dynamics.tau_off_s)
        self.voltage_V *= math.exp(-dt / self.dynamics.tau_bleed_s)
        self.v_ref = self.voltage_V


def _fanout(frame_id: FrameId) -> bool:
    """Sent to a group or the whole system rather than to one module."""
    return frame_id.device == Device.GROUP or frame_id.destination == BROADCAST


def operating_point(modules: Sequence[SimulatedModule], load: Load) -> tuple[float, float]:
    """(bus voltage, total current) of switched-on modules in parallel on ``load``.

    The bus follows the highest soft-start reference (CV) unless the load would then take
    more than the modules' summed current limits; then it sits where the load current
    equals that sum (CC or constant power). That point is found by bisection: the load
    current rises with the voltage and the limits (through Prated / V) fall, so there is
    exactly one crossing. Below the load's resting voltage the modules source nothing.
    """
    resting = load.resting_voltage_V
    target = max((m.v_ref for m in modules), default=0.0)
    if target <= resting:
        return resting, 0.0

    def excess(voltage: float) -> float:
        return load.current(voltage) - sum(m.current_limit_A(voltage) for m in modules)

    if excess(target) <= 0:
        return target, load.current(target)
    low, high = resting, target
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        low, high = (low, middle) if excess(middle) > 0 else (middle, high)
    return low, max(0.0, load.current(low))


def step_bus(modules: Sequence[SimulatedModule], load: Load, now: float, dt: float) -> None:
    """One integration step of modules whose outputs are in parallel on one bus.

    Switched-on modules share the operating point's current in proportion to their own
    current limits (so in CC each delivers its limit); switched-off modules wind down on
    their own (current decays with tau_off, voltage bleeds with tau_bleed, behind their
    diodes). The bus voltage every module reports in 0x0C is the highest of the load's
    resting voltage and the module outputs (a diode-OR).
    """
    for module in modules:
        module._watch_keepalive(now)
        if module.on:
            module._slew(dt)
    on = [m for m in modules if m.on]
    voltage, current = operating_point(on, load)
    limits = [m.current_limit_A(voltage) for m in on]
    total = sum(limits)
    for module, limit in zip(on, limits, strict=True):
        module.current_A = current * limit / total if total > 0 else 0.0
        module.voltage_V = min(module.v_ref, voltage)
    for module in modules:
        if not module.on:
            module._wind_down(dt)
    bus = max([load.resting_voltage_V, *(m.voltage_V for m in modules)])
    for module in modules:
        module.external_voltage_V = bus
