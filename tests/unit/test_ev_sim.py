"""PyEvSimulator's car with a fake clock: the script language (EvManager's syntax) and the
vehicle's side of the ISO 15118-2 DC sequence (shared/reference/evse-manager.md 1.6),
driven by calling the charger's commands the way EvseManager does. Every output is checked
against the ISO15118_charger and ev_board_support schemas, as the framework would."""

from __future__ import annotations

import re
from itertools import groupby
from typing import Any

import pytest

from everkit.framework.definitions import Definitions
from everkit.framework.validation import ValidatorCache
from everkit.simulators.ev import bsp_call
from everkit.simulators.ev_model import (
    Battery,
    DiodeFault,
    EvConfig,
    EvContactor,
    EvModel,
    Note,
    Output,
    Phase,
    Publish,
    SessionOptions,
    SetCp,
)
from everkit.simulators.ev_script import ScriptError, ScriptRunner, parse

T0 = 100.0
TICK = 0.25
VALIDATORS = ValidatorCache(Definitions.from_dirs())
HLC = VALIDATORS["ISO15118_charger"]
BSP = VALIDATORS["ev_board_support"]
FULL_SESSION = (
    "iso_wait_slac_matched;iso_start_v2g_session DC;iso_wait_pwr_ready;iso_dc_power_on;"
    "iso_wait_for_stop 5;iso_wait_v2g_session_stopped;unplug"
)


class Car:
    """The model and a script, stepped by hand; outputs recorded with their time and
    validated like the framework validates them on the bus."""

    def __init__(self, script: str | None = None, **config: Any) -> None:
        self.model = EvModel(EvConfig(**config))
        self.now = T0
        self.outputs: list[tuple[float, Output]] = []
        self.runner = ScriptRunner(parse(script)) if script is not None else None
        self.last = 0
        self.model.start(self.now)
        self.collect()

    def collect(self) -> None:
        self.last = len(self.outputs)
        for output in self.model.take_outputs():
            if isinstance(output, Publish):
                HLC.check_var(output.var, output.value)
            elif not isinstance(output, Note):
                call = bsp_call(output)
                BSP.check_args(call.command, call.args)
            self.outputs.append((self.now, output))

    def tick(self, count: int = 1) -> None:
        for _ in range(count):
            self.now += TICK
            if self.runner is not None:
                self.runner.tick(self.model, self.now)
            self.model.tick(self.now)
            self.collect()

    def until(self, phase: Phase, limit_s: float = 30.0) -> None:
        deadline = self.now + limit_s
        while self.model.phase is not phase:
            assert self.now < deadline, f"still {self.model.phase}, waiting for {phase}"
            self.tick()

    def charger(self, method: str, *args: Any) -> None:
        """A charger command, as EvseManager calls it (now passed where the model wants it)."""
        target = getattr(self.model, method)
        if method in ("on_maximum_limits", "on_minimum_limits", "on_reset_error"):
            target(*args)
        else:
            target(self.now, *args)
        self.collect()

    def pwm(self, duty: float) -> None:
        self.charger("on_pwm_duty", duty)

    def present(self, voltage: float, current: float = 0.0) -> None:
        self.charger("on_present_values", voltage, current)

    # views

    def vars(self, since: int = 0) -> list[str]:
        """Var names in order (from output number ``since``), repeats collapsed."""
        names = [o.var for _, o in self.outputs[since:] if isinstance(o, Publish)]
        return [name for name, _ in groupby(names)]

    def last_vars(self) -> list[str]:
        """The vars of the latest step (tick or command)."""
        return self.vars(self.last)

    def values(self, var: str) -> list[Any]:
        return [o.value for _, o in self.outputs if isinstance(o, Publish) and o.var == var]

    def cp_states(self) -> list[str]:
        return [o.state for _, o in self.outputs if isinstance(o, SetCp)]

    def contactor(self) -> list[bool]:
        return [o.closed for _, o in self.outputs if isinstance(o, EvContactor)]

    def board(self) -> list[str]:
        """CP and contactor changes in their order, e.g. ['cp A', 'open', 'cp B']."""
        found = []
        for _, o in self.outputs:
            if isinstance(o, SetCp):
                found.append(f"cp {o.state}")
            elif isinstance(o, EvContactor):
                found.append("close" if o.closed else "open")
        return found

    # the charger's side of the happy path

    def to_cable_check(self) -> None:
        self.pwm(5.0)
        self.until(Phase.WAIT_AUTH)
        self.charger("on_authorization_response", "Accepted", "Accepted")
        self.until(Phase.CABLE_CHECK)

    def to_current_demand(self) -> None:
        self.to_cable_check()
        self.charger("on_cable_check_finished", True)
        self.present(self.model.battery.voltage)
        assert self.model.phase is Phase.CURRENT_DEMAND


