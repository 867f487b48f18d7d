"""StationLink, the UFTP adapter's MQTT link to a station, against a real Mosquitto and a
real PyEnergyNode started by `everkit run` (its consumer is a standalone test leaf)."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import pwd
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from everkit.energy.tree import format_timestamp
from everkit.framework.broker import (
    PrivateBroker,
    find_mosquitto,
    free_port,
    start_mosquitto,
    wait_listening,
)
from everkit.framework.errors import (
    CommandError,
    CommandTimeout,
    EverkitError,
    HandlerException,
    NotReady,
    RemoteSchemaError,
    SchemaValidationError,
    TransportError,
)
from everkit.framework.transport import BrokerAddress
from everkit.framework.wire import MsgType, encode, error_result_payload, var_payload
from everkit.uftp.station_link import StationAddress, StationLink
from tests.conftest import RawClient, _raw_client
from tests.integration.harness import META, start_module

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WAIT = 15.0
NODE = "uftp_limit"
FUSE_W = 40 * 230 * 3  # the node's own cap: fuse_limit_A x nominal_voltage_V x phases
LEAF_MANIFEST = {
    "description": "a consumer beneath the node, started by the test",
    "provides": {"energy_grid": {"interface": "energy", "description": "leaf"}},
    "metadata": META,
}
GOOD_READING = {"timestamp": "2026-11-22T12:00:00.000Z", "energy_Wh_import": {"total": 1.0}}


def limits(watts: Any, now: datetime | None = None) -> dict[str, Any]:
    """A cap now and, a quarter of an hour later, an entry without one (back to the fuse)."""
    now = now or datetime.now(UTC)
    cap = {"total_power_W": {"value": watts, "source": "SO"}}
    return {
        "schedule_import": [
            {"timestamp": format_timestamp(now), "limits_to_root": cap, "limits_to_leaves": {}},
            {
                "timestamp": format_timestamp(now + timedelta(minutes=15)),
                "limits_to_root": {},
                "limits_to_leaves": {},
            },
        ],
        "schedule_export": [],
        "schedule_setpoints": [],
    }


@contextmanager
def station(broker: BrokerAddress, prefix: str, folder: Path, bus: RawClient) -> Iterator[None]:
    """`everkit run` with the PyEnergyNode ``uftp_limit``; returns once GlobalReady is out.
    ``bus`` must already record ``<prefix>#``."""
    manifests = folder / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "TestEnergyLeaf.yaml").write_text(yaml.safe_dump(LEAF_MANIFEST))
    config = {
        "active_modules": {
            NODE: {
                "module": "PyEnergyNode",
                "config_module": {"fuse_limit_A": 40, "phase_count": 3},
                "connections": {
                    "energy_consumer": [{"module_id": "leaf", "implementation_id": "energy_grid"}]
                },
            },
            "leaf": {"module": "TestEnergyLeaf"},
        }
    }
    path = folder / "station.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "everkit", "run", str(path), "--broker", str(broker)]
    command += ["--prefix", prefix, "--standalone", "leaf", "--manifests", str(manifests)]
    output = folder / "everkit.log"
    with output.open("w") as sink:
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    leaf = None
    try:
        # the manager answers GetConfig by now; earlier, the leaf would retry only in 5 s
        bus.on_topic(f"{prefix}modules/{NODE}/ready", timeout=60)
        leaf = start_module(broker, prefix, "leaf", default_timeout=WAIT)
        leaf.implement_command("energy_grid", "enforce_limits", lambda value: None)
        leaf.init_done()
        bus.on_topic(prefix + "ready", timeout=60)
        yield
    except BaseException:
        print(output.read_text())
        raise
    finally:
        process.terminate()
        process.wait(30)
        if leaf is not None:
            leaf.close()


