"""``everkit check`` on a real Mosquitto: broken messages are found, a clean stack is clean."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from everkit.check import CheckRun, Options, main
from everkit.framework.broker import free_port
from everkit.framework.conformance import Checker
from everkit.framework.errors import HandlerException
from everkit.framework.transport import BrokerAddress
from everkit.framework.wire import cmd_payload
from tests.conftest import RawClient
from tests.integration.harness import in_process_stack, start_module

pytestmark = pytest.mark.integration
WAIT = 10.0
CALL = "9e1cd1f5-969f-4c60-81c9-6e1a816dd36f"


def env(msg_type: str, data: Any) -> bytes:
    return json.dumps({"msg_type": msg_type, "data": data}).encode()


@contextmanager
def checking(broker: BrokerAddress, prefix: str, grace: float = WAIT) -> Iterator[CheckRun]:
    """A check session running in a thread; subscribed when entered, stopped on exit."""
    run = CheckRun(Options(broker=broker, prefix=prefix, quiet=True, grace=grace))
    run.connect()
    thread = threading.Thread(target=run.run, daemon=True)
    thread.start()
    try:
        yield run
    finally:
        run.stop()
        thread.join(WAIT)
        run.close()
    assert not thread.is_alive()


def reasons(checker: Checker) -> list[str]:
    return [f"{f.kind}: {f.topic} {f.reason}" for f in checker.findings]


def test_each_deliberately_broken_message_is_found(
    broker: BrokerAddress, prefix: str, raw_client: RawClient
) -> None:
    impl = f"{prefix}modules/psu/impl/main"
    metadata = {"module": "Psu", "provides": {"main": {"interface": "power_supply_DC"}}}
    error = {"type": "power_supply_DC/HardwareFault", "origin": {"module_id": "psu"}}
    broken = [
        (f"{prefix}modules/psu/metadata", env("GetConfigResponse", metadata)),  # good
        (f"{impl}/var/mode", env("Variable", {"data": "Export"})),
        (f"{impl}/var/mode", env("Var", {"value": "Export"})),
        (f"{impl}/cmd/setMode", cmd_payload("c1", {"mode": "Sideways", "phase": "Other"}, "car")),
        (f"{impl}/error/power_supply_DC/HardwareFault", env("RaiseError", error)),
        (f"{impl}/cmd/setMode", cmd_payload(CALL, {"mode": "Off", "phase": "Other"}, "car")),
    ]
    with checking(broker, prefix, grace=0.2) as run:
        for topic, payload in broken:
            raw_client.publish(topic, payload)
        assert run.wait_for(lambda c: len(c.findings) >= 5 and not c.pending, WAIT), reasons(
            run.checker
        )
    found = reasons(run.checker)
    assert any("unknown msg_type 'Variable'" in r for r in found), found
    assert any("Var without data.data" in r for r in found), found
    schema = [f for f in run.checker.findings if f.kind == "schema"]
    assert [f.field for f in schema] == ["args.mode"]
    assert any("error object lacks uuid" in r for r in found), found
    unanswered = [f for f in run.checker.findings if f.kind == "unanswered"]
    assert len(unanswered) == 2  # the refused call was never answered either
    assert any(CALL in f.reason for f in unanswered)
    assert not run.checker.ok


def test_main_reports_violations_in_json_and_exits_1(
    broker: BrokerAddress, prefix: str, raw_client: RawClient, tmp_path: Path
) -> None:
    topic = f"{prefix}modules/psu/impl/main/var/mode"
    raw_client.publish(topic, env("Variable", {"data": 1}), retain=True)
    report = tmp_path / "report.json"
    try:
        argv = ["--broker", str(broker), "--prefix", prefix, "--duration", "1", "--quiet"]
        status = main([*argv, "--report", str(report)])
    finally:
        raw_client.publish(topic, b"", retain=True)
    assert status == 1
    summary = json.loads(report.read_text())
    assert summary["messages"] == 1
    [violation] = summary["violations"]
    assert violation["topic"] == topic
    assert violation["payload"] == '{"msg_type": "Variable", "data": {"data": 1}}'
    assert any("unknown msg_type" in v["reason"] for v in summary["violations"])


def test_unreachable_broker_and_bad_usage_exit_2() -> None:
    assert main(["--broker", f"127.0.0.1:{free_port()}", "--duration", "1", "--quiet"]) == 2
    assert main([]) == 2
    assert main(["--broker", "nowhere"]) == 2


def test_a_clean_in_process_stack_has_no_findings(
    broker: BrokerAddress, prefix: str, tmp_path: Path
) -> None:
    with checking(broker, prefix) as run, in_process_stack(broker, prefix, tmp_path) as (_m, s):
        provider = start_module(broker, prefix, "provider")
        s["provider"] = provider
        requirer = start_module(broker, prefix, "requirer", default_timeout=WAIT)
        s["requirer"] = requirer
        provider.implement_command("main", "setMode", lambda mode, phase: None)
        provider.implement_command("main", "setExportVoltageCurrent", lambda voltage, current: None)

        def refuse(voltage: float, current: float) -> None:
            raise HandlerException(f"cannot import {current} A")

        provider.implement_command("main", "setImportVoltageCurrent", refuse)
        for cmd in ("start", "stop", "start_self_test"):
            provider.implement_command("imd", cmd, lambda **_: None)
        ready = threading.Event()
        provider.init_done()
        requirer.init_done(ready.set)
        assert ready.wait(WAIT)
        requirer.call_command("psu", "setMode", {"mode": "Export", "phase": "Charging"})
        requirer.call_command("imd", "start")
        with pytest.raises(HandlerException):
            requirer.call_command(
                "psu", "setImportVoltageCurrent", {"voltage": 1.0, "current": 1.0}
            )
        provider.publish_variable("main", "mode", "Export")
        error = provider.error_factory("main").create("power_supply_DC/HardwareFault")
        provider.raise_error("main", error)
        provider.clear_error("main", "power_supply_DC/HardwareFault")
        cleared = ("provider", "power_supply_DC", "ClearError")
        assert run.wait_for(lambda c: c.counts[cleared] == 1 and not c.pending, WAIT)
    checker = run.checker
    assert checker.findings == [], reasons(checker)
    assert checker.ok
    assert checker.counts[("provider", "power_supply_DC", "Cmd")] == 2
    assert checker.counts[("provider", "isolation_monitor", "CmdResult")] == 1
    assert checker.counts[("provider", "power_supply_DC", "Var")] >= 1
    assert "provider/main" not in checker.unchecked  # schemas were really applied
