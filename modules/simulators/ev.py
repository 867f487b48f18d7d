"""PyEvSimulator: a car and its ISO 15118 stack in one module, for SIL.

It provides ``charger: ISO15118_charger``, exactly what EvseV2G provides to EvseManager,
and plays the car behind it (``ev_model``), driven by EvManager's script language
(``ev_script``). It moves the car's CP state and contactor through the required
``ev_board_support`` (PyHardwareSim) and learns from its ``bsp_measurement`` when the
charger's PWM runs.

Threads: command handlers and var callbacks (the framework's workers), a tick thread
(every 250 ms: the script, then the model's timers and periodic requests) and one writer
thread. All of them step the model under one lock and queue its outputs in order; the
writer alone publishes vars and calls ev_board_support, in that same order, so a slow or
absent ev_board_support never blocks a charger command. The writer starts at GlobalReady:
nothing is published before (vars are not retained).
"""

from __future__ import annotations

import functools
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..framework import CommandError, ConfigError, Module
from .ev_model import (
    DiodeFault,
    EvConfig,
    EvContactor,
    EvModel,
    Note,
    Output,
    Phase,
    Publish,
    SetCp,
)
from .ev_script import ScriptError, ScriptRunner, parse

log = logging.getLogger("PyEvSimulator")
IMPL = "charger"
BSP = "ev_board_support"
TICK_S = 0.25
BSP_TIMEOUT_S = 5.0

# ISO15118_charger commands the car has no use for: their values are only recorded
RECORDED = (
    "setup",
    "set_charging_parameters",
    "session_setup",
    "bpt_setup",
    "set_powersupply_capabilities",
    "ac_contactor_closed",
    "dlink_ready",
    "receipt_is_required",
    "pause_charging",
    "no_energy_pause_charging",
    "update_energy_transfer_modes",
    "update_ac_max_current",
    "update_ac_parameters",
    "update_ac_maximum_limits",
    "update_ac_minimum_limits",
    "update_ac_target_values",
    "update_ac_present_power",
    "update_isolation_status",
    "update_meter_info",
)


@dataclass(frozen=True)
class BspCall:
    command: str
    args: dict[str, Any]


def bsp_call(output: SetCp | EvContactor | DiodeFault) -> BspCall:
    if isinstance(output, SetCp):
        return BspCall("set_cp_state", {"cp_state": output.state})
    if isinstance(output, EvContactor):
        return BspCall("allow_power_on", {"value": output.closed})
    return BspCall("diode_fail", {"value": output.value})


def ev_config(cfg: dict[str, Any]) -> EvConfig:
    """The manifest's config keys (EvManager's names) as the model's config."""
    return EvConfig(
        evcc_id=str(cfg["evcc_id"]),
        nominal_voltage_V=float(cfg["dc_target_voltage"]),
        cc_current_A=float(cfg["dc_target_current"]),
        max_current_A=float(cfg["dc_max_current_limit"]),
        max_power_W=float(cfg["dc_max_power_limit"]),
        max_voltage_V=float(cfg["dc_max_voltage_limit"]),
        capacity_Wh=float(cfg["dc_energy_capacity"]),
        initial_soc=float(cfg["soc"]),
        target_soc=float(cfg["target_soc"]),
    )


