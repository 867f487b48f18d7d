"""PyEvseManager: the charging core bound to the framework.

Inputs (vars, errors, commands) go to the core under one lock; its effects go to one
worker thread that carries them out in order, waiting for each command to return. That
worker is what makes setMode(Off) return before allow_power_on(false) is even sent.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..framework import CommandError, ErrorObject, Module
from ..framework.effects import ClearError, RaiseError
from ..framework.error_model import rfc3339_ms
from .config import ChargerConfig
from .core import _HLC_HANDLERS, ChargerCore
from .effects import Call, Effect, Publish, SessionEvent, allow_power_on, psu_mode

log = logging.getLogger("PyEvseManager")

CALL_TIMEOUT_S = 5.0
OFF_TIMEOUT_S = 5.0  # setMode(Off) may wait for the current to fall (PSU guideline 3)
TICK_S = 0.1  # EVerest's Charger main loop
PROGRESS_EVERY_S = 2.0


def charger_config(cfg: dict[str, Any], has_imd: bool) -> ChargerConfig:
    return ChargerConfig(
        connector_id=int(cfg["connector_id"]),
        evse_id=str(cfg["evse_id"]),
        dc_isolation_voltage_V=float(cfg["dc_isolation_voltage_V"]),
        cable_check_enable_imd_self_test=bool(cfg["cable_check_enable_imd_self_test"]),
        cable_check_wait_number_of_imd_measurements=int(
            cfg["cable_check_wait_number_of_imd_measurements"]
        ),
        cable_check_wait_below_60V_before_finish=bool(
            cfg["cable_check_wait_below_60V_before_finish"]
        ),
        cable_check_relays_closed_timeout_s=float(cfg["cable_check_relays_closed_timeout_s"]),
        dc_ramp_ampere_per_second=float(cfg["dc_ramp_ampere_per_second"]),
        hlc_charge_loop_without_energy_timeout_s=float(
            cfg["hlc_charge_loop_without_energy_timeout_s"]
        ),
        internal_over_voltage_duration_ms=float(cfg["internal_over_voltage_duration_ms"]),
        voltage_plausibility_max_spread_threshold_V=float(
            cfg["voltage_plausibility_max_spread_threshold_V"]
        ),
        voltage_plausibility_fault_duration_ms=float(cfg["voltage_plausibility_fault_duration_ms"]),
        sleep_before_enabling_pwm_hlc_mode_ms=float(cfg["sleep_before_enabling_pwm_hlc_mode_ms"]),
        standalone_power_W=float(cfg["standalone_power_W"]),
        has_imd=has_imd,
    )


def wall_clock() -> str:
    return rfc3339_ms(datetime.now(UTC))


@dataclass
class EffectWorker:
    """Carries effects out one by one; held until GlobalReady (vars sent earlier are lost)."""

    module: Module
    connector_id: int
    #: called with the current of each setExportVoltageCurrent the PSU took
    on_setpoint_taken: Callable[[float], None] = lambda _current: None
    _queue: queue.Queue[Effect | None] = field(default_factory=queue.Queue)
    _ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._errors = self.module.error_factory("evse")
        self._thread = threading.Thread(target=self._run, name="evse-effects", daemon=True)
        self._thread.start()

    def submit(self, effects: list[Effect]) -> None:
        for effect in effects:
            self._queue.put(effect)

    def ready(self) -> None:
        self._ready.set()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(OFF_TIMEOUT_S + 1)

    def _run(self) -> None:
        self._ready.wait()
        while (effect := self._queue.get()) is not None:
            try:
                self._apply(effect)
            except Exception:  # one failed effect must not stop the ones after it
                log.exception("could not carry out %s", effect)

    def _apply(self, effect: Effect) -> None:
        module = self.module
        if isinstance(effect, Call):
            self._call(effect)
        elif isinstance(effect, Publish):
            module.publish_variable(effect.impl, effect.var, effect.value)
        elif isinstance(effect, SessionEvent):
            event = {
                "uuid": effect.session_id,
                "timestamp": wall_clock(),
                "connector_id": self.connector_id,
                "event": effect.event,
                **effect.details,
            }
            module.publish_variable("evse", "session_event", event)
            log.info("session event %s", effect.event)
        elif isinstance(effect, RaiseError):
            error = self._errors.create(
                effect.error_type, effect.sub_type, effect.message, effect.severity
            )
            module.raise_error("evse", error)
        elif isinstance(effect, ClearError):
            module.clear_error("evse", effect.error_type, effect.sub_type)

    def _call(self, call: Call) -> None:
        if not self.module.connections(call.requirement):
            return  # an optional requirement (imd, meter) that is not connected
        off = call.cmd == "setMode" and call.args.get("mode") != "Export"
        timeout = OFF_TIMEOUT_S if off else CALL_TIMEOUT_S
        try:
            self.module.call_command(call.requirement, call.cmd, call.args or None, timeout=timeout)
        except CommandError as exc:
            log.warning("%s.%s failed: %s", call.requirement, call.cmd, exc)
            return
        if call.cmd == "setExportVoltageCurrent":
            self.on_setpoint_taken(float(call.args["current"]))


class PyEvseManager:
    """Handlers and subscriptions: each turns one input into one core call."""

    def __init__(self, module: Module, clock: Callable[[], float] = time.monotonic) -> None:
        self.module = module
        self.clock = clock
        cfg = module.module_config
        self.core = ChargerCore(
            charger_config(cfg, has_imd=bool(module.connections("imd"))),
            timestamp=wall_clock,
            energy_uuid=module.info.id,
        )
        self.effects = EffectWorker(
            module,
            int(cfg["connector_id"]),
            lambda current: self.feed(self.core.setpoint_delivered, current),
        )
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._bind_commands()
        self._subscribe()

    def feed(self, event: Callable[..., list[Effect]], *args: Any, **kwargs: Any) -> None:
        with self.lock:
            effects = event(*args, **kwargs, now=self.clock())
            self.effects.submit(effects)

    # commands of evse_manager and energy

    def _bind_commands(self) -> None:
        m, core = self.module, self.core
        m.implement_command("evse", "get_evse", self.get_evse)
        m.implement_command("evse", "enable_disable", self.enable_disable)
        m.implement_command(
            "evse",
            "authorize_response",
            lambda provided_token, validation_result: self.feed(
                core.authorize,
                provided_token,
                validation_result.get("authorization_status") == "Accepted",
                refused_as=str(validation_result.get("authorization_status")),
            ),
        )
        m.implement_command(
            "evse", "withdraw_authorization", lambda: self.feed(core.withdraw_authorization)
        )
        m.implement_command("evse", "reserve", lambda reservation_id: False)  # not yet
        m.implement_command("evse", "cancel_reservation", lambda: None)
        m.implement_command("evse", "pause_charging", lambda: self._flag(core.pause))
        m.implement_command("evse", "resume_charging", lambda: self._flag(core.resume))
        m.implement_command(
            "evse",
            "stop_transaction",
            lambda request: self._flag(core.stop_transaction, request["reason"]),
        )
        m.implement_command("evse", "force_unlock", lambda connector_id: True)
        m.implement_command("evse", "external_ready_to_start_charging", lambda: True)
        m.implement_command(
            "evse", "set_plug_and_charge_configuration", lambda plug_and_charge_configuration: None
        )
        m.implement_command(
            "evse",
            "update_allowed_energy_transfer_modes",
            lambda allowed_energy_transfer_modes: "Accepted",
        )
        m.implement_command(
            "energy_grid", "enforce_limits", lambda value: self.feed(core.enforce_limits, value)
        )

    def _flag(self, method: Callable[..., list[Effect]], *args: Any) -> bool:
        had_session = self.core.session is not None and self.core.session.transaction
        self.feed(method, *args)
        return had_session

    def get_evse(self) -> dict[str, Any]:
        connector = {"id": self.core.config.connector_id, "type": "cCCS2"}
        return {"id": self.core.config.connector_id, "connectors": [connector]}

    def enable_disable(self, connector_id: int, cmd_source: dict[str, Any]) -> bool:
        enabled = cmd_source.get("enable_state") != "Disable"
        self.feed(self.core.enable, enabled)
        return enabled

    # what the requirements tell us

    def _subscribe(self) -> None:
        m, core = self.module, self.core
        m.subscribe_variable("bsp", "event", lambda v: self.feed(core.on_bsp_event, v["event"]))
        for var in _HLC_HANDLERS:
            m.subscribe_variable("hlc", var, self._hlc_var(var))
        # republished for OCPP and the API, as EVerest's EvseManager does
        m.subscribe_variable(
            "bsp", "capabilities", lambda v: m.publish_variable("evse", "hw_capabilities", v)
        )
        m.subscribe_variable(
            "hlc", "selected_protocol", lambda v: m.publish_variable("evse", "selected_protocol", v)
        )
        m.subscribe_variable(
            "powersupply_DC",
            "voltage_current",
            lambda v: self.feed(core.on_supply, v["voltage_V"], v["current_A"]),
        )
        m.subscribe_variable(
            "powersupply_DC", "capabilities", lambda v: self.feed(core.on_supply_capabilities, v)
        )
        if m.connections("imd"):
            m.subscribe_variable(
                "imd",
                "isolation_measurement",
                lambda v: self.feed(core.on_isolation, v["resistance_F_Ohm"]),
            )
            m.subscribe_variable(
                "imd", "self_test_result", lambda v: self.feed(core.on_self_test, v)
            )
        if m.connections("powermeter_car_side"):
            m.subscribe_variable(
                "powermeter_car_side", "powermeter", lambda v: self.feed(core.on_meter, v)
            )
        for requirement in ("bsp", "powersupply_DC", "imd", "powermeter_car_side"):
            if m.connections(requirement):
                m.subscribe_error(requirement, None, *self._error_callbacks(requirement))

    def _hlc_var(self, name: str) -> Callable[[Any], None]:
        return lambda value: self.feed(self.core.on_hlc, name, value)

    def _error_callbacks(
        self, requirement: str
    ) -> tuple[Callable[[ErrorObject], None], Callable[[ErrorObject], None]]:
        return (
            lambda error: self._error(requirement, error, active=True),
            lambda error: self._error(requirement, error, active=False),
        )

    def _error(self, requirement: str, error: ErrorObject, *, active: bool) -> None:
        self.feed(
            self.core.on_error,
            requirement,
            error.type,
            error.sub_type,
            error.severity,
            active=active,
        )

    # lifecycle

    def on_ready(self) -> None:
        self.effects.ready()
        self.module.publish_variable("evse", "ready", True)
        # a restarted EvseManager (everkit run --restart) cannot know what its killed
        # predecessor left on: the supply may still export into closed relays
        self.effects.submit([psu_mode("Off", "Other"), allow_power_on(False, "PowerOff")])
        self.feed(self.core.enable, True)
        threading.Thread(target=self._tick, name="evse-tick", daemon=True).start()

    def _tick(self) -> None:
        next_report = 0.0
        while not self.stopping.wait(TICK_S):
            self.feed(self.core.tick)
            if self.core.state.value == "Charging" and self.clock() >= next_report:
                next_report = self.clock() + PROGRESS_EVERY_S
                log.info("%s", self.progress())

    def progress(self) -> str:
        """One line for operators and the demo: what is flowing right now."""
        core = self.core
        voltage, current = core.supply.voltage_V, core.supply.current_A
        session = core.session
        delivered = core.energy_meter_Wh - (session.started_energy_Wh if session else 0.0)
        soc = f", car at {core.ev.soc:.1f} %" if core.ev.soc is not None else ""
        return (
            f"charging: {voltage:6.1f} V {current:6.1f} A {voltage * current / 1000:5.1f} kW, "
            f"{delivered / 1000:.3f} kWh delivered{soc}"
        )

    def close(self) -> None:
        self.stopping.set()
        self.effects.stop()


def main() -> None:
    module = Module.start()
    manager = PyEvseManager(module)
    module.init_done(manager.on_ready)
    try:
        module.serve_forever()
    finally:
        manager.close()
