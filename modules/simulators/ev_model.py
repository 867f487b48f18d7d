"""PyEvSimulator's car: a battery and the vehicle's side of an ISO 15118-2 DC session. Pure.

In SIL, PyEvSimulator stands in for the SECC stack *and* the car together: it provides
``ISO15118_charger`` exactly as EvseV2G does to EvseManager, and plays the EVCC behind it
(shared/reference/evse-manager.md 1.6). There is no V2G message in between; where EvseV2G
would publish a var because a request arrived from the car, this model publishes it when
the simulated car reaches that step.

Inputs: the charger's commands (``on_*``), the script's actions (``plug_in``,
``start_session``, ``power_ready``, ``ev_stop`` ...) and the passing of time (``tick``);
every call that depends on time takes ``now`` (monotonic seconds). Outputs accumulate and
are collected with ``take_outputs()``, in the order they must happen: vars to publish, CP
state changes, the EV contactor (``ev_board_support.allow_power_on``), the diode fault,
and notes for the log.

The session runs through the phases of ``PHASES`` (one table: CP state on entry, timeout
and where it leads). The var sequence of a normal session, in ISO 15118-2 message order:

    WaitAuth       (SessionSetup .. Authorization)   selected_protocol, evcc_id,
                   selected_payment_option, require_auth_eim
    Authorized     (ChargeParameterDiscovery)        requested_energy_transfer_mode,
                   dc_ev_maximum_limits, dc_ev_energy_capacity, [dc_ev_energy_request],
                   dc_ev_status
    CableCheck     CP C, start_cable_check                         until cable_check_finished
    PreCharge      start_pre_charge, dc_ev_status, dc_ev_target_voltage_current every tick
                   (battery voltage, 2 A)          until the present voltage is within 10 %
    CurrentDemand  EV contactor closed, v2g_setup_finished, current_demand_started, then
                   dc_ev_target_voltage_current and dc_ev_status every tick
    Stopping       current_demand_finished, dc_open_contactor         (PowerDelivery Stop)
    Welding        0.5 s later: CP B, EV contactor open; until present voltage < 60 V or 5 s
    Finished       dlink_terminate                                    (SessionStop)

An abort (cable check failed or timed out, pre-charge timeout, authorization refused or
unanswered for 60 s, or the charger's send_error) publishes current_demand_finished (if in
CurrentDemand), dc_open_contactor (if the charger may have closed), opens the EV
contactor, publishes hlc_session_failed with the reason (not for send_error: the charger
knows), sets CP B and publishes dlink_terminate; the phase is then Failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

CYCLE_S = 0.25  # the EV's request period: CurrentDemandReq every 250 ms (ISO 15118-2)
PRECHARGE_CURRENT_A = 2.0  # the usual DIN/IEC pre-charge request
PRECHARGE_TOLERANCE = 0.10  # EVerest's Josev sim: present within +-10 % of the target
TARGET_VOLTAGE_MARGIN_V = 10.0  # CurrentDemand asks a little above the battery voltage
WELDING_SAFE_V = 60.0
TAPER_FROM_SOC = 80.0  # constant current up to here, then a linear taper
TAPER_END_FRACTION = 0.05  # of the constant current, at 100 % SoC
MAX_INTEGRATION_GAP_S = 1.0  # a longer gap between present values is not charged for
PWM_MIN_DUTY, PWM_MAX_DUTY = 4.0, 97.0  # EvManager's iso_wait_pwm_is_running: 5 % counts
SELECTED_PROTOCOL = "ISO15118-2-2010"  # the string EvseV2G publishes for ISO 15118-2
ENERGY_TRANSFER_MODE = "DC_extended"  # what EvManager asks Josev for in DC
EVCC_ID = re.compile(r"^[A-F0-9]{2}(:[A-F0-9]{2}){5}$")  # the evcc_id var's pattern


class Phase(StrEnum):
    UNPLUGGED = "Unplugged"
    CONNECTED = "Connected"  # plugged in, no V2G session
    WAIT_AUTH = "WaitAuth"
    AUTHORIZED = "Authorized"  # ChargeParameterDiscovery done: waiting for the script
    CABLE_CHECK = "CableCheck"
    PRE_CHARGE = "PreCharge"
    CURRENT_DEMAND = "CurrentDemand"
    STOPPING = "Stopping"
    WELDING = "Welding"
    FINISHED = "Finished"
    FAILED = "Failed"


@dataclass(frozen=True)
class PhaseRule:
    """What a phase does by itself: the CP state set on entry (None: as it is), and how
    long the car waits in it before moving on to ``after_timeout``. A timeout that ends in
    Failed publishes ``hlc_session_failed`` with ``failure_reason``."""

    cp: str | None = None
    timeout_s: float | None = None
    after_timeout: Phase | None = None
    failure_reason: str | None = None
    in_session: bool = True


# ISO 15118-2 EV timeouts (evse-manager.md section 5): 60 s sequence timeout while
# EVSEProcessing stays Ongoing, CableCheck 40 s, PreCharge 7 s.
PHASES: dict[Phase, PhaseRule] = {
    Phase.UNPLUGGED: PhaseRule(cp="A", in_session=False),
    Phase.CONNECTED: PhaseRule(cp="B", in_session=False),
    Phase.WAIT_AUTH: PhaseRule(None, 60.0, Phase.FAILED, "AuthorizationFailed"),
    Phase.AUTHORIZED: PhaseRule(),
    Phase.CABLE_CHECK: PhaseRule("C", 40.0, Phase.FAILED, "EnergyTransferSetupFailed"),
    Phase.PRE_CHARGE: PhaseRule(None, 7.0, Phase.FAILED, "EnergyTransferSetupFailed"),
    Phase.CURRENT_DEMAND: PhaseRule(),
    Phase.STOPPING: PhaseRule(None, 0.5, Phase.WELDING),
    Phase.WELDING: PhaseRule("B", 5.0, Phase.FINISHED),
    Phase.FINISHED: PhaseRule(cp="B", in_session=False),
    Phase.FAILED: PhaseRule(cp="B", in_session=False),
}
# an abort in these tells the charger to open (dc_open_contactor); Stopping already did
CONTACTORS_MAY_BE_CLOSED = frozenset({Phase.CABLE_CHECK, Phase.PRE_CHARGE, Phase.CURRENT_DEMAND})


# outputs


@dataclass(frozen=True)
class Publish:
    var: str
    value: Any


@dataclass(frozen=True)
class SetCp:
    state: str


@dataclass(frozen=True)
class EvContactor:
    """ev_board_support.allow_power_on: the EV's own DC contactor."""

    closed: bool