# the script language


def names(script: str) -> list[str]:
    return [step.name for step in parse(script)]


def test_the_canonical_everest_dc_scripts_parse() -> None:
    test_controller = (
        "sleep 1;iso_wait_slac_matched;iso_start_v2g_session DC externalpayment 86400 0;"
        "iso_wait_pwr_ready;iso_wait_for_stop 60;iso_wait_v2g_session_stopped;unplug"
    )
    assert names(test_controller)[2] == "iso_start_v2g_session"
    sil = (
        "sleep 3;iso_wait_slac_matched;iso_start_v2g_session DC;iso_wait_pwr_ready;"
        "iso_dc_power_on;iso_wait_for_stop 15;iso_wait_v2g_session_stopped;unplug;"
    )
    assert len(parse(sil)) == 8
    resume = "iso_wait_pwm_is_running;iso_start_v2g_session DC 86400 0;iso_wait_pwr_ready"
    assert parse(resume)[1].options == SessionOptions("ExternalPayment", 86400.0, 0.0)


def test_syntax_is_case_insensitive_with_newlines_commas_and_blank_commands() -> None:
    steps = parse("SLEEP 1.5\n\n  Set_Target_Current,12 ;; set_soc 40,\nPLUGIN;")
    assert [(s.name, s.args) for s in steps] == [
        ("sleep", (1.5,)),
        ("set_target_current", (12.0,)),
        ("set_soc", (40.0,)),
        ("plugin", ()),
    ]
    assert [s.position for s in steps] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("args", "options"),
    [
        ("dc", SessionOptions()),
        ("DC_extended eim", SessionOptions()),
        ("dc auto 3600", SessionOptions("ExternalPayment", 3600.0)),
        ("dc externalpayment 86400 5000", SessionOptions("ExternalPayment", 86400.0, 5000.0)),
    ],
)
def test_iso_start_v2g_session_takes_one_to_four_arguments(
    args: str, options: SessionOptions
) -> None:
    assert parse(f"iso_start_v2g_session {args}")[0].options == options


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("sleep 1;fly 3", "command 2 'fly': unknown command"),
        ("plugin;sleep", "command 2 'sleep': takes 1 argument, got 0"),
        ("unplug now", "command 1 'unplug': takes 0 arguments, got 1"),
        ("iso_wait_for_stop 1 2", "command 1 'iso_wait_for_stop': takes 1 argument, got 2"),
        (
            "iso_start_v2g_session dc eim 1 2 3",
            "command 1 'iso_start_v2g_session': takes 1 to 4 arguments, got 5",
        ),
        ("iso_start_v2g_session", "takes 1 to 4 arguments, got 0"),
        ("sleep soon", "command 1 'sleep': argument 1 must be a number, got 'soon'"),
        ("sleep -1", "argument 1 must be within 0..1e+07, got '-1'"),
        ("set_soc 120", "command 1 'set_soc': argument 1 must be within 0..100"),
        ("sleep nan", "must be within"),
        ("iso_start_v2g_session AC", "energy mode 'ac' is not simulated: only DC"),
        ("iso_start_v2g_session DC contract", "Plug & Charge"),
        ("iso_start_v2g_session DC cash", "unknown payment option 'cash'"),
        ("iso_start_v2g_session DC 1 2 3", "at most departure_s and eamount_Wh"),
        ("iso_start_v2g_session DC eim 1 300000", "eamount_Wh must be at most 200000"),
    ],
)
def test_mistakes_are_refused_when_parsing_naming_command_and_position(
    script: str, message: str
) -> None:
    with pytest.raises(ScriptError, match=re.escape(message)):
        parse(script)


