"""PyHardwareSim's model: the hardware around one DC charge point, as pure state machines.

What it stands for (EVerest's YetiSimulator and IMDSimulator in one):

- the control pilot (CP) line between the charger's board (``evse_board_support``) and
  the car's board (``ev_board_support``): the car chooses its CP state (switch S2), the
  charger drives PWM, X1, F or E, and both boards read the same line;
- the output contactors, under the rules the charger hardware enforces by itself
  (IEC 61851-1): they close only in C or D, and open at once when the car goes back to B
  (Table A.6, sequence 8.1: "within 100 ms"), on ``allow_power_on(false)``, on an
  emergency stop or on a hardware fault;
- an isolation monitor (IMD) and a DC energy meter behind the contactors, both fed with
  the power supply's measured voltage and current.

No I/O and no clock: every input takes ``now`` (monotonic seconds, last argument); every
output is a list of effects (vars to publish, errors to raise or clear, lines to log) in
the order they must happen. ``tick`` lets time pass; ``next_deadline`` says when it must
run next.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ..framework.error_model import Severity, rfc3339_ms

# implementation ids, as in manifests/PyHardwareSim.yaml
BSP = "board_support"
EV = "ev_board_support"
IMD = "imd"
METER = "powermeter"

EMERGENCY_STOP = "evse_board_support/MREC8EmergencyStop"
DIODE_FAULT = "evse_board_support/DiodeFault"
RCD_TRIPPED = "ac_rcd/DC"
IMD_DEVICE_FAULT = "isolation_monitor/DeviceFault"

ISOLATION_FAULT_OHM = 50_000.0  # well below EvseManager's 100 kOhm cable-check limit
RCD_TRIP_MA = 6.0  # DC residual current at which an RDC-DD trips (IEC 62955)
POWER_STATES = frozenset({"C", "D"})  # the only CP states in which power may flow
CONNECTOR_TYPES = ("IEC62196Type2Cable", "IEC62196Type2Socket")


class PilotOutput(StrEnum):
    """What the charger's CP driver puts on the line."""

    X1 = "X1"  # steady +12 V, no PWM
    PWM = "PWM"  # +-12 V square wave at the commanded duty cycle
    F = "F"  # steady -12 V: charger not available
    E = "E"  # 0 V: CP shorted or driver off


# effects


@dataclass(frozen=True)
class Publish:
    impl: str
    var: str
    value: Any


@dataclass(frozen=True)
class RaiseError:
    impl: str
    error_type: str
    message: str
    severity: Severity = Severity.HIGH


@dataclass(frozen=True)
class ClearError:
    impl: str
    error_type: str


@dataclass(frozen=True)
class Log:
    """Something worth a line in the module's log; ``warning`` when a request was refused."""

    message: str
    warning: bool = False


Effect = Publish | RaiseError | ClearError | Log
SwitchListener = Callable[[bool, float], None]


# configuration


@dataclass(frozen=True)
class Capabilities:
    """The charger's AC input, as evse_board_support's HardwareCapabilities describes it."""

    max_current_A: float = 32.0
    min_current_A: float = 6.0
    max_phase_count: int = 3
    min_phase_count: int = 1
    connector_type: str = "IEC62196Type2Cable"

    def check(self) -> None:
        if not 0 <= self.min_current_A <= self.max_current_A:
            raise ValueError("capabilities need 0 <= min_current_A <= max_current_A")
        if not 1 <= self.min_phase_count <= self.max_phase_count <= 3:
            raise ValueError("capabilities need 1 <= min_phase_count <= max_phase_count <= 3")
        if self.connector_type not in CONNECTOR_TYPES:
            raise ValueError(f"connector_type must be one of {', '.join(CONNECTOR_TYPES)}")

    def to_var(self) -> dict[str, Any]:
        """The value of the ``capabilities`` var; this simulator never feeds the grid."""
        return {
            "max_current_A_import": float(self.max_current_A),
            "min_current_A_import": float(self.min_current_A),
            "max_phase_count_import": int(self.max_phase_count),
            "min_phase_count_import": int(self.min_phase_count),
            "max_current_A_export": 0.0,
            "min_current_A_export": 0.0,
            "max_phase_count_export": int(self.max_phase_count),
            "min_phase_count_export": int(self.min_phase_count),
            "supports_changing_phases_during_charging": False,
            "supports_cp_state_E": True,
            "connector_type": self.connector_type,
        }


