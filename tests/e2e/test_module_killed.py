"""A module process killed with SIGKILL while the SIL DC charger is exporting (issue 8,
item 1): PyInfyPowerDC, PyEvseManager or PyOCPP201, under `everkit run`'s default policy
(one module exits: stop all, as EVerest) and under `--restart ID`.

The two simulated Infy modules run in this test process, behind a socketcand look-alike
(can_hub.py), so they outlive the driver as real modules would; the driver uses python-can's
stock socketcand client. Every CAN frame crossing the hub is recorded, and the modules' own
state says when their output is really off. The requirement in every case: the charger is
never left with the power supply exporting; the figure is how long after the kill it is off.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import can
import paho.mqtt.client as paho
import pytest
import yaml

from everkit.framework.transport import BrokerAddress
from everkit.power_supply_infy.bus_log import BusState, bus_states
from everkit.power_supply_infy.codec import Decoded, OnOff, decode_request
from everkit.power_supply_infy.sim_model import Load
from everkit.power_supply_infy.simulator import CanSimulator, ModuleStack, SimulatedModule
from tests.conftest import RawClient
from tests.e2e.can_hub import CanHub
from tests.e2e.conftest import CsmsProcess
from tests.e2e.sil import ROOT, SCRIPT, sil_config
from tests.e2e.test_sil_dc import session_events

pytestmark = pytest.mark.integration
ADDRESSES = (1, 2)
SAFE_A = 2.0  # the driver's safe_off_current_A
WAIT_S = 90.0
#: a short back-off keeps the tests short; the default is 1 s
RESTART = ["--restart-delay", "0.5"]


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    log: Path
    hub: CanHub
    simulator: CanSimulator
    modules: list[SimulatedModule]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pid(self, module_id: str) -> int:
        found = re.findall(rf"started module '{module_id}' \(\w+\) as pid (\d+)", self.output())
        assert found, f"no pid for {module_id}:\n{self.output()[-2000:]}"
        return int(found[-1])

    def exporting(self) -> bool:
        with self.simulator.lock:
            return any(m.on or m.current_A >= SAFE_A for m in self.modules)

    def wait_off(self, timeout: float) -> float:
        """When every module's output is off and below the safe current (monotonic s)."""
        return poll(lambda: not self.exporting(), timeout, "the modules to switch off")

    def states(self, since: float = 0.0) -> list[BusState]:
        return bus_states(_stamped(self.hub, since))

    def onoff_after(self, since: float) -> dict[int, list[bool]]:
        """Per module, the 0x1A on (True) / off (False) frames the controller sent."""
        sent: dict[int, list[bool]] = {}
        for record in list(self.hub.frames):
            if record.at < since or record.source != "tcp":
                continue
            message = record.message
            request = decode_request(
                message.arbitration_id, bytes(message.data), message.is_extended_id
            )
            if isinstance(request, Decoded) and isinstance(request.payload, OnOff):
                sent.setdefault(request.id.destination, []).append(request.payload.on)
        return sent

    def switched_off_for_good(self, since: float) -> bool:
        """Every module got an Off after ``since``, and no On after that."""
        sent = self.onoff_after(since)
        return set(sent) == set(ADDRESSES) and all(
            False in frames and True not in frames[frames.index(False) :]
            for frames in sent.values()
        )

    def watchdog_fired(self) -> dict[int, bool]:
        """Per module, whether its own keep-alive switched it off (B6 bit 7)."""
        with self.simulator.lock:
            return {m.address: m.comm_lost for m in self.modules}

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the stack did not end:\n{self.output()[-3000:]}")