def test_one_command_is_evaluated_per_tick_like_evmanager() -> None:
    car = Car("plugin;set_soc 50;set_target_current 3")
    car.tick()
    assert car.model.phase is Phase.CONNECTED
    assert car.model.battery.soc == 30
    car.tick()
    assert car.model.battery.soc == 50
    assert car.model.current_cap_A is None
    car.tick()
    assert car.model.current_cap_A == 3
    assert car.runner is not None
    assert car.runner.finished
    assert car.runner.error is None


def test_sleep_counts_time_from_its_first_evaluation() -> None:
    car = Car("sleep 1;unplug")
    car.tick()  # sleep starts
    car.tick(3)
    assert car.runner is not None
    assert car.runner.index == 0
    car.tick()
    assert car.runner.index == 1


# the battery


def test_battery_voltage_runs_from_340_to_410_v_for_a_400_v_pack() -> None:
    assert Battery.voltage_at(0, 400) == pytest.approx(340)
    assert Battery.voltage_at(100, 400) == pytest.approx(410)
    assert Battery(60000, 400, 50).voltage == pytest.approx(375)


@pytest.mark.parametrize(
    ("soc", "current"), [(0, 20.0), (30, 20.0), (80, 20.0), (90, 10.5), (100, 1.0)]
)
def test_accepted_current_is_constant_to_80_percent_then_tapers_to_5_percent(
    soc: float, current: float
) -> None:
    assert Battery(60000, 400, soc).accepted_current(20.0) == pytest.approx(current)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="evcc_id"):
        EvConfig(evcc_id="aa:bb:cc:dd:ee:ff")
    with pytest.raises(ValueError, match="initial_soc"):
        EvConfig(initial_soc=101)
    with pytest.raises(ValueError, match="dc_max_voltage_limit"):
        EvConfig(max_voltage_V=400)


# the DC session


def test_a_whole_session_publishes_the_iso_15118_2_sequence_and_moves_cp_b_c_b_a() -> None:
    car = Car(FULL_SESSION)
    car.tick(2)
    assert car.model.phase is Phase.CONNECTED  # waiting for the charger's PWM
    car.pwm(100.0)  # PWM off (X1) does not count
    car.tick(4)
    assert car.model.phase is Phase.CONNECTED
    car.pwm(5.0)
    car.until(Phase.WAIT_AUTH)
    car.charger("on_authorization_response", "Accepted", "Accepted")
    assert car.model.phase is Phase.AUTHORIZED
    car.until(Phase.CABLE_CHECK)
    car.present(450.0)  # the cable check's test voltage does not pass the pre-charge
    car.charger("on_cable_check_finished", True)
    assert car.model.phase is Phase.PRE_CHARGE
    car.tick(2)
    car.present(car.model.battery.voltage - 5)
    assert car.model.phase is Phase.CURRENT_DEMAND
    while car.model.phase is Phase.CURRENT_DEMAND:
        target = car.values("dc_ev_target_voltage_current")[-1]
        car.present(target["dc_ev_target_voltage"], target["dc_ev_target_current"])
        car.tick()
    assert car.model.phase is Phase.STOPPING
    car.tick(2)
    assert car.model.phase is Phase.WELDING
    car.present(30.0)
    assert car.model.phase is Phase.FINISHED
    car.tick(3)

    assert car.vars() == [
        "selected_protocol",
        "evcc_id",
        "selected_payment_option",
        "require_auth_eim",
        "requested_energy_transfer_mode",
        "dc_ev_maximum_limits",
        "dc_ev_energy_capacity",
        "dc_ev_status",
        "start_cable_check",
        "start_pre_charge",
        "dc_ev_status",
        "dc_ev_target_voltage_current",
        "v2g_setup_finished",
        "current_demand_started",
        *["dc_ev_target_voltage_current", "dc_ev_status"] * 22,  # entry + 1 tick + 5 s at 4 Hz
        "current_demand_finished",
        "dc_open_contactor",
        "dlink_terminate",
    ]
    assert car.board() == ["cp A", "open", "cp B", "cp C", "close", "cp B", "open", "cp A"]
    assert car.model.phase is Phase.UNPLUGGED
    assert car.runner is not None
    assert car.runner.finished
    assert car.runner.error is None
    assert car.values("evcc_id") == ["AA:BB:CC:DD:EE:FF"]
    assert car.values("selected_protocol") == ["ISO15118-2-2010"]
    assert car.values("dc_ev_maximum_limits") == [
        {
            "dc_ev_maximum_current_limit": 300.0,
            "dc_ev_maximum_power_limit": 150000.0,
            "dc_ev_maximum_voltage_limit": 900.0,
        }
    ]


