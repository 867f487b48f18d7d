"""The charging core of PyEvseManager (DC). Pure: inputs are events with ``now``
(monotonic seconds), outputs are effects (effects.py), in order.

Layers, as in EVerest's EvseManager (shared/reference/evse-manager.md 1.3):
  * CP and relay feedback from evse_board_support, HLC (ISO 15118) events, commands,
    errors, energy limits and measurements update the core's facts;
  * ``_settle`` derives triggers from those facts and moves through the one table in
    table.py until nothing changes (EVerest re-runs its state machine the same way);
  * the DC sequence (cable check, pre-charge, current demand) runs inside
    PrepareCharging/Charging as timed steps (cable_check.py's steps, here inline).

Safety rules kept here, each checked by tests/unit/test_evse_invariants.py:
  * the power supply exports only in PrepareCharging (cable check, pre-charge) and
    Charging; every path out of those states commands setMode(Off);
  * setMode(Off) is always emitted before allow_power_on(false);
  * a High-severity error switches the output off and opens the relays at once;
  * without a valid energy limit the current setpoint is zero.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..framework.effects import ClearError, RaiseError
from ..framework.error_model import Severity
from .config import CABLE_CHECK_CURRENT_A, INSULATION_FAULT_OHM, SAFE_VOLTAGE_V, ChargerConfig
from .effects import (
    Call,
    Effect,
    Publish,
    SessionEvent,
    allow_power_on,
    psu_mode,
    psu_setpoint,
)
from .table import POWER_STATES, SESSION_STATES, State, Trigger, next_state

OVERCURRENT_GRACE_S = 1.5  # PSU readings lag by up to two publication periods
EV_INFO_INTERVAL_S = 1.0  # present values change at 4 Hz; EVerest also throttles ev_info
INOPERATIVE = "evse_manager/Inoperative"
CABLE_CHECK_FAULT = "evse_manager/MREC11CableCheckFault"
RESISTANCE_FAULT = "evse_manager/MREC22ResistanceFault"
OVER_VOLTAGE = "evse_manager/MREC5OverVoltage"
OVER_CURRENT = "evse_manager/MREC4OverCurrentFailure"
PLAUSIBILITY = "evse_manager/VoltagePlausibilityFault"
#: authorization/AuthorizationStatus values other than Accepted (what a car may be told)
REFUSALS = frozenset(
    {
        "Blocked",
        "ConcurrentTx",
        "Expired",
        "Invalid",
        "NoCredit",
        "NotAllowedTypeEVSE",
        "NotAtThisLocation",
        "NotAtThisTime",
        "Unknown",
        "PinRequired",
        "Timeout",
    }
)
SESSION_ERRORS = (CABLE_CHECK_FAULT, RESISTANCE_FAULT, OVER_VOLTAGE, OVER_CURRENT, PLAUSIBILITY)

#: Errors that never stop charging (EVerest's ignore list, ErrorHandling.cpp).
EXEMPT_ERRORS = frozenset(
    {
        INOPERATIVE,
        "evse_board_support/MREC3HighTemperature",
        "evse_board_support/MREC18CableOverTempDerate",
    }
)


def is_exempt(error_type: str) -> bool:
    return error_type in EXEMPT_ERRORS or error_type.endswith("/VendorWarning")


def emergency_threshold_V(ev_max_voltage: float) -> float:
    """IEC 61851-23:2023 Table 103, by the negotiated maximum voltage."""
    for limit, threshold in ((1000, 1375.0), (850, 1100.0), (750, 935.0), (500, 825.0)):
        if ev_max_voltage > limit:
            return threshold
    return 550.0


class DcPhase(StrEnum):
    NONE = "None"
    CABLE_CHECK = "CableCheck"
    PRE_CHARGE = "PreCharge"
    CURRENT_DEMAND = "CurrentDemand"


class CableCheckStep(StrEnum):
    WAIT_SAFE_VOLTAGE = "wait below 60 V"
    WAIT_RELAYS = "wait for relays closed"
    RAMP_UP = "ramp to test voltage"
    SELF_TEST = "IMD self-test"
    MEASURE = "insulation measurement"
    RAMP_DOWN = "ramp down below 60 V"


@dataclass
class Supply:
    capabilities: dict[str, Any] | None = None
    voltage_V: float = 0.0
    current_A: float = 0.0
    measured_at: float | None = None
    mode: str = "Off"  # what we last commanded
    setpoint: tuple[float, float] | None = None


@dataclass
class Ev:
    max_current_A: float | None = None
    max_voltage_V: float | None = None
    max_power_W: float | None = None
    target_voltage_V: float = 0.0
    target_current_A: float = 0.0
    soc: float | None = None


@dataclass
class EnergyBudget:
    power_W: float | None = None
    current_A: float | None = None
    valid_until: float = float("-inf")
    ever_received: bool = False


@dataclass
class Session:
    id: str
    cable_check_passed: bool = False
    authorized: bool = False
    transaction: bool = False
    token: dict[str, Any] | None = None
    stop_reason: str | None = None
    deauthorized: bool = False
    current_demand: bool = False
    ev_stopped: bool = False
    evse_paused: bool = False
    started_energy_Wh: float = 0.0


@dataclass
class CableCheck:
    step: CableCheckStep
    deadline: float
    test_voltage_V: float = 0.0
    samples: list[float] = field(default_factory=list)


class ChargerCore:
    def __init__(
        self,
        config: ChargerConfig,
        new_id: Callable[[], str] | None = None,
        timestamp: Callable[[], str] | None = None,
        energy_uuid: str = "evse_manager",
    ) -> None:
        self.config = config
        self.energy_uuid = energy_uuid
        self._new_id = new_id or (lambda: str(uuid.uuid4()))
        self._timestamp = timestamp or (lambda: "1970-01-01T00:00:00.000Z")
        self.meter: dict[str, Any] | None = None
        self.state = State.DISABLED
        self.cp = "A"
        self.pwm_on = False
        self.relays_allowed = False
        self.relays_closed = False
        self.supply = Supply()
        self.ev = Ev()
        self.energy = EnergyBudget()
        self.session: Session | None = None
        self.phase = DcPhase.NONE
        self.cable_check: CableCheck | None = None
        self.blocking: dict[tuple[str, str, str], Severity] = {}  # (source, type, sub_type)
        self.inoperative = False
        self.energy_meter_Wh = 0.0
        self.meter_voltage_V: float | None = None
        self._ramp_current_A = 0.0
        self._ramp_at: float | None = None
        self._pwm_at: float | None = None
        self._stopping_since: float | None = None
        self._no_energy_since: float | None = None
        self._over_voltage_since: float | None = None
        self._over_current_since: float | None = None
        self._implausible_since: float | None = None
        self._next_reclamp = 0.0
        self._next_energy_request = 0.0
        self._priority_request = False
        self._export_key: str | None = None
        self._lapse_reported = False
        self._next_ev_info = 0.0
        self._decreased_from: tuple[float, float] | None = None
        self._acknowledged_A: float | None = None  # the current of the last setpoint the PSU took
        self._published_limits: dict[str, Any] | None = None
        self._published_ev_info: dict[str, Any] | None = None
        self._disable_wanted = True  # until the adapter enables us after GlobalReady

    # commands

    def enable(self, enabled: bool, now: float) -> list[Effect]:
        """Disabling during a session ends its transaction (reason Local); the charger
        becomes Disabled once the session is over."""
        self._disable_wanted = not enabled
        effects: list[Effect] = [Call("bsp", "enable", {"value": enabled})]
        if not enabled:
            effects += self._safe_off("Other")
            if self.session is not None and self.session.transaction:
                self.session.stop_reason = self.session.stop_reason or "Local"
        return effects + self._settle(now)

    def authorize(
        self, token: dict[str, Any], accepted: bool, now: float, refused_as: str = "Invalid"
    ) -> list[Effect]:
        """``refused_as``: the validator's AuthorizationStatus, which the car is told."""
        session = self.session
        if session is None or self.state != State.WAITING_FOR_AUTHENTICATION:
            return []
        if not accepted:
            # ISO15118_charger takes the same AuthorizationStatus enum as the validation
            # result: pass the reason on, never a status the interface does not know
            status = refused_as if refused_as in REFUSALS else "Invalid"
            return [Call("hlc", "authorization_response", _auth(status))]
        session.authorized = True
        session.token = token
        return self._settle(now)

    def withdraw_authorization(self, now: float) -> list[Effect]:
        if self.session is None:
            return []
        self.session.deauthorized = True
        if self.session.stop_reason is None:
            self.session.stop_reason = "DeAuthorized"
        return self._settle(now)

    def stop_transaction(self, reason: str, now: float) -> list[Effect]:
        session = self.session
        if session is None or not session.transaction:
            return []
        session.stop_reason = reason
        effects: list[Effect] = []
        if reason == "EmergencyStop":
            effects.append(Call("hlc", "send_error", {"error": "Error_EmergencyShutdown"}))
        return effects + self._settle(now)

    def pause(self, now: float) -> list[Effect]:
        if self.session is None or not self.session.transaction:
            return []
        self.session.evse_paused = True
        return self._settle(now)

    def resume(self, now: float) -> list[Effect]:
        if self.session is None:
            return []
        self.session.evse_paused = False
        return self._settle(now)

    def enforce_limits(self, limits: dict[str, Any], now: float) -> list[Effect]:
        """EnforcedLimits from the energy manager; the budget lapses after valid_for."""
        if limits.get("uuid", self.energy_uuid) != self.energy_uuid:
            return []  # an energy node forwards every child's limits; these are not ours
        root = limits.get("limits_root_side") or {}
        power = _number(root.get("total_power_W"))
        self._lapse_reported = False
        self.energy = EnergyBudget(
            power_W=0.0 if power is None else power,  # DC needs a power budget
            current_A=_number(root.get("ac_max_current_A")),
            valid_until=now + float(limits.get("valid_for", 0)),
            ever_received=True,
        )
        # the supply first: a lower budget must reach the power modules before the round
        # trip that tells the car (the effect worker runs calls one after the other)
        effects: list[Effect] = [
            *self._apply_targets(now),
            Publish("evse", "enforced_limits", limits),
        ]
        return effects + self._dc_maximum_limits(now) + self._settle(now)

    # inputs from requirements

    def on_bsp_event(self, event: str, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if event == "PowerOn":
            self.relays_closed = True
        elif event == "PowerOff":
            self.relays_closed = False
        elif event in ("A", "B", "C", "D", "E", "F", "Disconnected"):
            previous, self.cp = self.cp, "A" if event == "Disconnected" else event
            effects += self._cp_changed(previous, now)
        return effects + self._settle(now)

    def on_hlc(self, var: str, value: Any, now: float) -> list[Effect]:
        handler = _HLC_HANDLERS.get(var)
        effects = handler(self, value, now) if handler is not None else []
        return effects + self._settle(now)

    def on_supply(self, voltage: float, current: float, now: float) -> list[Effect]:
        self.supply.voltage_V, self.supply.current_A = voltage, current
        self.supply.measured_at = now
        effects: list[Effect] = []
        if self.session is not None:  # also during welding detection, as EvseV2G reports it
            # measurement noise (a slightly negative current) and a broken reading must still
            # fit ISO 15118's ranges, or the car gets no present values at all
            present = {
                "evse_present_voltage": _within(voltage, ISO_MAX_VOLTAGE_V),
                "evse_present_current": _within(current, ISO_MAX_CURRENT_A),
            }
            effects.append(
                Call("hlc", "update_dc_present_values", {"present_voltage_current": present})
            )
        effects += self._monitor_output(now)
        effects += self._cable_check_progress(now)
        return effects + self._settle(now)

    def on_supply_capabilities(self, capabilities: dict[str, Any], now: float) -> list[Effect]:
        self.supply.capabilities = capabilities
        return self._dc_maximum_limits(now) + self._settle(now)

    def on_isolation(self, resistance_ohm: float, now: float) -> list[Effect]:
        effects: list[Effect] = []
        check = self.cable_check
        if check is not None and check.step == CableCheckStep.MEASURE:
            check.samples.append(resistance_ohm)
            effects += self._cable_check_progress(now)
        elif self.state == State.CHARGING and resistance_ohm < INSULATION_FAULT_OHM:
            effects += self._own_error(
                RESISTANCE_FAULT,
                "Resistance",
                f"insulation {resistance_ohm:.0f} Ohm",
                Severity.MEDIUM,
                now,
            )
        return effects + self._settle(now)

    def on_self_test(self, passed: bool, now: float) -> list[Effect]:
        check = self.cable_check
        if check is None or check.step != CableCheckStep.SELF_TEST:
            return []
        if not passed:
            return self._fail_cable_check("IMD self-test failed", now) + self._settle(now)
        return self._start_measuring(check, now) + self._settle(now)

    def on_meter(self, powermeter: dict[str, Any], now: float) -> list[Effect]:
        """The billing meter's reading (types/powermeter.yaml Powermeter)."""
        self.meter = powermeter
        self.energy_meter_Wh = float(powermeter["energy_Wh_import"]["total"])
        self.meter_voltage_V = (powermeter.get("voltage_V") or {}).get("DC")
        return [Publish("evse", "powermeter", powermeter), *self._monitor_output(now)]

    def on_error(
        self,
        source: str,
        error_type: str,
        sub_type: str,
        severity: Severity,
        *,
        active: bool,
        now: float,
    ) -> list[Effect]:
        """An error of a requirement (bsp, imd, powersupply_DC, ...) raised or cleared."""
        if is_exempt(error_type):
            return []
        key = (source, error_type, sub_type)
        if active:
            self.blocking[key] = severity
            effects = self._shutdown_for(severity)
        else:
            self.blocking.pop(key, None)
            effects = []
        return effects + self._inoperative() + self._settle(now)

    # time

    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self._pwm_at is not None and now >= self._pwm_at:
            self._pwm_at = None
            self.pwm_on = True
            effects.append(Call("bsp", "pwm_on", {"value": 5.0}))
        effects += self._cable_check_progress(now)
        effects += self._monitor_output(now)
        if not self._energy_valid(now) and self._had_budget and not self._lapse_reported:
            self._lapse_reported = True  # once: the lapse is news, the zero is not
            effects += self._dc_maximum_limits(now) + self._apply_targets(now)
        if self.state == State.CHARGING and now >= self._next_reclamp:
            self._next_reclamp = now + self.config.limits_reapply_interval_s
            effects += self._dc_maximum_limits(now) + self._apply_targets(now)
        if self.session is not None and now >= self._next_ev_info:
            self._next_ev_info = now + EV_INFO_INTERVAL_S
            info = self.ev_info()
            if info != self._published_ev_info:
                self._published_ev_info = info
                effects.append(Publish("evse", "ev_info", info))
        if now >= self._next_energy_request:
            self._next_energy_request = now + self.config.energy_request_interval_s
            request = self._energy_request()
            if self._priority_request:  # the energy manager answers it at once
                request["priority_request"] = True
                self._priority_request = False
            effects.append(Publish("energy_grid", "energy_flow_request", request))
        effects += self._stopping_timeout(now)
        return effects + self._settle(now)

    # the table

    def _settle(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for _ in range(10):  # EVerest allows 10 passes per tick too
            trigger = self._trigger(now)
            if trigger is None:
                break
            target = next_state(self.state, trigger)
            if target is None:
                break
            effects += self._leave(self.state, target, trigger, now)
            self.state = target
            effects += self._enter(target, trigger, now)
        return effects

    def _trigger(self, now: float) -> Trigger | None:
        """The first trigger that holds now and moves the current state (priority order)."""
        session = self.session
        unplugged = self.cp in ("A",)
        candidates: list[tuple[Trigger, bool]] = [
            (Trigger.UNPLUGGED, unplugged and self.state in SESSION_STATES),
            (Trigger.FAULT, bool(self.blocking)),
            (Trigger.DEAUTHORIZED, session is not None and session.deauthorized),
            (Trigger.EVSE_STOP, session is not None and self._evse_stop_wanted(now)),
            (Trigger.EV_STOPPED, session is not None and session.ev_stopped),
            (self._stopped_trigger(), self.state == State.STOPPING_CHARGING and self._output_off()),
            (Trigger.AUTHORIZED, session is not None and session.authorized and not self.blocking),
            (Trigger.CURRENT_DEMAND_STARTED, session is not None and session.current_demand),
            (
                Trigger.RESUMED,
                self.state == State.CHARGING_PAUSED_EVSE and not self._pause_reasons(now),
            ),
            (
                Trigger.PLUGGED_IN,
                self.cp in ("B", "C", "D") and not self.blocking and self.state == State.IDLE,
            ),
            (Trigger.ENABLED, not self._disable_wanted),
            (Trigger.DISABLED, self._disable_wanted),
        ]
        for trigger, holds in candidates:
            if holds and next_state(self.state, trigger) is not None:
                return trigger
        return None

    def _evse_stop_wanted(self, now: float) -> bool:
        session = self.session
        assert session is not None
        if session.stop_reason is not None and session.transaction:
            return True
        if self.state in (State.PREPARE_CHARGING, State.CHARGING):
            return session.evse_paused or self._no_energy_timed_out(now)
        return False

    def _stopped_trigger(self) -> Trigger:
        session = self.session
        over = (
            session is None
            or self.cp == "A"
            or session.deauthorized
            or session.stop_reason is not None
        )
        if over or session is None:
            return Trigger.STOPPED_END
        if self.blocking or session.evse_paused or self._no_energy_since is not None:
            return Trigger.STOPPED_PAUSE_EVSE
        return Trigger.STOPPED_PAUSE_EV

    def _output_off(self) -> bool:
        return self.supply.mode != "Export" and not self.relays_allowed and not self.relays_closed

    def _leave(self, state: State, target: State, trigger: Trigger, now: float) -> list[Effect]:
        effects: list[Effect] = []
        session = self.session
        if state == State.WAITING_FOR_AUTHENTICATION and target == State.PREPARE_CHARGING:
            assert session is not None
            session.transaction = True
            session.started_energy_Wh = self.energy_meter_Wh
            token = session.token or {}
            effects.append(SessionEvent("Authorized", session.id))
            effects.append(
                SessionEvent(
                    "TransactionStarted",
                    session.id,
                    {"transaction_started": {"id_tag": token, "meter_value": self._meter_value()}},
                )
            )
            effects.append(Call("hlc", "authorization_response", _auth("Accepted")))
        if state in POWER_STATES and target not in POWER_STATES:
            effects += self._output_stop(trigger)
        return effects

    def _enter(self, state: State, trigger: Trigger, now: float) -> list[Effect]:
        session = self.session
        effects: list[Effect] = []
        if state == State.IDLE:
            if session is not None:
                effects.append(
                    SessionEvent(
                        "SessionFinished",
                        session.id,
                        {"session_finished": {"meter_value": self._meter_value()}},
                    )
                )
            if trigger == Trigger.ENABLED:
                effects.append(SessionEvent("Enabled", "", {}))
            effects += self._reset_session(now)
            effects += self._pwm_off()
        elif state == State.DISABLED:
            effects.append(SessionEvent("Disabled", "", {}))
            effects += self._pwm_off()
        elif state == State.WAITING_FOR_AUTHENTICATION:
            self.session = Session(self._new_id())
            sid = self.session.id
            effects.append(
                SessionEvent(
                    "SessionStarted",
                    sid,
                    {
                        "session_started": {
                            "reason": "EVConnected",
                            "meter_value": self._meter_value(),
                        }
                    },
                )
            )
            effects.append(SessionEvent("AuthRequired", sid))
            self._pwm_at = now + self.config.sleep_before_enabling_pwm_hlc_mode_ms / 1000
            self._next_energy_request = now  # a priority request, as EVerest on plug-in
            self._priority_request = True
        elif state == State.PREPARE_CHARGING:
            assert session is not None
            session.ev_stopped = False
            session.current_demand = False
            effects.append(SessionEvent("PrepareCharging", session.id))
        elif state == State.CHARGING:
            assert session is not None
            self._next_reclamp = now + self.config.limits_reapply_interval_s
            effects.append(
                SessionEvent(
                    "ChargingStarted",
                    session.id,
                    {"charging_state_changed_event": {"meter_value": self._meter_value()}},
                )
            )
            effects.append(allow_power_on(True, "FullPowerCharging"))
            effects += self._apply_targets(now)
        elif state == State.STOPPING_CHARGING:
            assert session is not None
            self._stopping_since = now
            effects.append(SessionEvent("StoppingCharging", session.id))
            if trigger in (Trigger.EVSE_STOP, Trigger.DEAUTHORIZED, Trigger.FAULT):
                effects.append(Call("hlc", "stop_charging", {"stop": True}))
        elif state == State.CHARGING_PAUSED_EV:
            assert session is not None
            effects.append(SessionEvent("ChargingPausedEV", session.id))
        elif state == State.CHARGING_PAUSED_EVSE:
            assert session is not None
            reasons = sorted(self._pause_reasons(now)) or ["Error"]
            paused = {"charging_paused_evse": {"reasons": reasons}}
            effects.append(SessionEvent("ChargingPausedEVSE", session.id, paused))
        elif state == State.FINISHED:
            effects += self._finish(now)
        return effects

    # DC sequence

    def _cp_changed(self, previous: str, now: float) -> list[Effect]:
        effects: list[Effect] = []
        session = self.session
        if previous in ("C", "D") and self.cp not in ("C", "D"):
            # IEC 61851-23 Table A.6 seq 8.1: relays off within 100 ms on C->B (or worse)
            effects += self._safe_off("Charging")
            if session is not None and self.state in POWER_STATES:
                session.ev_stopped = True
        elif self.cp in ("C", "D") and self._contactor_wanted():
            effects += self._close_relays("DCCableCheck")
        if self.cp in ("E", "F") and self.state in POWER_STATES:
            effects += self._safe_off("Charging")
        return effects

    def _contactor_wanted(self) -> bool:
        check = self.cable_check
        return check is not None and check.step == CableCheckStep.WAIT_RELAYS

    def _close_relays(self, reason: str) -> list[Effect]:
        if self.relays_allowed or self.cp not in ("C", "D"):
            return []
        self.relays_allowed = True
        return [allow_power_on(True, reason)]

    def _start_cable_check(self, _value: Any, now: float) -> list[Effect]:
        if self.state != State.PREPARE_CHARGING:
            return []
        self.phase = DcPhase.CABLE_CHECK
        self.cable_check = CableCheck(
            CableCheckStep.WAIT_SAFE_VOLTAGE, now + self.config.cable_check_voltage_timeout_s
        )
        return self._cable_check_progress(now)

    def _cable_check_progress(self, now: float) -> list[Effect]:
        check = self.cable_check
        if check is None:
            return []
        if self.state != State.PREPARE_CHARGING:
            self.cable_check = None  # aborted: the session left PrepareCharging
            return []
        fresh = self.supply.measured_at is not None and now - self.supply.measured_at <= 2.0
        voltage = self.supply.voltage_V
        step = check.step
        if step == CableCheckStep.WAIT_SAFE_VOLTAGE and fresh and voltage < SAFE_VOLTAGE_V:
            check.step = CableCheckStep.WAIT_RELAYS
            check.deadline = now + self.config.cable_check_relays_closed_timeout_s
            return self._close_relays("DCCableCheck") + self._cable_check_progress(now)
        if step == CableCheckStep.WAIT_RELAYS and self.relays_closed:
            check.step = CableCheckStep.RAMP_UP
            check.deadline = now + self.config.cable_check_voltage_timeout_s
            check.test_voltage_V = self._test_voltage()
            return [
                psu_setpoint(check.test_voltage_V, CABLE_CHECK_CURRENT_A),
                *self._psu_export("CableCheck"),
            ]
        if step == CableCheckStep.RAMP_UP and fresh and abs(voltage - check.test_voltage_V) < 10:
            if not self.config.has_imd:
                return self._cable_check_passed("No_IMD", now)
            if self.config.cable_check_enable_imd_self_test:
                check.step = CableCheckStep.SELF_TEST
                check.deadline = now + self.config.cable_check_self_test_timeout_s
                return [Call("imd", "start_self_test", {"test_voltage_V": check.test_voltage_V})]
            return self._start_measuring(check, now)
        if step == CableCheckStep.MEASURE:
            wanted = self.config.cable_check_wait_number_of_imd_measurements
            if len(check.samples) >= wanted:
                if min(check.samples) < INSULATION_FAULT_OHM:
                    fault = self._own_error(
                        RESISTANCE_FAULT,
                        "Resistance",
                        f"insulation {min(check.samples):.0f} Ohm",
                        Severity.MEDIUM,
                        now,
                    )
                    return fault + self._fail_cable_check("insulation below 100 kOhm", now)
                return self._cable_check_passed("Valid", now)
        if step == CableCheckStep.RAMP_DOWN and fresh and voltage < SAFE_VOLTAGE_V:
            self.cable_check = None
            return [Call("hlc", "cable_check_finished", {"status": True})]
        if now > check.deadline:
            return self._fail_cable_check(f"timeout in step '{step}'", now)
        return []

    def _cable_checked(self) -> bool:
        return self.session is not None and self.session.cable_check_passed

    def _start_measuring(self, check: CableCheck, now: float) -> list[Effect]:
        check.step = CableCheckStep.MEASURE
        wanted = self.config.cable_check_wait_number_of_imd_measurements
        check.deadline = now + self.config.cable_check_measurement_timeout_s * wanted
        check.samples = []
        return [Call("imd", "start")]

    def _cable_check_passed(self, status: str, now: float) -> list[Effect]:
        check = self.cable_check
        assert check is not None
        effects: list[Effect] = [
            Call("hlc", "update_isolation_status", {"isolation_status": status})
        ]
        assert self.session is not None
        self.session.cable_check_passed = True
        if self.config.cable_check_wait_below_60V_before_finish:
            check.step = CableCheckStep.RAMP_DOWN
            check.deadline = now + self.config.cable_check_voltage_timeout_s
            return effects + self._psu_off("CableCheck")
        self.cable_check = None
        return [*effects, Call("hlc", "cable_check_finished", {"status": True})]

    def _fail_cable_check(self, why: str, now: float) -> list[Effect]:
        self.cable_check = None
        effects = self._psu_off("CableCheck")
        effects.append(Call("hlc", "cable_check_finished", {"status": False}))
        return effects + self._own_error(
            CABLE_CHECK_FAULT, "", f"cable check failed: {why}", Severity.MEDIUM, now
        )

    def _test_voltage(self) -> float:
        if self.config.dc_isolation_voltage_V > 0:
            return self.config.dc_isolation_voltage_V
        caps = self.supply.capabilities or {}
        psu_max = float(caps.get("max_export_voltage_V", 500.0))
        ev_max = self.ev.max_voltage_V or 500.0
        if ev_max <= 500:
            return min(ev_max + 50, 500.0, psu_max)
        return round(min(psu_max, 1.1 * ev_max), 1)

    def _start_pre_charge(self, _value: Any, now: float) -> list[Effect]:
        if self.state != State.PREPARE_CHARGING or not self._cable_checked():
            return []
        self.phase = DcPhase.PRE_CHARGE
        return self._apply_targets(now)

    def _current_demand_started(self, _value: Any, now: float) -> list[Effect]:
        if self.session is None or self.state != State.PREPARE_CHARGING:
            return []
        if not self._cable_checked():
            return []  # no power without a passed cable check, whatever the HLC says
        self.phase = DcPhase.CURRENT_DEMAND
        self.session.current_demand = True
        return []

    def _ev_targets(self, value: dict[str, Any], now: float) -> list[Effect]:
        voltage = float(value["dc_ev_target_voltage"])
        if voltage > 0:  # -20 quirk: 0 V means "keep the last one"
            self.ev.target_voltage_V = voltage
        self.ev.target_current_A = max(float(value["dc_ev_target_current"]), 0.0)
        return self._apply_targets(now)

    def _ev_limits(self, value: dict[str, Any], now: float) -> list[Effect]:
        self.ev.max_current_A = value.get("dc_ev_maximum_current_limit")
        self.ev.max_voltage_V = value.get("dc_ev_maximum_voltage_limit")
        self.ev.max_power_W = value.get("dc_ev_maximum_power_limit")
        return []

    def _ev_status(self, value: dict[str, Any], now: float) -> list[Effect]:
        self.ev.soc = value.get("dc_ev_ress_soc")
        return []

    def _ev_stop(self, _value: Any, now: float) -> list[Effect]:
        """PowerDelivery(Stop): the output goes off; the relays open on C->B (EVerest)."""
        if self.session is None or self.state not in POWER_STATES:
            return []
        self.session.ev_stopped = True
        return self._psu_off("Charging")

    def _dlink_terminate(self, _value: Any, now: float) -> list[Effect]:
        return self._pwm_off()

    def _apply_targets(self, now: float) -> list[Effect]:
        """Clamp the EV's request and ramp it; send a setpoint only when it changed."""
        if self.phase not in (DcPhase.PRE_CHARGE, DcPhase.CURRENT_DEMAND) or self.session is None:
            return []
        if self.state not in POWER_STATES or not self.relays_closed:
            return []
        voltage = self.ev.target_voltage_V
        if voltage <= 0:
            return []
        current = self._allowed_current(voltage, now)
        current = self._ramp(current, now)
        caps = self.supply.capabilities or {}
        if caps and not caps.get("min_export_voltage_V", 0) <= voltage <= caps.get(
            "max_export_voltage_V", voltage
        ):
            return []  # outside what the PSU can do: EVerest rejects it too
        effects: list[Effect] = []
        setpoint = (round(voltage, 3), round(current, 3))
        if self.supply.setpoint is not None and setpoint[1] < self.supply.setpoint[1]:
            self._decreased_from = (self.supply.setpoint[1], now)
        if setpoint != self.supply.setpoint:
            self.supply.setpoint = setpoint
            effects.append(psu_setpoint(*setpoint))
        phase = "PreCharge" if self.phase == DcPhase.PRE_CHARGE else "Charging"
        return effects + self._psu_export(phase)

    def _allowed_current(self, voltage: float, now: float) -> float:
        ev, caps = self.ev, self.supply.capabilities or {}
        current = ev.target_current_A
        limits = [ev.max_current_A, caps.get("max_export_current_A")]
        present = max(self.supply.voltage_V, voltage, 1.0)
        for power in (ev.max_power_W, caps.get("max_export_power_W"), self._allowed_power_W(now)):
            if power is not None:
                limits.append(power / present)
        for limit in limits:
            if limit is not None:
                current = min(current, float(limit))
        return max(current, 0.0)

    def _ramp(self, current: float, now: float) -> float:
        """Increases at dc_ramp_ampere_per_second; decreases at once."""
        if self._ramp_at is None or current <= self._ramp_current_A:
            ramped = current
        else:
            step = self.config.dc_ramp_ampere_per_second * (now - self._ramp_at)
            ramped = min(current, self._ramp_current_A + step)
        self._ramp_current_A, self._ramp_at = ramped, now
        return ramped

    def _psu_export(self, phase: str) -> list[Effect]:
        if self.state not in POWER_STATES or self.blocking:
            return []
        key = f"Export/{phase}"
        if self._export_key == key and self.supply.mode == "Export":
            return []
        self._export_key = key
        self.supply.mode = "Export"
        return [psu_mode("Export", phase)]

    def _psu_off(self, phase: str) -> list[Effect]:
        if self.supply.mode == "Off":
            return []
        self.supply.mode = "Off"
        self.supply.setpoint = None
        self._acknowledged_A = None
        self._export_key = None
        return [psu_mode("Off", phase)]

    def _safe_off(self, phase: str, force: bool = False) -> list[Effect]:
        """Output off, then the relays open: the order of power_supply_DC's guideline."""
        effects = self._psu_off(phase)
        if self.relays_allowed or (force and self.relays_closed):
            self.relays_allowed = False
            effects.append(allow_power_on(False, "PowerOff"))
        return effects

    def _output_stop(self, trigger: Trigger) -> list[Effect]:
        """Leaving the power states: the output goes off whatever the reason."""
        self.phase = DcPhase.NONE
        self.cable_check = None
        effects = self._psu_off("Charging")
        if trigger in (Trigger.UNPLUGGED, Trigger.FAULT) or self.cp not in ("C", "D"):
            effects += self._safe_off("Charging")
        effects.append(Call("imd", "stop"))
        return effects

    def _stopping_timeout(self, now: float) -> list[Effect]:
        if self.state != State.STOPPING_CHARGING or self._stopping_since is None:
            return []
        if now - self._stopping_since < self.config.stopping_charging_timeout_s:
            return []
        effects = self._safe_off("Charging", force=True)
        self.relays_closed = False  # hard stop: do not wait for feedback any longer
        return effects

    def _finish(self, now: float) -> list[Effect]:
        session = self.session
        assert session is not None
        effects = self._safe_off("Other") + self._pwm_off()
        if session.transaction:
            reason = session.stop_reason or ("EVDisconnected" if self.cp == "A" else "Local")
            effects.append(SessionEvent("ChargingFinished", session.id))
            effects.append(
                SessionEvent(
                    "TransactionFinished",
                    session.id,
                    {
                        "transaction_finished": {
                            "meter_value": self._meter_value(),
                            "reason": reason,
                            **({"id_tag": session.token} if session.token else {}),
                        }
                    },
                )
            )
            session.transaction = False
        return effects

    def _pwm_off(self) -> list[Effect]:
        self._pwm_at = None
        if not self.pwm_on:
            return []
        self.pwm_on = False
        return [Call("bsp", "cp_state_X1")]

    def _reset_session(self, now: float) -> list[Effect]:
        self.session = None
        self.phase = DcPhase.NONE
        self.cable_check = None
        self.ev = Ev()
        self._stopping_since = None
        self._no_energy_since = None
        self._ramp_at = None
        self._ramp_current_A = 0.0
        cleared: list[Effect] = []
        for key in [k for k in self.blocking if k[0] == "self" and k[1] in SESSION_ERRORS]:
            del self.blocking[key]
            cleared.append(ClearError(key[1], key[2]))
        return cleared + self._inoperative()

    def ev_info(self) -> dict[str, Any]:
        """What we know of the car (EVInfo): its limits, its request, what it gets."""
        ev = self.ev
        info: dict[str, Any] = {
            "present_voltage": self.supply.voltage_V,
            "present_current": self.supply.current_A,
            "target_voltage": ev.target_voltage_V,
            "target_current": ev.target_current_A,
        }
        optional = {
            "soc": ev.soc,
            "maximum_current_limit": ev.max_current_A,
            "maximum_voltage_limit": ev.max_voltage_V,
            "maximum_power_limit": ev.max_power_W,
        }
        info.update({k: v for k, v in optional.items() if v is not None})
        return info

    # limits and energy

    @property
    def _had_budget(self) -> bool:
        return self.energy.ever_received and self.energy.power_W is not None

    def _energy_valid(self, now: float) -> bool:
        return now < self.energy.valid_until

    def _allowed_power_W(self, now: float) -> float:
        """The energy budget; zero when it lapsed or none came (unless standalone)."""
        if self._energy_valid(now):
            power = self.energy.power_W
            return 0.0 if power is None else max(float(power), 0.0)
        if not self.energy.ever_received and self.config.standalone_power_W > 0:
            return self.config.standalone_power_W
        return 0.0

    def _dc_maximum_limits(self, now: float) -> list[Effect]:
        caps = self.supply.capabilities
        if caps is None:
            return []
        power = min(self._allowed_power_W(now), float(caps["max_export_power_W"]))
        voltage = max(self.supply.voltage_V, self.ev.target_voltage_V, 1.0)
        current = min(power / voltage, float(caps["max_export_current_A"]))
        # ISO 15118 cannot express more (DcEvseMaximumLimits); a supply that claims more, or
        # a negative figure, must not make every limits update fail validation
        limits = {
            "evse_maximum_current_limit": round(_within(current, ISO_MAX_CURRENT_A), 3),
            "evse_maximum_power_limit": round(_within(power, ISO_MAX_POWER_W), 1),
            "evse_maximum_voltage_limit": _within(
                float(caps["max_export_voltage_V"]), ISO_MAX_VOLTAGE_V
            ),
        }
        effects: list[Effect] = [
            Call("hlc", "update_dc_maximum_limits", {"maximum_limits": limits})
        ]
        offered = {
            "uuid": self.energy_uuid,
            "max_current": limits["evse_maximum_current_limit"],
            "nr_of_phases_available": 1,
        }
        if offered != self._published_limits:
            self._published_limits = offered
            effects.append(Publish("evse", "limits", offered))
        return effects

    def _no_energy_timed_out(self, now: float) -> bool:
        if self.state != State.CHARGING:
            self._no_energy_since = None
            return False
        if self._allowed_power_W(now) > 0:
            self._no_energy_since = None
            return False
        if self._no_energy_since is None:
            self._no_energy_since = now
        return now - self._no_energy_since >= self.config.hlc_charge_loop_without_energy_timeout_s

    def _pause_reasons(self, now: float) -> set[str]:
        reasons = set()
        if self.blocking:
            reasons.add("Error")
        if self.session is not None and self.session.evse_paused:
            reasons.add("UserPause")
        if self._allowed_power_W(now) <= 0:
            reasons.add("NoEnergy")
        return reasons

    def _energy_request(self) -> dict[str, Any]:
        caps = self.supply.capabilities or {}
        leaves = {
            "total_power_W": {
                "value": float(caps.get("max_export_power_W", 0.0)),
                "source": "PyEvseManager",
            }
        }
        return {
            "uuid": self.energy_uuid,
            "node_type": "Evse",
            "children": [],
            "evse_state": _EVSE_STATE.get(self.state, "Unplugged"),
            "schedule_export": [],
            "schedule_setpoints": [],
            "schedule_import": [
                {
                    "timestamp": self._timestamp(),
                    "limits_to_root": {},
                    "limits_to_leaves": leaves,
                }
            ],
        }

    # monitoring and errors

    def _monitor_output(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self.state == State.CHARGING and self.ev.max_voltage_V:
            voltage = self.supply.voltage_V
            if voltage > emergency_threshold_V(self.ev.max_voltage_V):
                effects += self._own_error(
                    OVER_VOLTAGE, "Emergency", f"{voltage:.1f} V", Severity.HIGH, now
                )
            elif voltage > self.ev.max_voltage_V:
                self._over_voltage_since = self._over_voltage_since or now
                if (
                    now - self._over_voltage_since
                    >= self.config.internal_over_voltage_duration_ms / 1000
                ):
                    effects += self._own_error(
                        OVER_VOLTAGE, "Error", f"{voltage:.1f} V", Severity.MEDIUM, now
                    )
            else:
                self._over_voltage_since = None
        if self.state == State.CHARGING and self.supply.setpoint is not None:
            limit = self._overcurrent_reference(now) * 1.1 + 5.0
            if self.supply.current_A > limit:
                self._over_current_since = self._over_current_since or now
                if (
                    now - self._over_current_since
                    >= self.config.internal_over_voltage_duration_ms / 1000
                ):
                    effects += self._own_error(
                        OVER_CURRENT, "", f"{self.supply.current_A:.1f} A", Severity.HIGH, now
                    )
            else:
                self._over_current_since = None
        if self.state == State.CHARGING and self.meter_voltage_V is not None:
            spread = abs(self.supply.voltage_V - self.meter_voltage_V)
            if spread > self.config.voltage_plausibility_max_spread_threshold_V:
                self._implausible_since = self._implausible_since or now
                if (
                    now - self._implausible_since
                    >= self.config.voltage_plausibility_fault_duration_ms / 1000
                ):
                    effects += self._own_error(
                        PLAUSIBILITY, "", f"spread {spread:.0f} V", Severity.HIGH, now
                    )
            else:
                self._implausible_since = None
        return effects

    def setpoint_delivered(self, current_A: float, now: float) -> list[Effect]:
        """The PSU took a setpoint (its setExportVoltageCurrent returned). Until then it still
        runs at the last one it took: a call can wait long in the effect queue, e.g. while
        the broker is away, and the PSU cannot follow a decrease it has not received."""
        if self.supply.setpoint is None:
            return []  # a late answer after the output went off; the next session starts over
        if self._acknowledged_A is not None and current_A < self._acknowledged_A:
            self._decreased_from = (self._acknowledged_A, now)
        self._acknowledged_A = current_A
        return []

    def _overcurrent_reference(self, now: float) -> float:
        """The setpoint the output may still be at: after a decrease the old one, until a
        reading taken after the change can have come back (measurements lag up to ~0.5 s);
        and never less than the last setpoint the PSU acknowledged."""
        assert self.supply.setpoint is not None
        current = self.supply.setpoint[1]
        if self._acknowledged_A is not None:
            current = max(current, self._acknowledged_A)
        if self._decreased_from is not None:
            previous, at = self._decreased_from
            if now - at < OVERCURRENT_GRACE_S:
                return max(current, previous)
        return current

    def _own_error(
        self, error_type: str, sub_type: str, message: str, severity: Severity, now: float
    ) -> list[Effect]:
        key = ("self", error_type, sub_type)
        if key in self.blocking:
            return []
        self.blocking[key] = severity
        effects: list[Effect] = [RaiseError(error_type, sub_type, message, severity)]
        return effects + self._shutdown_for(severity) + self._inoperative()

    def _shutdown_for(self, severity: Severity) -> list[Effect]:
        """EVerest's emergency (High) and error (Medium/Low) shutdowns, in its order."""
        effects: list[Effect] = []
        if severity == Severity.HIGH:
            effects += self._pwm_off()
        effects += self._safe_off("Charging")
        if severity == Severity.HIGH and self.session is not None:
            effects.append(Call("hlc", "send_error", {"error": "Error_EmergencyShutdown"}))
        return effects

    def _inoperative(self) -> list[Effect]:
        if self.blocking and not self.inoperative:
            self.inoperative = True
            causes = ", ".join(sorted(f"{t}" for _, t, _ in self.blocking))
            return [RaiseError(INOPERATIVE, "", f"blocked by {causes}", Severity.HIGH)]
        if not self.blocking and self.inoperative:
            self.inoperative = False
            return [ClearError(INOPERATIVE)]
        return []

    def _meter_value(self) -> dict[str, Any]:
        if self.meter is not None:
            return self.meter
        return {"timestamp": self._timestamp(), "energy_Wh_import": {"total": 0.0}}


def _number(value: Any) -> float | None:
    """EnforcedLimits carries NumberWithSource objects ({value, source}) per types/energy."""
    if isinstance(value, dict):
        value = value.get("value")
    return None if value is None else float(value)


def _auth(status: str) -> dict[str, Any]:
    return {"authorization_status": status, "certificate_status": "NoCertificateAvailable"}


_EVSE_STATE = {
    State.IDLE: "Unplugged",
    State.DISABLED: "Disabled",
    State.WAITING_FOR_AUTHENTICATION: "WaitForAuth",
    State.PREPARE_CHARGING: "PrepareCharging",
    State.CHARGING: "Charging",
    State.CHARGING_PAUSED_EV: "PausedEV",
    State.CHARGING_PAUSED_EVSE: "PausedEVSE",
    State.STOPPING_CHARGING: "Charging",
    State.FINISHED: "Finished",
}

_HLC_HANDLERS: dict[str, Callable[[ChargerCore, Any, float], list[Effect]]] = {
    "start_cable_check": ChargerCore._start_cable_check,
    "start_pre_charge": ChargerCore._start_pre_charge,
    "current_demand_started": ChargerCore._current_demand_started,
    "dc_ev_target_voltage_current": ChargerCore._ev_targets,
    "dc_ev_maximum_limits": ChargerCore._ev_limits,
    "dc_ev_status": ChargerCore._ev_status,
    "current_demand_finished": ChargerCore._ev_stop,
    "dc_open_contactor": ChargerCore._ev_stop,
    "dlink_terminate": ChargerCore._dlink_terminate,
    "dlink_error": ChargerCore._dlink_terminate,
    "dlink_pause": ChargerCore._dlink_terminate,
}


ISO_MAX_CURRENT_A = 10_000.0
ISO_MAX_POWER_W = 1_000_000.0
ISO_MAX_VOLTAGE_V = 1_500.0


def _within(value: float, high: float) -> float:
    return min(max(value, 0.0), high)
