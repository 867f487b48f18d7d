"""Loading and normalising the contract like the C++ manager (protocol reference 12.2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from everkit.framework.definitions import Definitions, contract_root, normalise_interface
from everkit.framework.errors import ContractError
from tests.conformance.test_contract_files import strip_descriptions

UPSTREAM = Path(
    os.environ.get(
        "EVERKIT_UPSTREAM_DIR", Path(__file__).resolve().parents[3] / "shared" / "everest"
    )
)
needs_upstream = pytest.mark.skipif(
    not UPSTREAM.is_dir(), reason=f"EVerest upstream data not present at {UPSTREAM}"
)


def test_isolation_monitor_normalises_to_the_protocol_reference_example() -> None:
    """Section 12.2 gives the distributed form of isolation_monitor."""
    normalised = Definitions.from_dirs().interface("isolation_monitor").normalised
    assert normalised["cmds"] == {
        "start": {"arguments": {}, "result": {"type": "null"}},
        "start_self_test": {
            "arguments": {"test_voltage_V": {"type": "number"}},
            "result": {"type": "null"},
        },
        "stop": {"arguments": {}, "result": {"type": "null"}},
    }
    assert normalised["vars"] == {
        "isolation_measurement": {
            "type": "object",
            "$ref": "/isolation_monitor#/IsolationMeasurement",
            "qos": 2,
        },
        "self_test_result": {"type": "boolean", "qos": 2},
    }
    device_fault = normalised["errors"]["isolation_monitor"]["DeviceFault"]
    assert device_fault["name"] == "DeviceFault"
    assert device_fault["namespace"] == "isolation_monitor"
    assert len(device_fault["description"]) > 10
    assert "description" not in normalised


@needs_upstream
@pytest.mark.parametrize("interface", ["power_supply_DC", "powermeter", "over_voltage_monitor"])
def test_normalised_upstream_interface_is_byte_identical_to_the_cpp_manager(interface: str) -> None:
    """The C++ manager's retained payloads, captured in wire-samples/, byte for byte."""
    golden = {}
    for line in (UPSTREAM / "wire-samples" / "cpp-pair-run.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["topic"] == f"everest/interface_definitions/{interface}" and record["payload"]:
            golden = record["payload"]
    ours = json.dumps(
        {
            "data": Definitions.from_dirs(UPSTREAM).interface(interface).normalised,
            "msg_type": "GetConfigResponse",
        },
        separators=(",", ":"),
        sort_keys=True,
    )
    assert ours == golden


@needs_upstream
def test_our_contract_normalises_like_upstream_apart_from_descriptions() -> None:
    ours = Definitions.from_dirs(contract_root())
    theirs = Definitions.from_dirs(UPSTREAM)

    for name in theirs.available_interfaces():
        # descriptions are ours; nested ones survive normalisation, as in C++
        assert strip_descriptions(ours.interface(name).normalised) == strip_descriptions(
            theirs.interface(name).normalised
        ), name


def test_defaults_are_applied_and_descriptions_stripped() -> None:
    raw = {
        "description": "x" * 3,
        "cmds": {
            "go": {
                "description": "start",
                "arguments": {"a": {"type": "integer", "description": "aa"}},
            }
        },
        "vars": {
            "v": {
                "type": "array",
                "description": "vv",
                "items": {
                    "type": "object",
                    "description": "ii",
                    "properties": {"p": {"type": "string", "description": "pp"}},
                },
            }
        },
    }
    normalised = normalise_interface("demo", raw, lambda ns: [])
    assert normalised == {
        "cmds": {"go": {"arguments": {"a": {"type": "integer"}}, "result": {"type": "null"}}},
        "vars": {
            "v": {
                "type": "array",
                "qos": 2,
                "items": {"type": "object", "properties": {"p": {"type": "string"}}},
            }
        },
        "errors": {},
    }


def test_error_reference_to_a_single_error_expands_only_that_error() -> None:
    errors = [{"name": "A", "description": "a"}, {"name": "B", "description": "b"}]
    normalised = normalise_interface(
        "demo", {"errors": [{"reference": "/errors/ns#/B"}]}, lambda ns: errors
    )
    assert normalised["errors"] == {
        "ns": {"B": {"name": "B", "description": "b", "namespace": "ns"}}
    }


def test_duplicate_error_reference_is_a_contract_error() -> None:
    errors = [{"name": "A", "description": "a"}]
    with pytest.raises(ContractError, match="twice"):
        normalise_interface(
            "demo",
            {"errors": [{"reference": "/errors/ns"}, {"reference": "/errors/ns#/A"}]},
            lambda ns: errors,
        )


def test_unknown_interface_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "interfaces").mkdir()
    with pytest.raises(ContractError, match=r"interfaces/nope\.yaml"):
        Definitions.from_dirs(tmp_path).interface("nope")


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "interfaces").mkdir()
    (tmp_path / "interfaces" / "bad.yaml").write_text("cmds: [unclosed\n")
    with pytest.raises(ContractError, match=r"bad\.yaml.*invalid YAML"):
        Definitions.from_dirs(tmp_path).interface("bad")


def test_retained_definitions_win_and_types_fall_back_to_folders() -> None:
    local = Definitions.from_dirs()
    retained = {"power_supply_DC": local.interface("power_supply_DC").normalised}
    defs = Definitions.from_retained(retained, {}, fallback=local.dirs)
    assert defs.interface("power_supply_DC").normalised == retained["power_supply_DC"]
    assert "Capabilities" in defs.type_file("/power_supply_DC")