def test_the_precharge_request_is_the_battery_voltage_at_2_a() -> None:
    car = Car(FULL_SESSION, initial_soc=50)
    car.to_cable_check()
    car.charger("on_cable_check_finished", True)
    car.tick(3)
    assert set(map(str, car.values("dc_ev_target_voltage_current"))) == {
        str({"dc_ev_target_voltage": 375.0, "dc_ev_target_current": 2.0})
    }
    assert car.values("dc_ev_status")[-1]["dc_ev_ress_soc"] == 50


@pytest.mark.parametrize(
    ("ratio", "passes"), [(0.89, False), (0.91, True), (1.09, True), (1.11, False)]
)
def test_precharge_passes_within_10_percent_of_the_battery_voltage(
    ratio: float, passes: bool
) -> None:
    car = Car(FULL_SESSION)
    car.to_cable_check()
    car.charger("on_cable_check_finished", True)
    car.present(car.model.battery.voltage * ratio)
    assert (car.model.phase is Phase.CURRENT_DEMAND) is passes


def test_precharge_times_out_after_7_s_and_the_session_fails() -> None:
    car = Car(FULL_SESSION)
    car.to_cable_check()
    car.charger("on_cable_check_finished", True)
    started = car.now
    car.until(Phase.FAILED)
    assert car.now - started == pytest.approx(7.0)
    assert car.last_vars() == ["dc_open_contactor", "hlc_session_failed", "dlink_terminate"]
    assert car.values("hlc_session_failed") == ["EnergyTransferSetupFailed"]
    assert car.cp_states()[-1] == "B"
    car.tick()
    assert car.runner is not None
    assert car.runner.error == (
        "command 4 'iso_dc_power_on': the V2G session failed: PreCharge timed out after 7 s"
    )


def test_a_failed_cable_check_fails_the_session_and_stops_the_script() -> None:
    car = Car(FULL_SESSION)
    car.to_cable_check()
    car.charger("on_cable_check_finished", False)
    assert car.model.phase is Phase.FAILED
    assert car.last_vars() == ["dc_open_contactor", "hlc_session_failed", "dlink_terminate"]
    assert car.values("hlc_session_failed") == ["EnergyTransferSetupFailed"]
    assert car.board()[-1] == "cp B"
    car.tick()
    assert car.runner is not None
    assert car.runner.error is not None
    assert "cable check failed" in car.runner.error


def test_the_cable_check_times_out_after_40_s() -> None:
    car = Car(FULL_SESSION)
    car.to_cable_check()
    car.until(Phase.FAILED, limit_s=41)
    assert car.model.failure == "CableCheck timed out after 40 s"


def test_an_early_authorization_is_kept_until_the_car_asks() -> None:
    """EvseManager may authorize before the car's AuthorizationReq: EvseV2G keeps it."""
    car = Car(FULL_SESSION)
    car.tick()  # plugged in
    car.charger("on_authorization_response", "Accepted", "NoCertificateAvailable")
    car.pwm(5.0)
    car.until(Phase.CABLE_CHECK, limit_s=3)
    assert car.values("require_auth_eim") == [None]


def test_a_refused_authorization_ends_the_session() -> None:
    car = Car(FULL_SESSION)
    car.pwm(5.0)
    car.until(Phase.WAIT_AUTH)
    car.charger("on_authorization_response", "Blocked", "Accepted")
    assert car.model.phase is Phase.FAILED
    assert car.values("hlc_session_failed") == ["AuthorizationFailed"]
    assert car.last_vars() == ["hlc_session_failed", "dlink_terminate"]


def test_without_an_answer_the_car_gives_up_authorization_after_60_s() -> None:
    car = Car(FULL_SESSION)
    car.pwm(5.0)
    car.until(Phase.FAILED, limit_s=62)
    assert car.model.failure == "WaitAuth timed out after 60 s"


