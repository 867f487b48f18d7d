"""PyOCPP201 as a module on a real Mosquitto: its EVerest side, with a fake EvseManager and a
fake PyAuth around it, and the demo CSMS (running on its own event loop thread) on the
other side. Every MQTT call and var is checked against the interfaces by the framework."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from ocpp.v201 import call

from everkit.framework.error_model import Severity
from everkit.framework.module import Module
from everkit.framework.transport import BrokerAddress
from everkit.ocpp201.module import PyOCPP201
from everkit.simulators.csms import DemoCsms, payload_of
from tests.integration.harness import META, in_process_stack, start_module
from tests.integration.test_auth_module import FakeEvse, Seen

pytestmark = pytest.mark.integration
WAIT = 10.0
STATION = "CS-MQTT-1"
T = TypeVar("T")
PEERS = {
    "TestEvse": {
        "description": "a fake EvseManager",
        "provides": {"main": {"interface": "evse_manager", "description": "evse"}},
        "metadata": META,
    },
    "TestAuth": {
        "description": "uses the token validator and provider as PyAuth does",
        "requires": {
            "validator": {"interface": "auth_token_validator"},
            "provider": {"interface": "auth_token_provider"},
        },
        "metadata": META,
    },
    "TestOcppUser": {
        "description": "uses ocpp_generic as a display or the API module does",
        "requires": {"ocpp": {"interface": "ocpp"}},
        "metadata": META,
    },
}
GENERIC_VARS = ("is_connected", "boot_notification_response", "event_data", "security_event")


class CsmsThread:
    """The demo CSMS on an event loop of its own, driven from the (sync) test."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.csms = DemoCsms(**options)
        self.run(self.csms.start())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT * 2)

    def station_call(self, payload: Any) -> Any:
        async def go() -> Any:
            handle = await self.csms.wait_station(STATION, timeout=WAIT)
            return await handle.call(payload, timeout=WAIT)

        return self.run(go())

    def wait_for(self, action: str, predicate: Any = None) -> dict[str, Any]:
        entry = self.run(self.csms.wait_for(action, predicate, timeout=WAIT))
        payload: dict[str, Any] = payload_of(entry["frame"])
        return payload

    def close(self) -> None:
        self.run(self.csms.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


@dataclass
class Stack:
    csms: CsmsThread
    evse_module: Module
    evse: FakeEvse
    auth: Module
    seen: Seen
    user: Module


@pytest.fixture
def stack(broker: BrokerAddress, prefix: str, tmp_path: Path) -> Iterator[Stack]:
    with ExitStack() as exits:
        csms = CsmsThread(accepted_tokens={"GOOD0001"})
        exits.callback(csms.close)
        ocpp_config = {
            "csms_url": csms.csms.url,
            "station_id": STATION,
            "CoreDatabasePath": str(tmp_path / "ocpp"),
            # reconnect at once after the CSMS closed the connection
            "device_model": "OCPPCommCtrlr.RetryBackOffWaitMinimum=0,"
            "OCPPCommCtrlr.RetryBackOffRandomRange=0",
        }
        to = [{"module_id": "ocpp", "implementation_id": "auth_validator"}]
        setup = {
            "active_modules": {
                "ocpp": {
                    "module": "PyOCPP201",
                    "config_module": ocpp_config,
                    "connections": {
                        "evse_manager": [{"module_id": "evse", "implementation_id": "main"}]
                    },
                },
                "evse": {"module": "TestEvse"},
                "user": {
                    "module": "TestOcppUser",
                    "connections": {
                        "ocpp": [{"module_id": "ocpp", "implementation_id": "ocpp_generic"}]
                    },
                },
                "auth": {
                    "module": "TestAuth",
                    "connections": {
                        "validator": to,
                        "provider": [{"module_id": "ocpp", "implementation_id": "auth_provider"}],
                    },
                },
            }
        }
        _manager, started = exits.enter_context(
            in_process_stack(broker, prefix, tmp_path, setup, PEERS)
        )
        for module_id in ("ocpp", "evse", "auth", "user"):
            started[module_id] = start_module(broker, prefix, module_id, default_timeout=WAIT)
        seen = Seen()
        bridge = PyOCPP201.attach(started["ocpp"])
        exits.callback(bridge.close)
        evse = FakeEvse(started["evse"], seen)
        started["auth"].subscribe_variable(
            "provider", "provided_token", lambda token: seen.add("provided_token", token)
        )
        for var in GENERIC_VARS:
            started["user"].subscribe_variable("ocpp", var, _recorder(seen, var))
        ready = threading.Event()
        started["ocpp"].init_done(bridge.ready)
        started["evse"].init_done()
        started["user"].init_done()
        started["auth"].init_done(ready.set)
        assert ready.wait(WAIT)
        # the EVSE answered get_evse, so it counts as ready without its one-off ready var
        csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
        yield Stack(csms, started["evse"], evse, started["auth"], seen, started["user"])


def _recorder(seen: Seen, var: str) -> Any:
    return lambda value: seen.add(var, value)


def test_token_validation_is_an_authorize_to_the_csms(stack: Stack) -> None:
    def validate(value: str) -> dict[str, Any]:
        token = {"id_token": {"value": value, "type": "ISO14443"}, "authorization_type": "RFID"}
        result: dict[str, Any] = stack.auth.call_command(
            "validator", "validate_token", {"provided_token": token}
        )
        return result

    assert validate("GOOD0001")["authorization_status"] == "Accepted"
    assert validate("BAD00001")["authorization_status"] == "Invalid"


def test_remote_start_publishes_an_ocpp_token_for_pyauth_F01(stack: Stack) -> None:
    result = stack.csms.station_call(
        call.RequestStartTransaction(
            id_token={"id_token": "APP-USER-7", "type": "Central"}, remote_start_id=42, evse_id=1
        )
    )
    assert result.status == "Accepted"
    (token,) = stack.seen.wait_for("provided_token")
    assert token == {
        "request_id": 42,
        "id_token": {"value": "APP-USER-7", "type": "Central"},
        "authorization_type": "OCPP",
        "prevalidated": True,
        "connectors": [1],
    }


def test_change_availability_becomes_enable_disable_from_the_csms_G03(stack: Stack) -> None:
    result = stack.csms.station_call(
        call.ChangeAvailability(operational_status="Inoperative", evse={"id": 1})
    )
    assert result.status == "Accepted"
    (args,) = stack.seen.wait_for("enable_disable")
    assert args["cmd_source"]["enable_source"] == "CSMS"
    assert args["cmd_source"]["enable_state"] == "Disable"


def test_an_inoperative_evse_is_faulted_for_the_csms(stack: Stack) -> None:
    errors = stack.evse_module.error_factory("main")
    fault = errors.create("evse_manager/Inoperative", "", "test fault", Severity.HIGH)
    stack.evse_module.raise_error("main", fault)
    stack.csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Faulted")
    stack.evse_module.clear_error("main", "evse_manager/Inoperative")
    stack.csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")


# ocpp_generic (EVerest's ocpp interface) over MQTT ------------------------------------------


def _last_is(seen: Seen, kind: str, value: Any) -> None:
    with seen.changed:
        assert seen.changed.wait_for(lambda: seen.of(kind)[-1:] == [value], WAIT), seen.of(kind)


def _generic(stack: Stack, cmd: str, **args: Any) -> Any:
    return stack.user.call_command("ocpp", cmd, args)


HEARTBEAT = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}


