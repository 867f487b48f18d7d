"""PyHardwareSim: the hardware around a DC charge point for SIL runs, on the bus.

One module stands for the charger's board (``board_support``), the car's board on the
other end of the same cable (``ev_board_support``), the isolation monitor (``imd``) and
the DC meter (``powermeter``), as EVerest's YetiSimulator and IMDSimulator do together.
The behaviour lives in the pure model (``hardware_model``); this adapter feeds it the
commands, the power supply's readings and the time, and carries its effects out.

Threads: command handlers and the supply's var callback (framework workers) and one
timer thread all go through one lock, so the model sees one event at a time and its
effects leave in the order it produced them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..framework import ConfigError, ErrorFactory, Module
from .hardware_model import (
    BSP,
    EV,
    IMD,
    METER,
    Capabilities,
    ClearError,
    Effect,
    HardwareModel,
    Log,
    PilotOutput,
    Publish,
    RaiseError,
    SimConfig,
)

log = logging.getLogger("PyHardwareSim")
PSU = "powersupply"  # requirement id, as in EVerest's EvseManager
MAX_WAIT_S = 0.25  # the timer thread looks at module.stopped at least this often
Clock = Callable[[], float]
Result = TypeVar("Result")


def sim_config(cfg: Mapping[str, Any]) -> SimConfig:
    """The model's settings from the module config (the manager has filled in defaults);
    ValueError names what does not make sense."""
    capabilities = Capabilities(
        max_current_A=float(cfg["capabilities_max_current_A"]),
        min_current_A=float(cfg["capabilities_min_current_A"]),
        max_phase_count=int(cfg["capabilities_max_phase_count"]),
        min_phase_count=int(cfg["capabilities_min_phase_count"]),
        connector_type=str(cfg["connector_type"]),
    )
    return SimConfig(
        imd_resistance_F_Ohm=float(cfg["imd_resistance_F_Ohm"]),
        imd_interval_s=cfg["imd_interval_ms"] / 1000,
        imd_selftest_success=bool(cfg["imd_selftest_success"]),
        imd_selftest_duration_s=cfg["imd_selftest_duration_ms"] / 1000,
        imd_fault_after_s=float(cfg["imd_fault_after_s"]),
        meter_interval_s=cfg["meter_interval_ms"] / 1000,
        meter_id=str(cfg["meter_id"]),
        board_interval_s=cfg["board_interval_ms"] / 1000,
        emergency_stop_after_s=float(cfg["emergency_stop_after_s"]),
        capabilities=capabilities,
    )


class EffectSink:
    """Carries effects out. Vars published before GlobalReady reach nobody (requirers
    subscribe before ModuleReady, but vars are not retained), so everything but log lines
    is held until then and replayed in order. Callers hold the adapter's lock."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.factories: dict[str, ErrorFactory] = {
            impl: module.error_factory(impl) for impl in (BSP, EV, IMD, METER)
        }
        self._held: list[Effect] = []
        self._ready = False

    def __call__(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Log):
                log.log(logging.WARNING if effect.warning else logging.INFO, effect.message)
            elif self._ready:
                self._apply(effect)
            else:
                self._held.append(effect)

    def release(self) -> None:
        held, self._held, self._ready = self._held, [], True
        self(held)

    def _apply(self, effect: Effect) -> None:
        try:
            if isinstance(effect, Publish):
                self.module.publish_variable(effect.impl, effect.var, effect.value)
            elif isinstance(effect, RaiseError):
                factory = self.factories[effect.impl]
                error = factory.create(
                    effect.error_type, message=effect.message, severity=effect.severity
                )
                self.module.raise_error(effect.impl, error)
            elif isinstance(effect, ClearError):
                self.module.clear_error(effect.impl, effect.error_type)
        except Exception:  # a bug in one value must not stop the simulation's clock
            log.exception("could not carry out %s", effect)


