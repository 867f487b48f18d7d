"""The PyInfyPowerDC driver core: power_supply_DC semantics over Infy modules. Pure.

Inputs: commands (``set_mode``, ``set_export``, ``set_import``), frames from the bus
(``on_frame``) and the passing of time (``tick``); every call takes ``now`` (monotonic
seconds). Outputs: a list of effects, in the order they must happen: frames to send,
vars to publish, errors to raise or clear.

The four guidelines of interfaces/power_supply_DC.yaml, and how they are met here:
  1. capabilities are derived from the modules' own limits (0x0A) and available current
     (0x0C, lower while derating); published as soon as known and whenever they change.
  2. the *desired* mode and setpoint are kept apart from what was measured and are never
     overwritten by a fault; on recovery from a CommunicationFault they are sent again,
     and the fault is cleared only once a module has echoed the replayed on/off command.
  3. ``off_settled`` tells the adapter when setMode(Off) may return: every online module
     has reported, after the Off, a current whose sum is below ``safe_off_current_A``; or
     ``off_timeout_s`` has passed; or no module answers at all (a CommunicationFault).
  4. ``voltage_current`` is published from the latest readings on a fixed 4 Hz grid
     (``publish_interval_s``), whether or not anything changed.
The upstream drivers' mistakes this avoids are listed in shared/reference/can-psu.md 2.8.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..framework.effects import ClearError, RaiseError
from ..framework.error_model import Severity
from . import codec
from .codec import (
    Available,
    Command,
    Decoded,
    Limits,
    OnOff,
    Output,
    OutputSetpoint,
    Read,
    Refused,
    Status,
)
from .status import DC_OFF, MODULE_FAULT, active_errors, is_set

COMM_FAULT = "power_supply_DC/CommunicationFault"
MODULE_SILENT = "power_supply_DC/VendorWarning"


class SetpointRefused(ValueError):
    """A command the modules cannot carry out; the message says why."""


@dataclass(frozen=True)
class DriverConfig:
    module_addresses: tuple[int, ...] = (0,)
    controller_address: int = codec.DEFAULT_CONTROLLER
    safe_off_current_A: float = 2.0
    off_timeout_s: float = 1.5
    comm_fault_timeout_s: float = 1.0
    module_timeout_s: float = 10.0  # Infy modules keep delivering 10 s after losing us
    publish_interval_s: float = 0.25
    poll_interval_s: float = 0.25
    off_poll_interval_s: float = 0.05
    limits_poll_interval_s: float = 10.0
    resend_interval_s: float = 1.0
    min_current_A: float = 1.0  # per module: Infy modules refuse 0 A
    current_regulation_tolerance_A: float = 1.0
    peak_current_ripple_A: float = 0.5

    def __post_init__(self) -> None:
        if not self.module_addresses:
            raise ValueError("at least one module address is needed")
        for address in self.module_addresses:
            if not 0 <= address <= codec.MAX_MODULE_ADDRESS:
                raise ValueError(f"module address {address} is outside 0..62")
        if len(set(self.module_addresses)) != len(self.module_addresses):
            raise ValueError("module addresses repeat")
        if self.comm_fault_timeout_s < 2 * self.poll_interval_s:
            # a fault would be raised and cleared between two polls of a healthy bus
            raise ValueError(
                f"comm_fault_timeout ({self.comm_fault_timeout_s:g} s) must be at least twice "
                f"the poll interval ({self.poll_interval_s:g} s)"
            )


# effects


@dataclass(frozen=True)
class Send:
    frame: codec.Frame


@dataclass(frozen=True)
class Publish:
    var: str
    value: Any


Effect = Send | Publish | RaiseError | ClearError


@dataclass
class ModuleState:
    address: int
    last_seen: float | None = None
    limits: Limits | None = None
    available_A: float | None = None
    voltage_V: float = 0.0
    current_A: float = 0.0
    measured_at: float | None = None
    status: Status | None = None
    errors: set[str] = field(default_factory=set)
    silent_warning: bool = False

    def online(self, now: float, window: float) -> bool:
        return self.last_seen is not None and now - self.last_seen <= window


class DriverCore:
    def __init__(self, config: DriverConfig) -> None:
        self.config = config
        self.modules = {a: ModuleState(a) for a in config.module_addresses}
        self.desired_mode = "Off"
        self.desired_phase = "Other"
        self.desired_voltage_V = 0.0
        self.desired_current_A = 0.0
        self.ignored: Counter[str] = Counter()
        self.comm_fault = False
        self._replay_pending = False
        self._last_answer: float | None = None
        self._started_at: float | None = None
        self._published_caps: dict[str, Any] | None = None
        self._published_mode: str | None = None
        self._online: frozenset[int] = frozenset()
        self._off_since: float | None = None
        self._next_poll = 0.0
        self._next_publish = 0.0
        self._next_resend = 0.0
        self._next_limits = 0.0
        self._poll_round = 0

    # commands

    def set_mode(self, mode: str, phase: str, now: float) -> list[Effect]:
        if mode == "Import":
            raise SetpointRefused("Infy REG modules cannot import (bidirectional: false)")
        self.desired_mode, self.desired_phase = mode, phase
        if mode == "Export":
            self._off_since = None
        else:  # Off and Fault both switch the outputs off
            self._off_since = now
            self._next_poll = now  # watch the current fall, at the fast off rate
        self._next_resend = now + self.config.resend_interval_s
        return self._desired_state(now)

    def set_export(self, voltage: float, current: float, now: float) -> list[Effect]:
        if not (math.isfinite(voltage) and math.isfinite(current)):
            raise SetpointRefused("voltage and current must be finite numbers")
        if voltage < 0 or current < 0:
            raise SetpointRefused(f"negative setpoint {voltage} V / {current} A")
        caps = self.capabilities(now)
        if caps is not None and voltage > caps["max_export_voltage_V"]:
            raise SetpointRefused(
                f"{voltage} V is above the modules' maximum of {caps['max_export_voltage_V']} V"
            )
        if caps is not None and 0 < voltage < caps["min_export_voltage_V"]:
            raise SetpointRefused(
                f"{voltage} V is below the modules' minimum of {caps['min_export_voltage_V']} V"
            )
        self.desired_voltage_V, self.desired_current_A = voltage, current
        return self._setpoint_frames(now) if self.desired_mode == "Export" else []

    def set_import(self, voltage: float, current: float, now: float) -> list[Effect]:
        raise SetpointRefused("Infy REG modules cannot import (bidirectional: false)")

    # what the modules say

    def on_frame(
        self, arbitration_id: int, data: bytes, is_extended: bool, now: float
    ) -> list[Effect]:
        decoded = codec.decode_answer(arbitration_id, data, is_extended)
        if isinstance(decoded, codec.Ignored):
            self.ignored[decoded.reason] += 1
            return []
        frame_id = decoded.id
        if frame_id.destination != self.config.controller_address:
            self.ignored["not-for-us"] += 1
            return []
        module = self.modules.get(frame_id.source)
        if module is None:
            self.ignored["unknown-module"] += 1
            return []
        return self._absorb(module, decoded, now)

    def _absorb(self, module: ModuleState, decoded: Decoded, now: float) -> list[Effect]:
        module.last_seen = now
        self._last_answer = now
        effects: list[Effect] = []
        match decoded.payload:
            case Output(voltage, current, False):
                module.voltage_V, module.current_A, module.measured_at = voltage, current, now
            case Limits() as limits if limits.min_voltage_V > limits.max_voltage_V:
                self.ignored["implausible-limits"] += 1  # no module says this: a bad frame
            case Limits() as limits:
                module.limits = limits
            case Available() as available:
                module.available_A = available.available_current_A
            case Status() as status:
                module.status = status
                effects += self._status_errors(module, status)
            case OnOff() if self._replay_pending:
                # guideline 2: the replayed state reached a module; only now clear
                self._replay_pending = False
                self.comm_fault = False
                effects.append(ClearError(COMM_FAULT, ""))
            case Refused(command, code):
                self.ignored[f"refused-{command:#04x}-code-{code}"] += 1
            case _:
                pass
        if self.comm_fault and not self._replay_pending:
            effects += self._recover(now)
        effects += self._membership(now)
        effects += self._publish_state(now)
        return effects

    # time

    def tick(self, now: float) -> list[Effect]:
        if self._started_at is None:
            self._started_at = now
        effects: list[Effect] = []
        effects += self._detect_silence(now)
        effects += self._membership(now)
        if now >= self._next_poll:
            effects += self._poll(now)
        if now >= self._next_resend:
            effects += self._resend(now)
        if now >= self._next_publish:
            effects += self._publish_state(now)
            effects.append(Publish("voltage_current", self.voltage_current(now)))
            # a fixed grid, so the rate does not drift with the tick's lateness
            self._next_publish += self.config.publish_interval_s
            if self._next_publish <= now:  # far behind (first tick, stalled thread): restart
                self._next_publish = now + self.config.publish_interval_s
        return effects

    def next_deadline(self) -> float:
        deadlines = [self._next_poll, self._next_resend, self._next_publish]
        reference = self._last_answer if self._last_answer is not None else self._started_at
        if not self.comm_fault and reference is not None:
            # wake exactly when the silence becomes a fault, not at the next poll
            deadlines.append(reference + self.config.comm_fault_timeout_s + 1e-3)
        return min(deadlines)

    # guideline 3

    def off_settled(self, now: float) -> bool:
        """True when a setMode(Off) may return (see the module docstring)."""
        if self._off_since is None or self.desired_mode == "Export":
            return True
        if self.comm_fault or now - self._off_since >= self.config.off_timeout_s:
            return True
        return self.off_current_safe(now)

    def off_current_safe(self, now: float) -> bool:
        """Fresh readings (taken after the Off) show a summed current below the threshold."""
        if self._off_since is None:
            return True
        online = self._online_modules(now)
        if not online:
            return True
        fresh = [m for m in online if m.measured_at is not None and m.measured_at > self._off_since]
        if len(fresh) < len(online):
            return False
        return sum(abs(m.current_A) for m in fresh) < self.config.safe_off_current_A

    # derived values

    def capabilities(self, now: float) -> dict[str, Any] | None:
        """Sum of the online modules with known limits; None until one is known."""
        known = [m for m in self._online_modules(now) if m.limits is not None]
        if not known:
            return None
        limits = [m.limits for m in known if m.limits is not None]
        current = 0.0
        power = 0.0
        for module, lim in zip(known, limits, strict=True):
            available = self._available_A(module) or 0.0
            current += available
            power += lim.rated_power_W * (
                available / lim.max_current_A if lim.max_current_A else 0.0
            )
        return {
            "bidirectional": False,
            "current_regulation_tolerance_A": self.config.current_regulation_tolerance_A,
            "peak_current_ripple_A": self.config.peak_current_ripple_A,
            "max_export_voltage_V": float(min(lim.max_voltage_V for lim in limits)),
            "min_export_voltage_V": float(max(lim.min_voltage_V for lim in limits)),
            "max_export_current_A": round(current, 3),
            "min_export_current_A": self.config.min_current_A * len(known),
            "max_export_power_W": round(power, 1),
        }

    def voltage_current(self, now: float) -> dict[str, float]:
        """Modules are in parallel: the bus voltage is the highest module voltage, the
        current their sum. During a CommunicationFault the last readings stand."""
        modules = self._online_modules(now) or [
            m for m in self.modules.values() if m.measured_at is not None
        ]
        return {
            "voltage_V": max((m.voltage_V for m in modules), default=0.0),
            "current_A": sum((m.current_A for m in modules), 0.0),
        }

    def aggregate_mode(self, now: float) -> str:
        statuses = [m.status for m in self._online_modules(now) if m.status is not None]
        if any(is_set(s, MODULE_FAULT) for s in statuses) or self.desired_mode == "Fault":
            return "Fault"
        if not statuses or all(is_set(s, DC_OFF) for s in statuses):
            return "Off"
        return "Export"

    # internals

    def _online_modules(self, now: float) -> list[ModuleState]:
        return [m for m in self.modules.values() if m.online(now, self.config.module_timeout_s)]

    def _send(self, payload: codec.Payload, destination: int) -> Send:
        return Send(codec.encode(payload, destination, self.config.controller_address))

    def _sharing(self, now: float) -> list[int]:
        """The modules that share the output: those answering, or all before any does."""
        online = [m.address for m in self._online_modules(now)]
        return online or list(self.modules)

    def _setpoint_frames(self, now: float) -> list[Effect]:
        if self.desired_voltage_V <= 0:  # nothing asked yet (modules refuse 0 V anyway)
            return []
        return [
            self._send(OutputSetpoint.of(self.desired_voltage_V, current), address)
            for address, current in self._current_split(now).items()
        ]

    def _desired_state(self, now: float) -> list[Effect]:
        """The whole desired state, unicast to every configured module. A module outside
        the current split is told to switch off: if it still hears us while it cannot
        answer, it must not add its current to what the others were set to deliver."""
        if self.desired_mode != "Export":
            return [self._send(OnOff(on=False), address) for address in self.modules]
        sharing = set(self._sharing(now))
        effects = self._setpoint_frames(now)
        effects += [self._send(OnOff(on=a in sharing), a) for a in self.modules]
        return effects

    def _current_split(self, now: float) -> dict[int, float]:
        """Module -> current: the clamped total shared in proportion to what each module
        can give now (its limit, lowered while derating); evenly while that is unknown."""
        voltage, current = self.desired_voltage_V, self.desired_current_A
        caps = self.capabilities(now)
        if caps is not None:
            current = min(current, caps["max_export_current_A"])
            if voltage > 0:
                current = min(current, caps["max_export_power_W"] / voltage)
        sharing = self._sharing(now)
        weights = {a: self._available_A(self.modules[a]) for a in sharing}
        if any(w is None for w in weights.values()) or not sum(w or 0.0 for w in weights.values()):
            weights = dict.fromkeys(sharing, 1.0)
        total = sum(w or 0.0 for w in weights.values())
        return {
            a: max(current * (w or 0.0) / total, self.config.min_current_A)
            for a, w in weights.items()
        }

    @staticmethod
    def _available_A(module: ModuleState) -> float | None:
        if module.limits is None:
            return None
        rated = module.limits.max_current_A
        return rated if module.available_A is None else min(rated, module.available_A)

    def _poll(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        self._poll_round += 1
        waiting_off = self._off_since is not None and not self.off_settled(now)
        if waiting_off:  # fast, but only what the off-wait needs: bus load stays low
            self._next_poll = now + self.config.off_poll_interval_s
            return [self._send(Read(Command.READ_MODULE_OUTPUT), a) for a in self.modules]
        for address, module in self.modules.items():
            effects.append(self._send(Read(Command.READ_MODULE_OUTPUT), address))
            effects.append(self._send(Read(Command.READ_MODULE_STATUS), address))
            if self._poll_round % 2 == 0:
                effects.append(self._send(Read(Command.READ_AVAILABLE), address))
            if module.limits is None or now >= self._next_limits:
                effects.append(self._send(Read(Command.READ_LIMITS), address))
        if now >= self._next_limits:
            self._next_limits = now + self.config.limits_poll_interval_s
        self._next_poll = now + self.config.poll_interval_s
        return effects

    def _resend(self, now: float) -> list[Effect]:
        """The desired state again: keeps the modules' 10 s watchdog fed, and repairs a
        module that restarted or missed a frame."""
        self._next_resend = now + self.config.resend_interval_s
        return self._desired_state(now)

    def _detect_silence(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        reference = self._last_answer if self._last_answer is not None else self._started_at
        if (
            not self.comm_fault
            and reference is not None
            and now - reference > self.config.comm_fault_timeout_s
        ):
            self.comm_fault = True
            self._replay_pending = False
            silent = f"{now - reference:.1f} s"
            effects.append(
                RaiseError(COMM_FAULT, "", f"no answer from any module for {silent}", Severity.HIGH)
            )
        for module in self.modules.values():
            heard = module.last_seen if module.last_seen is not None else self._started_at
            late = heard is not None and now - heard > self.config.comm_fault_timeout_s
            if late and not module.silent_warning and not self.comm_fault:
                module.silent_warning = True
                what = "stopped answering" if module.last_seen is not None else "never answered"
                effects.append(
                    RaiseError(
                        MODULE_SILENT,
                        _silent_sub_type(module.address),
                        f"module {module.address} {what}",
                        Severity.MEDIUM,
                    )
                )
        return effects

    def _recover(self, now: float) -> list[Effect]:
        """First answer after a CommunicationFault: replay the desired state."""
        self._replay_pending = True
        self._next_resend = now + self.config.resend_interval_s
        return self._desired_state(now)

    def _membership(self, now: float) -> list[Effect]:
        """A module joining or leaving changes the current split and the capabilities."""
        effects: list[Effect] = []
        for module in self.modules.values():
            if module.silent_warning and module.online(now, self.config.comm_fault_timeout_s):
                module.silent_warning = False
                effects.append(ClearError(MODULE_SILENT, _silent_sub_type(module.address)))
        online = frozenset(m.address for m in self._online_modules(now))
        if online != self._online:
            self._online = online
            if self.desired_mode == "Export" and not self.comm_fault:
                effects += self._desired_state(now)
        return effects

    def _status_errors(self, module: ModuleState, status: Status) -> list[Effect]:
        active = active_errors(status)
        effects: list[Effect] = []
        for name in sorted(set(active) - module.errors):
            severity, reasons = active[name]
            message = f"module {module.address}: {', '.join(reasons)}"
            effects.append(
                RaiseError(f"power_supply_DC/{name}", _sub_type(module.address), message, severity)
            )
        for name in sorted(module.errors - set(active)):
            effects.append(ClearError(f"power_supply_DC/{name}", _sub_type(module.address)))
        module.errors = set(active)
        return effects

    def _publish_state(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        caps = self.capabilities(now)
        if caps is not None and caps != self._published_caps:
            self._published_caps = caps
            effects.append(Publish("capabilities", caps))
        mode = self.aggregate_mode(now)
        if mode != self._published_mode:
            self._published_mode = mode
            effects.append(Publish("mode", mode))
        return effects


def _sub_type(address: int) -> str:
    return f"module {address}"


def _silent_sub_type(address: int) -> str:
    """Apart from the module's own status warnings, which share the VendorWarning type."""
    return f"module {address} silent"
