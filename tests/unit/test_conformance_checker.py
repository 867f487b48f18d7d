"""The conformance core on crafted messages: every rule with a bad and a good example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from everkit.check import providers_from_config, text_report
from everkit.framework.conformance import Checker, Finding, violations
from everkit.framework.definitions import ContractDirs, contract_root
from everkit.framework.wire import (
    cmd_payload,
    error_result_payload,
    result_payload,
    var_payload,
)
from tests.integration.harness import write_test_config

P = "everest/"
IMPL = f"{P}modules/psu/impl/main"
CALL = "048020fa-3405-499b-8f3d-63d91296a8e6"
GOOD_ERROR: dict[str, Any] = {
    "type": "power_supply_DC/HardwareFault",
    "description": "broken",
    "message": "toy",
    "origin": {"module_id": "psu", "implementation_id": "main"},
    "severity": "High",
    "timestamp": "2026-11-22T15:06:54.854Z",
    "uuid": "81b607c7-327f-4274-ba7b-6a990a01c1aa",
    "state": "Active",
    "sub_type": "",
    "vendor_id": "everest",
}


def env(msg_type: str, data: Any) -> bytes:
    return json.dumps({"msg_type": msg_type, "data": data}).encode()


def checker(grace_s: float = 5.0) -> Checker:
    return Checker(
        P,
        providers={("psu", "main"): "power_supply_DC"},
        fallback=ContractDirs.under(contract_root()),
        grace_s=grace_s,
    )


VAR = f"{IMPL}/var/mode"
CMD = f"{IMPL}/cmd/setMode"
RESULT = f"{IMPL}/cmd/setMode/response/c"
ERROR = f"{IMPL}/error/power_supply_DC/HardwareFault"
NO_UUID = {k: v for k, v in GOOD_ERROR.items() if k != "uuid"}


def cmd(**data: Any) -> bytes:
    return env("Cmd", data)


def result(**inner: Any) -> bytes:
    return env("CmdResult", {"type": "result", "data": inner})


# wire rules, one message at a time: (name, topic, bad payload, words of the reason)
WIRE_CASES = [
    ("unknown msg_type", VAR, env("Variable", {"data": 1}), "unknown msg_type"),
    ("var without data.data", VAR, env("Var", {"value": 1}), "Var without"),
    ("not JSON", VAR, b"{nope", "not strict JSON"),
    ("NaN", VAR, b'{"msg_type":"Var","data":{"data":NaN}}', "not strict JSON"),
    ("not an object", VAR, b"[1]", "not a JSON object"),
    ("extra key", VAR, b'{"msg_type":"Var","data":{"data":1},"x":1}', "envelope keys"),
    ("cmd without id", CMD, cmd(args={}, origin="c"), "Cmd without string id"),
    ("cmd without origin", CMD, cmd(id=CALL, args={}), "Cmd without string origin"),
    ("cmd args a list", CMD, cmd(id=CALL, args=[], origin="c"), "args must be"),
    ("result without id", RESULT, result(retval=None, origin="psu"), "data.data.id"),
    ("result without type", RESULT, env("CmdResult", {"data": {"id": CALL}}), "'result'"),
    ("result without retval", RESULT, result(id=CALL, origin="psu"), "neither retval"),
    ("unknown cmd error", RESULT, error_result_payload(CALL, "psu", "Oops", "m"), "unknown"),
    ("msg_type on wrong topic", VAR, cmd(id=CALL, args={}, origin="c"), "expected ['Var']"),
    ("ready not true", f"{P}modules/psu/ready", env("ModuleReady", False), "must be true"),
    ("GetConfig incomplete", f"{P}config/request", env("GetConfig", {}), "GetConfig needs"),
    ("error missing key", ERROR, env("RaiseError", NO_UUID), "lacks uuid"),
    ("bad severity", ERROR, env("RaiseError", {**GOOD_ERROR, "severity": "Huge"}), "severity"),
    ("bad timestamp", ERROR, env("RaiseError", {**GOOD_ERROR, "timestamp": "x"}), "RFC 3339"),
    ("outside prefix", "other/modules/psu/ready", env("ModuleReady", True), "outside"),
]


@pytest.mark.parametrize(
    ("name", "topic", "payload", "reason"), WIRE_CASES, ids=[c[0] for c in WIRE_CASES]
)
def test_each_wire_rule_is_reported_with_its_reason(
    name: str, topic: str, payload: bytes, reason: str
) -> None:
    found = checker().feed(topic, payload, now=1.0)
    assert found, name
    assert all(f.kind == "wire" for f in found)
    assert any(reason in f.reason for f in found), [f.reason for f in found]
    assert found[0].topic == topic
    assert found[0].excerpt == payload[:200].decode("utf-8", errors="replace")


def test_qos_and_retain_rules() -> None:
    good = var_payload("Export")
    assert violations(f"{IMPL}/var/mode", good, P, qos=1) == ["QoS 1, EVerest uses QoS 2"]
    assert "retained" in violations(f"{IMPL}/var/mode", good, P, retain=True)[0]
    retained_list = env("GetConfigResponse", ["power_supply_DC"])
    assert violations(f"{P}interfaces", retained_list, P, retain=True) == []
    assert violations(f"{P}interfaces", b"", P, retain=True) == []


CLEARED = {**GOOD_ERROR, "state": "ClearedByModule"}
GET_CONFIG = {"type": "Get", "origin": "psu", "request": {"type": "Module"}}
GOOD_MESSAGES = [
    (VAR, var_payload("Export")),
    (f"{IMPL}/var/voltage_current", var_payload({"voltage_V": 400.0, "current_A": 10.0})),
    (CMD, cmd_payload(CALL, {"mode": "Export", "phase": "Charging"}, "car")),
    (f"{CMD}/response/car", result_payload(CALL, "psu", None)),
    (ERROR, env("RaiseError", GOOD_ERROR)),
    (ERROR, env("ClearError", CLEARED)),
    (f"{P}modules/psu/ready", env("ModuleReady", True)),
    (f"{P}ready", env("GlobalReady", True)),
    (f"{P}config/request", env("GetConfig", GET_CONFIG)),
]


def test_a_conforming_conversation_has_no_findings() -> None:
    check = checker()
    for topic, payload in GOOD_MESSAGES:
        assert check.feed(topic, payload, now=1.0) == [], topic
    assert check.expire(now=100.0) == []
    assert check.ok
    assert check.counts[("psu", "power_supply_DC", "Var")] == 2
    assert check.counts[("psu", "power_supply_DC", "Cmd")] == 1
    assert check.counts[("(manager)", "", "GlobalReady")] == 1


def schema_finding(found: list[Finding]) -> Finding:
    assert len(found) == 1, found
    return found[0]


def test_cmd_args_failing_the_schema_name_the_field() -> None:
    bad = cmd_payload(CALL, {"mode": "Sideways", "phase": "Charging"}, "car")
    finding = schema_finding(checker().feed(f"{IMPL}/cmd/setMode", bad))
    assert finding.kind == "schema"
    assert finding.field == "args.mode"


def test_cmd_args_missing_and_extra_are_schema_violations() -> None:
    check = checker()
    missing = cmd_payload(CALL, {"mode": "Export"}, "car")
    assert schema_finding(check.feed(f"{IMPL}/cmd/setMode", missing)).kind == "schema"
    extra = cmd_payload("c2", {"voltage": 1.0, "current": 1.0, "x": 1}, "car")
    assert schema_finding(check.feed(f"{IMPL}/cmd/setExportVoltageCurrent", extra)).kind == "schema"


def test_var_failing_the_schema_names_the_field() -> None:
    bad = var_payload({"voltage_V": "high", "current_A": 10.0})
    finding = schema_finding(checker().feed(f"{IMPL}/var/voltage_current", bad))
    assert finding.kind == "schema"
    assert finding.field == "voltage_current.voltage_V"


def test_result_of_a_cmd_without_result_must_be_null() -> None:
    finding = schema_finding(
        checker().feed(f"{IMPL}/cmd/setMode/response/car", result_payload(CALL, "psu", 42))
    )
    assert (finding.kind, finding.field) == ("schema", "retval")


def test_a_failed_result_may_carry_a_refused_retval() -> None:
    payload = error_result_payload(CALL, "psu", "SchemaValidationError", "bad", retval=42)
    assert checker().feed(f"{IMPL}/cmd/setMode/response/car", payload) == []


def test_undeclared_var_cmd_and_error_type_are_contract_findings() -> None:
    check = checker()
    assert schema_finding(check.feed(f"{IMPL}/var/nope", var_payload(1))).kind == "contract"
    cmd = cmd_payload(CALL, {}, "car")
    assert schema_finding(check.feed(f"{IMPL}/cmd/nope", cmd)).kind == "contract"
    error = env("RaiseError", {**GOOD_ERROR, "type": "evse_manager/Nope"})
    finding = schema_finding(check.feed(f"{IMPL}/error/evse_manager/Nope", error))
    assert finding.kind == "contract"
    assert "evse_manager/Nope" in finding.reason


def test_error_object_type_must_match_its_topic() -> None:
    payload = env("RaiseError", {**GOOD_ERROR, "type": "power_supply_DC/OverTemperature"})
    finding = schema_finding(checker().feed(f"{IMPL}/error/power_supply_DC/HardwareFault", payload))
    assert "differs from its topic" in finding.reason


def test_a_cmd_without_result_is_reported_after_the_grace_period() -> None:
    check = checker(grace_s=5.0)
    check.feed(
        f"{IMPL}/cmd/setMode", cmd_payload(CALL, {"mode": "Off", "phase": "Other"}, "car"), now=10.0
    )
    assert check.expire(now=14.9) == []
    assert [p.call_id for p in check.pending] == [CALL]
    [finding] = check.expire(now=15.0)
    assert finding.kind == "unanswered"
    assert CALL in finding.reason
    assert "car" in finding.reason
    assert check.pending == []
    assert not check.ok
    assert check.summary()["unanswered"][0]["topic"] == f"{IMPL}/cmd/setMode"


def test_an_answered_cmd_is_never_reported() -> None:
    check = checker(grace_s=5.0)
    check.feed(
        f"{IMPL}/cmd/setMode", cmd_payload(CALL, {"mode": "Off", "phase": "Other"}, "car"), now=10.0
    )
    check.feed(f"{IMPL}/cmd/setMode/response/car", result_payload(CALL, "psu", None), now=11.0)
    assert check.expire(now=100.0) == []
    assert check.ok


def test_a_result_sent_to_the_wrong_caller_is_reported() -> None:
    check = checker()
    check.feed(f"{IMPL}/cmd/setMode", cmd_payload(CALL, {"mode": "Off", "phase": "Other"}, "car"))
    [finding] = check.feed(f"{IMPL}/cmd/setMode/response/bus", result_payload(CALL, "psu", None))
    assert "never sees it" in finding.reason


def test_a_reused_call_id_is_reported() -> None:
    check = checker()
    cmd = cmd_payload(CALL, {"mode": "Off", "phase": "Other"}, "car")
    assert check.feed(f"{IMPL}/cmd/setMode", cmd) == []
    [finding] = check.feed(f"{IMPL}/cmd/setMode", cmd)
    assert "reused" in finding.reason


def test_interfaces_are_learned_from_metadata_and_from_retained_manifests() -> None:
    check = Checker(P, fallback=ContractDirs.under(contract_root()))
    bad = var_payload("Sideways")
    assert check.feed(f"{IMPL}/var/mode", bad) == []  # nothing known yet: not checked
    assert check.unchecked["psu/main"] == 1
    metadata = env(
        "GetConfigResponse", {"module": "X", "provides": {"main": {"interface": "power_supply_DC"}}}
    )
    check.feed(f"{P}modules/psu/metadata", metadata)
    assert schema_finding(check.feed(f"{IMPL}/var/mode", bad)).field == "mode"

    other = Checker(P, fallback=ContractDirs.under(contract_root()))
    other.feed(f"{P}module_names", env("GetConfigResponse", {"psu": "Psu"}))
    manifest = {"provides": {"main": {"interface": "power_supply_DC"}}}
    other.feed(f"{P}manifests/Psu", env("GetConfigResponse", manifest))
    assert other.interface_of("psu", "main") == "power_supply_DC"
    assert schema_finding(other.feed(f"{IMPL}/var/mode", bad)).field == "mode"


def test_retained_interface_definitions_win_over_the_folders() -> None:
    check = Checker(P, providers={("psu", "main"): "tiny"}, fallback=None)
    tiny = {"cmds": {}, "vars": {"level": {"type": "integer", "qos": 2}}, "errors": {}}
    check.feed(f"{P}interface_definitions/tiny", env("GetConfigResponse", tiny))
    assert check.feed(f"{IMPL}/var/level", var_payload(3)) == []
    assert schema_finding(check.feed(f"{IMPL}/var/level", var_payload("3"))).field == "level"


def test_summary_groups_counts_by_module_and_interface() -> None:
    check = checker()
    for topic, payload in GOOD_MESSAGES:
        check.feed(topic, payload)
    check.feed(f"{IMPL}/var/mode", env("Variable", {"data": 1}))
    summary = json.loads(json.dumps(check.summary()))
    assert summary["counts"]["psu"]["power_supply_DC"]["Var"] == 2
    assert summary["messages"] == len(GOOD_MESSAGES) + 1
    [violation] = summary["violations"]
    assert violation["topic"] == f"{IMPL}/var/mode"
    assert "unknown msg_type" in violation["reason"]


def test_a_runtime_config_tells_which_interface_each_implementation_provides(
    tmp_path: Path,
) -> None:
    config = write_test_config(tmp_path)
    providers = providers_from_config(config, [tmp_path / "manifests"])
    assert providers == {
        ("provider", "main"): "power_supply_DC",
        ("provider", "imd"): "isolation_monitor",
    }


def test_the_text_report_names_topic_field_and_payload() -> None:
    check = checker()
    bad = cmd_payload(CALL, {"mode": "Sideways", "phase": "Charging"}, "car")
    check.feed(CMD, bad)
    text = text_report(check.summary())
    assert f"schema: {CMD} [field args.mode]" in text
    assert bad.decode() in text
    assert "1 violations" in text
