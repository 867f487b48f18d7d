"""Safety invariants of the charging core under random event sequences (hypothesis
stateful testing). Issue: "the PSU is never in Export outside cable check/precharge/
charging; setMode(Off) always precedes allow_power_on(false); an emergency (High
severity) error reaches a safe state within one tick; an expired or missing energy
limit means zero current, not the last value." Also interfaces/power_supply_DC.yaml:
"setMode(Off) on power_supply_DC, then allow_power_on(false) on evse_board_support"."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from everkit.evse_manager.core import DcPhase
from everkit.evse_manager.effects import Call
from everkit.evse_manager.table import POWER_STATES
from everkit.framework.error_model import Severity
from tests.unit.evse_world import World

ERRORS = [
    ("powersupply_DC", "power_supply_DC/OverTemperature"),
    ("powersupply_DC", "power_supply_DC/CommunicationFault"),
    ("imd", "isolation_monitor/DeviceFault"),
    ("bsp", "evse_board_support/MREC8EmergencyStop"),
    ("powersupply_DC", "power_supply_DC/VendorWarning"),
]


class ChargerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World.make()
        self.checked = 0
        self.raised: set[tuple[str, str]] = set()

    # the car and its cable

    @rule(state=st.sampled_from(["A", "B", "C", "E", "F"]))
    def cp(self, state: str) -> None:
        self.world.cp(state)

    @rule(accepted=st.booleans())
    def authorize(self, accepted: bool) -> None:
        w = self.world
        w.feed(w.core.authorize({"id_token": {"value": "T", "type": "Central"}}, accepted, w.now))

    @rule(
        var=st.sampled_from(
            [
                "start_cable_check",
                "start_pre_charge",
                "current_demand_started",
                "current_demand_finished",
                "dc_open_contactor",
                "dlink_terminate",
            ]
        )
    )
    def hlc_event(self, var: str) -> None:
        self.world.hlc(var)

    @rule(voltage=st.floats(0, 1000), current=st.floats(0, 500))
    def ev_targets(self, voltage: float, current: float) -> None:
        self.world.hlc(
            "dc_ev_target_voltage_current",
            {"dc_ev_target_voltage": voltage, "dc_ev_target_current": current},
        )

    @rule(max_voltage=st.floats(200, 1000), max_current=st.floats(1, 500))
    def ev_limits(self, max_voltage: float, max_current: float) -> None:
        self.world.hlc(
            "dc_ev_maximum_limits",
            {
                "dc_ev_maximum_current_limit": max_current,
                "dc_ev_maximum_voltage_limit": max_voltage,
            },
        )

    @precondition(lambda self: self.world.core.state.value == "Idle")
    @rule(current=st.floats(1, 300), budget_s=st.integers(5, 120))
    def session_to_charging(self, current: float, budget_s: int) -> None:
        """A whole start, so that faults and stops also land during real charging."""
        w = self.world
        w.enforce(50000.0, budget_s)
        w.plug_in_and_authorize()
        w.through_cable_check()
        w.pre_charge_and_charge(current)

    # the charger's surroundings

    @rule(power=st.floats(0, 100000), valid_for=st.integers(0, 20))
    def energy(self, power: float, valid_for: int) -> None:
        w = self.world
        w.enforce(power, valid_for)

    @rule(which=st.sampled_from(ERRORS), severity=st.sampled_from(list(Severity)))
    def raise_error(self, which: tuple[str, str], severity: Severity) -> None:
        w = self.world
        source, error_type = which
        w.feed(w.core.on_error(source, error_type, "", severity, active=True, now=w.now))
        self.raised.add(which)
        if severity == Severity.HIGH and not error_type.endswith("VendorWarning"):
            # an emergency reaches a safe state at once, not on a later tick
            assert w.psu_mode == "Off"
            assert not w.core.relays_allowed

    @precondition(lambda self: bool(self.raised))
    @rule(data=st.data())
    def clear_error(self, data: st.DataObject) -> None:
        w = self.world
        source, error_type = data.draw(st.sampled_from(sorted(self.raised)))
        self.raised.discard((source, error_type))
        w.feed(w.core.on_error(source, error_type, "", Severity.HIGH, active=False, now=w.now))

    @rule(ohm=st.sampled_from([20_000.0, 900_000.0]), self_test=st.booleans())
    def imd(self, ohm: float, self_test: bool) -> None:
        self.world.resistance_ohm = ohm
        self.world.self_test_ok = self_test

    @rule(reason=st.sampled_from(["Remote", "Local", "EmergencyStop"]))
    def stop_transaction(self, reason: str) -> None:
        w = self.world
        w.feed(w.core.stop_transaction(reason, w.now))

    @rule(action=st.sampled_from(["pause", "resume", "withdraw_authorization"]))
    def command(self, action: str) -> None:
        w = self.world
        w.feed(getattr(w.core, action)(w.now))

    @rule(seconds=st.sampled_from([0.1, 0.25, 1.0, 6.0, 25.0]))
    def time_passes(self, seconds: float) -> None:
        self.world.step(seconds)

    # the invariants

    @invariant()
    def export_only_in_power_states(self) -> None:
        w = self.world
        if w.core.state not in POWER_STATES:
            assert w.psu_mode != "Export", f"PSU exporting in {w.core.state}"

    @invariant()
    def off_precedes_relays_opening(self) -> None:
        mode = "Off"
        for _, effect in self.world.log:
            if not isinstance(effect, Call):
                continue
            if effect.requirement == "powersupply_DC" and effect.cmd == "setMode":
                mode = effect.args["mode"]
            elif effect.cmd == "allow_power_on" and not effect.args["value"]["allow_power_on"]:
                assert mode != "Export", "relays opened while the PSU was still exporting"

    @invariant()
    def no_energy_means_no_current(self) -> None:
        w = self.world
        core = w.core
        charging = core.phase in (DcPhase.PRE_CHARGE, DcPhase.CURRENT_DEMAND)
        flowing = charging and w.psu_mode == "Export" and core.relays_closed
        if flowing and core._allowed_power_W(w.now) == 0:
            assert w.psu_setpoint[1] == 0.0, f"{w.psu_setpoint[1]} A without an energy budget"


ChargerMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
TestChargerInvariants = ChargerMachine.TestCase