@dataclass(frozen=True)
class DiodeFault:
    value: bool


@dataclass(frozen=True)
class Note:
    """Something worth a log line (phase changes, refusals)."""

    message: str
    warning: bool = False


Output = Publish | SetCp | EvContactor | DiodeFault | Note


class SessionError(ValueError):
    """A script action that the car cannot take in its present state."""


@dataclass(frozen=True)
class EvConfig:
    """The car. ``nominal_voltage_V`` and ``cc_current_A`` are EvManager's
    dc_target_voltage and dc_target_current, read as the pack's nominal voltage and the
    constant-current level of its charge curve."""

    evcc_id: str = "AA:BB:CC:DD:EE:FF"
    nominal_voltage_V: float = 400.0
    cc_current_A: float = 20.0
    max_current_A: float = 300.0
    max_power_W: float = 150000.0
    max_voltage_V: float = 900.0
    capacity_Wh: float = 60000.0
    initial_soc: float = 30.0
    target_soc: float = 100.0

    def __post_init__(self) -> None:
        if not EVCC_ID.match(self.evcc_id):
            raise ValueError(f"evcc_id must look like AA:BB:CC:DD:EE:FF, got {self.evcc_id!r}")
        if self.capacity_Wh <= 0:
            raise ValueError("dc_energy_capacity must be above 0 Wh")
        if self.nominal_voltage_V <= 0:
            raise ValueError("dc_target_voltage must be above 0 V")
        for name in ("initial_soc", "target_soc"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"{name} must be within 0..100 %")
        if Battery.voltage_at(100.0, self.nominal_voltage_V) > self.max_voltage_V:
            raise ValueError("dc_max_voltage_limit is below the full pack's voltage")