def poll(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for the simulated modules' state, which no event announces (a 20 ms poll)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic()


def _stamped(hub: CanHub, since: float) -> list[can.Message]:
    return [
        can.Message(
            timestamp=r.at,
            arbitration_id=r.message.arbitration_id,
            data=r.message.data,
            is_extended_id=r.message.is_extended_id,
        )
        for r in list(hub.frames)
        if r.at >= since
    ]


def _follow_phase(
    recorder: RawClient, prefix: str, simulator: CanSimulator
) -> Callable[[paho.Client, object, paho.MQTTMessage], None]:
    """The car's battery hangs on the output while EvseManager's phase is Charging (what
    PyInfyPowerDC's own simulate_modules does; here the modules are ours)."""
    battery = Load(battery_emf_V=360.0)

    def on_set_mode(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        recorder._record(client, userdata, message)
        data = json.loads(message.payload).get("data") or {}
        args = data.get("args") or {}
        charging = args.get("mode") == "Export" and args.get("phase") == "Charging"
        with simulator.lock:
            simulator.stack.load = battery if charging else battery.open_circuit()

    return on_set_mode


@contextmanager
def sil_stack(
    tmp_path: Path,
    broker: BrokerAddress,
    prefix: str,
    csms: CsmsProcess,
    recorder: RawClient,
    *options: str,
    charge_s: int = 12,
) -> Iterator[Stack]:
    hub = CanHub()
    modules = [SimulatedModule(address) for address in ADDRESSES]
    simulator = CanSimulator(hub.port(), ModuleStack(modules, load=Load(360.0).open_circuit()))
    simulator.start()
    recorder.client.message_callback_add(
        f"{prefix}modules/psu/impl/main/cmd/setMode", _follow_phase(recorder, prefix, simulator)
    )
    hub_bus = {
        "can_interface": "socketcand",
        "can_channel": "can0",
        "module_addresses": ",".join(map(str, ADDRESSES)),
        "simulate_modules": False,
    }
    config = sil_config(
        tmp_path, prefix, csms.url, script=SCRIPT.format(charge_s=charge_s), psu=hub_bus
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "run.log"
    command = [sys.executable, "-m", "everkit", "run", str(path), "--broker", str(broker)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--prefix", prefix, *options],
            cwd=ROOT,
            env={**os.environ, "CAN_CONFIG": hub.can_config},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    stack = Stack(process, log, hub, simulator, modules)
    try:
        yield stack
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        simulator.stop()
        hub.close()


def kill_while_exporting(stack: Stack, recorder: RawClient, prefix: str, module_id: str) -> float:
    """SIGKILL ``module_id`` once the car is charging and real current flows."""
    recorder.wait_for(
        lambda m: m.topic.endswith("evse/var/session_event") and b'"ChargingStarted"' in m.payload,
        timeout=WAIT_S,
    )
    recorder.wait_for(
        lambda m: (
            m.topic == f"{prefix}modules/psu/impl/main/var/voltage_current"
            and json.loads(m.payload)["data"]["data"]["current_A"] > 5.0
        ),
        timeout=WAIT_S,
    )
    assert stack.exporting()
    os.kill(stack.pid(module_id), signal.SIGKILL)
    return time.monotonic()


def report(what: str, seconds: float) -> None:
    print(f"\n{what}: {seconds:.2f} s")  # the figure, with -s (see docs/reliability.md)


# the power supply driver


def test_psu_driver_killed_stop_all_the_modules_own_keepalive_switches_them_off(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient, csms: CsmsProcess
) -> None:
    with sil_stack(tmp_path, broker, prefix, csms, recorder) as stack:
        killed = kill_while_exporting(stack, recorder, prefix, "psu")
        assert stack.wait_exit() == 1
        assert re.search(r"stopping all modules: module 'psu' .* killed by SIGKILL", stack.output())
        # nobody is left to send Off: the modules export until their CAN watchdog expires
        off = stack.wait_off(WAIT_S)
        assert not stack.onoff_after(killed)  # no controller frame at all after the kill
        assert stack.watchdog_fired() == dict.fromkeys(ADDRESSES, True)
        report("psu killed, stop all: output off after the kill", off - killed)


def test_psu_driver_killed_and_restarted_switches_the_modules_off_at_once(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient, csms: CsmsProcess
) -> None:
    with sil_stack(tmp_path, broker, prefix, csms, recorder, "--restart", "psu", *RESTART) as s:
        killed = kill_while_exporting(s, recorder, prefix, "psu")
        off = s.wait_off(WAIT_S)
        assert s.watchdog_fired() == dict.fromkeys(ADDRESSES, False)
        # the restarted driver's first word to each module is Off (its desired state at boot)
        assert {m: frames[0] for m, frames in s.onoff_after(killed).items()} == dict.fromkeys(
            ADDRESSES, False
        )
        assert s.hub.connections == 2
        report("psu killed, restarted: output off after the kill", off - killed)
        assert s.wait_exit() == 0, s.output()[-3000:]
        # EvseManager never asked for Export again: the output stayed off to the end
        assert all(state.current_A == 0.0 for state in s.states(since=off))
        assert not s.exporting()


# EvseManager


@pytest.mark.parametrize(
    "module_id",
    [
        # the PSU driver, SIGTERMed by the manager's stop-all, switches the modules off
        pytest.param("evse_manager", id="evse_manager"),
        pytest.param("ocpp", id="ocpp"),
    ],
)
def test_a_controller_side_module_killed_stop_all_ends_with_the_output_off(
    module_id: str,
    tmp_path: Path,
    broker: BrokerAddress,
    prefix: str,
    recorder: RawClient,
    csms: CsmsProcess,
) -> None:
    with sil_stack(tmp_path, broker, prefix, csms, recorder) as stack:
        killed = kill_while_exporting(stack, recorder, prefix, module_id)
        assert stack.wait_exit() == 1
        off = stack.wait_off(WAIT_S)
        assert stack.watchdog_fired() == dict.fromkeys(ADDRESSES, False)
        assert stack.switched_off_for_good(killed)
        report(f"{module_id} killed, stop all: output off after the kill", off - killed)


def test_evse_manager_killed_and_restarted_switches_the_psu_off_when_ready(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient, csms: CsmsProcess
) -> None:
    options = ("--restart", "evse_manager", *RESTART)
    with sil_stack(tmp_path, broker, prefix, csms, recorder, *options) as stack:
        killed = kill_while_exporting(stack, recorder, prefix, "evse_manager")
        off = stack.wait_off(WAIT_S)
        assert stack.watchdog_fired() == dict.fromkeys(ADDRESSES, False)
        # the driver kept its last setpoint alive until the new EvseManager said Off
        assert stack.switched_off_for_good(killed)
        command = recorder.wait_for(
            lambda m: m.topic.endswith("psu/impl/main/cmd/setMode") and m.at > killed,
            timeout=WAIT_S,
        )[0]
        assert json.loads(command.payload)["data"]["args"]["mode"] == "Off"
        # and only then the relays open (setMode(Off) returns once the current is safe)
        relays = recorder.wait_for(
            lambda m: m.topic.endswith("board_support/cmd/allow_power_on") and m.at > killed,
            timeout=WAIT_S,
        )[0]
        assert json.loads(relays.payload)["data"]["args"]["value"]["allow_power_on"] is False
        assert relays.at >= command.at
        report("evse_manager killed, restarted: output off after the kill", off - killed)
        stack.process.send_signal(signal.SIGTERM)
        stack.wait_exit()
        assert not stack.exporting()


# the OCPP bridge


def test_ocpp_bridge_killed_and_restarted_charging_goes_on_and_every_event_arrives(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient, csms: CsmsProcess
) -> None:
    options = ("--restart", "ocpp", *RESTART)
    with sil_stack(tmp_path, broker, prefix, csms, recorder, *options, charge_s=16) as stack:
        killed = kill_while_exporting(stack, recorder, prefix, "ocpp")
        assert stack.wait_exit() == 0, stack.output()[-3000:]
    # charging went on while the bridge was away: no stop until the car's own
    events = session_events(recorder)
    after = events[events.index("ChargingStarted") + 1 :]
    assert after[:2] == ["StoppingCharging", "ChargingPausedEV"], events
    assert any(state.current_A > 5.0 for state in stack.states(since=killed + 1.0))
    # the CSMS got the whole transaction: one id, seqNo without a gap, Started ... Ended
    transaction = csms.calls("TransactionEvent")
    assert [e["seqNo"] for e in transaction] == list(range(len(transaction)))
    assert {e["transactionInfo"]["transactionId"] for e in transaction} == {
        transaction[0]["transactionInfo"]["transactionId"]
    }
    kinds = [e["eventType"] for e in transaction]
    assert kinds[0] == "Started", kinds
    assert kinds[-1] == "Ended", kinds
    assert set(kinds[1:-1]) <= {"Updated"}
    assert transaction[-1]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert len(csms.calls("BootNotification")) == 2  # the restarted bridge booted again
    assert not stack.exporting()
