"""PyExampleConsumer: the framework demo's requirer. Drives a power_supply_DC and logs it."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from ..framework import CommandError, ErrorObject, Module

log = logging.getLogger("PyExampleConsumer")


class DemoFailed(RuntimeError):
    pass


class Consumer:
    def __init__(self, module: Module) -> None:
        self.module = module
        cfg = module.module_config
        self.voltage = float(cfg["target_voltage_V"])
        self.current = float(cfg["target_current_A"])
        self.timeout = float(cfg["step_timeout_s"])
        self.exit_when_done = bool(cfg["exit_when_done"])
        self.reached = threading.Event()
        self.fault_raised = threading.Event()
        self.fault_cleared = threading.Event()
        self.result = 1
        module.subscribe_variable("supply", "capabilities", self.on_capabilities)
        module.subscribe_variable("supply", "voltage_current", self.on_voltage_current)
        module.subscribe_error("supply", None, self.on_error_raised, self.on_error_cleared)

    def on_capabilities(self, caps: dict[str, Any]) -> None:
        log.info(
            "supply capabilities: up to %s V, %s A, %s W",
            caps["max_export_voltage_V"],
            caps["max_export_current_A"],
            caps["max_export_power_W"],
        )

    def on_voltage_current(self, reading: dict[str, float]) -> None:
        if reading["voltage_V"] >= self.voltage - 5 and not self.reached.is_set():
            log.info("output reached %.1f V / %.1f A", reading["voltage_V"], reading["current_A"])
            self.reached.set()

    def on_error_raised(self, error: ErrorObject) -> None:
        log.info(
            "error raised by %s: %s (%s) %s",
            error.origin.module_id,
            error.type,
            error.severity,
            error.message,
        )
        self.fault_raised.set()

    def on_error_cleared(self, error: ErrorObject) -> None:
        log.info("error cleared: %s", error.type)
        self.fault_cleared.set()

    def wait(self, event: threading.Event, what: str) -> None:
        if not event.wait(self.timeout):
            raise DemoFailed(f"gave up waiting for {what} after {self.timeout:g} s")

    def sequence(self) -> None:
        call = self.module.call_command
        try:
            call("supply", "setExportVoltageCurrent", {"voltage": 9999.0, "current": 10.0})
            raise DemoFailed("the supply accepted 9999 V")
        except CommandError as exc:
            log.info("9999 V refused as expected: %s", exc)
        call(
            "supply", "setExportVoltageCurrent", {"voltage": self.voltage, "current": self.current}
        )
        call("supply", "setMode", {"mode": "Export", "phase": "Charging"})
        log.info("asked for %.0f V / %.0f A, mode Export", self.voltage, self.current)
        self.wait(self.reached, "the output voltage")
        self.wait(self.fault_raised, "the supply's over-temperature fault")
        call("supply", "setMode", {"mode": "Off", "phase": "Charging"})
        log.info("switched the supply off")
        self.wait(self.fault_cleared, "the fault to clear")
        log.info("demo sequence complete")

    def run(self) -> None:
        try:
            self.sequence()
            self.result = 0
        except (DemoFailed, CommandError) as exc:
            log.error("demo failed: %s", exc)
            self.result = 1
        if self.exit_when_done:
            self.module.stop()


def main() -> None:
    module = Module.start()
    consumer = Consumer(module)
    module.init_done(
        lambda: threading.Thread(target=consumer.run, name="demo", daemon=True).start()
    )
    module.serve_forever()
    sys.exit(consumer.result if consumer.exit_when_done else 0)
