"""PyHardwareSim's pure model with a fake clock: what each end of the CP line sees, the
IEC 61851 contactor rules, events on change only, the IMD's timing, self-test and fault,
the meter's V x I x dt. Every value the model publishes is checked against the contract,
as the framework will check it on the bus."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from everkit.framework.definitions import Definitions, contract_root
from everkit.framework.error_model import Severity
from everkit.framework.validation import ValidatorCache
from everkit.simulators.hardware import sim_config
from everkit.simulators.hardware_model import (
    BSP,
    DIODE_FAULT,
    EMERGENCY_STOP,
    EV,
    IMD,
    IMD_DEVICE_FAULT,
    ISOLATION_FAULT_OHM,
    METER,
    RCD_TRIPPED,
    Capabilities,
    ClearError,
    Effect,
    HardwareModel,
    Log,
    PilotOutput,
    Publish,
    RaiseError,
    SimConfig,
    next_slot,
)

CONTRACT = ValidatorCache(Definitions.from_dirs(contract_root()))
INTERFACES = {
    BSP: "evse_board_support",
    EV: "ev_board_support",
    IMD: "isolation_monitor",
    METER: "powermeter",
}
T0 = 1000.0


def checked(effects: list[Effect]) -> list[Effect]:
    """Fail on anything the framework would refuse to publish or raise."""
    for effect in effects:
        if isinstance(effect, Publish):
            CONTRACT[INTERFACES[effect.impl]].check_var(effect.var, effect.value)
        elif isinstance(effect, RaiseError | ClearError):
            CONTRACT[INTERFACES[effect.impl]].check_error_type(effect.error_type)
    return effects


class Rig:
    """The model, a fake monotonic clock, and everything it has put out so far."""

    def __init__(self, config: SimConfig | None = None, wall_offset_s: float = 0.0) -> None:
        self.now = T0
        self.model = HardwareModel(config or SimConfig(), wall_offset_s)
        self.out = checked(self.model.start(self.now))

    def do(self, step: Callable[[float], list[Effect]]) -> list[Effect]:
        effects = checked(step(self.now))
        self.out += effects
        return effects

    def advance(self, seconds: float) -> list[Effect]:
        """Let time pass, ticking at every deadline on the way, as the adapter does."""
        target = self.now + seconds
        effects: list[Effect] = []
        deadline = self.model.next_deadline()
        while deadline is not None and deadline <= target:
            self.now = max(self.now, deadline)
            effects += checked(self.model.tick(self.now))
            deadline = self.model.next_deadline()
        self.now = target
        effects += checked(self.model.tick(self.now))
        self.out += effects
        return effects

    # shorthands

    def car(self, state: str) -> list[Effect]:
        return self.do(lambda now: self.model.board.ev_set_cp_state(state, now))

    def allow(self, allow: bool, reason: str = "FullPowerCharging") -> list[Effect]:
        return self.do(lambda now: self.model.board.allow_power_on(allow, reason, now))

    def pwm(self, duty: float) -> list[Effect]:
        return self.do(lambda now: self.model.board.pwm_on(duty, now))

    def drive(self, output: PilotOutput) -> list[Effect]:
        return self.do(lambda now: self.model.board.drive(output, now))

    def supply(self, voltage: float, current: float) -> list[Effect]:
        return self.do(lambda now: self.model.supply_reading(voltage, current, now))

    def charging(self) -> None:
        """Car plugged in and asking for power, charger at 5 % PWM, contactors closed."""
        self.car("B")
        self.pwm(5.0)
        self.car("C")
        self.allow(True)
        assert self.model.board.relays_closed


def values(effects: list[Effect], impl: str, var: str) -> list[Any]:
    return [e.value for e in effects if isinstance(e, Publish) and (e.impl, e.var) == (impl, var)]


def charger_events(effects: list[Effect]) -> list[str]:
    return [v["event"] for v in values(effects, BSP, "event")]


def car_events(effects: list[Effect]) -> list[str]:
    return [v["event"] for v in values(effects, EV, "bsp_event")]


def duty(effects: list[Effect]) -> list[float]:
    return [v["cp_pwm_duty_cycle"] for v in values(effects, EV, "bsp_measurement")]


def raised(effects: list[Effect]) -> list[RaiseError]:
    return [e for e in effects if isinstance(e, RaiseError)]


def cleared(effects: list[Effect]) -> list[str]:
    return [e.error_type for e in effects if isinstance(e, ClearError)]


# start


def test_start_reports_capabilities_telemetry_the_idle_line_and_the_first_meter_reading() -> None:
    rig = Rig()
    (caps,) = values(rig.out, BSP, "capabilities")
    assert caps["max_current_A_import"] == 32.0
    assert caps["max_phase_count_import"] == 3
    assert isinstance(caps["max_phase_count_import"], int)  # an integer field: no 3.0
    assert charger_events(rig.out) == ["A"]
    assert car_events(rig.out) == ["A"]
    assert values(rig.out, BSP, "telemetry")[0]["relais_on"] is False
    assert duty(rig.out) == [100.0]  # X1: steady +12 V
    assert len(values(rig.out, METER, "powermeter")) == 1


def test_the_manifest_defaults_are_the_model_defaults() -> None:
    manifest_path = Path(contract_root()) / "manifests" / "PyHardwareSim.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    defaults = {key: entry["default"] for key, entry in manifest["config"].items()}
    assert sim_config(defaults) == SimConfig()


# the CP line as each board sees it


def test_each_car_state_reaches_both_boards_once() -> None:
    rig = Rig()
    effects = rig.car("B")
    assert charger_events(effects) == ["B"]
    assert car_events(effects) == ["B"]
    assert rig.car("B") == []  # no change, no event
    assert charger_events(rig.car("C")) == ["C"]
    assert charger_events(rig.car("D")) == ["D"]
    assert charger_events(rig.car("A")) == ["A"]


def test_the_car_measures_the_duty_cycle_the_charger_drives() -> None:
    rig = Rig()
    rig.car("B")
    assert duty(rig.pwm(5.0)) == [5.0]
    assert rig.pwm(5.0) == []
    assert duty(rig.drive(PilotOutput.X1)) == [100.0]
    assert duty(rig.pwm(0.0)) == []  # 0 % means PWM off: still X1, nothing changed


def test_charger_F_and_E_override_the_car_and_release_it_again() -> None:
    rig = Rig()
    rig.car("C")
    effects = rig.drive(PilotOutput.F)
    assert charger_events(effects) == ["F"]
    assert car_events(effects) == ["F"]
    assert duty(effects) == [0.0]
    assert charger_events(rig.drive(PilotOutput.E)) == ["E"]
    effects = rig.drive(PilotOutput.X1)
    assert charger_events(effects) == ["C"]
    assert duty(effects) == [100.0]


def test_a_disabled_charger_shows_F_and_applies_the_remembered_pwm_when_enabled() -> None:
    rig = Rig()
    rig.car("B")
    assert charger_events(rig.do(lambda now: rig.model.board.enable(False, now))) == ["F"]
    assert duty(rig.pwm(5.0)) == []  # remembered, not driven
    effects = rig.do(lambda now: rig.model.board.enable(True, now))
    assert charger_events(effects) == ["B"]
    assert duty(effects) == [5.0]


def test_enable_while_enabled_repeats_the_state_to_the_charger_only() -> None:
    rig = Rig()
    rig.car("B")
    effects = rig.do(lambda now: rig.model.board.enable(True, now))
    assert charger_events(effects) == ["B"]
    assert car_events(effects) == []


def test_switching_the_car_board_off_unplugs_the_car() -> None:
    rig = Rig()
    rig.charging()
    effects = rig.do(lambda now: rig.model.board.ev_enable(False, now))
    assert charger_events(effects) == ["A", "PowerOff"]
    rig.car("C")  # remembered while off
    assert charger_events(rig.do(lambda now: rig.model.board.ev_enable(True, now))) == ["C"]


# the contactors


def test_allow_power_on_in_B_is_ignored_and_logged() -> None:
    rig = Rig()
    rig.car("B")
    rig.pwm(5.0)
    effects = rig.allow(True, "DCCableCheck")
    assert charger_events(effects) == []
    assert not rig.model.board.relays_closed
    (note,) = [e for e in effects if isinstance(e, Log)]
    assert note.warning
    assert "CP state is B" in note.message


@pytest.mark.parametrize("state", ["C", "D"])
def test_the_contactors_close_in_C_and_D(state: str) -> None:
    rig = Rig()
    rig.car("B")
    rig.car(state)
    effects = rig.allow(True)
    assert charger_events(effects) == ["PowerOn"]
    assert car_events(effects) == ["PowerOn"]
    assert values(effects, BSP, "telemetry")[-1]["relais_on"] is True


def test_C_to_B_opens_at_once_and_a_new_C_does_not_reclose_by_itself() -> None:
    rig = Rig()
    rig.charging()
    effects = rig.car("B")
    assert charger_events(effects) == ["B", "PowerOff"]
    assert car_events(effects) == ["B", "PowerOff"]
    assert charger_events(rig.car("C")) == ["C"]
    assert not rig.model.board.relays_closed
    assert charger_events(rig.allow(True)) == ["PowerOn"]


def test_power_on_and_off_are_reported_on_change_only() -> None:
    rig = Rig()
    rig.charging()
    assert rig.allow(True) == []
    assert charger_events(rig.allow(False, "PowerOff")) == ["PowerOff"]
    assert rig.allow(False, "PowerOff") == []
    assert charger_events(rig.out).count("PowerOn") == 1
    assert charger_events(rig.out).count("PowerOff") == 1


def test_driving_F_while_closed_opens_the_contactors() -> None:
    rig = Rig()
    rig.charging()
    assert charger_events(rig.drive(PilotOutput.F)) == ["F", "PowerOff"]


# faults on the board


def test_the_emergency_stop_raises_MREC8_opens_and_blocks_until_released() -> None:
    rig = Rig()
    rig.charging()
    effects = rig.do(rig.model.board.press_emergency_stop)
    (error,) = raised(effects)
    assert (error.impl, error.error_type, error.severity) == (BSP, EMERGENCY_STOP, Severity.HIGH)
    assert effects.index(error) < effects.index(next(e for e in effects if isinstance(e, Publish)))
    assert charger_events(effects) == ["PowerOff"]
    assert charger_events(rig.allow(True)) == []
    assert rig.do(rig.model.board.press_emergency_stop) == []  # already pressed
    assert cleared(rig.do(lambda _now: rig.model.board.release_emergency_stop())) == [
        EMERGENCY_STOP
    ]
    assert charger_events(rig.allow(True)) == ["PowerOn"]


def test_the_timed_emergency_stop_counts_from_the_first_power_on_and_fires_once() -> None:
    rig = Rig(SimConfig(emergency_stop_after_s=5.0))
    assert raised(rig.advance(60.0)) == []  # no PowerOn yet: the timer has not started
    rig.charging()
    assert raised(rig.advance(4.9)) == []
    effects = rig.advance(0.1)
    assert [e.error_type for e in raised(effects)] == [EMERGENCY_STOP]
    assert charger_events(effects) == ["PowerOff"]
    rig.do(lambda _now: rig.model.board.release_emergency_stop())
    rig.allow(True)
    assert raised(rig.advance(60.0)) == []


def test_a_shorted_car_diode_under_pwm_is_a_fault_until_unplugged() -> None:
    rig = Rig()
    rig.car("B")
    assert raised(rig.do(lambda now: rig.model.board.ev_diode_fail(True, now))) == []  # no PWM
    effects = rig.pwm(5.0)
    assert [e.error_type for e in raised(effects)] == [DIODE_FAULT]
    rig.car("C")
    assert charger_events(rig.allow(True)) == []
    assert cleared(rig.car("A")) == [DIODE_FAULT]


def test_a_residual_current_trips_the_rcd_and_opens_the_contactors() -> None:
    rig = Rig()
    rig.charging()
    effects = rig.do(lambda now: rig.model.board.ev_set_rcd_error(10.0, now))
    assert [e.error_type for e in raised(effects)] == [RCD_TRIPPED]
    assert charger_events(effects) == ["PowerOff"]
    assert values(effects, EV, "bsp_measurement")[-1]["rcd_current_mA"] == 10.0
    effects = rig.do(lambda now: rig.model.board.ev_set_rcd_error(0.0, now))
    assert cleared(effects) == [RCD_TRIPPED]


# the isolation monitor


def readings(effects: list[Effect]) -> list[dict[str, Any]]:
    return values(effects, IMD, "isolation_measurement")


def test_the_imd_measures_only_between_start_and_stop() -> None:
    rig = Rig(SimConfig(imd_interval_s=1.0))
    assert readings(rig.advance(5.0)) == []
    rig.do(rig.model.imd.start)
    assert len(readings(rig.advance(0.0))) == 1  # the first reading at once
    assert len(readings(rig.advance(3.0))) == 3
    rig.do(lambda _now: rig.model.imd.stop())
    assert readings(rig.advance(5.0)) == []


def test_an_imd_reading_has_the_output_voltage_only_once_the_supply_reported() -> None:
    rig = Rig()
    rig.do(rig.model.imd.start)
    assert readings(rig.advance(0.0)) == [{"resistance_F_Ohm": 900_000.0}]
    rig.supply(500.0, 0.0)
    assert readings(rig.advance(1.0))[-1]["voltage_V"] == 0.0  # contactors open: dead cable
    rig.charging()
    assert readings(rig.advance(1.0))[-1]["voltage_V"] == 500.0


@pytest.mark.parametrize("success", [True, False])
def test_the_self_test_result_follows_after_its_duration(success: bool) -> None:
    config = SimConfig(imd_selftest_success=success, imd_selftest_duration_s=3.0)
    rig = Rig(config)
    rig.do(lambda now: rig.model.imd.start_self_test(500.0, now))
    assert values(rig.advance(2.9), IMD, "self_test_result") == []
    assert values(rig.advance(0.1), IMD, "self_test_result") == [success]
    assert values(rig.advance(10.0), IMD, "self_test_result") == []


def test_the_isolation_fault_comes_after_n_seconds_of_measuring_and_stays() -> None:
    rig = Rig(SimConfig(imd_fault_after_s=10.0, imd_interval_s=1.0))
    rig.advance(30.0)  # not measuring: no fault
    rig.do(rig.model.imd.start)
    before = readings(rig.advance(9.5))
    assert {r["resistance_F_Ohm"] for r in before} == {900_000.0}
    after = readings(rig.advance(0.5))
    assert [r["resistance_F_Ohm"] for r in after] == [ISOLATION_FAULT_OHM]
    rig.do(lambda _now: rig.model.imd.stop())
    rig.do(rig.model.imd.start)
    assert {r["resistance_F_Ohm"] for r in readings(rig.advance(20.0))} == {ISOLATION_FAULT_OHM}
    rig.do(lambda _now: rig.model.imd.set_resistance(2e6))
    assert {r["resistance_F_Ohm"] for r in readings(rig.advance(20.0))} == {2e6}


def test_an_imd_device_fault_stops_the_readings_and_fails_the_self_test() -> None:
    rig = Rig()
    rig.do(rig.model.imd.start)
    effects = rig.do(lambda _now: rig.model.imd.raise_device_fault("broken"))
    (error,) = raised(effects)
    assert (error.impl, error.error_type, error.message) == (IMD, IMD_DEVICE_FAULT, "broken")
    rig.do(lambda now: rig.model.imd.start_self_test(500.0, now))
    effects = rig.advance(5.0)
    assert readings(effects) == []
    assert values(effects, IMD, "self_test_result") == [False]
    assert cleared(rig.do(lambda _now: rig.model.imd.clear_device_fault())) == [IMD_DEVICE_FAULT]
    assert len(readings(rig.advance(1.0))) == 1


# the meter


def meter_readings(effects: list[Effect]) -> list[dict[str, Any]]:
    return values(effects, METER, "powermeter")


def test_the_meter_integrates_v_times_i_through_closed_contactors() -> None:
    rig = Rig()
    rig.charging()
    rig.supply(400.0, 100.0)  # 40 kW
    latest = meter_readings(rig.advance(36.0))[-1]
    assert latest["energy_Wh_import"]["total"] == pytest.approx(400.0)  # 40 kW x 36 s
    assert latest["power_W"] == {"total": 40_000.0}
    assert latest["voltage_V"] == {"DC": 400.0}
    assert latest["current_A"] == {"DC": 100.0}


def test_a_reading_holds_until_the_next_and_nothing_counts_while_open() -> None:
    rig = Rig()
    rig.supply(400.0, 100.0)
    rig.advance(60.0)
    assert rig.model.meter.import_Wh == 0.0  # contactors open: nothing reaches the car
    rig.charging()
    rig.advance(10.0)
    rig.supply(200.0, 100.0)
    rig.advance(10.0)
    rig.allow(False, "PowerOff")
    rig.advance(60.0)
    expected = (400.0 * 100.0 * 10 + 200.0 * 100.0 * 10) / 3600
    assert rig.model.meter.import_Wh == pytest.approx(expected)
    assert meter_readings(rig.out)[-1]["power_W"] == {"total": 0.0}


def test_power_from_the_car_counts_as_export() -> None:
    rig = Rig()
    rig.charging()
    rig.supply(400.0, -50.0)
    rig.advance(36.0)
    assert rig.model.meter.import_Wh == 0.0
    assert meter_readings(rig.out)[-1]["energy_Wh_export"]["total"] == pytest.approx(200.0)


def test_the_meter_publishes_on_its_interval_with_wall_clock_timestamps() -> None:
    rig = Rig(SimConfig(meter_interval_s=1.0), wall_offset_s=1_767_225_600.0 - T0)
    published = meter_readings(rig.out) + meter_readings(rig.advance(3.0))
    assert [r["timestamp"] for r in published] == [
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:01.000Z",
        "2026-01-01T00:00:02.000Z",
        "2026-01-01T00:00:03.000Z",
    ]
    assert {r["meter_id"] for r in published} == {"PyHardwareSim"}
    assert "voltage_V" not in published[0]  # no supply reading yet: nothing to claim


def test_transactions_answer_with_schema_valid_responses() -> None:
    meter = HardwareModel(SimConfig()).meter
    check = CONTRACT["powermeter"].check_result
    request = {
        "evse_id": "DE*EVK*E1",
        "transaction_id": "tx-1",
        "identification_status": "ASSIGNED",
        "identification_type": "ISO14443",
        "identification_flags": [],
    }
    started, _ = meter.start_transaction(request, T0)
    check("start_transaction", started)
    assert started == {"status": "OK"}
    for transaction_id, status in (("tx-1", "OK"), ("tx-1", "UNEXPECTED_ERROR"), ("", "OK")):
        stopped, _ = meter.stop_transaction(transaction_id, T0 + 1)
        check("stop_transaction", stopped)
        assert stopped["status"] == status


# configuration and timing helpers


@pytest.mark.parametrize(
    "bad",
    [
        {"imd_interval_s": 0.0},
        {"meter_interval_s": -1.0},
        {"imd_fault_after_s": -1.0},
        {"capabilities": Capabilities(min_current_A=40.0)},
        {"capabilities": Capabilities(min_phase_count=3, max_phase_count=1)},
        {"capabilities": Capabilities(connector_type="CCS2")},
    ],
)
def test_nonsense_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"."):
        SimConfig(**bad)


def test_a_stalled_grid_restarts_from_now_instead_of_bursting() -> None:
    assert next_slot(10.0, 1.0, 10.2) == 11.0
    assert next_slot(10.0, 1.0, 15.5) == 16.5
