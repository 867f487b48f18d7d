"""PyInfyPowerDC as a module on a real Mosquitto, with simulated Infy modules on its own
virtual CAN channel and a CAN observer on the same channel: every setpoint crosses real
frames, every var and error crosses real MQTT. A test peer drives it like EvseManager."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
import pytest

from everkit.framework.error_model import ErrorObject
from everkit.framework.errors import HandlerException, SchemaValidationError
from everkit.framework.module import Module
from everkit.framework.transport import BrokerAddress
from everkit.power_supply_infy import codec
from everkit.power_supply_infy.codec import Command
from everkit.power_supply_infy.module import PyInfyPowerDC
from everkit.power_supply_infy.status import bit_named
from tests.conftest import RawClient
from tests.integration.harness import META, in_process_stack, start_module

pytestmark = pytest.mark.integration
WAIT = 10.0
PEER_MANIFEST = {
    "TestPsuPeer": {
        "description": "drives a power_supply_DC like EvseManager does",
        "requires": {"psu": {"interface": "power_supply_DC"}},
        "metadata": META,
    }
}


class CanRecorder:
    """Every frame on the channel, with its arrival time (time.monotonic)."""

    def __init__(self, channel: str) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.frames: list[tuple[float, can.Message]] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.bus.recv(0.05)
            if message is not None:
                with self._changed:
                    self.frames.append((time.monotonic(), message))
                    self._changed.notify_all()

    def sent_by_driver(
        self, command: Command, since: float = 0.0
    ) -> list[tuple[float, codec.Decoded]]:
        found = []
        with self._changed:
            for at, message in self.frames:
                decoded = codec.decode_request(message.arbitration_id, bytes(message.data))
                if (
                    at >= since
                    and isinstance(decoded, codec.Decoded)
                    and decoded.id.source == codec.DEFAULT_CONTROLLER
                    and decoded.id.command == command
                ):
                    found.append((at, decoded))
        return found

    def wait_for(
        self, command: Command, since: float, timeout: float = WAIT
    ) -> list[tuple[float, codec.Decoded]]:
        with self._changed:
            assert self._changed.wait_for(lambda: self.sent_by_driver(command, since), timeout)
        return self.sent_by_driver(command, since)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.bus.shutdown()


@dataclass
class Observed:
    """What the peer saw on MQTT, each with time.monotonic()."""

    vars: dict[str, list[tuple[float, Any]]] = field(default_factory=dict)
    raised: list[tuple[float, ErrorObject]] = field(default_factory=list)
    cleared: list[tuple[float, ErrorObject]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, bucket: list[tuple[float, Any]], value: Any) -> None:
        with self.changed:
            bucket.append((time.monotonic(), value))
            self.changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), "timed out"

    def latest(self, var: str) -> Any:
        return self.vars[var][-1][1] if self.vars.get(var) else None


@dataclass
class PsuStack:
    peer: Module
    driver: PyInfyPowerDC
    can: CanRecorder
    seen: Observed
    prefix: str

    def simulated(self, address: int) -> Any:
        assert self.driver.simulator is not None
        return self.driver.simulator.stack.module(address)


@pytest.fixture
def psu(broker: BrokerAddress, prefix: str, tmp_path: Path) -> Iterator[PsuStack]:
    channel = f"infy-{uuid.uuid4().hex[:8]}"
    config = {
        "active_modules": {
            "psu": {
                "module": "PyInfyPowerDC",
                "config_implementation": {
                    "main": {
                        "can_interface": "virtual",
                        "can_channel": channel,
                        "module_addresses": "1,2",
                        "simulate_modules": True,
                    }
                },
            },
            "peer": {
                "module": "TestPsuPeer",
                "connections": {"psu": [{"module_id": "psu", "implementation_id": "main"}]},
            },
        }
    }
    with in_process_stack(broker, prefix, tmp_path, config, PEER_MANIFEST) as (_manager, started):
        recorder = CanRecorder(channel)
        psu_module = start_module(broker, prefix, "psu")
        started["psu"] = psu_module
        driver = PyInfyPowerDC.attach(psu_module)
        peer = start_module(broker, prefix, "peer", default_timeout=WAIT)
        started["peer"] = peer
        seen = Observed()
        for var in ("capabilities", "voltage_current", "mode"):
            bucket = seen.vars.setdefault(var, [])
            peer.subscribe_variable("psu", var, lambda v, b=bucket: seen.add(b, v))
        peer.subscribe_error(
            "psu", None, lambda e: seen.add(seen.raised, e), lambda e: seen.add(seen.cleared, e)
        )
        ready = threading.Event()
        psu_module.init_done(driver.sink.ready)
        peer.init_done(ready.set)
        assert ready.wait(WAIT)
        try:
            yield PsuStack(peer, driver, recorder, seen, prefix)
        finally:
            driver.close()
            recorder.close()


def export(psu: PsuStack, voltage: float, current: float) -> None:
    psu.peer.call_command(
        "psu", "setExportVoltageCurrent", {"voltage": voltage, "current": current}
    )
    psu.peer.call_command("psu", "setMode", {"mode": "Export", "phase": "Charging"})


def test_capabilities_and_a_steady_voltage_current_reach_the_peer(psu: PsuStack) -> None:
    psu.seen.wait(lambda: psu.seen.latest("capabilities") is not None)
    caps = psu.seen.latest("capabilities")
    assert caps["max_export_current_A"] == 200.0  # two simulated 100 A modules
    assert caps["max_export_power_W"] == 60000.0
    psu.seen.wait(lambda: len(psu.seen.vars["voltage_current"]) >= 6)
    times = [t for t, _ in psu.seen.vars["voltage_current"]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps[1:]) < 0.35  # the measured rate is in bench/; this only guards gross gaps


def test_export_then_off_follows_the_setpoint_and_off_returns_with_safe_current(
    psu: PsuStack,
) -> None:
    since = time.monotonic()
    export(psu, 400.0, 60.0)
    frames = psu.can.wait_for(Command.SET_MODULE_OUTPUT, since)
    assert {d.id.destination for _, d in frames} == {1, 2}
    assert {d.payload for _, d in frames} == {codec.OutputSetpoint(400_000, 30_000)}
    psu.seen.wait(lambda: abs(psu.seen.latest("voltage_current")["current_A"] - 60.0) < 1.0)
    started = time.monotonic()
    psu.peer.call_command("psu", "setMode", {"mode": "Off", "phase": "Charging"})
    took = time.monotonic() - started
    assert psu.driver.simulator is not None
    with psu.driver.simulator.lock:
        remaining = psu.driver.simulator.stack.total_current_A
    assert remaining < 2.0, "setMode(Off) returned while current was still flowing"
    assert took < 1.5 + 0.5
    offs = psu.can.sent_by_driver(Command.ON_OFF, started)
    assert {d.id.destination for _, d in offs if d.payload == codec.OnOff(on=False)} == {1, 2}


def test_invalid_arguments_get_a_clear_error_and_nothing_is_sent_on_the_bus(
    psu: PsuStack, raw_client: RawClient
) -> None:
    with pytest.raises(SchemaValidationError, match=r"args\.mode"):
        psu.peer.call_command("psu", "setMode", {"mode": "Charge", "phase": "Charging"})
    topic = f"{psu.prefix}modules/psu/impl/main/cmd/setExportVoltageCurrent"
    raw_client.subscribe(f"{topic}/response/raw")
    call = {"msg_type": "Cmd", "data": {"id": "x1", "args": {"voltage": "400"}, "origin": "raw"}}
    raw_client.publish(topic, json.dumps(call))
    reply = json.loads(raw_client.on_topic(f"{topic}/response/raw")[0].payload)
    assert reply["data"]["data"]["error"]["__everest__error_type"] == "SchemaValidationError"
    psu.seen.wait(lambda: psu.seen.latest("capabilities") is not None)
    with pytest.raises(HandlerException, match="above the modules' maximum"):
        psu.peer.call_command(
            "psu", "setExportVoltageCurrent", {"voltage": 1200.0, "current": 10.0}
        )
    psu.peer.call_command("psu", "setMode", {"mode": "Off", "phase": "Other"})  # a barrier
    assert psu.can.sent_by_driver(Command.SET_MODULE_OUTPUT) == []


def test_can_silence_raises_comm_fault_and_recovery_replays_before_clearing(psu: PsuStack) -> None:
    export(psu, 400.0, 20.0)
    psu.can.wait_for(Command.SET_MODULE_OUTPUT, 0.0)
    for address in (1, 2):
        psu.simulated(address).go_silent()
    silent_since = time.monotonic()

    def comm_fault(bucket: list[tuple[float, ErrorObject]]) -> list[tuple[float, ErrorObject]]:
        return [(t, e) for t, e in bucket if e.type == "power_supply_DC/CommunicationFault"]

    psu.seen.wait(lambda: bool(comm_fault(psu.seen.raised)))
    raised_at = comm_fault(psu.seen.raised)[0][0]
    assert raised_at - silent_since < 1.0 + 0.5  # comm_fault_timeout 1 s, plus a poll
    for address in (1, 2):
        psu.simulated(address).resume()
    back = time.monotonic()
    psu.seen.wait(lambda: bool(comm_fault(psu.seen.cleared)))
    cleared_at = comm_fault(psu.seen.cleared)[0][0]
    replays = psu.can.sent_by_driver(Command.SET_MODULE_OUTPUT, back)
    assert replays, "no setpoint was replayed on recovery"
    assert replays[0][0] < cleared_at, "the fault was cleared before the replay"
    assert replays[0][1].payload == codec.OutputSetpoint(400_000, 10_000)


def test_a_module_fault_raises_an_error_for_that_module_only(psu: PsuStack) -> None:
    psu.seen.wait(lambda: psu.seen.latest("capabilities") is not None)
    hot = bit_named("over-temperature")
    psu.simulated(2).inject_status(hot)
    psu.seen.wait(lambda: any(e.type.endswith("OverTemperature") for _, e in psu.seen.raised))
    error = next(e for _, e in psu.seen.raised if e.type.endswith("OverTemperature"))
    assert error.sub_type == "module 2"
    assert error.severity.value == "High"
    psu.simulated(2).clear_status(hot)
    psu.seen.wait(lambda: any(e.type.endswith("OverTemperature") for _, e in psu.seen.cleared))


def test_closing_the_driver_switches_the_modules_off(psu: PsuStack) -> None:
    """Infy modules keep their output for 10 s without a controller: tell them first."""
    export(psu, 400.0, 20.0)
    psu.can.wait_for(Command.SET_MODULE_OUTPUT, 0.0)
    closing = time.monotonic()
    psu.driver.close()
    offs = psu.can.wait_for(Command.ON_OFF, closing)
    assert {(d.id.destination, d.payload) for _, d in offs} >= {
        (1, codec.OnOff(on=False)),
        (2, codec.OnOff(on=False)),
    }
