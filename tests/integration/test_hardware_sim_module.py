"""PyHardwareSim as a module on a real Mosquitto. A test peer plays both EvseManager
(charger side: evse_board_support, isolation_monitor, powermeter) and EvManager (car
side: ev_board_support), and stands in for the power supply whose voltage_current the
simulator's meter and IMD read. Every var, command and error crosses real MQTT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from everkit.framework.error_model import ErrorObject, Severity
from everkit.framework.module import Module
from everkit.framework.transport import BrokerAddress
from everkit.simulators.hardware import HardwareSim
from everkit.simulators.hardware_model import EMERGENCY_STOP
from tests.integration.harness import META, in_process_stack, start_module

pytestmark = pytest.mark.integration
WAIT = 10.0
PEER_MANIFEST = {
    "TestHwPeer": {
        "description": "drives both boards of PyHardwareSim and plays its power supply",
        "provides": {"psu": {"interface": "power_supply_DC", "description": "stand-in supply"}},
        "requires": {
            "board": {"interface": "evse_board_support"},
            "ev": {"interface": "ev_board_support"},
            "imd": {"interface": "isolation_monitor"},
            "meter": {"interface": "powermeter"},
        },
        "metadata": META,
    }
}
WATCHED = {
    "board": ("event",),
    "ev": ("bsp_event", "bsp_measurement"),
    "imd": ("isolation_measurement", "self_test_result"),
    "meter": ("powermeter",),
}


def _connect(impl: str) -> list[dict[str, str]]:
    return [{"module_id": "hw", "implementation_id": impl}]


CONFIG = {
    "active_modules": {
        "hw": {
            "module": "PyHardwareSim",
            "config_module": {
                "imd_interval_ms": 100,
                "imd_selftest_duration_ms": 200,
                "meter_interval_ms": 100,
            },
            "connections": {"powersupply": [{"module_id": "peer", "implementation_id": "psu"}]},
        },
        "peer": {
            "module": "TestHwPeer",
            "connections": {
                "board": _connect("board_support"),
                "ev": _connect("ev_board_support"),
                "imd": _connect("imd"),
                "meter": _connect("powermeter"),
            },
        },
    }
}


@dataclass
class Seen:
    """What the peer received, per var, and the errors raised and cleared."""

    vars: dict[str, list[Any]] = field(default_factory=dict)
    raised: list[ErrorObject] = field(default_factory=list)
    cleared: list[ErrorObject] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, bucket: list[Any], value: Any) -> None:
        with self.changed:
            bucket.append(value)
            self.changed.notify_all()

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, WAIT), f"timed out waiting for {what}"

    def count(self, var: str) -> int:
        with self.changed:
            return len(self.vars[var])

    def events(self, var: str = "event") -> list[str]:
        with self.changed:
            return [value["event"] for value in self.vars[var]]

    def wait_events(self, expected: list[str], var: str = "event") -> None:
        """Wait until the last events of ``var`` are exactly ``expected``, in order."""
        self.wait(lambda: self.events(var)[-len(expected) :] == expected, f"{var} {expected}")


@dataclass
class Stack:
    peer: Module
    sim: HardwareSim
    seen: Seen

    def call(self, requirement: str, cmd: str, args: dict[str, Any] | None = None) -> Any:
        return self.peer.call_command(requirement, cmd, args)

    def car(self, state: str) -> None:
        self.call("ev", "set_cp_state", {"cp_state": state})

    def allow(self, allow: bool, reason: str = "FullPowerCharging") -> None:
        self.call("board", "allow_power_on", {"value": {"allow_power_on": allow, "reason": reason}})

    def plug_in_and_charge(self) -> None:
        self.car("B")
        self.call("board", "pwm_on", {"value": 5.0})
        self.car("C")
        self.seen.wait_events(["C"])
        self.allow(True)
        self.seen.wait_events(["PowerOn"])


def bind_supply(peer: Module) -> None:
    """The stand-in supply takes every command and does nothing: only its var matters."""

    def ignore(**_args: Any) -> None:
        return None

    for cmd in ("setMode", "setExportVoltageCurrent", "setImportVoltageCurrent"):
        peer.implement_command("psu", cmd, ignore)


def watch(peer: Module, seen: Seen) -> None:
    for requirement, names in WATCHED.items():
        for var in names:
            bucket = seen.vars.setdefault(var, [])
            peer.subscribe_variable(requirement, var, lambda v, b=bucket: seen.add(b, v))
    peer.subscribe_error(
        "board", None, lambda e: seen.add(seen.raised, e), lambda e: seen.add(seen.cleared, e)
    )


@pytest.fixture
def stack(broker: BrokerAddress, prefix: str, tmp_path: Path) -> Iterator[Stack]:
    with in_process_stack(broker, prefix, tmp_path, CONFIG, PEER_MANIFEST) as (_, started):
        hw = start_module(broker, prefix, "hw")
        started["hw"] = hw
        sim = HardwareSim.attach(hw)
        peer = start_module(broker, prefix, "peer", default_timeout=WAIT)
        started["peer"] = peer
        bind_supply(peer)
        seen = Seen()
        watch(peer, seen)
        ready = threading.Event()
        hw.init_done(sim.ready)
        peer.init_done(ready.set)
        assert ready.wait(WAIT), "no GlobalReady"
        try:
            yield Stack(peer, sim, seen)
        finally:
            sim.close()


def test_the_charger_sees_plug_in_charge_request_power_on_and_the_stop(stack: Stack) -> None:
    stack.seen.wait_events(["A"])  # the idle line, reported at GlobalReady
    stack.car("B")
    stack.seen.wait_events(["A", "B"])
    stack.plug_in_and_charge()
    stack.seen.wait_events(["B", "C", "PowerOn"], var="bsp_event")  # the car sees it too
    assert stack.sim.relays_closed
    stack.car("B")
    stack.seen.wait_events(["C", "PowerOn", "B", "PowerOff"])
    assert not stack.sim.relays_closed


def test_allow_power_on_in_B_leaves_the_contactors_open(stack: Stack) -> None:
    stack.car("B")
    stack.allow(True, "DCCableCheck")
    stack.car("C")
    stack.seen.wait_events(["B", "C"])  # same topic, in order: a PowerOn would be before C
    assert "PowerOn" not in stack.seen.events()
    assert not stack.sim.relays_closed


def test_the_car_side_measures_the_pwm(stack: Stack) -> None:
    stack.car("B")
    measured = stack.seen.vars["bsp_measurement"]
    stack.call("board", "pwm_on", {"value": 5.0})
    stack.seen.wait(lambda: measured[-1]["cp_pwm_duty_cycle"] == 5.0, "5 % PWM")
    stack.call("board", "cp_state_F")
    stack.seen.wait_events(["F"], var="bsp_event")
    # another topic: the measurement may arrive before or after the event
    stack.seen.wait(lambda: measured[-1]["cp_pwm_duty_cycle"] == 0.0, "no PWM in F")


def test_the_imd_measures_between_start_and_stop_and_answers_its_self_test(
    stack: Stack,
) -> None:
    stack.call("imd", "start")
    stack.seen.wait(lambda: stack.seen.count("isolation_measurement") >= 3, "3 readings")
    assert stack.seen.vars["isolation_measurement"][0]["resistance_F_Ohm"] == 900_000.0
    stack.call("imd", "stop")
    results = stack.seen.vars["self_test_result"]
    stack.call("imd", "start_self_test", {"test_voltage_V": 500.0})
    stack.seen.wait(lambda: results == [True], "the first self-test result")
    after_first = stack.seen.count("isolation_measurement")
    stack.call("imd", "start_self_test", {"test_voltage_V": 500.0})  # 200 ms: 2 intervals
    stack.seen.wait(lambda: results == [True, True], "the second self-test result")
    assert stack.seen.count("isolation_measurement") == after_first


def test_the_supply_voltage_reaches_the_meter_and_the_imd(stack: Stack) -> None:
    stack.plug_in_and_charge()
    stack.peer.publish_variable("psu", "voltage_current", {"voltage_V": 400.0, "current_A": 50.0})
    readings = stack.seen.vars["powermeter"]
    stack.seen.wait(
        lambda: (
            readings[-1]["power_W"]["total"] == 20_000.0
            and readings[-1]["energy_Wh_import"]["total"] > 0
        ),
        "a reading with 20 kW and some energy",
    )
    assert readings[-1]["voltage_V"] == {"DC": 400.0}
    stack.call("imd", "start")
    stack.seen.wait(
        lambda: stack.seen.count("isolation_measurement") >= 1, "a reading with the voltage"
    )
    assert stack.seen.vars["isolation_measurement"][0]["voltage_V"] == 400.0


def test_meter_transactions_answer_ok(stack: Stack) -> None:
    request = {
        "evse_id": "DE*EVK*E1",
        "transaction_id": "tx-1",
        "identification_status": "ASSIGNED",
        "identification_type": "ISO14443",
        "identification_flags": [],
    }
    assert stack.call("meter", "start_transaction", {"value": request}) == {"status": "OK"}
    assert stack.call("meter", "stop_transaction", {"transaction_id": "tx-1"}) == {"status": "OK"}


def test_the_emergency_stop_raises_mrec8_and_opens_the_contactors(stack: Stack) -> None:
    stack.plug_in_and_charge()
    stack.sim.press_emergency_stop()
    stack.seen.wait(lambda: bool(stack.seen.raised), "MREC8EmergencyStop")
    (error,) = stack.seen.raised
    assert error.type == EMERGENCY_STOP
    assert error.severity is Severity.HIGH
    assert error.origin.module_id == "hw"
    stack.seen.wait_events(["PowerOn", "PowerOff"])
    stack.sim.release_emergency_stop()
    stack.seen.wait(lambda: bool(stack.seen.cleared), "the clear")
    assert stack.seen.cleared[0].type == EMERGENCY_STOP


def test_main_serves_as_a_process_and_stops_cleanly_on_sigterm(
    broker: BrokerAddress, prefix: str, tmp_path: Path
) -> None:
    """The path `everkit run` takes once PyHardwareSim is registered: main() in its own
    process, configured by the EV_* environment, ended by SIGTERM with status 0."""
    env = {
        **os.environ,
        "EV_MODULE": "hw",
        "EV_MQTT_BROKER_HOST": broker.host,
        "EV_MQTT_BROKER_PORT": str(broker.port),
        "EV_MQTT_EVEREST_PREFIX": prefix,
    }
    code = "from everkit.simulators.hardware import main; main()"
    with in_process_stack(broker, prefix, tmp_path, CONFIG, PEER_MANIFEST) as (_, started):
        process = subprocess.Popen(
            [sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            peer = start_module(broker, prefix, "peer", default_timeout=WAIT)
            started["peer"] = peer
            bind_supply(peer)
            seen = Seen()
            watch(peer, seen)
            ready = threading.Event()
            peer.init_done(ready.set)
            assert ready.wait(WAIT), "no GlobalReady"
            peer.call_command("ev", "set_cp_state", {"cp_state": "B"})
            seen.wait_events(["A", "B"])
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=WAIT)
    assert process.returncode == 0, stderr
