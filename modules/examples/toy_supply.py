"""The pure model behind PyExampleSupply: a DC output that ramps toward its setpoint."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToyLimits:
    max_voltage_V: float
    max_current_A: float
    max_power_W: float
    overtemperature_after_s: float


class SetpointRefused(ValueError):
    """The requested setpoint is outside what the toy supply can do."""


@dataclass
class ToySupply:
    limits: ToyLimits
    mode: str = "Off"
    target_voltage_V: float = 0.0
    target_current_A: float = 0.0
    voltage_V: float = 0.0
    current_A: float = 0.0
    exporting_for_s: float = 0.0
    overheated: bool = False

    #: volts per second; a real module ramps its output too
    RAMP_V_PER_S = 800.0

    def set_export(self, voltage: float, current: float) -> None:
        limits = self.limits
        if not 0 <= voltage <= limits.max_voltage_V:
            raise SetpointRefused(f"{voltage} V is outside 0..{limits.max_voltage_V} V")
        if not 0 <= current <= limits.max_current_A:
            raise SetpointRefused(f"{current} A is outside 0..{limits.max_current_A} A")
        if voltage * current > limits.max_power_W:
            raise SetpointRefused(f"{voltage * current:.0f} W is above {limits.max_power_W} W")
        self.target_voltage_V, self.target_current_A = voltage, current

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode != "Export":
            self.exporting_for_s = 0.0

    def tick(self, dt_s: float) -> None:
        """Advance the model by ``dt_s`` seconds."""
        target = self.target_voltage_V if self.mode == "Export" else 0.0
        step = self.RAMP_V_PER_S * dt_s
        self.voltage_V = (
            min(target, self.voltage_V + step)
            if target > self.voltage_V
            else max(target, self.voltage_V - step)
        )
        self.current_A = self.target_current_A if self.mode == "Export" else 0.0
        if self.mode == "Export":
            self.exporting_for_s += dt_s
            limit = self.limits.overtemperature_after_s
            if limit > 0 and self.exporting_for_s >= limit:
                self.overheated = True
        else:
            self.overheated = False
