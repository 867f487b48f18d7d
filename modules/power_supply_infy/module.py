"""PyInfyPowerDC: binds the driver core to the framework and to a python-can bus."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can

from ..framework import ConfigError, HandlerException, Module
from ..framework.effects import ClearError, RaiseError
from ..framework.error_model import Severity
from .controller_watch import CONTROLLER_LOST, CONTROLLER_SUB_TYPE, Action, ControllerWatch
from .core import DriverConfig, DriverCore, Effect, Publish, SetpointRefused
from .runner import DriverRunner
from .simulator import CanSimulator, Load, ModuleStack, SimulatedModule
from .status import bit_named

log = logging.getLogger("PyInfyPowerDC")
IMPL = "main"
WATCH_PERIOD_S = 0.5  # how often the MQTT link to the controller is looked at


def parse_addresses(text: str) -> tuple[int, ...]:
    try:
        addresses = tuple(int(part, 0) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ValueError(
            f"module_addresses must be comma-separated numbers, got {text!r}"
        ) from None
    return addresses


def driver_config(cfg: dict[str, Any]) -> DriverConfig:
    return DriverConfig(
        module_addresses=parse_addresses(str(cfg["module_addresses"])),
        controller_address=int(cfg["controller_address"]),
        safe_off_current_A=float(cfg["safe_off_current_A"]),
        off_timeout_s=cfg["off_timeout_ms"] / 1000,
        comm_fault_timeout_s=cfg["comm_fault_timeout_ms"] / 1000,
        module_timeout_s=cfg["module_timeout_ms"] / 1000,
        publish_interval_s=cfg["publish_interval_ms"] / 1000,
        poll_interval_s=cfg["poll_interval_ms"] / 1000,
        resend_interval_s=cfg["resend_interval_ms"] / 1000,
        min_current_A=float(cfg["min_current_A"]),
        current_regulation_tolerance_A=float(cfg["current_regulation_tolerance_A"]),
        peak_current_ripple_A=float(cfg["peak_current_ripple_A"]),
    )


class EffectsToBus:
    """Carries vars and errors to the framework; holds them until GlobalReady, because a
    var published before the requirers subscribed is lost (EVerest's convention)."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.errors = module.error_factory(IMPL)
        self._held: list[Effect] = []
        self._while_away: dict[str, Publish] = {}
        self._ready = False
        self._lock = threading.Lock()

    def __call__(self, effect: Effect) -> None:
        with self._lock:
            if not self._ready:
                self._held.append(effect)
                return
            if isinstance(effect, Publish) and not self.module.broker_connected:
                # a var is the latest state: readings queued through a broker outage would
                # reach EvseManager as a burst of stale values; keep the newest of each
                self._while_away[effect.var] = effect
                return
            away, self._while_away = self._while_away, {}
        for held in away.values():
            self._apply(held)
        self._apply(effect)

    def flush(self) -> None:
        """Once the broker is back: the newest value of each var held while it was away."""
        if not self.module.broker_connected:
            return
        with self._lock:
            away, self._while_away = self._while_away, {}
        for effect in away.values():
            self._apply(effect)

    def ready(self) -> None:
        with self._lock:
            held, self._held, self._ready = self._held, [], True
        latest: dict[str, Publish] = {}
        for effect in held:
            if isinstance(effect, Publish):
                latest[effect.var] = effect  # only the newest value of each var matters
            else:
                self._apply(effect)
        for effect in latest.values():
            self._apply(effect)

    def _apply(self, effect: Effect) -> None:
        if isinstance(effect, Publish):
            self.module.publish_variable(IMPL, effect.var, effect.value)
        elif isinstance(effect, RaiseError):
            error = self.errors.create(
                effect.error_type, effect.sub_type, effect.message, effect.severity
            )
            self.module.raise_error(IMPL, error)
        elif isinstance(effect, ClearError):
            self.module.clear_error(IMPL, effect.error_type, effect.sub_type)


class InfyPowerSupply:
    """The command handlers: thin calls into the core through the runner."""

    def __init__(
        self,
        module: Module,
        runner: DriverRunner,
        config: DriverConfig,
        on_phase: Callable[[str, str], None] | None = None,
        sink: Callable[[Effect], None] | None = None,
    ) -> None:
        self.runner = runner
        self.core = runner.core
        self.config = config
        self.on_phase = on_phase
        self.sink = sink or (lambda _effect: None)
        self.watch = ControllerWatch()
        self._watch_lock = threading.Lock()
        module.implement_command(IMPL, "setMode", self.set_mode)
        module.implement_command(IMPL, "setExportVoltageCurrent", self.set_export)
        module.implement_command(IMPL, "setImportVoltageCurrent", self.set_import)

    def _run(self, method: Callable[..., Any], *args: Any) -> None:
        try:
            self.runner.command(method, *args)
        except SetpointRefused as exc:
            raise HandlerException(str(exc)) from None

    def set_mode(self, mode: str, phase: str) -> None:
        if self.on_phase is not None:
            self.on_phase(mode, phase)
        self._run(self.core.set_mode, mode, phase)
        self._heard(mode)
        if mode != "Export":
            # guideline 3: return once the current is safe, never later than the bound
            limit = self.config.off_timeout_s + self.config.poll_interval_s
            self.runner.wait_until(self.core.off_settled, limit)
            if not self.runner.query(self.core.off_current_safe) and not self.core.comm_fault:
                log.warning(
                    "setMode(%s) returns after %g s without seeing the current fall below "
                    "%g A: relays may open under load",
                    mode,
                    self.config.off_timeout_s,
                    self.config.safe_off_current_A,
                )

    def check_controller(self, connected: bool) -> None:
        """Called periodically with the MQTT link state; see controller_watch.py."""
        with self._watch_lock:
            exporting = self.core.desired_mode == "Export"
            action = self.watch.update(connected, exporting, time.monotonic())
        if action is Action.SWITCH_OFF:
            log.error(
                "no MQTT link to the controller for %g s: switching the output off",
                self.watch.off_after_s,
            )
            if self.on_phase is not None:
                self.on_phase("Off", self.core.desired_phase)
            self._run(self.core.set_mode, "Off", self.core.desired_phase)
        self._carry_out(action)

    def _heard(self, mode: str | None) -> None:
        with self._watch_lock:
            action = self.watch.command(mode)
        self._carry_out(action)

    def _carry_out(self, action: Action | None) -> None:
        if action is Action.RAISE:
            message = (
                f"no MQTT link to the controller for {self.watch.off_after_s:g} s: "
                "the output was switched off"
            )
            self.sink(RaiseError(CONTROLLER_LOST, CONTROLLER_SUB_TYPE, message, Severity.HIGH))
        elif action is Action.CLEAR:
            self.sink(ClearError(CONTROLLER_LOST, CONTROLLER_SUB_TYPE))

    def set_export(self, voltage: float, current: float) -> None:
        self._run(self.core.set_export, voltage, current)
        self._heard(None)

    def set_import(self, voltage: float, current: float) -> None:
        self._run(self.core.set_import, voltage, current)


def open_bus(cfg: dict[str, Any]) -> can.BusABC:
    kwargs: dict[str, Any] = {"interface": cfg["can_interface"], "channel": cfg["can_channel"]}
    if cfg["can_interface"] not in ("socketcan", "virtual"):
        kwargs["bitrate"] = int(cfg["can_bitrate"])  # socketcan takes it from `ip link`
    return can.Bus(**kwargs)


@dataclass
class CanRecorder:
    """``can_log_file``: every frame on the bus, both directions, through a second handle
    on the same bus (as candump would), written by python-can's Logger (the file suffix
    picks the format: .log candump, .asc, .blf, .csv)."""

    bus: can.BusABC
    logger: can.Listener
    notifier: can.Notifier

    @classmethod
    def open(cls, cfg: dict[str, Any]) -> CanRecorder:
        path = Path(cfg["can_log_file"])
        path.parent.mkdir(parents=True, exist_ok=True)
        bus = open_bus(cfg)
        logger = can.Logger(str(path))
        return cls(bus, logger, can.Notifier(bus, [logger]))

    def close(self) -> None:
        self.notifier.stop()
        self.logger.stop()
        self.bus.shutdown()


def host_simulator(cfg: dict[str, Any], addresses: tuple[int, ...]) -> CanSimulator:
    """Simulated modules on the driver's own virtual channel: frames still cross a bus."""
    modules = [
        SimulatedModule(
            address,
            max_voltage_V=cfg["sim_max_voltage_V"],
            min_voltage_V=cfg["sim_min_voltage_V"],
            max_current_A=cfg["sim_max_current_A"],
            rated_power_W=cfg["sim_rated_power_W"],
        )
        for address in addresses
    ]
    bus = can.Bus(interface="virtual", channel=cfg["can_channel"])
    # the car's contactor is open until EvseManager says the phase is Charging
    load = Load(battery_emf_V=float(cfg["sim_battery_V"])).open_circuit()
    simulator = CanSimulator(bus, ModuleStack(modules, load=load))
    simulator.start()
    if cfg["sim_overtemperature_after_s"] or cfg["sim_silent_after_s"]:
        threading.Thread(
            target=_scheduled_faults,
            args=(simulator, modules, cfg),
            name="infy-sim-faults",
            daemon=True,
        ).start()
    return simulator


def _follow_phase(simulator: CanSimulator, cfg: dict[str, Any]) -> Callable[[str, str], None]:
    """SIL only: the simulated car battery hangs on the output while the phase is
    Charging; in cable check and pre-charge the car's contactor is still open."""
    battery = Load(battery_emf_V=float(cfg["sim_battery_V"]))

    def follow(mode: str, phase: str) -> None:
        with simulator.lock:
            charging = mode == "Export" and phase == "Charging"
            simulator.stack.load = battery if charging else battery.open_circuit()

    return follow


def _scheduled_faults(
    simulator: CanSimulator, modules: list[SimulatedModule], cfg: dict[str, Any]
) -> None:
    """Fault injection for SIL tests, timed from the modules' first switch-on."""
    while not any(m.on for m in modules):
        if simulator.stopped.wait(0.1):  # a schedule of a simulator, not a test wait
            return
    on_at = time.monotonic()
    plan = sorted(
        (delay, kind)
        for kind, delay in (
            ("hot", float(cfg["sim_overtemperature_after_s"])),
            ("silent", float(cfg["sim_silent_after_s"])),
        )
        if delay > 0
    )
    for delay, kind in plan:
        if simulator.stopped.wait(max(0.0, on_at + delay - time.monotonic())):
            return
        with simulator.lock:
            if kind == "hot":
                modules[0].inject_status(bit_named("over-temperature"))
            else:
                for module in modules:
                    module.go_silent()
        log.warning("simulator: injected fault %r", kind)
        if kind == "silent" and cfg["sim_silent_for_s"]:
            if simulator.stopped.wait(float(cfg["sim_silent_for_s"])):
                return
            with simulator.lock:
                for module in modules:
                    module.resume()
            log.warning("simulator: modules answer again")


def _watch_controller(module: Module, supply: InfyPowerSupply, sink: EffectsToBus) -> None:
    while not module.stopped.wait(WATCH_PERIOD_S):  # a periodic check, not a test wait
        supply.check_controller(module.broker_connected)
        sink.flush()


@dataclass
class PyInfyPowerDC:
    """Everything one driver instance owns."""

    module: Module
    runner: DriverRunner
    bus: can.BusABC
    sink: EffectsToBus
    simulator: CanSimulator | None
    closed: bool = False
    recorder: CanRecorder | None = None

    @classmethod
    def attach(cls, module: Module) -> PyInfyPowerDC:
        """Build the driver for ``module``'s config, register its handlers, start it."""
        cfg = module.impl_config(IMPL)
        where = {"module": module.info.id}
        try:
            config = driver_config(cfg)
        except ValueError as exc:
            raise ConfigError(str(exc), key=f"config_implementation.{IMPL}", **where) from None
        if cfg["simulate_modules"] and cfg["can_interface"] != "virtual":
            raise ConfigError(
                "simulate_modules needs can_interface: virtual",
                key=f"config_implementation.{IMPL}.simulate_modules",
                **where,
            )
        simulator = (
            host_simulator(cfg, config.module_addresses) if cfg["simulate_modules"] else None
        )
        try:
            bus = open_bus(cfg)
        except (OSError, can.CanError, ValueError) as exc:
            if simulator is not None:
                simulator.stop()
            raise ConfigError(
                f"cannot open CAN {cfg['can_interface']} channel {cfg['can_channel']!r}: {exc}",
                key=f"config_implementation.{IMPL}.can_interface",
                **where,
            ) from None
        sink = EffectsToBus(module)
        runner = DriverRunner(DriverCore(config), bus, sink)
        supply = InfyPowerSupply(
            module, runner, config, _follow_phase(simulator, cfg) if simulator else None, sink
        )
        runner.start()
        threading.Thread(
            target=_watch_controller,
            args=(module, supply, sink),
            name="infy-mqtt-watch",
            daemon=True,
        ).start()
        recorder = CanRecorder.open(cfg) if cfg["can_log_file"] else None
        return cls(module, runner, bus, sink, simulator, recorder=recorder)

    def close(self) -> None:
        """Switch the modules off before letting go of them: their own watchdog would keep
        the output on for another 10 s."""
        if self.closed:
            return
        self.closed = True
        try:
            self.runner.command(self.runner.core.set_mode, "Off", "Other")
        except Exception:  # shutting down anyway; the watchdog is the last line
            log.exception("could not send Off on shutdown")
        self.runner.stop()
        self.bus.shutdown()
        if self.simulator is not None:
            self.simulator.stop()
        if self.recorder is not None:
            self.recorder.close()


def main() -> None:
    module = Module.start()
    driver = PyInfyPowerDC.attach(module)
    module.init_done(driver.sink.ready)
    try:
        module.serve_forever()
    finally:
        driver.close()