def test_iso_wait_slac_matched_plugs_in_and_waits_half_a_second_of_pwm() -> None:
    car = Car("iso_wait_slac_matched;plugin")
    car.tick()
    assert car.cp_states() == ["A", "B"]
    car.pwm(5.0)
    car.tick()
    assert car.runner is not None
    assert car.runner.index == 0
    car.tick()
    assert car.runner.index == 1


def test_soc_rises_with_the_energy_the_charger_delivers() -> None:
    car = Car(FULL_SESSION, capacity_Wh=60000, initial_soc=30)
    car.to_current_demand()
    for _ in range(4 * 36):  # 36 s at 400 V and 100 A: 400 Wh
        car.now += TICK
        car.present(400.0, 100.0)
    assert car.model.battery.soc == pytest.approx(30 + 100 * 400 / 60000)


def test_no_energy_is_counted_while_the_ev_contactor_is_open() -> None:
    car = Car(FULL_SESSION, initial_soc=30)
    car.to_cable_check()
    for _ in range(20):
        car.now += TICK
        car.present(500.0, 2.0)
    assert car.model.battery.soc == 30


def test_the_current_request_tapers_as_soc_rises_and_obeys_the_cap() -> None:
    car = Car(FULL_SESSION, initial_soc=90, cc_current_A=20)
    car.to_current_demand()
    car.tick()
    request = car.values("dc_ev_target_voltage_current")[-1]
    assert request == {"dc_ev_target_voltage": 413.0, "dc_ev_target_current": 10.5}
    car.model.set_soc(40)
    car.tick()
    assert car.values("dc_ev_target_voltage_current")[-1]["dc_ev_target_current"] == 20.0
    car.model.cap_current(7.5)
    car.tick()
    assert car.values("dc_ev_target_voltage_current")[-1]["dc_ev_target_current"] == 7.5


def test_the_request_stays_within_the_ev_power_limit() -> None:
    car = Car(FULL_SESSION, cc_current_A=500, max_current_A=400, max_power_W=50000)
    car.to_current_demand()
    voltage = car.values("dc_ev_target_voltage_current")[-1]["dc_ev_target_voltage"]
    current = car.values("dc_ev_target_voltage_current")[-1]["dc_ev_target_current"]
    assert current == pytest.approx(50000 / voltage, abs=0.01)


def test_the_ev_stops_by_itself_at_the_target_soc() -> None:
    car = Car(FULL_SESSION, initial_soc=79.999, target_soc=80)
    car.to_current_demand()
    car.now += TICK
    car.present(400.0, 100.0)  # 2.8 Wh: 0.005 %
    car.tick()
    assert car.model.phase is Phase.STOPPING
    assert car.model.stop_reason == "SoC reached 80 %"


def test_stopping_opens_after_half_a_second_then_welding_waits_below_60_v() -> None:
    car = Car(FULL_SESSION)
    car.to_current_demand()
    car.runner = ScriptRunner(parse("iso_stop_charging;iso_wait_v2g_session_stopped;unplug"))
    car.tick()
    stopped = car.now
    assert car.last_vars() == ["current_demand_finished", "dc_open_contactor"]
    car.tick()
    assert car.model.phase is Phase.STOPPING
    assert car.board()[-1] == "close"
    car.tick()
    assert car.model.phase is Phase.WELDING
    assert car.now - stopped == pytest.approx(0.5)
    assert car.board()[-2:] == ["cp B", "open"]
    car.present(200.0)
    car.tick(4)
    assert car.model.phase is Phase.WELDING
    car.present(59.0)
    assert car.model.phase is Phase.FINISHED
    assert car.last_vars() == ["dlink_terminate"]
    car.tick(2)
    assert car.model.phase is Phase.UNPLUGGED


def test_welding_detection_gives_up_after_5_s() -> None:
    car = Car(FULL_SESSION)
    car.to_current_demand()
    car.present(400.0, 0.0)
    car.model.ev_stop(car.now)
    car.until(Phase.WELDING)
    entered = car.now
    car.until(Phase.FINISHED)
    assert car.now - entered == pytest.approx(5.0)