@dataclass(frozen=True)
class SimConfig:
    """Every setting of the simulation; times in seconds (the manifest's keys use ms)."""

    imd_resistance_F_Ohm: float = 900_000.0
    imd_interval_s: float = 1.0
    imd_selftest_success: bool = True
    imd_selftest_duration_s: float = 3.0
    imd_fault_after_s: float = 0.0  # 0: never
    meter_interval_s: float = 1.0
    meter_id: str = "PyHardwareSim"
    board_interval_s: float = 1.0
    emergency_stop_after_s: float = 0.0  # 0: never
    capabilities: Capabilities = field(default_factory=Capabilities)

    def __post_init__(self) -> None:
        for name in ("imd_interval_s", "meter_interval_s", "board_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        for name in ("imd_resistance_F_Ohm", "imd_selftest_duration_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("imd_fault_after_s", "emergency_stop_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0 means never)")
        self.capabilities.check()


def next_slot(slot: float, interval: float, now: float) -> float:
    """The next slot of a fixed grid; after a stall the grid restarts from ``now`` instead
    of catching up with a burst of stale publications."""
    following = slot + interval
    return following if following > now else now + interval


def _event(name: str) -> list[Effect]:
    """One CP or relay change as both boards report it: they watch the same cable."""
    return [Publish(BSP, "event", {"event": name}), Publish(EV, "bsp_event", {"event": name})]


# the CP line and the contactors


@dataclass
class ChargerPins:
    """What the charger's board was told to drive (kept while disabled, applied on enable)."""

    enabled: bool = True
    output: PilotOutput = PilotOutput.X1
    duty_percent: float = 100.0


@dataclass
class CarPins:
    """What the car's board was told to do."""

    enabled: bool = True
    state: str = "A"
    contactor_allowed: bool = False
    diode_fail: bool = False
    ac_max_current_A: float = 0.0
    three_phases: bool = True
    rcd_current_mA: float = 0.0


class Board:
    """The CP line, the contactors, the emergency stop, and what both boards report."""

    def __init__(self, config: SimConfig, on_switch: SwitchListener | None = None) -> None:
        """``on_switch(closed, now)`` hears every contactor change before it is reported
        (the meter uses it to stop counting at the exact moment)."""
        self.config = config
        self._on_switch = on_switch
        self.charger = ChargerPins()
        self.car = CarPins()
        self.relays_closed = False
        self.emergency_stop = False
        self.faults: set[str] = set()  # active hardware faults that forbid power (diode, RCD)
        self._reported_line: str | None = None
        self._reported_measurement: dict[str, Any] | None = None
        self._first_power_on_at: float | None = None
        self._timed_stop_done = False
        self._next_heartbeat: float | None = None

    # what the line shows

    def line_state(self) -> str:
        """The CP state both boards read: the car's, unless the charger forces F or E."""
        if not self.charger.enabled or self.charger.output is PilotOutput.F:
            return "F"
        if self.charger.output is PilotOutput.E:
            return "E"
        return self.car.state if self.car.enabled else "A"

    def duty_percent(self) -> float:
        """The duty cycle the car measures: 100 % for a steady +12 V (X1), as EVerest's
        simulators report it, and 0 % when the line has no positive level at all."""
        if self.line_state() in ("E", "F"):
            return 0.0
        if self.charger.output is PilotOutput.PWM:
            return self.charger.duty_percent
        return 100.0

    def may_close(self) -> bool:
        return self.line_state() in POWER_STATES and not self.emergency_stop and not self.faults

    def refusal(self) -> str:
        """Why the contactors may not close right now."""
        if self.emergency_stop:
            return "the emergency stop is active"
        if self.faults:
            return f"{', '.join(sorted(self.faults))} is active"
        return f"the CP state is {self.line_state()}, and power flows only in C or D"

    # lifecycle and time

    def start(self, now: float) -> list[Effect]:
        """The first publications; the heartbeat repeats telemetry and bsp_measurement."""
        self._next_heartbeat = now + self.config.board_interval_s
        capabilities = Publish(BSP, "capabilities", self.config.capabilities.to_var())
        measurement = self._measurement()
        self._reported_measurement = measurement
        return [
            capabilities,
            self._telemetry(),
            Publish(EV, "bsp_measurement", measurement),
            *self._settle(now),
        ]

    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        deadline = self._timed_stop_at()
        if deadline is not None and now >= deadline:
            self._timed_stop_done = True
            after = self.config.emergency_stop_after_s
            message = f"emergency stop pressed {after:g} s after the first PowerOn (simulated)"
            effects += self.press_emergency_stop(now, message)
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            interval = self.config.board_interval_s
            self._next_heartbeat = next_slot(self._next_heartbeat, interval, now)
            effects += [self._telemetry(), Publish(EV, "bsp_measurement", self._measurement())]
        return effects

    def deadlines(self) -> list[float]:
        found = [self._timed_stop_at(), self._next_heartbeat]
        return [t for t in found if t is not None]

    def _timed_stop_at(self) -> float | None:
        after = self.config.emergency_stop_after_s
        if after <= 0 or self._first_power_on_at is None or self._timed_stop_done:
            return None
        return self._first_power_on_at + after

    # charger side (evse_board_support)

    def enable(self, value: bool, now: float) -> list[Effect]:
        """Disabled, the charger shows F and keeps the latest CP command for later. An
        enable(true) while enabled reports the CP state again (as YetiSimulator does), so
        a charger that starts late still learns where the car is."""
        repeat = value and self.charger.enabled and self._reported_line is not None
        self.charger.enabled = value
        effects = self._settle(now)
        if repeat:
            effects.insert(0, Publish(BSP, "event", {"event": self.line_state()}))
        return effects

    def pwm_on(self, duty_percent: float, now: float) -> list[Effect]:
        if duty_percent <= 0:  # no high time at all: treated as PWM off, like YetiSimulator
            return self.drive(PilotOutput.X1, now)
        self.charger.output = PilotOutput.PWM
        self.charger.duty_percent = float(duty_percent)
        return self._settle(now)

    def drive(self, output: PilotOutput, now: float) -> list[Effect]:
        """X1, F or E: a steady level instead of the PWM."""
        self.charger.output = output
        self.charger.duty_percent = 100.0
        return self._settle(now)

    def allow_power_on(self, allow: bool, reason: str, now: float) -> list[Effect]:
        """true closes the contactors if the hardware rules allow it, else is logged and
        ignored (a board never closes into B); false opens them at once."""
        if not allow:
            return self._switch(False, now) if self.relays_closed else []
        if self.relays_closed:
            return []
        if not self.may_close():
            return [Log(f"allow_power_on(true, {reason}) ignored: {self.refusal()}", True)]
        return self._switch(True, now)

    # car side (ev_board_support)

    def ev_enable(self, value: bool, now: float) -> list[Effect]:
        """Switching the car's board off unplugs the car and forgets its settings."""
        if self.car.enabled and not value:
            self.car = CarPins(enabled=False)
        self.car.enabled = value
        return self._settle(now)

    def ev_set_cp_state(self, state: str, now: float) -> list[Effect]:
        self.car.state = state
        return self._settle(now)

    def ev_allow_power_on(self, value: bool) -> list[Effect]:
        """The car's own contactor: recorded only, the charger's relays do not depend on it."""
        self.car.contactor_allowed = value
        return []

    def ev_diode_fail(self, value: bool, now: float) -> list[Effect]:
        self.car.diode_fail = value
        return self._settle(now)

    def ev_set_ac_max_current(self, current_A: float) -> list[Effect]:
        self.car.ac_max_current_A = float(current_A)
        return []

    def ev_set_three_phases(self, three_phases: bool) -> list[Effect]:
        self.car.three_phases = three_phases
        return []

    def ev_set_rcd_error(self, rcd_current_mA: float, now: float) -> list[Effect]:
        self.car.rcd_current_mA = float(rcd_current_mA)
        return self._settle(now)

    # the emergency stop button

    def press_emergency_stop(
        self, now: float, message: str = "emergency stop pressed (simulated)"
    ) -> list[Effect]:
        """The button cuts the contactor supply: error first, then PowerOff."""
        if self.emergency_stop:
            return []
        self.emergency_stop = True
        return [RaiseError(BSP, EMERGENCY_STOP, message), *self._settle(now)]

    def release_emergency_stop(self) -> list[Effect]:
        if not self.emergency_stop:
            return []
        self.emergency_stop = False
        return [ClearError(BSP, EMERGENCY_STOP)]

    # internals

    def _settle(self, now: float) -> list[Effect]:
        """Bring the reports and the contactors in line with the pins, after any change."""
        effects: list[Effect] = []
        line = self.line_state()
        if line != self._reported_line:
            self._reported_line = line
            effects += _event(line)
        effects += self._check_faults(line)
        if self.relays_closed and not self.may_close():
            effects += self._switch(False, now)
        measurement = self._measurement()
        if measurement != self._reported_measurement:
            self._reported_measurement = measurement
            effects.append(Publish(EV, "bsp_measurement", measurement))
        return effects

    def _check_faults(self, line: str) -> list[Effect]:
        effects: list[Effect] = []
        pwm = self.charger.enabled and self.charger.output is PilotOutput.PWM
        # a shorted diode shows as a missing negative half-wave, visible only under PWM
        diode = self.car.diode_fail and pwm and line in ("B", "C", "D")
        if diode and DIODE_FAULT not in self.faults:
            self.faults.add(DIODE_FAULT)
            message = "no negative CP level under PWM: the car's diode is shorted"
            effects.append(RaiseError(BSP, DIODE_FAULT, message))
        elif line == "A" and DIODE_FAULT in self.faults:  # cleared by unplugging
            self.faults.discard(DIODE_FAULT)
            effects.append(ClearError(BSP, DIODE_FAULT))
        tripped = self.car.rcd_current_mA >= RCD_TRIP_MA
        if tripped and RCD_TRIPPED not in self.faults:
            self.faults.add(RCD_TRIPPED)
            message = f"DC residual current {self.car.rcd_current_mA:g} mA (trips at 6 mA)"
            effects.append(RaiseError(BSP, RCD_TRIPPED, message))
        elif not tripped and RCD_TRIPPED in self.faults:
            self.faults.discard(RCD_TRIPPED)
            effects.append(ClearError(BSP, RCD_TRIPPED))
        return effects

    def _switch(self, closed: bool, now: float) -> list[Effect]:
        if self._on_switch is not None:
            self._on_switch(closed, now)
        self.relays_closed = closed
        if closed and self._first_power_on_at is None:
            self._first_power_on_at = now
        return [*_event("PowerOn" if closed else "PowerOff"), self._telemetry()]

    def _measurement(self) -> dict[str, Any]:
        return {
            "cp_pwm_duty_cycle": self.duty_percent(),
            "proximity_pilot": {"ampacity": "None"},  # DC: no PP coding to read
            "rcd_current_mA": self.car.rcd_current_mA,
        }

    def _telemetry(self) -> Publish:
        value = {
            "evse_temperature_C": 25.0,
            "fan_rpm": 0.0,
            "supply_voltage_12V": 12.0,
            "supply_voltage_minus_12V": -12.0,
            "relais_on": self.relays_closed,
        }
        return Publish(BSP, "telemetry", value)


# the isolation monitor


class Imd:
    """An IMD that measures only between start() and stop(), like IMDSimulator.

    The first reading follows start() at once, then one every ``imd_interval_s``. With
    ``imd_fault_after_s`` set, the resistance drops to 50 kOhm that long after a start
    (an isolation fault while charging) and stays there: insulation does not heal; only
    ``set_resistance`` changes it again. A device fault stops the readings and fails
    self-tests until it is cleared, because the device can no longer be trusted.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.resistance_F_Ohm = float(config.imd_resistance_F_Ohm)
        self.measuring = False
        self.device_fault = False
        self._started_at: float | None = None
        self._next_reading: float | None = None
        self._fault_done = False
        self._self_test_due: float | None = None

    def start(self, now: float) -> list[Effect]:
        if not self.measuring:
            self.measuring = True
            self._started_at = now
            self._next_reading = now
        return []

    def stop(self) -> list[Effect]:
        self.measuring = False
        self._next_reading = None
        return []

    def start_self_test(self, test_voltage_V: float, now: float) -> list[Effect]:
        """The result follows after ``imd_selftest_duration_s``; a new request restarts it."""
        self._self_test_due = now + self.config.imd_selftest_duration_s
        return [Log(f"IMD self-test at {test_voltage_V:g} V started")]

    def set_resistance(self, ohm: float) -> list[Effect]:
        self.resistance_F_Ohm = float(ohm)
        return [Log(f"IMD isolation resistance set to {ohm:g} Ohm")]

    def raise_device_fault(self, message: str) -> list[Effect]:
        if self.device_fault:
            return []
        self.device_fault = True
        return [RaiseError(IMD, IMD_DEVICE_FAULT, message)]

    def clear_device_fault(self) -> list[Effect]:
        if not self.device_fault:
            return []
        self.device_fault = False
        return [ClearError(IMD, IMD_DEVICE_FAULT)]

    def tick(self, now: float, voltage_V: float | None) -> list[Effect]:
        effects: list[Effect] = []
        fault_at = self._fault_at()
        if fault_at is not None and now >= fault_at:
            self._fault_done = True
            self.resistance_F_Ohm = ISOLATION_FAULT_OHM
            effects.append(Log(f"IMD: isolation fault, resistance now {ISOLATION_FAULT_OHM:g} Ohm"))
        if self._next_reading is not None and now >= self._next_reading:
            interval = self.config.imd_interval_s
            self._next_reading = next_slot(self._next_reading, interval, now)
            if not self.device_fault:
                effects.append(Publish(IMD, "isolation_measurement", self.reading(voltage_V)))
        if self._self_test_due is not None and now >= self._self_test_due:
            self._self_test_due = None
            passed = self.config.imd_selftest_success and not self.device_fault
            effects.append(Publish(IMD, "self_test_result", passed))
        return effects

    def reading(self, voltage_V: float | None) -> dict[str, Any]:
        value: dict[str, Any] = {"resistance_F_Ohm": self.resistance_F_Ohm}
        if voltage_V is not None:
            value["voltage_V"] = voltage_V
        return value

    def deadlines(self) -> list[float]:
        found = [self._fault_at(), self._next_reading, self._self_test_due]
        return [t for t in found if t is not None]

    def _fault_at(self) -> float | None:
        after = self.config.imd_fault_after_s
        if after <= 0 or self._fault_done or not self.measuring or self._started_at is None:
            return None
        return self._started_at + after


# the DC energy meter


class Meter:
    """A DC meter behind the contactors: it sees the supply's voltage and current only
    while they are closed, and integrates V x I over time (a reading holds until the
    next). Energy into the car counts as import, energy back from it as export; the
    totals never reset, as on a real meter."""

    def __init__(self, config: SimConfig, wall_offset_s: float) -> None:
        self.config = config
        self.wall_offset_s = wall_offset_s
        self.supply_voltage_V: float | None = None  # None until the supply has reported
        self.supply_current_A: float | None = None
        self.closed = False
        self.import_Wh = 0.0
        self.export_Wh = 0.0
        self.transactions: dict[str, float] = {}  # id -> import_Wh at its start
        self._last_at: float | None = None
        self._next_publish: float | None = None

    def start(self, now: float) -> list[Effect]:
        self.advance(now)
        self._next_publish = now + self.config.meter_interval_s
        return [Publish(METER, "powermeter", self.value(now))]

    def supply_reading(self, voltage_V: float, current_A: float, now: float) -> list[Effect]:
        self.advance(now)
        self.supply_voltage_V, self.supply_current_A = float(voltage_V), float(current_A)
        return []

    def set_closed(self, closed: bool, now: float) -> None:
        if closed != self.closed:
            self.advance(now)
            self.closed = closed

    def advance(self, now: float) -> None:
        """Integrate the present power from the last step up to ``now``."""
        if self._last_at is not None and now > self._last_at:
            energy_Wh = self.power_W() * (now - self._last_at) / 3600.0
            if energy_Wh >= 0:
                self.import_Wh += energy_Wh
            else:
                self.export_Wh -= energy_Wh
        if self._last_at is None or now > self._last_at:
            self._last_at = now

    def output_voltage_V(self) -> float | None:
        """Voltage on the cable: the supply's while the contactors are closed, else 0."""
        if self.supply_voltage_V is None:
            return None
        return self.supply_voltage_V if self.closed else 0.0

    def output_current_A(self) -> float | None:
        if self.supply_current_A is None:
            return None
        return self.supply_current_A if self.closed else 0.0

    def power_W(self) -> float:
        voltage, current = self.output_voltage_V(), self.output_current_A()
        return 0.0 if voltage is None or current is None else voltage * current

    def value(self, now: float) -> dict[str, Any]:
        """One Powermeter reading (types/powermeter.yaml)."""
        moment = datetime.fromtimestamp(now + self.wall_offset_s, UTC)
        value: dict[str, Any] = {
            "timestamp": rfc3339_ms(moment),
            "meter_id": self.config.meter_id,
            "energy_Wh_import": {"total": self.import_Wh},
            "energy_Wh_export": {"total": self.export_Wh},
            "power_W": {"total": self.power_W()},
        }
        voltage, current = self.output_voltage_V(), self.output_current_A()
        if voltage is not None and current is not None:
            value["voltage_V"] = {"DC": voltage}
            value["current_A"] = {"DC": current}
        return value

    def tick(self, now: float) -> list[Effect]:
        if self._next_publish is None or now < self._next_publish:
            return []
        self._next_publish = next_slot(self._next_publish, self.config.meter_interval_s, now)
        self.advance(now)
        return [Publish(METER, "powermeter", self.value(now))]

    def deadlines(self) -> list[float]:
        return [] if self._next_publish is None else [self._next_publish]

    def start_transaction(
        self, request: Mapping[str, Any], now: float
    ) -> tuple[dict[str, Any], list[Effect]]:
        """Always OK: the simulated meter keeps the start reading; it signs nothing."""
        self.advance(now)
        transaction_id = str(request["transaction_id"])
        self.transactions[transaction_id] = self.import_Wh
        log = Log(f"meter: transaction {transaction_id!r} started at {self.import_Wh:.1f} Wh")
        return {"status": "OK"}, [log]

    def stop_transaction(
        self, transaction_id: str, now: float
    ) -> tuple[dict[str, Any], list[Effect]]:
        """OK for a known id, and for "" (abort every open transaction, EvseManager's
        clean-up at start); an unknown id is an UNEXPECTED_ERROR, as a real meter would
        answer. No signed_meter_value: a simulator has no key, and a fake signature would
        only travel on to the CSMS."""
        self.advance(now)
        if transaction_id == "":
            aborted = len(self.transactions)
            self.transactions.clear()
            return {"status": "OK"}, [Log(f"meter: {aborted} open transaction(s) aborted")]
        started = self.transactions.pop(transaction_id, None)
        if started is None:
            error = f"no open transaction {transaction_id!r}"
            return {"status": "UNEXPECTED_ERROR", "error": error}, [Log(f"meter: {error}", True)]
        delivered = self.import_Wh - started
        log = Log(f"meter: transaction {transaction_id!r} stopped, {delivered:.1f} Wh delivered")
        return {"status": "OK"}, [log]


# the whole simulation


class HardwareModel:
    """The board, the IMD and the meter, wired together: the contactors gate what the
    meter and the IMD see. Commands go straight to ``board``, ``imd`` and ``meter``."""

    def __init__(self, config: SimConfig, wall_offset_s: float = 0.0) -> None:
        """``wall_offset_s`` turns monotonic ``now`` into wall time for the meter's
        timestamps (``time.time() - time.monotonic()`` in the module; 0 in tests)."""
        self.config = config
        self.meter = Meter(config, wall_offset_s)
        self.board = Board(config, on_switch=self.meter.set_closed)
        self.imd = Imd(config)

    def start(self, now: float) -> list[Effect]:
        """At GlobalReady: the first publications, and the periodic ones from then on."""
        return [*self.board.start(now), *self.meter.start(now)]

    def tick(self, now: float) -> list[Effect]:
        effects = self.board.tick(now)
        effects += self.imd.tick(now, self.meter.output_voltage_V())
        effects += self.meter.tick(now)
        return effects

    def next_deadline(self) -> float | None:
        deadlines = self.board.deadlines() + self.imd.deadlines() + self.meter.deadlines()
        return min(deadlines, default=None)

    def supply_reading(self, voltage_V: float, current_A: float, now: float) -> list[Effect]:
        """A voltage_current value from the power supply (the ``powersupply`` requirement)."""
        if not (math.isfinite(voltage_V) and math.isfinite(current_A)):
            return [Log(f"supply reading {voltage_V} V / {current_A} A ignored", True)]
        return self.meter.supply_reading(voltage_V, current_A, now)
