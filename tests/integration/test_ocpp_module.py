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
}


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


@pytest.fixture
def stack(broker: BrokerAddress, prefix: str, tmp_path: Path) -> Iterator[Stack]:
    with ExitStack() as exits:
        csms = CsmsThread(accepted_tokens={"GOOD0001"})
        exits.callback(csms.close)
        ocpp_config = {
            "csms_url": csms.csms.url,
            "station_id": STATION,
            "CoreDatabasePath": str(tmp_path / "ocpp"),
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
        for module_id in ("ocpp", "evse", "auth"):
            started[module_id] = start_module(broker, prefix, module_id, default_timeout=WAIT)
        seen = Seen()
        bridge = PyOCPP201.attach(started["ocpp"])
        exits.callback(bridge.close)
        evse = FakeEvse(started["evse"], seen)
        started["auth"].subscribe_variable(
            "provider", "provided_token", lambda token: seen.add("provided_token", token)
        )
        ready = threading.Event()
        started["ocpp"].init_done(bridge.ready)
        started["evse"].init_done()
        started["auth"].init_done(ready.set)
        assert ready.wait(WAIT)
        # the EVSE answered get_evse, so it counts as ready without its one-off ready var
        csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Available")
        yield Stack(csms, started["evse"], evse, started["auth"], seen)


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