class EvSimulator:
    """One simulated car. Build it with ``attach``; tests use ``execute``, ``state``,
    ``soc`` and ``wait_for``."""

    def __init__(self, module: Module, config: EvConfig, auto_enable: bool) -> None:
        self.module = module
        self.model = EvModel(config)
        self.auto_enable = auto_enable
        self.runner: ScriptRunner | None = None
        self.last_bsp_event: str | None = None
        self._auto_script: str | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._outbox: queue.Queue[Publish | BspCall | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def attach(cls, module: Module) -> EvSimulator:
        """Read the config, register every handler and subscription; ``init_done`` and
        ``on_ready`` are the caller's (main or a test)."""
        cfg = module.module_config
        where = {"module": module.info.id}
        try:
            sim = cls(module, ev_config(cfg), bool(cfg["auto_enable"]))
        except ValueError as exc:
            raise ConfigError(str(exc), key="config_module", **where) from None
        script = str(cfg["auto_exec_commands"])
        if cfg["auto_exec"] and script.strip():
            try:
                parse(script)  # a broken script stops the module now, not mid-session
            except ScriptError as exc:
                key = "config_module.auto_exec_commands"
                raise ConfigError(str(exc), key=key, **where) from None
            sim._auto_script = script
        sim._register()
        return sim

    def _register(self) -> None:
        handle = self.module.implement_command
        handle(IMPL, "authorization_response", self._authorization_response)
        handle(IMPL, "cable_check_finished", self._cable_check_finished)
        handle(IMPL, "update_dc_present_values", self._present_values)
        handle(IMPL, "update_dc_maximum_limits", self._maximum_limits)
        handle(IMPL, "update_dc_minimum_limits", self._minimum_limits)
        handle(IMPL, "stop_charging", self._stop_charging)
        handle(IMPL, "send_error", self._send_error)
        handle(IMPL, "reset_error", self._reset_error)
        handle(IMPL, "update_supported_app_protocols", self._app_protocols)
        for command in RECORDED:
            handle(IMPL, command, functools.partial(self._record, command))
        self.module.subscribe_variable(BSP, "bsp_measurement", self._bsp_measurement)
        self.module.subscribe_variable(BSP, "bsp_event", self._bsp_event)

    # the public surface

    @property
    def state(self) -> Phase:
        return self.model.phase

    @property
    def soc(self) -> float:
        return self.model.battery.soc

    @property
    def script_error(self) -> str | None:
        """Why the script stopped early, None while it runs or after it completed."""
        runner = self.runner
        return None if runner is None else runner.error

    @property
    def script_finished(self) -> bool:
        """The last script completed or stopped with an error."""
        runner = self.runner
        return runner is not None and runner.finished

    def execute(self, script: str) -> None:
        """Replace the running script (EvManager's execute_charging_session). A script
        that does not parse raises ScriptError and leaves the running one alone."""
        steps = parse(script)
        with self._lock:
            self.runner = ScriptRunner(steps)
        log.info("script: %s", script.strip())

    def wait_for(self, predicate: Callable[[EvSimulator], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds (checked after every model step)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def on_ready(self) -> None:
        """GlobalReady: start publishing; the car starts unplugged; run auto_exec."""
        if self.auto_enable:
            self._outbox.put(BspCall("enable", {"value": True}))
        self._step(self.model.start)
        for target, name in ((self._write, "ev-writer"), (self._tick_loop, "ev-tick")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._auto_script is not None:
            self.execute(self._auto_script)

    def close(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(2.0)

    # stepping the model

    def _step(self, action: Callable[[float], None]) -> None:
        with self._changed:
            action(time.monotonic())
            self._flush()

    def _flush(self) -> None:
        """Under the lock: queue the model's outputs in their order, log its notes."""
        for output in self.model.take_outputs():
            self._dispatch(output)
        self._changed.notify_all()

    def _dispatch(self, output: Output) -> None:
        if isinstance(output, Note):
            log.log(logging.WARNING if output.warning else logging.INFO, "%s", output.message)
        elif isinstance(output, Publish):
            self._outbox.put(output)
        else:
            self._outbox.put(bsp_call(output))

    def _tick(self, now: float) -> None:
        if self.runner is not None:
            self._run_script(self.runner, now)
        self.model.tick(now)

    def _run_script(self, runner: ScriptRunner, now: float) -> None:
        if runner.current is None:
            return
        done = runner.tick(self.model, now)
        if done is not None:
            log.debug("script: %s done", done)
        if runner.error is not None:
            log.error("script stopped: %s", runner.error)
        elif runner.finished:
            log.info("script finished")

    def _tick_loop(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += TICK_S
            if self._stop.wait(max(next_at - time.monotonic(), 0.0)):
                return
            if self.module.stopped.is_set():
                return
            self._step(self._tick)

    def _write(self) -> None:
        while (item := self._outbox.get()) is not None:
            if self.module.stopped.is_set():
                continue  # shutting down: the connection is going away
            try:
                if isinstance(item, Publish):
                    self.module.publish_variable(IMPL, item.var, item.value)
                else:
                    self.module.call_command(BSP, item.command, item.args, timeout=BSP_TIMEOUT_S)
            except CommandError as exc:
                log.error("ev_board_support.%s failed: %s", getattr(item, "command", ""), exc)
            except Exception:  # the writer must outlive one bad item
                log.exception("could not send %s", item)

    # the charger's commands and the board's vars

    def _authorization_response(self, authorization_status: str, certificate_status: str) -> None:
        self._step(
            lambda now: self.model.on_authorization_response(
                now, authorization_status, certificate_status
            )
        )

    def _cable_check_finished(self, status: bool) -> None:
        self._step(lambda now: self.model.on_cable_check_finished(now, status))

    def _present_values(self, present_voltage_current: dict[str, Any]) -> None:
        voltage = float(present_voltage_current["evse_present_voltage"])
        current = float(present_voltage_current.get("evse_present_current", 0.0))
        self._step(lambda now: self.model.on_present_values(now, voltage, current))

    def _maximum_limits(self, maximum_limits: dict[str, Any]) -> None:
        self._step(lambda _now: self.model.on_maximum_limits(maximum_limits))

    def _minimum_limits(self, minimum_limits: dict[str, Any]) -> None:
        self._step(lambda _now: self.model.on_minimum_limits(minimum_limits))

    def _stop_charging(self, stop: bool) -> None:
        self._step(lambda now: self.model.on_stop_charging(now, stop))

    def _send_error(self, error: str) -> None:
        self._step(lambda now: self.model.on_send_error(now, error))

    def _reset_error(self) -> None:
        self._step(lambda _now: self.model.on_reset_error())

    def _app_protocols(self, supported_app_protocols: dict[str, Any]) -> bool:
        """Recorded; the simulated car speaks ISO 15118-2 whatever the list says."""
        self._remember("update_supported_app_protocols", supported_app_protocols)
        return True

    def _record(self, command: str, **args: Any) -> None:
        self._remember(command, args)

    def _remember(self, command: str, value: Any) -> None:
        self._step(lambda _now: self.model.record(command, value))

    def _bsp_measurement(self, measurement: dict[str, Any]) -> None:
        duty = float(measurement["cp_pwm_duty_cycle"])
        self._step(lambda now: self.model.on_pwm_duty(now, duty))

    def _bsp_event(self, event: dict[str, Any]) -> None:
        self.last_bsp_event = str(event["event"])
        log.debug("ev_board_support event %s", self.last_bsp_event)


def main() -> None:
    module = Module.start()
    sim = EvSimulator.attach(module)
    module.init_done(sim.on_ready)
    if module.module_config["exit_when_done"]:
        threading.Thread(target=_stop_when_done, args=(module, sim), daemon=True).start()
    try:
        module.serve_forever()
    finally:
        sim.close()
    if module.module_config["exit_when_done"] and sim.script_error is not None:
        sys.exit(1)


def _stop_when_done(module: Module, sim: EvSimulator) -> None:
    """For demos: end the module (and with it `everkit run`) when the script ends."""
    done = lambda s: s.script_finished or s.script_error is not None  # noqa: E731
    while not module.stopped.is_set():
        if sim.wait_for(done, timeout=1.0):
            module.stop()
            return
