"""PyEvSimulator as a module on a real Mosquitto. A test peer plays both of its neighbours:
EvseManager (requires ISO15118_charger: answers authorization, cable check and the
present values the way EvseManager forwards its PSU's) and the vehicle-side board
(provides a minimal ev_board_support: records CP states, reports 5 % PWM once the car is
in B). The order of the vars is taken from a raw MQTT client, which sees them in the
order they were published; the peer's callbacks run per topic in parallel."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import pytest

from everkit.framework import ConfigError, Module, Topics
from everkit.framework.transport import BrokerAddress
from everkit.simulators.ev import EvSimulator
from everkit.simulators.ev_model import Phase
from everkit.simulators.ev_script import ScriptError
from tests.conftest import RawClient
from tests.integration.harness import META, in_process_stack, start_module

pytestmark = pytest.mark.integration
WAIT = 15.0
SESSION = (
    "iso_wait_slac_matched;iso_start_v2g_session DC;iso_wait_pwr_ready;iso_dc_power_on;"
    "iso_wait_for_stop {stop};iso_wait_v2g_session_stopped;unplug"
)
PEER_MANIFEST = {
    "TestEvsePeer": {
        "description": "EvseManager's side of ISO15118_charger and a vehicle-side board",
        "provides": {"bsp": {"interface": "ev_board_support", "description": "fake board"}},
        "requires": {"hlc": {"interface": "ISO15118_charger"}},
        "metadata": META,
    }
}
HLC_VARS = (
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
    "dc_ev_target_voltage_current",
    "v2g_setup_finished",
    "current_demand_started",
    "current_demand_finished",
    "dc_open_contactor",
    "hlc_session_failed",
    "dlink_terminate",
)
BOARD_COMMANDS = (
    "enable",
    "set_cp_state",
    "allow_power_on",
    "diode_fail",
    "set_ac_max_current",
    "set_three_phases",
    "set_rcd_error",
)


@dataclass
class Peer:
    """EvseManager and the EV-side board, as far as the car can tell."""

    module: Module
    cable_check_passes: bool = True
    board: list[tuple[str, Any]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        for command in BOARD_COMMANDS:
            self.module.implement_command(
                "bsp", command, lambda c=command, **args: self._board(c, args)
            )
        react: dict[str, Callable[[Any], None]] = {
            "require_auth_eim": lambda _v: self.call(
                "authorization_response",
                authorization_status="Accepted",
                certificate_status="Accepted",
            ),
            "start_cable_check": lambda _v: self.call(
                "cable_check_finished", status=self.cable_check_passes
            ),
            "dc_ev_target_voltage_current": self._follow_target,
            "dc_open_contactor": lambda _v: self.present(0.0, 0.0),
        }
        for var, callback in react.items():
            self.module.subscribe_variable("hlc", var, callback)

    def _board(self, command: str, args: dict[str, Any]) -> None:
        with self.changed:
            self.board.append((command, next(iter(args.values()))))
            self.changed.notify_all()
        if command == "set_cp_state":  # the charger's PWM: 5 % once the car is plugged in
            duty = 100.0 if args["cp_state"] == "A" else 5.0
            measurement = {"cp_pwm_duty_cycle": duty, "proximity_pilot": {"ampacity": "None"}}
            self.module.publish_variable("bsp", "bsp_measurement", measurement)

    def call(self, command: str, **args: Any) -> None:
        self.module.call_command("hlc", command, args)

    def present(self, voltage: float, current: float) -> None:
        values = {"evse_present_voltage": voltage, "evse_present_current": current}
        self.call("update_dc_present_values", present_voltage_current=values)

    def _follow_target(self, target: dict[str, float]) -> None:
        """An ideal PSU: the present values are what the car asked for."""
        self.present(target["dc_ev_target_voltage"], target["dc_ev_target_current"])

    def commands(self, name: str) -> list[Any]:
        with self.changed:
            return [value for command, value in self.board if command == name]

    def wait_board(self, predicate: Callable[[Peer], bool]) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self), WAIT), self.board


@dataclass
class Bus:
    """The charger vars in publication order, as a foreign MQTT client sees them."""

    raw: RawClient
    topics: Topics

    def names(self) -> list[str]:
        prefix = self.topics.var("ev", "charger", "")
        names = [
            m.topic.removeprefix(prefix) for m in self.raw.messages if m.topic.startswith(prefix)
        ]
        return [name for name, _ in groupby(names)]

    def value(self, var: str) -> Any:
        topic = self.topics.var("ev", "charger", var)
        found = self.raw.on_topic(topic, timeout=WAIT)
        return json.loads(found[-1].payload)["data"]["data"]

    def wait_for(self, var: str) -> None:
        self.raw.on_topic(self.topics.var("ev", "charger", var), timeout=WAIT)


@dataclass
class Stack:
    sim: EvSimulator
    peer: Peer
    bus: Bus


def stack_config(**ev_config: Any) -> dict[str, Any]:
    return {
        "active_modules": {
            "ev": {
                "module": "PyEvSimulator",
                "config_module": ev_config,
                "connections": {
                    "ev_board_support": [{"module_id": "peer", "implementation_id": "bsp"}]
                },
            },
            "peer": {
                "module": "TestEvsePeer",
                "connections": {"hlc": [{"module_id": "ev", "implementation_id": "charger"}]},
            },
        }
    }


@pytest.fixture
def make_stack(
    broker: BrokerAddress, prefix: str, tmp_path: Path, raw_client: RawClient
) -> Iterator[Callable[..., Stack]]:
    """Start the stack with the given PyEvSimulator config; everything is torn down after."""
    with ExitStack() as cleanup:

        def start(**ev_config: Any) -> Stack:
            config = stack_config(**ev_config)
            stack = in_process_stack(broker, prefix, tmp_path, config, PEER_MANIFEST)
            _manager, started = cleanup.enter_context(stack)
            topics = Topics(prefix)
            raw_client.subscribe(topics.var("ev", "charger", "#"))
            ev_module = start_module(broker, prefix, "ev")
            started["ev"] = ev_module
            sim = EvSimulator.attach(ev_module)
            cleanup.callback(sim.close)
            peer_module = start_module(broker, prefix, "peer", default_timeout=WAIT)
            started["peer"] = peer_module
            peer = Peer(peer_module)
            ready = threading.Event()
            ev_module.init_done(sim.on_ready)
            peer_module.init_done(ready.set)
            assert ready.wait(WAIT)
            return Stack(sim, peer, Bus(raw_client, topics))

        yield start


def cp_states_are(*states: str) -> Callable[[Peer], bool]:
    return lambda peer: peer.commands("set_cp_state") == list(states)


def script_ended(sim: EvSimulator) -> bool:
    return sim.script_finished


def test_a_scripted_session_runs_the_whole_dc_sequence(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(auto_exec=True, auto_exec_commands=SESSION.format(stop=1))
    stack.peer.wait_board(cp_states_are("A", "B", "C", "B", "A"))
    assert stack.sim.wait_for(script_ended, WAIT)
    assert stack.sim.script_error is None
    names = stack.bus.names()
    cd_start, cd_end = names.index("current_demand_started"), names.index("current_demand_finished")
    assert names[: cd_start + 1] == [
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
    ]
    loop = names[cd_start + 1 : cd_end]
    assert len(loop) >= 8
    assert set(loop) == {"dc_ev_target_voltage_current", "dc_ev_status"}
    assert names[cd_end:] == ["current_demand_finished", "dc_open_contactor", "dlink_terminate"]
    assert stack.peer.commands("enable") == [True]
    assert stack.peer.commands("allow_power_on") == [False, True, False]
    assert stack.bus.value("evcc_id") == "AA:BB:CC:DD:EE:FF"
    assert stack.sim.state is Phase.UNPLUGGED
    assert stack.sim.soc > 30.0  # about 8 kW for a second or so


def test_the_charger_stops_the_session_and_the_car_finishes_normally(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(soc=50, evcc_id="02:00:00:00:00:01")
    stack.sim.execute(SESSION.format(stop=600))
    stack.bus.wait_for("current_demand_started")
    stack.peer.call("stop_charging", stop=True)
    stack.peer.wait_board(cp_states_are("A", "B", "C", "B", "A"))
    assert stack.sim.wait_for(script_ended, WAIT)
    assert stack.sim.script_error is None
    assert stack.bus.names()[-3:] == [
        "current_demand_finished",
        "dc_open_contactor",
        "dlink_terminate",
    ]
    assert stack.bus.value("evcc_id") == "02:00:00:00:00:01"
    assert stack.bus.value("dc_ev_status")["dc_ev_ress_soc"] >= 50


def test_a_failed_cable_check_fails_the_session(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.peer.cable_check_passes = False
    stack.sim.execute(SESSION.format(stop=600))
    stack.bus.wait_for("dlink_terminate")
    assert stack.bus.value("hlc_session_failed") == "EnergyTransferSetupFailed"
    assert stack.bus.names()[-4:] == [
        "start_cable_check",
        "dc_open_contactor",
        "hlc_session_failed",
        "dlink_terminate",
    ]
    stack.peer.wait_board(cp_states_are("A", "B", "C", "B"))
    assert stack.sim.wait_for(script_ended, WAIT)
    assert stack.sim.script_error is not None
    assert "cable check failed" in stack.sim.script_error
    assert stack.sim.state is Phase.FAILED


def test_an_emergency_shutdown_stops_the_car_at_once(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.sim.execute(SESSION.format(stop=600))
    stack.bus.wait_for("current_demand_started")
    stack.peer.call("send_error", error="Error_EmergencyShutdown")
    stack.bus.wait_for("dlink_terminate")
    assert stack.bus.names()[-3:] == [
        "current_demand_finished",
        "dc_open_contactor",
        "dlink_terminate",
    ]
    stack.peer.wait_board(cp_states_are("A", "B", "C", "B"))
    assert stack.peer.commands("allow_power_on") == [False, True, False]
    with pytest.raises(ScriptError, match="command 1 'fly': unknown command"):
        stack.sim.execute("fly")
    stack.sim.execute("unplug")
    stack.peer.wait_board(cp_states_are("A", "B", "C", "B", "A"))


def test_a_broken_auto_exec_script_stops_the_module_at_start(
    broker: BrokerAddress, prefix: str, tmp_path: Path
) -> None:
    config = stack_config(auto_exec=True, auto_exec_commands="plugin;sleep")
    with in_process_stack(broker, prefix, tmp_path, config, PEER_MANIFEST) as (_m, started):
        module = start_module(broker, prefix, "ev")
        started["ev"] = module
        with pytest.raises(ConfigError, match="auto_exec_commands") as refused:
            EvSimulator.attach(module)
        assert "command 2 'sleep': takes 1 argument, got 0" in str(refused.value)
