"""The module API on a real Mosquitto: commands, vars, errors, ready, bad input."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from everkit.framework.error_model import ErrorObject, Severity
from everkit.framework.errors import (
    CommandTimeout,
    ContractError,
    HandlerException,
    RemoteSchemaError,
    SchemaValidationError,
)
from everkit.framework.module import Module
from everkit.framework.transport import BrokerAddress
from tests.conftest import RawClient
from tests.integration.harness import in_process_stack, start_module
from tests.wire_rules import violations

pytestmark = pytest.mark.integration
WAIT = 10.0


class Pair:
    """A provider and a requirer, both started and ready."""

    def __init__(self, provider: Module, requirer: Module) -> None:
        self.provider = provider
        self.requirer = requirer
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.release = threading.Event()
        self.release.set()

    def subscriptions_active(self) -> None:
        """A round trip from the requirer: the broker handles its packets in order, so
        every SUBSCRIBE it sent before this call is in effect once the result is back."""
        self.requirer.call_command("imd", "stop")

    def bind_default_handlers(self) -> None:
        p = self.provider

        def record(name: str) -> Any:
            def handler(**kwargs: Any) -> None:
                self.calls.append((name, kwargs))
                assert self.release.wait(WAIT)

            return handler

        p.implement_command("main", "setMode", record("setMode"))
        p.implement_command("main", "setExportVoltageCurrent", record("setExport"))

        def refuse(voltage: float, current: float) -> None:
            raise HandlerException(f"cannot import {current} A")

        p.implement_command("main", "setImportVoltageCurrent", refuse)
        p.implement_command("imd", "start", record("start"))
        p.implement_command("imd", "stop", record("stop"))
        p.implement_command("imd", "start_self_test", record("self_test"))


@pytest.fixture
def pair(broker: BrokerAddress, prefix: str, tmp_path: Path) -> Iterator[Pair]:
    with in_process_stack(broker, prefix, tmp_path) as (manager, started):
        provider = start_module(broker, prefix, "provider")
        started["provider"] = provider
        requirer = start_module(broker, prefix, "requirer", default_timeout=WAIT)
        started["requirer"] = requirer
        result = Pair(provider, requirer)
        result.bind_default_handlers()
        ready = threading.Event()
        provider.init_done()
        requirer.init_done(ready.set)
        assert ready.wait(WAIT), "no GlobalReady"
        assert manager.global_ready.is_set()
        yield result


def test_command_round_trip_passes_arguments_as_keywords(pair: Pair) -> None:
    retval = pair.requirer.call_command(
        "psu", "setExportVoltageCurrent", {"voltage": 400.0, "current": 20.0}
    )
    assert retval is None
    assert pair.calls == [("setExport", {"voltage": 400.0, "current": 20.0})]


def test_command_without_arguments_is_sent_with_null_args(
    pair: Pair, recorder: RawClient, prefix: str
) -> None:
    pair.requirer.call_command("imd", "start")
    sent = recorder.on_topic(f"{prefix}modules/provider/impl/imd/cmd/start")
    assert json.loads(sent[0].payload)["data"]["args"] is None
    assert pair.calls == [("start", {})]


def test_handler_exception_reaches_the_caller_as_handler_exception(pair: Pair) -> None:
    with pytest.raises(HandlerException, match=r"cannot import 5\.0 A"):
        pair.requirer.call_command(
            "psu", "setImportVoltageCurrent", {"voltage": 1.0, "current": 5.0}
        )


def test_invalid_arguments_are_refused_locally_and_nothing_is_sent(
    pair: Pair, recorder: RawClient, prefix: str
) -> None:
    with pytest.raises(SchemaValidationError, match=r"args\.mode"):
        pair.requirer.call_command("psu", "setMode", {"mode": "Sideways", "phase": "Charging"})
    pair.requirer.call_command("imd", "stop")  # a marker that everything before it arrived
    recorder.on_topic(f"{prefix}modules/provider/impl/imd/cmd/stop")
    assert not [m for m in recorder.messages if m.topic.endswith("/cmd/setMode")]


def test_call_times_out_with_cmd_timeout_and_late_result_is_ignored(pair: Pair) -> None:
    pair.release.clear()
    with pytest.raises(CommandTimeout, match="setMode"):
        pair.requirer.call_command(
            "psu", "setMode", {"mode": "Export", "phase": "Charging"}, timeout=0.3
        )
    pair.release.set()
    # the late result arrives and is dropped; the next call still works
    pair.requirer.call_command("psu", "setMode", {"mode": "Off", "phase": "Charging"})
    assert [c[0] for c in pair.calls] == ["setMode", "setMode"]


def test_invalid_result_from_callee_is_a_remote_schema_error(
    pair: Pair, raw_client: RawClient, prefix: str
) -> None:
    """The caller validates results too: a wrong retval from a peer never reaches the code."""
    topic = f"{prefix}modules/provider/impl/imd/cmd/start"
    raw_client.subscribe(topic)
    pair.release.clear()  # the real provider stalls, so our forged reply comes first
    future = pair.requirer.call_command_async("imd", "start")
    call = json.loads(raw_client.on_topic(topic)[0].payload)["data"]
    reply = {
        "msg_type": "CmdResult",
        "data": {"type": "result", "data": {"id": call["id"], "origin": "provider", "retval": 42}},
    }
    raw_client.publish(topic + "/response/requirer", json.dumps(reply))
    with pytest.raises(RemoteSchemaError, match="must be null"):
        future.result(WAIT)
    pair.release.set()


def test_vars_cross_the_bus_validated(pair: Pair) -> None:
    got: list[Any] = []
    arrived = threading.Event()
    pair.requirer.subscribe_variable(
        "psu", "voltage_current", lambda v: (got.append(v), arrived.set())
    )
    pair.subscriptions_active()
    pair.provider.publish_variable(
        "main", "voltage_current", {"voltage_V": 401.5, "current_A": 12.0}
    )
    assert arrived.wait(WAIT)
    assert got == [{"voltage_V": 401.5, "current_A": 12.0}]
    with pytest.raises(SchemaValidationError, match=r"voltage_current\.voltage_V"):
        pair.provider.publish_variable(
            "main", "voltage_current", {"voltage_V": "high", "current_A": 1.0}
        )
    with pytest.raises(ContractError, match="not declared"):
        pair.requirer.subscribe_variable("psu", "nonsense", print)


def test_bad_var_from_a_peer_is_dropped_with_one_log_line(
    pair: Pair, raw_client: RawClient, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[Any] = []
    good = threading.Event()
    pair.requirer.subscribe_variable(
        "psu", "voltage_current", lambda v: (got.append(v), good.set())
    )
    pair.subscriptions_active()
    topic = f"{prefix}modules/provider/impl/main/var/voltage_current"
    with caplog.at_level(logging.WARNING):
        raw_client.publish(
            topic,
            json.dumps({"msg_type": "Var", "data": {"data": {"voltage_V": "x", "current_A": 1}}}),
        )
        raw_client.publish(
            topic,
            json.dumps({"msg_type": "Var", "data": {"data": {"voltage_V": 1.0, "current_A": 1.0}}}),
        )
        assert good.wait(WAIT)
    assert got == [{"voltage_V": 1.0, "current_A": 1.0}]
    dropped = [r.getMessage() for r in caplog.records if "dropped var" in r.getMessage()]
    assert len(dropped) == 1
    assert "requirer" in dropped[0]
    assert topic in dropped[0]
    assert "voltage_current.voltage_V" in dropped[0]


def test_error_raise_and_clear_carry_the_full_object(
    pair: Pair, recorder: RawClient, prefix: str
) -> None:
    raised: list[ErrorObject] = []
    cleared: list[ErrorObject] = []
    done = threading.Event()
    pair.requirer.subscribe_error(
        "psu",
        "power_supply_DC/OverTemperature",
        raised.append,
        lambda e: (cleared.append(e), done.set()),
    )
    factory = pair.provider.error_factory("main")
    error = factory.create("power_supply_DC/OverTemperature", "sink", "95 C", Severity.HIGH)
    assert pair.provider.raise_error("main", error)
    assert not pair.provider.raise_error("main", error), "a duplicate raise is ignored"
    pair.provider.clear_error("main", "power_supply_DC/OverTemperature", "sink")
    assert done.wait(WAIT)
    assert [e.uuid for e in raised] == [error.uuid]
    assert cleared[0].uuid == error.uuid
    assert cleared[0].state.value == "ClearedByModule"
    topic = f"{prefix}modules/provider/impl/main/error/power_supply_DC/OverTemperature"
    messages = recorder.wait_for(lambda m: m.topic == topic, count=2)
    raise_body = json.loads(messages[0].payload)
    assert raise_body["msg_type"] == "RaiseError"
    assert raise_body["data"]["origin"] == {
        "module_id": "provider",
        "implementation_id": "main",
        "mapping": {"evse": 1},
    }
    assert raise_body["data"]["description"]
    assert json.loads(messages[1].payload)["msg_type"] == "ClearError"
    with pytest.raises(ContractError, match="not declared"):
        pair.provider.raise_error("main", factory.create("isolation_monitor/DeviceFault"))


BAD_COMMANDS = {
    "invalid JSON": b"{not json",
    "unknown msg_type": json.dumps({"msg_type": "Telemetry", "data": {}}).encode(),
    "wrong msg_type": json.dumps({"msg_type": "Var", "data": {"data": 1}}).encode(),
    "no id": json.dumps({"msg_type": "Cmd", "data": {"args": {}, "origin": "raw"}}).encode(),
    "no origin": json.dumps({"msg_type": "Cmd", "data": {"id": "1", "args": {}}}).encode(),
    "no data": json.dumps({"msg_type": "Cmd"}).encode(),
    "not an object": b"[1,2,3]",
    "huge nesting": ("[" * 5000 + "]" * 5000).encode(),
}


@pytest.mark.parametrize("payload", BAD_COMMANDS.values(), ids=BAD_COMMANDS.keys())
def test_malformed_command_is_dropped_and_the_module_keeps_serving(
    pair: Pair, raw_client: RawClient, prefix: str, payload: bytes
) -> None:
    raw_client.publish(f"{prefix}modules/provider/impl/main/cmd/setMode", payload)
    pair.requirer.call_command("psu", "setMode", {"mode": "Off", "phase": "Charging"})
    assert pair.calls == [("setMode", {"mode": "Off", "phase": "Charging"})]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"mode": 3, "phase": "Charging"}, "args.mode"),
        ({"mode": "Export"}, "args"),
        ({"mode": "Export", "phase": "Charging", "extra": True}, "args"),
        (None, "args"),
    ],
    ids=["wrong type", "missing argument", "unknown argument", "null args"],
)
def test_bad_arguments_from_a_peer_get_a_schema_validation_error_result(
    pair: Pair, raw_client: RawClient, prefix: str, args: Any, field: str
) -> None:
    topic = f"{prefix}modules/provider/impl/main/cmd/setMode"
    raw_client.subscribe(f"{topic}/response/raw")
    call = {"msg_type": "Cmd", "data": {"id": "abc", "args": args, "origin": "raw"}}
    raw_client.publish(topic, json.dumps(call))
    reply = json.loads(raw_client.on_topic(f"{topic}/response/raw")[0].payload)
    error = reply["data"]["data"]["error"]
    assert error["__everest__error_type"] == "SchemaValidationError"
    assert f"field '{field}'" in error["__everest__error_msg"]
    assert pair.calls == []


def test_a_repeated_global_ready_is_ignored(pair: Pair, raw_client: RawClient, prefix: str) -> None:
    repeated = threading.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "requirer got GlobalReady again" in record.getMessage():
                repeated.set()

    calls: list[int] = []
    pair.requirer._ready_callbacks.append(lambda: calls.append(1))
    logger = logging.getLogger("everkit.framework.module")
    spy = Spy()
    logger.addHandler(spy)
    try:
        raw_client.publish(f"{prefix}ready", json.dumps({"msg_type": "GlobalReady", "data": True}))
        assert repeated.wait(WAIT)
    finally:
        logger.removeHandler(spy)
    assert calls == []


def test_every_message_obeys_the_wire_rules(pair: Pair, recorder: RawClient, prefix: str) -> None:
    pair.requirer.call_command("psu", "setMode", {"mode": "Export", "phase": "Charging"})
    pair.requirer.call_command("imd", "start")
    with pytest.raises(HandlerException):
        pair.requirer.call_command(
            "psu", "setImportVoltageCurrent", {"voltage": 1.0, "current": 1.0}
        )
    pair.provider.publish_variable("main", "mode", "Export")
    error = pair.provider.error_factory("main").create("power_supply_DC/HardwareFault")
    pair.provider.raise_error("main", error)
    pair.provider.clear_error("main", "power_supply_DC/HardwareFault")
    recorder.wait_for(lambda m: m.topic.endswith("HardwareFault"), count=2)
    assert len(recorder.messages) >= 9
    for message in recorder.messages:
        assert (
            violations(
                message.topic, message.payload, prefix, qos=message.qos, retain=message.retain
            )
            == []
        ), message


def test_module_refuses_to_start_without_every_handler(
    broker: BrokerAddress, prefix: str, tmp_path: Path
) -> None:
    with in_process_stack(broker, prefix, tmp_path) as (_manager, started):
        provider = start_module(broker, prefix, "provider")
        started["provider"] = provider
        provider.implement_command("main", "setMode", lambda mode, phase: None)
        with pytest.raises(
            ContractError, match=r"no handler for: imd\.start, imd\.start_self_test"
        ):
            provider.init_done()
        mismatch = "does not accept current, voltage and requires mode"
        with pytest.raises(ContractError, match=mismatch):
            provider.implement_command("main", "setExportVoltageCurrent", lambda mode: None)
        with pytest.raises(ContractError, match="has no command 'fly'"):
            provider.implement_command("main", "fly", lambda: None)
