"""PyExampleSupply: the framework demo's provider (power_supply_DC with cmds, vars, errors)."""

from __future__ import annotations

import logging
import threading
import time

from ..framework import HandlerException, Module, Severity
from .toy_supply import SetpointRefused, ToyLimits, ToySupply

log = logging.getLogger("PyExampleSupply")
OVERTEMP = "power_supply_DC/OverTemperature"


class SupplyAdapter:
    """Binds the toy model to the bus."""

    def __init__(self, module: Module) -> None:
        self.module = module
        cfg = module.impl_config("main")
        self.model = ToySupply(
            ToyLimits(
                cfg["max_voltage_V"],
                cfg["max_current_A"],
                cfg["max_power_W"],
                cfg["overtemperature_after_s"],
            )
        )
        self.period_s = cfg["publish_interval_ms"] / 1000.0
        self.errors = module.error_factory("main")
        self.lock = threading.Lock()
        module.implement_command("main", "setMode", self.set_mode)
        module.implement_command("main", "setExportVoltageCurrent", self.set_export)
        module.implement_command("main", "setImportVoltageCurrent", self.set_import)

    def set_mode(self, mode: str, phase: str) -> None:
        with self.lock:
            self.model.set_mode(mode)
        log.info("setMode %s (%s)", mode, phase)
        self.module.publish_variable("main", "mode", mode)

    def set_export(self, voltage: float, current: float) -> None:
        with self.lock:
            try:
                self.model.set_export(voltage, current)
            except SetpointRefused as exc:
                raise HandlerException(f"setpoint refused: {exc}") from None
        log.info("export setpoint %.1f V / %.1f A", voltage, current)

    def set_import(self, voltage: float, current: float) -> None:
        raise HandlerException("the toy supply cannot import (bidirectional: false)")

    def on_ready(self) -> None:
        limits = self.model.limits
        self.module.publish_variable(
            "main",
            "capabilities",
            {
                "bidirectional": False,
                "current_regulation_tolerance_A": 1.0,
                "peak_current_ripple_A": 0.5,
                "max_export_voltage_V": limits.max_voltage_V,
                "min_export_voltage_V": 0.0,
                "max_export_current_A": limits.max_current_A,
                "min_export_current_A": 0.0,
                "max_export_power_W": limits.max_power_W,
            },
        )
        self.module.publish_variable("main", "mode", self.model.mode)
        threading.Thread(target=self.run, name="toy-supply", daemon=True).start()

    def run(self) -> None:
        last = time.monotonic()
        while not self.module.stopped.wait(self.period_s):
            now = time.monotonic()
            with self.lock:
                was_hot = self.model.overheated
                self.model.tick(now - last)
                hot = self.model.overheated
                reading = {"voltage_V": self.model.voltage_V, "current_A": self.model.current_A}
            last = now
            self.module.publish_variable("main", "voltage_current", reading)
            if hot and not was_hot:
                self.module.raise_error(
                    "main",
                    self.errors.create(
                        OVERTEMP, message="toy heat sink at 95 °C", severity=Severity.HIGH
                    ),
                )
            elif was_hot and not hot:
                self.module.clear_error("main", OVERTEMP)


def main() -> None:
    module = Module.start()
    adapter = SupplyAdapter(module)
    module.init_done(adapter.on_ready)
    module.serve_forever()