class Calls:
    """Callback arguments, awaitable."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self._changed = threading.Condition()

    def __call__(self, *args: Any) -> None:
        with self._changed:
            self.seen.append(args)
            self._changed.notify_all()

    def wait(self, count: int) -> list[tuple[Any, ...]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.seen) >= count, WAIT), self.seen
            return list(self.seen)


@pytest.fixture
def open_link() -> Iterator[Callable[..., StationLink]]:
    """``open_link(address, **callbacks)``: a started link, stopped after the test."""
    with ExitStack() as stack:

        def make(address: StationAddress, **kwargs: Any) -> StationLink:
            kwargs.setdefault("on_power", lambda name, watts: None)
            link = StationLink(address, **kwargs)
            link.start()
            stack.callback(link.stop)
            return link

        yield make


def flow_request_caps(payload: bytes) -> list[dict[str, Any]]:
    body = json.loads(payload)
    return [e["limits_to_root"]["total_power_W"] for e in body["data"]["data"]["schedule_import"]]


def test_external_limits_reach_the_node_and_cap_its_request(
    broker: BrokerAddress,
    prefix: str,
    tmp_path: Path,
    recorder: RawClient,
    open_link: Callable[..., StationLink],
) -> None:
    """interfaces/external_energy_limits.yaml, set_external_limits: the node merges the
    schedule with its fuse and reports it towards the root (energy_flow_request)."""
    with station(broker, prefix, tmp_path, recorder):
        connected = Calls()
        link = open_link(StationAddress("s1", broker, prefix), on_connected=connected)
        assert connected.wait(1) == [("s1",)]
        link.set_external_limits(limits(20000))
        topic = f"{prefix}modules/{NODE}/impl/energy_grid/var/energy_flow_request"
        (message,) = recorder.wait_for(lambda m: m.topic == topic)
        first, later = flow_request_caps(message.payload)
        assert first == {"value": 20000, "source": "SO"}
        assert later["value"] == FUSE_W
        cmd = f"{prefix}modules/{NODE}/impl/external_limits/cmd/set_external_limits"
        (call,) = [json.loads(m.payload) for m in recorder.messages if m.topic == cmd]
        assert call["msg_type"] == "Cmd"
        assert call["data"]["origin"] == "uftp_agr"


def test_a_bad_value_is_refused_before_anything_is_sent(
    broker: BrokerAddress,
    prefix: str,
    recorder: RawClient,
    open_link: Callable[..., StationLink],
) -> None:
    """energy/ExternalLimits: total_power_W.value is a number. No node runs here: the good
    call after the bad ones times out, and it is the only command on the bus."""
    link = open_link(StationAddress("s1", broker, prefix, node="absent"))
    with pytest.raises(SchemaValidationError) as refused:
        link.set_external_limits(limits("20000"))
    assert refused.value.field == "args.value.schedule_import.0.limits_to_root.total_power_W.value"
    with pytest.raises(SchemaValidationError):
        link.set_external_limits(limits(float("nan")))
    with pytest.raises(CommandTimeout):
        link.set_external_limits(limits(11000), timeout_s=0.5)
    cmd = f"{prefix}modules/absent/impl/external_limits/cmd/set_external_limits"
    recorder.on_topic(cmd)
    (sent,) = [json.loads(m.payload) for m in recorder.messages if m.topic == cmd]
    assert flow_value(sent) == 11000


def flow_value(call: dict[str, Any]) -> Any:
    return call["data"]["args"]["value"]["schedule_import"][0]["limits_to_root"]["total_power_W"][
        "value"
    ]


def test_a_node_that_does_not_run_times_out(
    broker: BrokerAddress, prefix: str, open_link: Callable[..., StationLink]
) -> None:
    link = open_link(StationAddress("s1", broker, prefix, node="absent"))
    with pytest.raises(CommandTimeout, match="absent"):
        link.set_external_limits(limits(11000), timeout_s=0.3)


def test_an_unconnected_link_raises_transport_error(broker: BrokerAddress, prefix: str) -> None:
    link = StationLink(StationAddress("s1", broker, prefix), on_power=lambda n, w: None)
    with pytest.raises(TransportError, match="not connected"):
        link.set_external_limits(limits(11000))


@pytest.mark.parametrize(
    ("error_type", "raised"),
    [
        ("SchemaValidationError", RemoteSchemaError),
        ("NotReady", NotReady),
        ("SomethingNew", HandlerException),
    ],
)
def test_the_nodes_error_result_raises_the_matching_command_error(
    broker: BrokerAddress,
    prefix: str,
    recorder: RawClient,
    open_link: Callable[..., StationLink],
    error_type: str,
    raised: type[CommandError],
) -> None:
    """docs/wire-protocol.md, "Command error types": the raw client answers as the node."""
    link = open_link(StationAddress("s1", broker, prefix))
    cmd = f"{prefix}modules/{NODE}/impl/external_limits/cmd/set_external_limits"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(link.set_external_limits, limits(11000), WAIT)
        (message,) = recorder.on_topic(cmd)
        call_id = json.loads(message.payload)["data"]["id"]
        reply = error_result_payload(call_id, NODE, error_type, "refused for the test")
        recorder.publish(f"{cmd}/response/uftp_agr", reply)
        with pytest.raises(raised, match="refused for the test"):
            call.result(WAIT)


def test_powermeter_readings_reach_on_power_and_a_malformed_one_is_dropped(
    broker: BrokerAddress,
    prefix: str,
    raw_client: RawClient,
    open_link: Callable[..., StationLink],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """interfaces/powermeter.yaml var powermeter, powermeter/Powermeter power_W.total."""
    power = Calls()
    meters = (("hw", "powermeter"), ("grid_meter", "main"))
    open_link(StationAddress("s1", broker, prefix, meters=meters), on_power=power)
    topic = f"{prefix}modules/hw/impl/powermeter/var/powermeter"
    raw_client.publish(topic, var_payload({**GOOD_READING, "power_W": {"total": 7400.0}}))
    assert power.wait(1) == [("s1", 7400.0)]
    with caplog.at_level(logging.WARNING, logger="everkit.uftp"):
        raw_client.publish(topic, var_payload({**GOOD_READING, "power_W": {"total": "lots"}}))
        raw_client.publish(topic, var_payload(GOOD_READING))  # no power_W at all
        raw_client.publish(topic, b"{not json")
        other = f"{prefix}modules/grid_meter/impl/main/var/powermeter"
        raw_client.publish(other, var_payload({**GOOD_READING, "power_W": {"total": -3680}}))
        assert power.wait(2)[1] == ("s1", -3680.0)
        raw_client.publish(topic, var_payload({**GOOD_READING, "power_W": {"total": 11000}}))
        assert power.wait(3)[2] == ("s1", 11000.0)
    warnings = [r.getMessage() for r in caplog.records if r.name == "everkit.uftp.station_link"]
    # the reading without power_W breaks the same field again: no second warning for it
    assert len(warnings) == 2, warnings
    assert topic in warnings[0]
    assert "'power_W.total'" in warnings[0]
    assert "'lots'" in warnings[0]
    assert topic in warnings[1]
    assert "not JSON" in warnings[1]


def close(raw: RawClient) -> None:
    raw.client.disconnect()  # else a client waiting to reconnect holds loop_stop up
    raw.client.loop_stop()


def test_on_connected_runs_again_after_a_broker_restart_and_limits_work(
    prefix: str, tmp_path: Path
) -> None:
    """The adapter re-pushes its schedule from on_connected, which runs on the link's own
    thread: calling set_external_limits from it does not deadlock paho's thread. After the
    restart the command result and the meter subscriptions are back."""
    port = free_port()
    brokers = [start_mosquitto(port)]

    def stop_broker() -> None:  # the one running at the end, stopped after everything else
        brokers[-1].stop()

    with ExitStack() as stack:
        stack.callback(stop_broker)
        broker = brokers[0]
        bus = _raw_client(broker.address)
        stack.callback(close, bus)
        bus.subscribe(f"{prefix}#")
        stack.enter_context(station(broker.address, prefix, tmp_path, bus))
        pushed, power = Calls(), Calls()

        def push(name: str) -> None:
            try:
                link.set_external_limits(limits(20000), timeout_s=5.0)
                pushed(name, "ok")
            except EverkitError as exc:
                pushed(name, type(exc).__name__)

        meters = (("hw", "powermeter"),)
        address = StationAddress("s1", broker.address, prefix, meters=meters)
        link = StationLink(address, on_power=power, on_connected=push)
        link.start()
        stack.callback(link.stop)
        assert pushed.wait(1) == [("s1", "ok")]

        broker.stop()
        broker = start_mosquitto(port)
        brokers.append(broker)
        pushed.wait(2)
        # the node reconnects at its own pace: the adapter retries until it is back
        deadline = time.monotonic() + WAIT
        while True:
            try:
                link.set_external_limits(limits(12000), timeout_s=1.0)
                break
            except CommandTimeout:
                assert time.monotonic() < deadline, "the node never answered again"
        meter = _raw_client(broker.address)
        stack.callback(close, meter)
        reading = var_payload({**GOOD_READING, "power_W": {"total": 5000}})
        meter.publish(f"{prefix}modules/hw/impl/powermeter/var/powermeter", reading)
        assert power.wait(1) == [("s1", 5000.0)]


def test_a_restarted_node_triggers_on_connected(
    broker: BrokerAddress,
    prefix: str,
    raw_client: RawClient,
    open_link: Callable[..., StationLink],
) -> None:
    """A node that restarts lost its external limits though our connection stayed up; its
    ModuleReady (docs/wire-protocol.md, startup handshake) makes the adapter push again."""
    connected = Calls()
    open_link(StationAddress("s1", broker, prefix), on_connected=connected)
    connected.wait(1)
    raw_client.publish(f"{prefix}modules/{NODE}/ready", encode(MsgType.MODULE_READY, True))
    assert connected.wait(2) == [("s1",), ("s1",)]


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[BrokerAddress]:
    """Mosquitto that admits only ``agr`` / ``s3cret``."""
    binary = find_mosquitto()
    assert binary is not None
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "agr", "s3cret"],
        check=True,
        capture_output=True,
    )
    passwords.chmod(0o600)
    address = BrokerAddress("127.0.0.1", free_port())
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {address.port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {passwords}\npersistence false\n"
        # as root (a CI container) mosquitto would become `mosquitto`, who cannot read it
        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
    )
    process = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.PIPE)
    broker = PrivateBroker(address, "mosquitto", process)
    try:
        wait_listening(address, process, 10)
        yield address
    finally:
        broker.stop()


def test_credentials_log_in_and_the_password_is_never_logged(
    auth_broker: BrokerAddress, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = StationAddress("s1", auth_broker, prefix, username="agr", password="s3cret")
    bad = StationAddress("s2", auth_broker, prefix, username="agr", password="wrong-s3cret")
    assert "s3cret" not in repr(good)
    with caplog.at_level(logging.DEBUG):
        link = StationLink(good, on_power=lambda n, w: None)
        link.start(WAIT)
        assert link.connected
        link.stop()
        refused = StationLink(bad, on_power=lambda n, w: None)
        with pytest.raises(TransportError, match="refused the connection: Not authorized"):
            refused.start(1.0)
        refused.stop()
    assert "s3cret" not in caplog.text


def test_start_fails_when_no_broker_answers(prefix: str) -> None:
    address = StationAddress("s1", BrokerAddress("127.0.0.1", free_port()), prefix)
    link = StationLink(address, on_power=lambda n, w: None)
    with pytest.raises(TransportError, match="no MQTT broker answered"):
        link.start(0.5)
    link.stop()
    assert not link.connected