@dataclass
class Battery:
    """A 400 V pack by default: 340 V empty, 410 V full; takes the constant current up to
    80 % SoC, then less and less, down to 5 % of it when full."""

    capacity_Wh: float
    nominal_V: float
    soc: float

    @staticmethod
    def voltage_at(soc: float, nominal_V: float) -> float:
        return nominal_V * (0.85 + 0.175 * soc / 100.0)

    @property
    def voltage(self) -> float:
        return self.voltage_at(self.soc, self.nominal_V)

    def accepted_current(self, cc_current_A: float) -> float:
        if self.soc <= TAPER_FROM_SOC:
            return cc_current_A
        left = (100.0 - min(self.soc, 100.0)) / (100.0 - TAPER_FROM_SOC)
        return cc_current_A * (TAPER_END_FRACTION + (1.0 - TAPER_END_FRACTION) * left)

    def charge(self, energy_Wh: float) -> None:
        self.soc = min(max(self.soc + 100.0 * energy_Wh / self.capacity_Wh, 0.0), 100.0)


@dataclass(frozen=True)
class SessionOptions:
    """iso_start_v2g_session's arguments after the energy mode."""

    payment: str = "ExternalPayment"
    departure_s: float | None = None
    eamount_Wh: float | None = None


@dataclass
class ChargerView:
    """What the charger told the car: the latest value of each command, for tests and
    for the EV's own decisions (present values, EVSE limits)."""

    present_V: float = 0.0
    present_A: float = 0.0
    present_at: float | None = None
    maximum_limits: dict[str, Any] | None = None
    minimum_limits: dict[str, Any] | None = None
    error: str | None = None
    received: dict[str, Any] = field(default_factory=dict)


