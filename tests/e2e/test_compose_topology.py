"""The docker-compose deployment without Docker: the broker runs with deploy/mosquitto's
mosquitto.conf, a password file made by deploy/make-passwd and the ACL; every other
service of docker-compose.yml runs as a plain process with the service's own command and
environment (only the broker address, the CSMS port and the file paths are moved to this
machine). A whole charging session must work under the ACL, and a module's user must not
be able to publish on another module's commands or errors."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from everkit.framework.broker import PrivateBroker, find_mosquitto, free_port, wait_listening
from everkit.framework.transport import BrokerAddress
from tests.conftest import WAIT_S, RawClient
from tests.e2e.sil import SCRIPT as SESSION_SCRIPT

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
IN_COMPOSE_BROKER = "mosquitto:1883"
SESSION_S = 90.0
SCRIPT = SESSION_SCRIPT.format(charge_s=3)


@dataclass
class SecuredBroker:
    address: BrokerAddress

    @staticmethod
    def password(user: str) -> str:
        """The password docker-compose.yml gives ``user`` (the manager or a module id)."""
        for service in SERVICES.values():
            env = service.get("environment") or {}
            if env.get("EV_MQTT_USERNAME") == user:
                return str(env["EV_MQTT_PASSWORD"])
        raise KeyError(user)


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[SecuredBroker]:
    """Mosquitto with the deployment's config; only its listener and file paths moved."""
    binary = find_mosquitto()
    if binary is None:
        pytest.fail("Mosquitto is not installed: run tools/ensure-mosquitto")
    passwd = tmp_path / "passwd"
    subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "make-passwd"), "--output", str(passwd)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    moves = {
        "listener 1883 0.0.0.0": f"listener {port} 127.0.0.1",
        "password_file /mosquitto/config/passwd": f"password_file {passwd}",
        "acl_file /mosquitto/config/acl": f"acl_file {ROOT / 'deploy' / 'mosquitto' / 'acl'}",
    }
    for old, new in moves.items():
        assert old in conf, f"deploy/mosquitto/mosquitto.conf has no {old!r} any more"
        conf = conf.replace(old, new)
    # run as root (a CI container), mosquitto would switch to user `mosquitto`, who cannot
    # read this test's private tmp_path; as anyone else the option is ignored
    conf += f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    process = subprocess.Popen(
        [binary, "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    address = BrokerAddress("127.0.0.1", port)
    broker = PrivateBroker(address, "mosquitto", process)
    try:
        wait_listening(address, process, WAIT_S)
        yield SecuredBroker(address)
    finally:
        broker.stop()


def login(address: BrokerAddress, user: str | None, password: str | None) -> tuple[RawClient, int]:
    """A raw client logged in as ``user``; returns it and the broker's CONNACK code."""
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    if user is not None:
        client.username_pw_set(user, password)
    raw = RawClient(client)
    answered = threading.Event()
    codes: list[int] = []

    def on_connect(_c: paho.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        codes.append(reason.value)
        answered.set()

    client.on_connect = on_connect
    client.on_message = raw._record
    client.connect(address.host, address.port)
    client.loop_start()
    assert answered.wait(WAIT_S), "no CONNACK"
    return raw, codes[0]


def logout(raw: RawClient) -> None:
    raw.client.disconnect()
    raw.client.loop_stop()


def test_broker_refuses_anonymous_and_wrong_passwords(secured_broker: SecuredBroker) -> None:
    for user, password in ((None, None), ("car", "not-the-password"), ("nobody", "x")):
        raw, code = login(secured_broker.address, user, password)
        logout(raw)
        assert code != 0, f"{user!r} was let in"
    raw, code = login(secured_broker.address, "car", secured_broker.password("car"))
    logout(raw)
    assert code == 0


def test_module_user_cannot_publish_on_other_modules_cmds_or_errors(
    secured_broker: SecuredBroker,
) -> None:
    """The car may call its own connection (hardware's ev_board_support) but neither the
    PSU it is not connected to, nor another module's error, var or reply topics."""
    address = secured_broker.address
    watcher, code = login(address, "manager", secured_broker.password("manager"))
    assert code == 0
    car, code = login(address, "car", secured_broker.password("car"))
    assert code == 0
    try:
        watcher.subscribe("everest/#")
        forbidden = [
            "everest/modules/psu/impl/main/cmd/setMode",
            "everest/modules/evse_manager/impl/evse/cmd/stop_transaction",
            "everest/modules/hardware/impl/board_support/error/evse_board_support/DiodeFault",
            "everest/modules/evse_manager/impl/evse/var/session_event",
            "everest/modules/hardware/impl/ev_board_support/cmd/set_cp_state/response/auth",
            "everest/modules/ocpp/ready",
            "everest/ready",
        ]
        for topic in forbidden:
            car.publish(topic, b'{"msg_type":"Cmd","data":{}}')
        # the positive control, sent last on the same connection: once the watcher has it,
        # anything the broker let through before it has arrived too
        allowed = "everest/modules/hardware/impl/ev_board_support/cmd/set_cp_state"
        car.publish(allowed, b'{"msg_type":"Cmd","data":{}}')
        watcher.on_topic(allowed)
        seen = {m.topic for m in watcher.messages}
        assert seen.isdisjoint(forbidden), seen & set(forbidden)
    finally:
        logout(car)
        logout(watcher)


def test_acl_a_module_cannot_command_another_module_nor_raise_its_errors(
    secured_broker: SecuredBroker,
) -> None:
    """deploy/mosquitto/acl, as the targets see it: each target is logged in as its own
    module user and subscribed as that module is. `car` and `ocpp` are not connected to
    the PSU: their setMode and setExportVoltageCurrent never reach `psu`; neither can
    forge the PSU's CommunicationFault or the board's emergency stop that `evse_manager`
    acts on. The same topics from the users entitled to them do arrive."""
    address = secured_broker.address
    users = ("psu", "evse_manager", "car", "ocpp", "hardware")
    clients: dict[str, RawClient] = {}
    try:
        for user in users:
            clients[user], code = login(address, user, secured_broker.password(user))
            assert code == 0, user
        psu_cmds = "everest/modules/psu/impl/main/cmd/#"
        clients["psu"].subscribe(psu_cmds)  # what PyInfyPowerDC serves
        for topic in (  # what PyEvseManager follows
            "everest/modules/psu/impl/main/error/#",
            "everest/modules/hardware/impl/board_support/error/#",
        ):
            clients["evse_manager"].subscribe(topic)
        cmd = "everest/modules/psu/impl/main/cmd/"
        psu_error = "everest/modules/psu/impl/main/error/power_supply_DC/CommunicationFault"
        board_errors = "everest/modules/hardware/impl/board_support/error/"
        estop = board_errors + "evse_board_support/MREC8EmergencyStop"
        forged = [
            ("car", cmd + "setMode", b'{"msg_type":"Cmd","data":{"forged":"car"}}'),
            ("ocpp", cmd + "setExportVoltageCurrent", b'{"msg_type":"Cmd","data":{"forged":1}}'),
            ("car", psu_error, b'{"msg_type":"RaiseError","data":{"forged":"car"}}'),
            ("ocpp", estop, b'{"msg_type":"RaiseError","data":{"forged":"ocpp"}}'),
        ]
        for user, topic, payload in forged:
            # QoS 2 completes only once the broker has handled (here: dropped) the message
            clients[user].publish(topic, payload)
        # the entitled publishers, after: per subscriber the broker delivers in the order
        # it routed, so anything forged would have arrived before these
        controls = [
            ("hardware", cmd + "setMode", "psu"),
            ("psu", psu_error, "evse_manager"),
            ("hardware", estop, "evse_manager"),
        ]
        for user, topic, _target in controls:
            clients[user].publish(topic, b'{"msg_type":"Cmd","data":{"control":true}}')
        for _user, topic, target in controls:
            clients[target].on_topic(topic)
        received = [
            m.payload for target in ("psu", "evse_manager") for m in clients[target].messages
        ]
        assert not [p for p in received if b"forged" in p], received
        assert len(received) == len(controls)
    finally:
        for client in clients.values():
            logout(client)


# the whole topology


def localise(command: list[str], replacements: dict[str, str]) -> list[str]:
    return [replacements.get(word, word) for word in command]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition of other processes' output (a file) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def transaction_events(record: Path) -> list[str]:
    if not record.exists():
        return []
    frames = [json.loads(line)["frame"] for line in record.read_text().splitlines()]
    return [f[3]["eventType"] for f in frames if f[0] == 2 and f[2] == "TransactionEvent"]


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def test_compose_services_as_processes_charge_a_car(
    secured_broker: SecuredBroker, tmp_path: Path
) -> None:
    csms_port = free_port()
    config: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "sil-dc.compose.yaml").read_text())
    modules = config["active_modules"]
    modules["ocpp"]["config_module"].update(
        {
            "csms_url": f"ws://127.0.0.1:{csms_port}/ocpp",
            "CoreDatabasePath": str(tmp_path / "data" / "ocpp"),
        }
    )
    # a short session: quick IMD self test, a few seconds of charging
    modules["car"]["config_module"].update({"auto_exec_commands": SCRIPT, "dc_target_current": 20})
    modules["hardware"]["config_module"] = {"imd_selftest_duration_ms": 500, "imd_interval_ms": 250}
    config_file = tmp_path / "sil-dc.yaml"
    config_file.write_text(yaml.safe_dump(config))
    record = tmp_path / "data" / "ocpp.jsonl"
    record.parent.mkdir()
    replacements = {
        IN_COMPOSE_BROKER: str(secured_broker.address),
        "/config/sil-dc.yaml": str(config_file),
        "/data/ocpp.jsonl": str(record),
        "0.0.0.0": "127.0.0.1",
        "9000": str(csms_port),
    }
    # compose order: the CSMS, the manager, then the modules (they retry GetConfig anyway)
    order = ["csms", "manager"] + [
        name for name in SERVICES if name not in ("mosquitto", "csms", "manager")
    ]
    started: list[Started] = []
    try:
        for name in order:
            service = SERVICES[name]
            env = {
                **os.environ,
                **{k: str(v) for k, v in (service.get("environment") or {}).items()},
            }
            log = tmp_path / f"{name}.log"
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    [sys.executable, "-m", "everkit", *localise(service["command"], replacements)],
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            started.append(Started(name, process, log))
        car = next(s for s in started if s.name == "car")
        try:
            status = car.process.wait(SESSION_S)
        except subprocess.TimeoutExpired:
            pytest.fail("the car's script did not finish:\n" + tails(started))
        assert status == 0, "the car's script failed:\n" + tails(started)
        wait_until(lambda: "Ended" in transaction_events(record), 20.0, "TransactionEvent Ended")
        events = transaction_events(record)
        assert events[0] == "Started", events
        assert events[-1] == "Ended", events
        # the manager ends the stack with status 0 once the car's script is done, and may
        # get there before this line does; a service that failed has another status
        failed = [s.name for s in started if s.process.poll() not in (None, 0)]
        assert not failed, f"services failed: {failed}\n" + tails(started)
        assert (tmp_path / "data" / "ocpp").exists(), "no OCPP store at CoreDatabasePath"
    finally:
        for entry in reversed(started):
            if entry.process.poll() is None:
                entry.process.terminate()
        for entry in started:
            try:
                entry.process.wait(10)
            except subprocess.TimeoutExpired:
                entry.process.kill()
                entry.process.wait()


def tails(started: list[Started], lines: int = 15) -> str:
    return "\n".join(
        f"--- {s.name} (exit {s.process.poll()})\n"
        + "\n".join(s.log.read_text(errors="replace").splitlines()[-lines:])
        for s in started
    )