def test_the_charger_stop_ends_the_session_normally_and_the_script_goes_on() -> None:
    car = Car(FULL_SESSION.replace("iso_wait_for_stop 5", "iso_wait_for_stop 600"))
    car.to_current_demand()
    car.tick(4)
    car.charger("on_stop_charging", True)
    assert car.last_vars() == ["current_demand_finished", "dc_open_contactor"]
    car.until(Phase.WELDING)
    car.present(0.0)
    car.until(Phase.UNPLUGGED)
    assert car.runner is not None
    assert car.runner.finished
    assert car.runner.error is None
    assert car.model.stop_reason == "the charger asked to stop"


def test_stop_charging_false_changes_nothing() -> None:
    car = Car(FULL_SESSION)
    car.to_current_demand()
    car.charger("on_stop_charging", False)
    assert car.model.phase is Phase.CURRENT_DEMAND


def test_an_emergency_shutdown_from_the_charger_stops_the_car_at_once() -> None:
    car = Car(FULL_SESSION.replace("iso_wait_for_stop 5", "iso_wait_for_stop 600"))
    car.to_current_demand()
    car.tick(2)
    before = len(car.board())
    car.charger("on_send_error", "Error_EmergencyShutdown")
    assert car.model.phase is Phase.FAILED
    assert car.last_vars() == [
        "current_demand_finished",
        "dc_open_contactor",
        "dlink_terminate",
    ]
    assert car.board()[before:] == ["open", "cp B"]
    assert car.values("hlc_session_failed") == []
    car.tick()
    assert car.runner is not None
    assert car.runner.error is not None
    assert "the charger reported Error_EmergencyShutdown" in car.runner.error
    car.charger("on_reset_error")
    assert car.model.charger.error is None


def test_a_new_session_can_follow_a_failed_one_without_replugging() -> None:
    car = Car(FULL_SESSION)
    car.to_cable_check()
    car.charger("on_cable_check_finished", False)
    car.runner = ScriptRunner(parse("iso_start_v2g_session dc;iso_wait_pwr_ready"))
    car.tick()
    assert car.model.phase is Phase.WAIT_AUTH  # the old authorization died with the session
    car.charger("on_authorization_response", "Accepted", "Accepted")
    car.tick()
    assert car.model.phase is Phase.CABLE_CHECK


def test_unplugging_mid_session_only_moves_the_cp() -> None:
    car = Car(FULL_SESSION)
    car.to_current_demand()
    car.tick()
    car.model.unplug(car.now)
    car.collect()
    assert car.last_vars() == []
    assert car.board()[-2:] == ["open", "cp A"]
    assert car.model.phase is Phase.UNPLUGGED


def test_waiting_for_power_without_a_session_ends_the_script() -> None:
    car = Car("plugin;iso_wait_pwr_ready")
    car.tick(2)
    assert car.runner is not None
    assert car.runner.error == (
        "command 2 'iso_wait_pwr_ready': no V2G session is running: iso_start_v2g_session first"
    )


def test_starting_a_session_unplugged_ends_the_script() -> None:
    car = Car("iso_start_v2g_session dc")
    car.tick()
    assert car.runner is not None
    assert car.runner.error is not None
    assert "not plugged in" in car.runner.error


def test_pause_error_e_and_diode_fail_are_raw_board_actions() -> None:
    car = Car(FULL_SESSION)
    car.to_current_demand()
    car.runner = ScriptRunner(parse("pause;error_e;diode_fail;unplug"))
    car.tick(4)
    tail = [o for _, o in car.outputs if not isinstance(o, (Publish, Note))][-6:]
    assert tail == [
        EvContactor(False),
        SetCp("B"),
        SetCp("E"),
        DiodeFault(True),
        DiodeFault(False),
        SetCp("A"),
    ]
    assert car.values("current_demand_finished") == []  # the session was not told


def test_commands_the_car_has_no_use_for_are_recorded() -> None:
    car = Car()
    car.model.record("update_isolation_status", {"isolation_status": "Valid"})
    car.charger("on_maximum_limits", {"evse_maximum_current_limit": 200.0})
    assert car.model.charger.received["update_isolation_status"] == {"isolation_status": "Valid"}
    assert car.model.charger.maximum_limits == {"evse_maximum_current_limit": 200.0}
