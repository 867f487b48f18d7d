"""Compiled validators: generated values pass, mutated ones fail naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from everkit.framework.definitions import Definitions
from everkit.framework.errors import ContractError, SchemaValidationError
from everkit.framework.validation import SchemaCompiler, ValidatorCache, arguments_schema
from tests.strategies import from_schema, wrong_value_for

DEFS = Definitions.from_dirs()
COMPILER = SchemaCompiler(DEFS)
CACHE = ValidatorCache(DEFS)

# the interfaces our planned modules provide or require
INTERFACES = [
    "power_supply_DC",
    "evse_manager",
    "evse_board_support",
    "isolation_monitor",
    "powermeter",
    "ISO15118_charger",
    "energy",
    "energy_manager",
    "external_energy_limits",
    "ocpp",
    "auth",
    "auth_token_provider",
    "auth_token_validator",
]


def _schemas() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name in INTERFACES:
        interface = DEFS.interface(name)
        for var, schema in interface.vars.items():
            found.append((f"{name}.var.{var}", schema))
        for cmd, command in interface.cmds.items():
            if command.arguments:
                found.append((f"{name}.{cmd}.args", arguments_schema(command)))
            if command.result.get("type") != "null":
                found.append((f"{name}.{cmd}.result", command.result))
    return found


SCHEMAS = _schemas()


@pytest.mark.parametrize(("where", "schema"), SCHEMAS, ids=[w for w, _ in SCHEMAS])
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_values_generated_from_the_schema_are_accepted(
    where: str, schema: dict[str, Any], data: st.DataObject
) -> None:
    contained = COMPILER.self_contained(schema)
    validate = COMPILER.compile(schema, where)
    validate(data.draw(from_schema(contained)))


OBJECT_SCHEMAS = [
    (w, s) for w, s in SCHEMAS if COMPILER.self_contained(s).get("type") == "object" or "$ref" in s
]


@pytest.mark.parametrize(("where", "schema"), OBJECT_SCHEMAS, ids=[w for w, _ in OBJECT_SCHEMAS])
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_wrong_property_is_rejected_naming_that_field(
    where: str, schema: dict[str, Any], data: st.DataObject
) -> None:
    contained = COMPILER.self_contained(schema)
    body = contained
    while "$ref" in body:
        node: Any = contained
        for part in body["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        body = node
    properties = body.get("properties") or {}
    if not properties:
        return
    value = data.draw(from_schema(contained))
    if not isinstance(value, dict):
        return
    name = data.draw(st.sampled_from(sorted(properties)))
    value[name] = wrong_value_for(properties[name], contained)
    validate = COMPILER.compile(schema, where, "value")
    with pytest.raises(SchemaValidationError) as caught:
        validate(value)
    assert caught.value.field == f"value.{name}", str(caught.value)
    assert where in str(caught.value)


def test_capabilities_var_names_the_failing_field() -> None:
    psu = CACHE["power_supply_DC"]
    caps = {
        "bidirectional": False,
        "current_regulation_tolerance_A": 1.0,
        "peak_current_ripple_A": 1.0,
        "max_export_voltage_V": 1000.0,
        "min_export_voltage_V": 150.0,
        "max_export_current_A": 100.0,
        "min_export_current_A": 0.0,
        "max_export_power_W": 30000.0,
    }
    psu.check_var("capabilities", caps)
    with pytest.raises(SchemaValidationError, match=r"field 'capabilities\.max_export_power_W'"):
        psu.check_var("capabilities", {**caps, "max_export_power_W": "a lot"})
    with pytest.raises(SchemaValidationError, match=r"must contain"):
        psu.check_var("capabilities", {"bidirectional": True})


def test_arguments_null_counts_as_no_arguments() -> None:
    """C++ callers send "args": null for commands without arguments (reference 4.1)."""
    imd = CACHE["isolation_monitor"]
    assert imd.check_args("start", None) == {}
    assert imd.check_args("start", {}) == {}


def test_missing_extra_and_wrong_arguments_are_rejected() -> None:
    psu = CACHE["power_supply_DC"]
    assert psu.check_args("setMode", {"mode": "Export", "phase": "Charging"})
    with pytest.raises(SchemaValidationError, match=r"field 'args' must contain \['phase'\]"):
        psu.check_args("setMode", {"mode": "Export"})
    with pytest.raises(SchemaValidationError, match=r"args"):
        psu.check_args("setMode", {"mode": "Export", "phase": "Charging", "extra": 1})
    with pytest.raises(SchemaValidationError, match=r"field 'args\.mode' must be one of"):
        psu.check_args("setMode", {"mode": "Exprt", "phase": "Charging"})
    with pytest.raises(SchemaValidationError, match=r"args"):
        psu.check_args("setMode", None)


def test_null_result_must_stay_null() -> None:
    psu = CACHE["power_supply_DC"]
    psu.check_result("setMode", None)
    with pytest.raises(SchemaValidationError, match="must be null"):
        psu.check_result("setMode", 42)


def test_undeclared_names_are_contract_errors() -> None:
    psu = CACHE["power_supply_DC"]
    with pytest.raises(ContractError, match="var 'nope'"):
        psu.check_var("nope", 1)
    with pytest.raises(ContractError, match="command 'nope'"):
        psu.check_args("nope", {})
    with pytest.raises(ContractError, match="error type 'power_supply_DC/Nope'"):
        psu.check_error_type("power_supply_DC/Nope")
    psu.check_error_type("power_supply_DC/CommunicationFault")


def test_booleans_are_not_numbers() -> None:
    with pytest.raises(SchemaValidationError, match=r"field 'args\.voltage'"):
        CACHE["power_supply_DC"].check_args(
            "setExportVoltageCurrent", {"voltage": True, "current": 1.0}
        )