def test_is_connected_over_mqtt_follows_boot_kick_stop_and_restart(stack: Stack) -> None:
    """ocpp.yaml is_connected: true once connected, false when the CSMS closes the
    connection (true again on the reconnect), false after stop, true after restart."""
    _last_is(stack.seen, "is_connected", True)
    (boot,) = stack.seen.wait_for("boot_notification_response")
    assert boot["status"] == "Accepted"
    stack.csms.run(stack.csms.csms.kick(STATION))
    stack.seen.wait_for("is_connected", count=len(stack.seen.of("is_connected")) + 1)
    _last_is(stack.seen, "is_connected", True)  # after the false, the reconnect
    assert False in stack.seen.of("is_connected")[1:]
    stack.seen.wait_for("boot_notification_response", count=2)
    assert _generic(stack, "stop") is True
    _last_is(stack.seen, "is_connected", False)
    assert _generic(stack, "stop") is False
    assert _generic(stack, "restart") is True
    _last_is(stack.seen, "is_connected", True)
    stack.seen.wait_for("boot_notification_response", count=3)  # a fresh boot


def test_get_and_set_variables_round_trip_over_mqtt(stack: Stack) -> None:
    written = _generic(
        stack,
        "set_variables",
        requests=[{"component_variable": HEARTBEAT, "value": "42"}],
        source="api",
    )
    assert written == [
        {"status": "Accepted", "attribute_type": "Actual", "component_variable": HEARTBEAT}
    ]
    read = _generic(stack, "get_variables", requests=[{"component_variable": HEARTBEAT}])
    assert read[0]["status"] == "Accepted"
    assert read[0]["value"] == "42"
    unknown = _generic(
        stack,
        "get_variables",
        requests=[{"component_variable": {**HEARTBEAT, "variable": {"name": "Nope"}}}],
    )
    assert unknown[0]["status"] == "UnknownVariable"


def test_change_availability_over_mqtt_reaches_enable_disable(stack: Stack) -> None:
    response = _generic(
        stack,
        "change_availability",
        request={"operational_status": "Inoperative", "evse": {"id": 1}},
    )
    assert response == {"status": "Accepted"}
    (args,) = stack.seen.wait_for("enable_disable")
    assert args["cmd_source"]["enable_state"] == "Disable"


def test_monitor_variables_publishes_event_data_for_a_csms_change(stack: Stack) -> None:
    _generic(stack, "monitor_variables", component_variables=[HEARTBEAT])
    result = stack.csms.station_call(
        call.SetVariables(set_variable_data=[{**HEARTBEAT, "attribute_value": "61"}])
    )
    assert result.set_variable_result[0]["attribute_status"] == "Accepted"
    (event,) = stack.seen.wait_for("event_data")
    assert event["component_variable"] == HEARTBEAT
    assert event["actual_value"] == "61"
    assert event["event_notification_type"] == "CustomMonitor"


def test_security_event_over_mqtt_reaches_the_csms_A04(stack: Stack) -> None:
    _generic(stack, "security_event", event={"type": "TamperDetectionActivated", "info": "lid"})
    sent = stack.csms.wait_for("SecurityEventNotification")
    assert sent["type"] == "TamperDetectionActivated"
    assert sent["techInfo"] == "lid"
    (published,) = stack.seen.wait_for("security_event")
    assert published["type"] == "TamperDetectionActivated"