class EvModel:
    """The car and its ISO 15118-2 DC session. Not thread-safe: the adapter holds a lock."""

    def __init__(self, config: EvConfig) -> None:
        self.config = config
        self.battery = Battery(config.capacity_Wh, config.nominal_voltage_V, config.initial_soc)
        self.charger = ChargerView()
        self.phase = Phase.UNPLUGGED
        self.phase_since = 0.0
        self.cp: str | None = None  # unknown until start()
        self.contactor_closed = False
        self.diode_fault = False
        self.pwm_duty: float | None = None
        self.pwm_on_since: float | None = None
        self.auth_status: str | None = None  # latched authorization_response
        self.current_cap_A: float | None = None
        self.options = SessionOptions()
        self.failure: str | None = None
        self.stop_reason: str | None = None
        self._outputs: list[Output] = []

    # outputs

    def take_outputs(self) -> list[Output]:
        outputs, self._outputs = self._outputs, []
        return outputs

    def _publish(self, var: str, value: Any = None) -> None:
        self._outputs.append(Publish(var, value))

    def _note(self, message: str, warning: bool = False) -> None:
        self._outputs.append(Note(message, warning))

    def _set_cp(self, state: str) -> None:
        if state != self.cp:
            self.cp = state
            self._outputs.append(SetCp(state))

    def _set_contactor(self, closed: bool) -> None:
        if closed != self.contactor_closed:
            self.contactor_closed = closed
            self._outputs.append(EvContactor(closed))

    # derived state

    @property
    def in_session(self) -> bool:
        return PHASES[self.phase].in_session

    @property
    def plugged_in(self) -> bool:
        return self.phase is not Phase.UNPLUGGED

    def pwm_running_for(self, now: float) -> float | None:
        """Seconds since the charger's PWM was seen running, None while it is not."""
        return None if self.pwm_on_since is None else now - self.pwm_on_since

    def precharge_target(self) -> dict[str, float]:
        return {
            "dc_ev_target_voltage": round(self.battery.voltage, 1),
            "dc_ev_target_current": PRECHARGE_CURRENT_A,
        }

    def current_demand_target(self) -> dict[str, float]:
        """What the battery takes now, within the EV's own limits and the script's cap.
        The EVSE limits are not applied: clamping is the charger's job."""
        cfg = self.config
        voltage = min(self.battery.voltage + TARGET_VOLTAGE_MARGIN_V, cfg.max_voltage_V)
        current = min(
            self.battery.accepted_current(cfg.cc_current_A),
            cfg.max_current_A,
            cfg.max_power_W / voltage,
        )
        if self.current_cap_A is not None:
            current = min(current, self.current_cap_A)
        return {
            "dc_ev_target_voltage": round(voltage, 1),
            "dc_ev_target_current": round(current, 2),
        }

    def ev_status(self) -> dict[str, Any]:
        return {
            "dc_ev_ready": True,
            "dc_ev_error_code": "NO_ERROR",
            "dc_ev_ress_soc": round(self.battery.soc, 2),
        }

    # phases

    def _go(self, now: float, phase: Phase, why: str) -> None:
        previous, self.phase, self.phase_since = self.phase, phase, now
        self._note(f"{previous} -> {phase}: {why}", warning=phase is Phase.FAILED)
        rule = PHASES[phase]
        if rule.cp is not None:
            self._set_cp(rule.cp)
        entry = _ENTRY.get(phase)
        if entry is not None:
            entry(self, now, previous)

    def _enter_wait_auth(self, now: float, _previous: Phase) -> None:
        self._publish("selected_protocol", SELECTED_PROTOCOL)
        self._publish("evcc_id", self.config.evcc_id)
        self._publish("selected_payment_option", self.options.payment)
        self._publish("require_auth_eim")
        self._check_authorization(now)

    def _enter_authorized(self, _now: float, _previous: Phase) -> None:
        cfg = self.config
        self._publish("requested_energy_transfer_mode", ENERGY_TRANSFER_MODE)
        self._publish(
            "dc_ev_maximum_limits",
            {
                "dc_ev_maximum_current_limit": cfg.max_current_A,
                "dc_ev_maximum_power_limit": cfg.max_power_W,
                "dc_ev_maximum_voltage_limit": cfg.max_voltage_V,
            },
        )
        self._publish("dc_ev_energy_capacity", cfg.capacity_Wh)
        if self.options.eamount_Wh:
            self._publish("dc_ev_energy_request", self.options.eamount_Wh)
        self._publish("dc_ev_status", self.ev_status())

    def _enter_cable_check(self, _now: float, _previous: Phase) -> None:
        self._publish("start_cable_check")

    def _enter_pre_charge(self, _now: float, _previous: Phase) -> None:
        self._publish("start_pre_charge")
        self._publish("dc_ev_status", self.ev_status())
        self._publish("dc_ev_target_voltage_current", self.precharge_target())

    def _enter_current_demand(self, _now: float, _previous: Phase) -> None:
        self._set_contactor(True)
        self._publish("v2g_setup_finished")  # PowerDelivery(Start)
        self._publish("current_demand_started")  # the first CurrentDemandReq
        self._current_demand_request()

    def _enter_stopping(self, _now: float, previous: Phase) -> None:
        if previous is Phase.CURRENT_DEMAND:
            self._publish("current_demand_finished")
        self._publish("dc_open_contactor")  # PowerDelivery(Stop)

    def _enter_welding(self, now: float, _previous: Phase) -> None:
        self._set_contactor(False)
        self._check_welding(now)

    def _enter_finished(self, _now: float, _previous: Phase) -> None:
        self.auth_status = None
        self._publish("dlink_terminate")  # SessionStop(Terminate)

    def _enter_failed(self, _now: float, _previous: Phase) -> None:
        self.auth_status = None
        self._publish("dlink_terminate")

    def _current_demand_request(self) -> None:
        self._publish("dc_ev_target_voltage_current", self.current_demand_target())
        self._publish("dc_ev_status", self.ev_status())

    def _fail(self, now: float, message: str, hlc_reason: str | None) -> None:
        """Abort the session at once: the EV stops drawing, opens, goes back to B."""
        was = self.phase
        if was is Phase.CURRENT_DEMAND:
            self._publish("current_demand_finished")
        if was in CONTACTORS_MAY_BE_CLOSED:
            self._publish("dc_open_contactor")
        self._set_contactor(False)
        if hlc_reason is not None:
            self._publish("hlc_session_failed", hlc_reason)
        self.failure = message
        self._go(now, Phase.FAILED, message)

    def _stop(self, now: float, reason: str) -> None:
        """The normal end: PowerDelivery(Stop) once power may flow, else SessionStop."""
        if self.phase in (Phase.WAIT_AUTH, Phase.AUTHORIZED):
            self.stop_reason = reason
            self._go(now, Phase.FINISHED, reason)
        elif self.phase in (Phase.CABLE_CHECK, Phase.PRE_CHARGE, Phase.CURRENT_DEMAND):
            self.stop_reason = reason
            self._go(now, Phase.STOPPING, reason)

    def _check_authorization(self, now: float) -> None:
        if self.phase is not Phase.WAIT_AUTH or self.auth_status is None:
            return
        if self.auth_status == "Accepted":
            self._go(now, Phase.AUTHORIZED, "authorization accepted")
        else:
            self._fail(now, f"authorization {self.auth_status}", "AuthorizationFailed")

    def _check_welding(self, now: float) -> None:
        if self.phase is Phase.WELDING and self.charger.present_V < WELDING_SAFE_V:
            self._go(now, Phase.FINISHED, f"present voltage below {WELDING_SAFE_V:g} V")

    # time

    def start(self, now: float) -> None:
        """At GlobalReady: the car is not plugged in and its contactor is open."""
        self.phase_since = now
        self._set_cp("A")
        self.contactor_closed = False
        self._outputs.append(EvContactor(False))  # whatever it was before we started

    def tick(self, now: float) -> None:
        rule = PHASES[self.phase]
        if rule.timeout_s is not None and now - self.phase_since >= rule.timeout_s - 1e-9:
            assert rule.after_timeout is not None
            why = f"{self.phase} timed out after {rule.timeout_s:g} s"
            if rule.after_timeout is Phase.FAILED:
                self._fail(now, why, rule.failure_reason)
            else:
                self._go(now, rule.after_timeout, why)
            return
        if self.phase is Phase.PRE_CHARGE:
            self._publish("dc_ev_target_voltage_current", self.precharge_target())
        elif self.phase is Phase.CURRENT_DEMAND:
            if self.battery.soc >= self.config.target_soc:
                self._stop(now, f"SoC reached {self.config.target_soc:g} %")
            else:
                self._current_demand_request()
        elif self.phase is Phase.WELDING:
            self._check_welding(now)

    # the charger's commands

    def on_authorization_response(self, now: float, status: str, certificate: str) -> None:
        """Latched while plugged in: EvseManager may answer before the car asks."""
        self.charger.received["authorization_response"] = (status, certificate)
        if self.plugged_in:
            self.auth_status = status
            self._check_authorization(now)

    def on_cable_check_finished(self, now: float, status: bool) -> None:
        self.charger.received["cable_check_finished"] = status
        if self.phase is not Phase.CABLE_CHECK:
            self._note(f"cable_check_finished({status}) ignored in {self.phase}", warning=True)
        elif status:
            self._go(now, Phase.PRE_CHARGE, "cable check passed")
        else:
            self._fail(now, "cable check failed", "EnergyTransferSetupFailed")

    def on_present_values(self, now: float, voltage: float, current: float) -> None:
        """Charge the battery with what flowed since the last reading; judge pre-charge."""
        view = self.charger
        if self.contactor_closed and view.present_at is not None:
            dt = min(max(now - view.present_at, 0.0), MAX_INTEGRATION_GAP_S)
            self.battery.charge(voltage * current * dt / 3600.0)
        view.present_V, view.present_A, view.present_at = voltage, current, now
        if self.phase is Phase.PRE_CHARGE:
            target = self.battery.voltage
            if abs(voltage - target) <= PRECHARGE_TOLERANCE * target:
                self._go(now, Phase.CURRENT_DEMAND, f"pre-charged to {voltage:.1f} V")
        elif self.phase is Phase.WELDING:
            self._check_welding(now)

    def on_maximum_limits(self, limits: dict[str, Any]) -> None:
        self.charger.maximum_limits = limits

    def on_minimum_limits(self, limits: dict[str, Any]) -> None:
        self.charger.minimum_limits = limits

    def on_stop_charging(self, now: float, stop: bool) -> None:
        self.charger.received["stop_charging"] = stop
        if stop:
            self._stop(now, "the charger asked to stop")

    def on_send_error(self, now: float, error: str) -> None:
        """An EVSE error (EVSE_EmergencyShutdown and the like): the car stops at once."""
        self.charger.error = error
        if self.in_session:
            self._fail(now, f"the charger reported {error}", None)

    def on_reset_error(self) -> None:
        self.charger.error = None

    def on_pwm_duty(self, now: float, duty_percent: float) -> None:
        self.pwm_duty = duty_percent
        running = PWM_MIN_DUTY < duty_percent < PWM_MAX_DUTY
        if not running:
            self.pwm_on_since = None
        elif self.pwm_on_since is None:
            self.pwm_on_since = now

    def record(self, command: str, value: Any) -> None:
        """Commands the simulated car has no use for: kept for inspection only."""
        self.charger.received[command] = value

    # the script's actions

    def plug_in(self, now: float) -> None:
        if self.phase is Phase.UNPLUGGED:
            self._go(now, Phase.CONNECTED, "plugged in")

    def unplug(self, now: float) -> None:
        """Whatever the session was doing: the charger sees CP A and ends it itself."""
        self._set_contactor(False)
        if self.diode_fault:
            self.diode_fault = False
            self._outputs.append(DiodeFault(False))
        self.auth_status = None
        if self.phase is not Phase.UNPLUGGED:
            self._go(now, Phase.UNPLUGGED, "unplugged")
        self._set_cp("A")

    def start_session(self, now: float, options: SessionOptions) -> None:
        if self.phase is Phase.UNPLUGGED:
            raise SessionError("cannot start a V2G session: the car is not plugged in")
        if self.in_session:
            raise SessionError(f"a V2G session is already running ({self.phase})")
        self.options = options
        self.failure = None
        self.stop_reason = None
        self._go(now, Phase.WAIT_AUTH, "V2G session started")

    def power_ready(self, now: float) -> None:
        """The EV is ready for power (iso_wait_pwr_ready): CP C, then CableCheckReq."""
        if self.phase is not Phase.AUTHORIZED:
            raise SessionError(f"not ready for the cable check in {self.phase}")
        self._go(now, Phase.CABLE_CHECK, "EV ready for power")

    def ev_stop(self, now: float, reason: str = "the EV stopped charging") -> None:
        self._stop(now, reason)

    def set_soc(self, soc: float) -> None:
        self.battery.soc = min(max(soc, 0.0), 100.0)

    def cap_current(self, current_A: float) -> None:
        self.current_cap_A = max(current_A, 0.0)

    def pause(self, now: float) -> None:
        """CP B and the contactor open, the V2G session untouched (EvManager's pause)."""
        if self.phase is Phase.UNPLUGGED:
            self.plug_in(now)
            return
        self._set_contactor(False)
        self._set_cp("B")

    def error_e(self) -> None:
        self._set_contactor(False)
        self._set_cp("E")

    def fail_diode(self) -> None:
        if not self.diode_fault:
            self.diode_fault = True
            self._outputs.append(DiodeFault(True))
        self._set_contactor(False)


_ENTRY = {
    Phase.WAIT_AUTH: EvModel._enter_wait_auth,
    Phase.AUTHORIZED: EvModel._enter_authorized,
    Phase.CABLE_CHECK: EvModel._enter_cable_check,
    Phase.PRE_CHARGE: EvModel._enter_pre_charge,
    Phase.CURRENT_DEMAND: EvModel._enter_current_demand,
    Phase.STOPPING: EvModel._enter_stopping,
    Phase.WELDING: EvModel._enter_welding,
    Phase.FINISHED: EvModel._enter_finished,
    Phase.FAILED: EvModel._enter_failed,
}
