"""A tiny deterministic world around ChargerCore for unit tests: the BSP closes relays
when allowed in CP C, the PSU follows its setpoint at once, the IMD answers, and the test
plays the car through ``hlc``. Every effect is kept with its time, in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from everkit.evse_manager.config import ChargerConfig
from everkit.evse_manager.core import ChargerCore
from everkit.evse_manager.effects import Call, Effect, SessionEvent
from everkit.framework.definitions import Definitions
from everkit.framework.validation import ValidatorCache

ENERGY = ValidatorCache(Definitions.from_dirs())["energy"]


def enforced_limits(
    power_W: float | None,
    valid_for: int,
    uuid: str = "evse_manager",
    current_A: float | None = None,
) -> dict[str, Any]:
    """An EnforcedLimits exactly as types/energy.yaml has it, checked like the bus would."""
    root: dict[str, Any] = {}
    if power_W is not None:
        root["total_power_W"] = {"value": power_W, "source": "test"}
    if current_A is not None:
        root["ac_max_current_A"] = {"value": current_A, "source": "test"}
    limits = {"uuid": uuid, "valid_for": valid_for, "schedule": [], "limits_root_side": root}
    ENERGY.check_args("enforce_limits", {"value": limits})
    return limits


@dataclass
class World:
    core: ChargerCore
    now: float = 1000.0
    log: list[tuple[float, Effect]] = field(default_factory=list)
    psu_mode: str = "Off"
    psu_setpoint: tuple[float, float] = (0.0, 0.0)
    resistance_ohm: float = 900_000.0
    self_test_ok: bool = True
    imd_on: bool = False
    pending_self_test: bool = False
    battery_V: float = 380.0

    @classmethod
    def make(cls, **config: Any) -> World:
        counter = iter(range(1, 1000))
        core = ChargerCore(ChargerConfig(**config), new_id=lambda: f"session-{next(counter)}")
        world = cls(core)
        world.feed(core.enable(True, world.now))
        return world

    def feed(self, effects: list[Effect]) -> None:
        for effect in effects:
            self.log.append((self.now, effect))
        for effect in effects:
            if isinstance(effect, Call):
                self._react(effect)

    def _react(self, call: Call) -> None:
        core, args = self.core, call.args
        if call.requirement == "bsp" and call.cmd == "allow_power_on":
            allowed = args["value"]["allow_power_on"]
            if allowed and core.cp in ("C", "D") and not core.relays_closed:
                self.feed(core.on_bsp_event("PowerOn", self.now))
            elif not allowed and core.relays_closed:
                self.feed(core.on_bsp_event("PowerOff", self.now))
        elif call.requirement == "powersupply_DC" and call.cmd == "setMode":
            self.psu_mode = args["mode"]
        elif call.requirement == "powersupply_DC" and call.cmd == "setExportVoltageCurrent":
            self.psu_setpoint = (args["voltage"], args["current"])
        elif call.requirement == "imd" and call.cmd == "start_self_test":
            self.pending_self_test = True
        elif call.requirement == "imd" and call.cmd == "start":
            self.imd_on = True
        elif call.requirement == "imd" and call.cmd == "stop":
            self.imd_on = False

    def step(self, seconds: float = 0.25) -> None:
        """Advance time; the plant reports measurements; the core ticks."""
        self.now = round(self.now + seconds, 6)
        voltage, current = self.output()
        self.feed(self.core.on_supply(voltage, current, self.now))
        if self.pending_self_test:
            self.pending_self_test = False
            self.feed(self.core.on_self_test(self.self_test_ok, self.now))
        if self.imd_on:
            self.feed(self.core.on_isolation(self.resistance_ohm, self.now))
        self.feed(self.core.tick(self.now))

    def output(self) -> tuple[float, float]:
        if self.psu_mode != "Export":
            return 0.0, 0.0
        voltage, current = self.psu_setpoint
        if self.core.relays_closed and voltage >= self.battery_V:
            return voltage, current
        return voltage, 0.0

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.25)):
            self.step()

    # the car

    def enforce(self, power_W: float | None, valid_for: int = 60, **kwargs: Any) -> None:
        self.feed(self.core.enforce_limits(enforced_limits(power_W, valid_for, **kwargs), self.now))

    def cp(self, state: str) -> None:
        self.feed(self.core.on_bsp_event(state, self.now))

    def hlc(self, var: str, value: Any = None) -> None:
        self.feed(self.core.on_hlc(var, value, self.now))

    def events(self) -> list[str]:
        return [e.event for _, e in self.log if isinstance(e, SessionEvent)]

    def calls(self, requirement: str | None = None, cmd: str | None = None) -> list[Call]:
        return [
            e
            for _, e in self.log
            if isinstance(e, Call)
            and (requirement is None or e.requirement == requirement)
            and (cmd is None or e.cmd == cmd)
        ]

    def plug_in_and_authorize(self, max_voltage: float = 500.0) -> None:
        self.cp("B")
        self.run(1.0)  # 5 % PWM after 500 ms
        self.feed(
            self.core.authorize(
                {"id_token": {"value": "TOKEN1", "type": "Central"}}, True, self.now
            )
        )
        self.hlc(
            "dc_ev_maximum_limits",
            {
                "dc_ev_maximum_current_limit": 200.0,
                "dc_ev_maximum_power_limit": 100000.0,
                "dc_ev_maximum_voltage_limit": max_voltage,
            },
        )

    def through_cable_check(self) -> None:
        self.cp("C")
        self.hlc("start_cable_check")
        self.run(3.0)

    def pre_charge_and_charge(self, current: float = 100.0) -> None:
        self.hlc("start_pre_charge")
        self.hlc(
            "dc_ev_target_voltage_current",
            {"dc_ev_target_voltage": 380.0, "dc_ev_target_current": 2.0},
        )
        self.run(0.5)
        self.hlc("current_demand_started")
        for _ in range(20):
            self.hlc(
                "dc_ev_target_voltage_current",
                {"dc_ev_target_voltage": 390.0, "dc_ev_target_current": current},
            )
            self.step()

    def ev_stops(self) -> None:
        self.hlc("current_demand_finished")
        self.hlc("dc_open_contactor")
        self.step()
        self.cp("B")
        self.step()
        self.hlc("dlink_terminate")
        self.step()