class HardwareSim:
    """The adapter. Build it with ``attach``; ``ready`` is the GlobalReady callback.

    Besides the command handlers, its public methods are the operator's hands on the
    simulated hardware (thread-safe, for tests and demos): ``press_emergency_stop``,
    ``release_emergency_stop``, ``set_resistance``, ``raise_imd_fault``,
    ``clear_imd_fault``; and what an observer can read: ``relays_closed``, ``cp_state``,
    ``energy_Wh_import``.
    """

    def __init__(self, module: Module, model: HardwareModel, clock: Clock = time.monotonic):
        self.module = module
        self.model = model
        self._clock = clock
        self._sink = EffectSink(module)
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def attach(cls, module: Module) -> HardwareSim:
        """Build the simulation from ``module``'s config, register every command handler
        and the supply subscription (before init_done, as the framework requires)."""
        try:
            config = sim_config(module.module_config)
        except ValueError as exc:
            raise ConfigError(str(exc), module=module.info.id, key="config_module") from None
        wall_offset_s = time.time() - time.monotonic()
        sim = cls(module, HardwareModel(config, wall_offset_s))
        sim._bind()
        return sim

    def _bind(self) -> None:
        handlers: dict[tuple[str, str], Callable[..., Any]] = {
            (BSP, "enable"): self.bsp_enable,
            (BSP, "pwm_on"): self.pwm_on,
            (BSP, "cp_state_X1"): self.cp_state_x1,
            (BSP, "cp_state_F"): self.cp_state_f,
            (BSP, "cp_state_E"): self.cp_state_e,
            (BSP, "allow_power_on"): self.allow_power_on,
            (BSP, "ac_switch_three_phases_while_charging"): self.ac_switch_three_phases,
            (BSP, "ac_set_overcurrent_limit_A"): self.ac_set_overcurrent_limit_A,
            (EV, "enable"): self.ev_enable,
            (EV, "set_cp_state"): self.set_cp_state,
            (EV, "allow_power_on"): self.ev_allow_power_on,
            (EV, "diode_fail"): self.diode_fail,
            (EV, "set_ac_max_current"): self.set_ac_max_current,
            (EV, "set_three_phases"): self.set_three_phases,
            (EV, "set_rcd_error"): self.set_rcd_error,
            (IMD, "start"): self.imd_start,
            (IMD, "stop"): self.imd_stop,
            (IMD, "start_self_test"): self.start_self_test,
            (METER, "start_transaction"): self.start_transaction,
            (METER, "stop_transaction"): self.stop_transaction,
        }
        for (impl, cmd), handler in handlers.items():
            self.module.implement_command(impl, cmd, handler)
        if self.module.connections(PSU):
            self.module.subscribe_variable(PSU, "voltage_current", self.on_voltage_current)
        else:
            log.info("no power supply connected: the meter and the IMD see no voltage")

    # lifecycle

    def ready(self) -> None:
        """GlobalReady: replay what was held, publish the first values, start the clock."""
        with self._changed:
            self._sink.release()
            self._sink(self.model.start(self._clock()))
        self._thread = threading.Thread(target=self._run, name="hardware-sim", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the timer thread (the module's own close() ends the bus side)."""
        self._closing.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(2.0)

    def _run(self) -> None:
        with self._changed:
            while not (self._closing.is_set() or self.module.stopped.is_set()):
                self._sink(self.model.tick(self._clock()))
                deadline = self.model.next_deadline()
                wait = MAX_WAIT_S if deadline is None else deadline - self._clock()
                self._changed.wait(min(max(wait, 0.0), MAX_WAIT_S))

    def _step(self, step: Callable[[float], list[Effect]]) -> None:
        """Run one model input at the current time and carry out its effects."""
        with self._changed:
            self._sink(step(self._clock()))
            self._changed.notify_all()  # a deadline may have moved closer

    def _ask(self, question: Callable[[float], tuple[Result, list[Effect]]]) -> Result:
        """Like ``_step`` for inputs that also answer (the meter's transactions)."""
        with self._changed:
            answer, effects = question(self._clock())
            self._sink(effects)
            self._changed.notify_all()
        return answer

    # evse_board_support: the charger's board

    def bsp_enable(self, value: bool) -> None:
        self._step(lambda now: self.model.board.enable(value, now))

    def pwm_on(self, value: float) -> None:
        self._step(lambda now: self.model.board.pwm_on(value, now))

    def cp_state_x1(self) -> None:
        self._step(lambda now: self.model.board.drive(PilotOutput.X1, now))

    def cp_state_f(self) -> None:
        self._step(lambda now: self.model.board.drive(PilotOutput.F, now))

    def cp_state_e(self) -> None:
        self._step(lambda now: self.model.board.drive(PilotOutput.E, now))

    def allow_power_on(self, value: dict[str, Any]) -> None:
        allow, reason = bool(value["allow_power_on"]), str(value["reason"])
        self._step(lambda now: self.model.board.allow_power_on(allow, reason, now))

    def ac_switch_three_phases(self, value: bool) -> None:
        """Refused politely: capabilities say phases cannot change while charging."""
        log.warning("ac_switch_three_phases_while_charging(%s) ignored: not supported", value)

    def ac_set_overcurrent_limit_A(self, value: float) -> None:
        """There is no fast overcurrent trip to set on a DC charger's AC input here."""
        log.info("overcurrent limit %.1f A noted (no overcurrent hardware simulated)", value)

    # ev_board_support: the car's board

    def ev_enable(self, value: bool) -> None:
        self._step(lambda now: self.model.board.ev_enable(value, now))

    def set_cp_state(self, cp_state: str) -> None:
        self._step(lambda now: self.model.board.ev_set_cp_state(cp_state, now))

    def ev_allow_power_on(self, value: bool) -> None:
        self._step(lambda _now: self.model.board.ev_allow_power_on(value))

    def diode_fail(self, value: bool) -> None:
        self._step(lambda now: self.model.board.ev_diode_fail(value, now))

    def set_ac_max_current(self, current: float) -> None:
        self._step(lambda _now: self.model.board.ev_set_ac_max_current(current))

    def set_three_phases(self, three_phases: bool) -> None:
        self._step(lambda _now: self.model.board.ev_set_three_phases(three_phases))

    def set_rcd_error(self, rcd_current_mA: float) -> None:
        self._step(lambda now: self.model.board.ev_set_rcd_error(rcd_current_mA, now))

    # isolation_monitor

    def imd_start(self) -> None:
        self._step(self.model.imd.start)

    def imd_stop(self) -> None:
        self._step(lambda _now: self.model.imd.stop())

    def start_self_test(self, test_voltage_V: float) -> None:
        """Returns at once; self_test_result follows after imd_selftest_duration_ms."""
        self._step(lambda now: self.model.imd.start_self_test(test_voltage_V, now))

    # powermeter

    def start_transaction(self, value: dict[str, Any]) -> dict[str, Any]:
        return self._ask(lambda now: self.model.meter.start_transaction(value, now))

    def stop_transaction(self, transaction_id: str) -> dict[str, Any]:
        return self._ask(lambda now: self.model.meter.stop_transaction(transaction_id, now))

    # the power supply (requirement ``powersupply``)

    def on_voltage_current(self, value: dict[str, Any]) -> None:
        voltage, current = float(value["voltage_V"]), float(value["current_A"])
        self._step(lambda now: self.model.supply_reading(voltage, current, now))

    # the operator's hands

    def press_emergency_stop(self) -> None:
        """Raise MREC8EmergencyStop and open the contactors until released."""
        self._step(self.model.board.press_emergency_stop)

    def release_emergency_stop(self) -> None:
        self._step(lambda _now: self.model.board.release_emergency_stop())

    def set_resistance(self, ohm: float) -> None:
        """The isolation resistance the IMD reports from its next reading on."""
        self._step(lambda _now: self.model.imd.set_resistance(ohm))

    def raise_imd_fault(self, message: str = "IMD self-check failed (simulated)") -> None:
        """Raise isolation_monitor/DeviceFault; readings stop until it is cleared."""
        self._step(lambda _now: self.model.imd.raise_device_fault(message))

    def clear_imd_fault(self) -> None:
        self._step(lambda _now: self.model.imd.clear_device_fault())

    # what an observer can read

    @property
    def relays_closed(self) -> bool:
        with self._changed:
            return self.model.board.relays_closed

    @property
    def cp_state(self) -> str:
        with self._changed:
            return self.model.board.line_state()

    @property
    def energy_Wh_import(self) -> float:
        with self._changed:
            self.model.meter.advance(self._clock())
            return self.model.meter.import_Wh


def main() -> None:
    module = Module.start()
    sim = HardwareSim.attach(module)
    module.init_done(sim.ready)
    try:
        module.serve_forever()
    finally:
        sim.close()
