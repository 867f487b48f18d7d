"""PyOCPP201's device model: GetVariables (B06), SetVariables (B05), reports (B07/B08),
persistence through the ``persist`` callback, and the wire shapes the ``ocpp`` package checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.messages import MessageType, get_validator
from ocpp.v201 import call, call_result

from everkit.framework.errors import ConfigError, EverkitError
from everkit.ocpp201.device_model import (
    Change,
    DeviceModel,
    DeviceModelError,
    EvseShape,
    InvalidValue,
    StationShape,
    UnknownVariable,
    VariableDef,
    chunks,
    standard_definitions,
)

PASSWORD = "correct-horse-battery"  # 21 characters: inside BasicAuthPassword's 16..40

STATION = StationShape(
    station_id="CS001",
    vendor_name="everkit",
    model="PyDC-2",
    evses=(EvseShape(1), EvseShape(2, (1, 2))),
    security_profile=1,
)


def build(
    stored: dict[str, str] | None = None, overrides: dict[str, str] | None = None
) -> tuple[DeviceModel, dict[str, str]]:
    """A standard model persisting into a dict, which plays the store."""
    saved: dict[str, str] = dict(stored or {})
    model = DeviceModel.standard(STATION, overrides, stored=stored, persist=saved.__setitem__)
    return model, saved


def component(
    name: str, *, evse: int | None = None, connector: int | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = {"name": name}
    if evse is not None:
        result["evse"] = {"id": evse}
        if connector is not None:
            result["evse"]["connector_id"] = connector
    return result


def get(
    model: DeviceModel,
    comp: dict[str, Any],
    name: str,
    *,
    instance: str | None = None,
    attribute_type: str | None = None,
) -> dict[str, Any]:
    variable: dict[str, Any] = {"name": name}
    if instance is not None:
        variable["instance"] = instance
    entry: dict[str, Any] = {"component": comp, "variable": variable}
    if attribute_type is not None:
        entry["attribute_type"] = attribute_type
    (result,) = model.get_variables([entry])
    return result


def set_one(
    model: DeviceModel,
    comp: dict[str, Any],
    name: str,
    value: str,
    *,
    instance: str | None = None,
    attribute_type: str | None = None,
) -> tuple[dict[str, Any], list[Change]]:
    variable: dict[str, Any] = {"name": name}
    if instance is not None:
        variable["instance"] = instance
    entry: dict[str, Any] = {"component": comp, "variable": variable, "attribute_value": value}
    if attribute_type is not None:
        entry["attribute_type"] = attribute_type
    (result,), changes = model.set_variables([entry])
    return result, changes


def wire(payload: Any) -> Any:
    """What the ``ocpp`` package puts on the wire for a call or call_result dataclass."""
    return snake_to_camel_case(remove_nones(serialize_as_dict(payload)))


def check_response(action: str, payload: Any) -> None:
    get_validator(MessageType.CallResult, action, "2.0.1").validate(wire(payload))


def check_request(action: str, payload: Any) -> None:
    get_validator(MessageType.Call, action, "2.0.1").validate(wire(payload))


# GetVariables (B06)


def test_get_answers_every_entry_in_order_and_echoes_it() -> None:
    """B06.FR.01, B06.FR.02, B06.FR.03: one result per entry, same component/variable/type."""
    model, _ = build()
    request = [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
        {
            "component": {"name": "Connector", "evse": {"id": 2, "connector_id": 2}},
            "variable": {"name": "ConnectorType"},
            "attribute_type": "Actual",
        },
        {"component": {"name": "Nope"}, "variable": {"name": "HeartbeatInterval"}},
    ]
    results = model.get_variables(request)
    assert [r["component"] for r in results] == [e["component"] for e in request]
    assert [r["variable"] for r in results] == [e["variable"] for e in request]
    assert [r["attribute_type"] for r in results] == ["Actual"] * 3
    assert [r["attribute_status"] for r in results] == ["Accepted", "Accepted", "UnknownComponent"]
    check_response("GetVariables", call_result.GetVariables(get_variable_result=results))


def test_get_accepted_carries_the_value() -> None:
    """B06.FR.10 (value of an accepted entry); B06.FR.11 (no attributeType means Actual)."""
    model, _ = build()
    result = get(model, component("OCPPCommCtrlr"), "HeartbeatInterval")
    assert result["attribute_status"] == "Accepted"
    assert result["attribute_value"] == "300"
    assert result["attribute_type"] == "Actual"
    assert "attribute_status_info" not in result


def test_get_identity_comes_from_the_station_shape() -> None:
    model, _ = build()
    assert get(model, component("SecurityCtrlr"), "Identity")["attribute_value"] == "CS001"
    assert get(model, component("SecurityCtrlr"), "SecurityProfile")["attribute_value"] == "1"
    assert get(model, component("ChargingStation"), "Model")["attribute_value"] == "PyDC-2"
    assert get(model, component("ChargingStation"), "VendorName")["attribute_value"] == "everkit"
    assert get(model, component("ChargingStation"), "SupplyPhases")["attribute_value"] == "0"


@pytest.mark.parametrize(
    "comp",
    [
        component("NoSuchCtrlr"),
        component("EVSE"),  # an EVSE component needs its evse id
        component("EVSE", evse=3),  # there is no EVSE 3
        component("Connector", evse=1),  # a connector needs its connector id
        component("Connector", evse=1, connector=2),  # EVSE 1 has one connector
        component("OCPPCommCtrlr", evse=1),  # controllers have no EVSE address
        {"name": "OCPPCommCtrlr", "instance": "X"},  # nor an instance
    ],
)
def test_get_unknown_component(comp: dict[str, Any]) -> None:
    """B06.FR.06: a component (name + instance + EVSE + connector) we do not have."""
    model, _ = build()
    result = get(model, comp, "AvailabilityState")
    assert result["attribute_status"] == "UnknownComponent"
    assert "attribute_value" not in result
    check_response("GetVariables", call_result.GetVariables(get_variable_result=[result]))


def test_get_unknown_variable() -> None:
    """B06.FR.07: the component exists, the variable does not."""
    model, _ = build()
    result = get(model, component("OCPPCommCtrlr"), "NoSuchVariable")
    assert result["attribute_status"] == "UnknownVariable"
    assert "attribute_value" not in result


def test_get_variable_instance_is_part_of_the_name() -> None:
    """B06.FR.14: the instance selects the variable; B06.FR.15: without it, a variable that
    only exists with an instance is unknown."""
    model, _ = build()
    with_instance = get(model, component("OCPPCommCtrlr"), "MessageTimeout", instance="Default")
    assert (with_instance["attribute_status"], with_instance["attribute_value"]) == (
        "Accepted",
        "30",
    )
    without = get(model, component("OCPPCommCtrlr"), "MessageTimeout")
    assert without["attribute_status"] == "UnknownVariable"
    wrong = get(model, component("OCPPCommCtrlr"), "MessageTimeout", instance="Other")
    assert wrong["attribute_status"] == "UnknownVariable"


@pytest.mark.parametrize("attribute_type", ["Target", "MinSet", "MaxSet"])
def test_get_other_attribute_types_are_not_supported(attribute_type: str) -> None:
    """B06.FR.08: only Actual exists; the requested type is echoed."""
    model, _ = build()
    result = get(
        model, component("OCPPCommCtrlr"), "HeartbeatInterval", attribute_type=attribute_type
    )
    assert result["attribute_status"] == "NotSupportedAttributeType"
    assert result["attribute_type"] == attribute_type
    assert "attribute_value" not in result


def test_get_write_only_is_rejected_without_value() -> None:
    """B06.FR.09: a WriteOnly variable (BasicAuthPassword) is never read back."""
    model, _ = build(overrides={"SecurityCtrlr.BasicAuthPassword": PASSWORD})
    result = get(model, component("SecurityCtrlr"), "BasicAuthPassword")
    assert result["attribute_status"] == "Rejected"
    assert result["attribute_status_info"]["reason_code"] == "WriteOnly"
    assert "attribute_value" not in result
    assert PASSWORD not in repr(result)
    check_response("GetVariables", call_result.GetVariables(get_variable_result=[result]))


# SetVariables (B05)


def test_set_accepted_is_stored_persisted_and_reported_as_change() -> None:
    """B05.FR.01: one result per entry; accepted values are persisted before the answer."""
    model, saved = build()
    result, changes = set_one(model, component("OCPPCommCtrlr"), "HeartbeatInterval", "60")
    assert result == {
        "attribute_type": "Actual",
        "attribute_status": "Accepted",
        "component": {"name": "OCPPCommCtrlr"},
        "variable": {"name": "HeartbeatInterval"},
    }
    assert saved == {"OCPPCommCtrlr.HeartbeatInterval": "60"}
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 60
    assert changes == [
        Change("OCPPCommCtrlr", "HeartbeatInterval", None, None, None, None, "300", "60")
    ]
    assert changes[0].key == "OCPPCommCtrlr.HeartbeatInterval"
    check_response("SetVariables", call_result.SetVariables(set_variable_result=[result]))


def test_set_same_value_is_accepted_without_change() -> None:
    model, saved = build()
    result, changes = set_one(model, component("OCPPCommCtrlr"), "HeartbeatInterval", "300")
    assert result["attribute_status"] == "Accepted"
    assert changes == []
    assert saved == {"OCPPCommCtrlr.HeartbeatInterval": "300"}  # the CSMS chose it: kept


def test_set_with_instance_reports_instance_in_change() -> None:
    model, saved = build()
    result, changes = set_one(
        model, component("OCPPCommCtrlr"), "MessageAttempts", "5", instance="TransactionEvent"
    )
    assert result["attribute_status"] == "Accepted"
    assert result["variable"] == {"name": "MessageAttempts", "instance": "TransactionEvent"}
    assert saved == {"OCPPCommCtrlr.MessageAttempts(TransactionEvent)": "5"}
    assert [(c.instance, c.old, c.new) for c in changes] == [("TransactionEvent", "3", "5")]


@pytest.mark.parametrize(
    ("name", "given", "stored"),
    [
        ("StopTxOnInvalidId", "False", "false"),
        ("StopTxOnInvalidId", "TRUE", "true"),
        ("EVConnectionTimeOut", "010", "10"),
        ("EVConnectionTimeOut", "+7", "7"),
        ("TxStartPoint", "EVConnected, Authorized", "EVConnected,Authorized"),
        ("TxStopPoint", "", ""),
    ],
)
def test_set_values_are_normalised(name: str, given: str, stored: str) -> None:
    """B05: values are stored in their OCPP form (booleans lower case, integers plain)."""
    model, saved = build()
    result, _ = set_one(model, component("TxCtrlr"), name, given)
    assert result["attribute_status"] == "Accepted"
    assert saved == {f"TxCtrlr.{name}": stored}
    assert get(model, component("TxCtrlr"), name)["attribute_value"] == stored


def test_set_decimal_is_kept_as_given() -> None:
    model, _ = build()
    result, _ = set_one(model, component("SmartChargingCtrlr"), "LimitChangeSignificance", "12.5")
    assert result["attribute_status"] == "Accepted"
    assert model.get_float("SmartChargingCtrlr", "LimitChangeSignificance") == 12.5
    assert model.get_str("SmartChargingCtrlr", "LimitChangeSignificance") == "12.5"


@pytest.mark.parametrize(
    ("comp", "name", "value", "reason"),
    [
        (component("OCPPCommCtrlr"), "HeartbeatInterval", "banana", "InvalidValue"),
        (component("OCPPCommCtrlr"), "HeartbeatInterval", "1.5", "InvalidValue"),
        (component("OCPPCommCtrlr"), "HeartbeatInterval", " 60", "InvalidValue"),
        (component("OCPPCommCtrlr"), "HeartbeatInterval", "0", "ValueOutOfRange"),
        (component("OCPPCommCtrlr"), "OfflineThreshold", "-1", "ValueOutOfRange"),
        (component("AuthCtrlr"), "Enabled", "yes", "InvalidValue"),
        (component("SmartChargingCtrlr"), "LimitChangeSignificance", "101", "ValueOutOfRange"),
        (component("SmartChargingCtrlr"), "LimitChangeSignificance", "1e3", "InvalidValue"),
        (
            component("SmartChargingCtrlr"),
            "CompositeScheduleDefaultNumberPhases",
            "4",
            "ValueOutOfRange",
        ),
        (component("TxCtrlr"), "TxStartPoint", "ParkingBayOccupancy", "InvalidValue"),
        (component("TxCtrlr"), "TxStartPoint", "EVConnected,EVConnected", "InvalidValue"),
        (component("ClockCtrlr"), "TimeSource", "NTP", "InvalidValue"),
        (component("SecurityCtrlr"), "BasicAuthPassword", "too-short", "ValueOutOfRange"),
        (component("SecurityCtrlr"), "BasicAuthPassword", "x" * 41, "ValueOutOfRange"),
    ],
)
def test_set_invalid_values_are_rejected_and_nothing_changes(
    comp: dict[str, Any], name: str, value: str, reason: str
) -> None:
    """B05: a value that is badly formatted, out of range or not a listed member is Rejected
    with a reason code, and neither stored nor persisted."""
    model, saved = build()
    before = model.report("FullInventory")
    result, changes = set_one(model, comp, name, value)
    assert result["attribute_status"] == "Rejected"
    assert result["attribute_status_info"]["reason_code"] == reason
    assert changes == []
    assert saved == {}
    assert model.report("FullInventory") == before
    check_response("SetVariables", call_result.SetVariables(set_variable_result=[result]))


@pytest.mark.parametrize(
    ("comp", "name"),
    [
        (component("ChargingStation"), "Model"),
        (component("SecurityCtrlr"), "Identity"),
        (component("EVSE", evse=1), "Power"),
        (component("Connector", evse=2, connector=2), "AvailabilityState"),
        (component("ClockCtrlr"), "DateTime"),
    ],
)
def test_set_read_only_is_rejected(comp: dict[str, Any], name: str) -> None:
    """B05: a ReadOnly variable cannot be set (Rejected, reasonCode ReadOnly)."""
    model, saved = build()
    result, changes = set_one(model, comp, name, "2026-01-01T00:00:00Z")
    assert result["attribute_status"] == "Rejected"
    assert result["attribute_status_info"]["reason_code"] == "ReadOnly"
    assert (changes, saved) == ([], {})


def test_set_unknown_component_variable_and_attribute_type() -> None:
    """B05.FR.04 UnknownComponent, B05.FR.05 UnknownVariable, B05.FR.06
    NotSupportedAttributeType (only Actual exists)."""
    model, saved = build()
    request = [
        {"component": {"name": "Nope"}, "variable": {"name": "Enabled"}, "attribute_value": "1"},
        {"component": {"name": "EVSE"}, "variable": {"name": "Power"}, "attribute_value": "1"},
        {
            "component": {"name": "AuthCtrlr"},
            "variable": {"name": "Nope"},
            "attribute_value": "true",
        },
        {
            "component": {"name": "AuthCtrlr"},
            "variable": {"name": "Enabled"},
            "attribute_value": "false",
            "attribute_type": "Target",
        },
    ]
    results, changes = model.set_variables(request)
    assert [r["attribute_status"] for r in results] == [
        "UnknownComponent",
        "UnknownComponent",
        "UnknownVariable",
        "NotSupportedAttributeType",
    ]
    assert results[3]["attribute_type"] == "Target"
    assert (changes, saved) == ([], {})
    assert model.get_bool("AuthCtrlr", "Enabled") is True
    check_response("SetVariables", call_result.SetVariables(set_variable_result=results))


def test_set_basic_auth_password_needs_a_reboot_and_is_kept_secret() -> None:
    """B05: RebootRequired for BasicAuthPassword; the value is stored and persisted anyway,
    and B06.FR.09 keeps it out of GetVariables."""
    model, saved = build()
    assert model.basic_auth_password() is None
    result, changes = set_one(model, component("SecurityCtrlr"), "BasicAuthPassword", PASSWORD)
    assert result["attribute_status"] == "RebootRequired"
    assert saved == {"SecurityCtrlr.BasicAuthPassword": PASSWORD}
    assert model.basic_auth_password() == PASSWORD
    assert [c.key for c in changes] == ["SecurityCtrlr.BasicAuthPassword"]
    assert get(model, component("SecurityCtrlr"), "BasicAuthPassword")["attribute_status"] == (
        "Rejected"
    )
    check_response("SetVariables", call_result.SetVariables(set_variable_result=[result]))


def test_set_entries_are_applied_in_order() -> None:
    """B05.FR.01: each entry gets its own result; a later entry sees an earlier one's value."""
    model, _ = build()
    results, changes = model.set_variables(
        [
            {
                "component": {"name": "OCPPCommCtrlr"},
                "variable": {"name": "OfflineThreshold"},
                "attribute_value": "123",
            },
            {
                "component": {"name": "OCPPCommCtrlr"},
                "variable": {"name": "OfflineThreshold"},
                "attribute_value": "x",
            },
            {
                "component": {"name": "AuthCtrlr"},
                "variable": {"name": "AuthorizeRemoteStart"},
                "attribute_value": "true",
            },
        ]
    )
    assert [r["attribute_status"] for r in results] == ["Accepted", "Rejected", "Accepted"]
    assert [(c.variable, c.new) for c in changes] == [
        ("OfflineThreshold", "123"),
        ("AuthorizeRemoteStart", "true"),
    ]
    assert model.get_int("OCPPCommCtrlr", "OfflineThreshold") == 123


@given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=0, max_value=5))
def test_any_integer_in_range_round_trips_in_canonical_form(value: int, zeros: int) -> None:
    model, saved = build()
    result, _ = set_one(
        model, component("OCPPCommCtrlr"), "HeartbeatInterval", "0" * zeros + str(value)
    )
    assert result["attribute_status"] == "Accepted"
    assert saved["OCPPCommCtrlr.HeartbeatInterval"] == str(value)
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == value


# persistence, overrides, defaults


def test_values_survive_a_rebuild_from_what_was_persisted() -> None:
    model, saved = build()
    set_one(model, component("TxCtrlr"), "TxStartPoint", "EVConnected")
    set_one(model, component("SecurityCtrlr"), "BasicAuthPassword", PASSWORD)
    set_one(model, component("SampledDataCtrlr"), "TxUpdatedInterval", "15")

    rebuilt, _ = build(stored=saved)
    assert rebuilt.get_list("TxCtrlr", "TxStartPoint") == ["EVConnected"]
    assert rebuilt.basic_auth_password() == PASSWORD
    assert rebuilt.get_int("SampledDataCtrlr", "TxUpdatedInterval") == 15
    assert rebuilt.ignored_stored == ()


def test_stored_values_win_over_overrides_which_win_over_defaults() -> None:
    overrides = {"OCPPCommCtrlr.HeartbeatInterval": "45", "OCPPCommCtrlr.OfflineThreshold": "90"}
    model, _ = build(stored={"OCPPCommCtrlr.HeartbeatInterval": "600"}, overrides=overrides)
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 600
    assert model.get_int("OCPPCommCtrlr", "OfflineThreshold") == 90
    assert model.get_int("OCPPCommCtrlr", "ResetRetries") == 2


def test_stored_values_that_no_longer_fit_are_ignored_and_named() -> None:
    stored = {
        "ChargingStation.Model": "Tampered",  # ReadOnly: never taken from the store
        "OldCtrlr.Gone": "1",  # not in this model any more
        "OCPPCommCtrlr.HeartbeatInterval": "0",  # below today's minimum
        "AuthCtrlr.LocalPreAuthorize": "true",
    }
    model, _ = build(stored=stored)
    assert model.get_str("ChargingStation", "Model") == "PyDC-2"
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 300
    assert model.get_bool("AuthCtrlr", "LocalPreAuthorize") is True
    assert sorted(model.ignored_stored) == sorted(
        ["ChargingStation.Model", "OldCtrlr.Gone", "OCPPCommCtrlr.HeartbeatInterval"]
    )


def test_override_keys_address_instances_evses_and_connectors() -> None:
    model, _ = build(
        overrides={
            "EVSE[2].Power": "150000",
            "Connector[2,2].ConnectorType": "cCHAdeMO",
            "OCPPCommCtrlr.MessageTimeout(Default)": "20",
            "SmartChargingCtrlr.Entries(ChargingProfiles)": "0",
            "AuthCtrlr.Enabled": "False",
        }
    )
    assert model.get_float("EVSE", "Power", evse=2) == 150000
    assert model.get_float("EVSE", "Power", evse=1) == 0
    assert model.get_str("Connector", "ConnectorType", evse=2, connector=2) == "cCHAdeMO"
    assert model.get_str("Connector", "ConnectorType", evse=2, connector=1) == "cCCS2"
    assert model.get_int("OCPPCommCtrlr", "MessageTimeout", instance="Default") == 20
    assert model.get_bool("AuthCtrlr", "Enabled") is False


def test_an_unknown_override_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"EVSE\[9\]\.Power"):
        build(overrides={"EVSE[9].Power": "1"})
    with pytest.raises(ConfigError, match=r"MessageTimeout"):
        build(overrides={"OCPPCommCtrlr.MessageTimeout": "1"})  # the instance is missing


def test_an_invalid_override_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="HeartbeatInterval"):
        build(overrides={"OCPPCommCtrlr.HeartbeatInterval": "soon"})
    with pytest.raises(ConfigError, match="BasicAuthPassword"):
        build(overrides={"SecurityCtrlr.BasicAuthPassword": "short"})


def test_every_default_fits_its_own_definition() -> None:
    """Defaults are not checked at build time, so check them here (the two empty
    "not set yet" values excepted)."""
    model, _ = build()
    not_yet_set = {"SecurityCtrlr.BasicAuthPassword", "ClockCtrlr.DateTime"}
    for definition in standard_definitions(STATION):
        if definition.key in not_yet_set:
            continue
        value = definition.default
        comp = definition.ref.component_dict()
        if definition.mutability == "ReadOnly":
            continue  # set_internal below covers read-only ones
        result, _ = set_one(
            model, comp, definition.variable, value, instance=definition.variable_instance
        )
        assert result["attribute_status"] in ("Accepted", "RebootRequired"), definition.key
    for definition in standard_definitions(STATION):
        if definition.key in not_yet_set:
            continue
        model.set_internal(
            definition.component,
            definition.variable,
            definition.default,
            instance=definition.variable_instance,
            evse=definition.evse,
            connector=definition.connector,
        )


def test_writable_variables_are_persistent_read_only_ones_are_not() -> None:
    for definition in standard_definitions(STATION):
        assert definition.persistent == (definition.mutability != "ReadOnly"), definition.key
        assert not (definition.constant and definition.mutability != "ReadOnly"), definition.key


def test_the_shape_must_be_sane() -> None:
    with pytest.raises(ConfigError, match=r"1\.\.n"):
        StationShape("CS", "v", "m", evses=(EvseShape(2),))
    with pytest.raises(ConfigError, match="distinct"):
        StationShape("CS", "v", "m", evses=(EvseShape(1, (1, 1)),))
    with pytest.raises(ConfigError, match="security profile"):
        StationShape("CS", "v", "m", security_profile=4)


# getters and internal updates


def test_typed_getters() -> None:
    model, _ = build()
    assert model.get_bool("AuthCtrlr", "LocalAuthorizeOffline") is True
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 300
    assert model.get_float("SmartChargingCtrlr", "LimitChangeSignificance") == 10.0
    assert model.get_float("OCPPCommCtrlr", "HeartbeatInterval") == 300.0
    assert model.get_list("SmartChargingCtrlr", "RateUnit") == ["A", "W"]
    assert model.get_list("OCPPCommCtrlr", "FileTransferProtocols") == []
    assert model.get_list("TxCtrlr", "TxStopPoint") == ["EVConnected", "Authorized"]
    assert model.get_str("Connector", "ConnectorType", evse=1, connector=1) == "cCCS2"
    assert model.get_int("DeviceDataCtrlr", "ItemsPerMessage", instance="GetReport") == 20


def test_unknown_variable_is_a_key_error_and_an_everkit_error() -> None:
    model, _ = build()
    with pytest.raises(UnknownVariable, match=r"OCPPCommCtrlr\.MessageTimeout$") as raised:
        model.get_int("OCPPCommCtrlr", "MessageTimeout")  # the instance is missing
    assert isinstance(raised.value, KeyError)
    assert isinstance(raised.value, EverkitError)
    with pytest.raises(UnknownVariable, match=r"EVSE\[3\]\.Power"):
        model.get_float("EVSE", "Power", evse=3)


def test_a_getter_of_the_wrong_type_says_so() -> None:
    model, _ = build()
    with pytest.raises(DeviceModelError, match="integer, not boolean"):
        model.get_bool("OCPPCommCtrlr", "HeartbeatInterval")
    with pytest.raises(DeviceModelError, match="MemberList"):
        model.get_int("TxCtrlr", "TxStartPoint")


def test_set_internal_updates_read_only_values_without_persisting_them() -> None:
    model, saved = build()
    change = model.set_internal("SmartChargingCtrlr", "Entries", "2", instance="ChargingProfiles")
    assert change is not None
    assert (change.old, change.new) == ("0", "2")
    assert model.set_internal(
        "SmartChargingCtrlr", "Entries", "2", instance="ChargingProfiles"
    ) is (None)
    model.set_internal("ClockCtrlr", "DateTime", "2026-11-22T17:00:00Z")
    assert get(model, component("ClockCtrlr"), "DateTime")["attribute_value"] == (
        "2026-11-22T17:00:00Z"
    )
    assert saved == {}


def test_set_internal_persists_persistent_values() -> None:
    """A HeartbeatInterval from the BootNotification response is kept like a CSMS setting."""
    model, saved = build()
    model.set_internal("OCPPCommCtrlr", "HeartbeatInterval", "90")
    assert saved == {"OCPPCommCtrlr.HeartbeatInterval": "90"}


@pytest.mark.parametrize("value", ["yesterday", "2026-11-22", "2026-11-22T17:00:00"])
def test_set_internal_checks_the_value(value: str) -> None:
    model, _ = build()
    with pytest.raises(InvalidValue, match="date-time"):
        model.set_internal("ClockCtrlr", "DateTime", value)
    with pytest.raises(InvalidValue):
        model.set_internal("EVSE", "AvailabilityState", "Broken", evse=1)


def test_connector_status_sets_connector_and_evse_availability() -> None:
    model, _ = build()
    changes = model.set_availability(2, 1, "Occupied")
    assert [(c.component, c.evse, c.connector, c.new) for c in changes] == [
        ("Connector", 2, 1, "Occupied"),
        ("EVSE", 2, None, "Occupied"),
    ]
    model.set_availability(2, 1, "Faulted")
    assert model.get_str("EVSE", "AvailabilityState", evse=2) == "Available"  # connector 2
    model.set_availability(2, 2, "Faulted")
    assert model.get_str("EVSE", "AvailabilityState", evse=2) == "Faulted"
    assert model.get_str("ChargingStation", "AvailabilityState") == "Available"
    assert model.set_availability(1, 1, "Available") == []


def test_power_max_limit_is_reported_once_known() -> None:
    model, _ = build()
    model.set_max_limit("EVSE", "Power", 150000, evse=1)
    (power,) = model.report_criteria(
        None, [{"component": component("EVSE", evse=1), "variable": {"name": "Power"}}]
    )
    assert power["variable_characteristics"]["max_limit"] == 150000
    assert power["variable_characteristics"]["unit"] == "W"


# reports (B07 GetBaseReport, B08 GetReport)


def notify_report(report_data: list[dict[str, Any]]) -> call.NotifyReport:
    return call.NotifyReport(
        request_id=1,
        generated_at="2026-11-22T17:00:00Z",
        seq_no=0,
        report_data=report_data,
        tbc=False,
    )


@pytest.mark.parametrize("base", ["FullInventory", "ConfigurationInventory", "SummaryInventory"])
def test_every_report_validates_as_notify_report(base: str) -> None:
    model, _ = build(overrides={"SecurityCtrlr.BasicAuthPassword": PASSWORD})
    data = model.report(base)
    assert data
    check_request("NotifyReport", notify_report(data))
    assert PASSWORD not in repr(data)


def test_full_inventory_reports_every_variable_with_its_characteristics() -> None:
    """B07: FullInventory covers every component and variable, with the EVSE and connector
    components a CSMS needs to address them."""
    model, _ = build()
    data = model.report("FullInventory")
    assert len(data) == len(model.definitions())
    by_key = {
        (
            d["component"]["name"],
            str(d["component"].get("evse")),
            d["variable"]["name"],
            d["variable"].get("instance"),
        ): d
        for d in data
    }
    heartbeat = by_key[("OCPPCommCtrlr", "None", "HeartbeatInterval", None)]
    assert heartbeat["variable_attribute"] == [
        {
            "type": "Actual",
            "value": "300",
            "mutability": "ReadWrite",
            "persistent": True,
            "constant": False,
        }
    ]
    assert heartbeat["variable_characteristics"] == {
        "data_type": "integer",
        "supports_monitoring": False,
        "unit": "s",
        "min_limit": 1,
    }
    rate_unit = by_key[("SmartChargingCtrlr", "None", "RateUnit", None)]
    assert rate_unit["variable_characteristics"]["values_list"] == "A,W"
    assert rate_unit["variable_attribute"][0]["constant"] is True
    connector = by_key[("Connector", str({"id": 2, "connector_id": 2}), "AvailabilityState", None)]
    assert connector["component"] == {"name": "Connector", "evse": {"id": 2, "connector_id": 2}}
    entries = by_key[("SmartChargingCtrlr", "None", "Entries", "ChargingProfiles")]
    assert entries["variable"] == {"name": "Entries", "instance": "ChargingProfiles"}


def test_write_only_values_are_never_reported() -> None:
    """B07: a WriteOnly variable is reported without its value, in every report."""
    model, _ = build(overrides={"SecurityCtrlr.BasicAuthPassword": PASSWORD})
    for data in (
        model.report("FullInventory"),
        model.report("ConfigurationInventory"),
        model.report_criteria(None, [{"component": {"name": "SecurityCtrlr"}}]),
    ):
        (password,) = [d for d in data if d["variable"]["name"] == "BasicAuthPassword"]
        assert password["variable_attribute"] == [
            {"type": "Actual", "mutability": "WriteOnly", "persistent": True, "constant": False}
        ]


def test_configuration_inventory_is_what_can_be_set() -> None:
    """B07: ConfigurationInventory lists the ReadWrite and WriteOnly variables only."""
    model, _ = build()
    data = model.report("ConfigurationInventory")
    mutabilities = {d["variable_attribute"][0]["mutability"] for d in data}
    assert mutabilities == {"ReadWrite", "WriteOnly"}
    writable = [d for d in model.definitions() if d.mutability != "ReadOnly"]
    assert len(data) == len(writable)


def test_summary_inventory_is_the_availability_of_station_evses_and_connectors() -> None:
    """B07: SummaryInventory: Available and AvailabilityState of the station, each EVSE and
    each connector."""
    model, _ = build()
    model.set_availability(2, 2, "Occupied")
    data = model.report("SummaryInventory")
    seen = {
        (
            d["component"]["name"],
            d["component"].get("evse", {}).get("id"),
            d["component"].get("evse", {}).get("connector_id"),
            d["variable"]["name"],
            d["variable_attribute"][0]["value"],
        )
        for d in data
    }
    addresses = [
        ("ChargingStation", None, None),
        ("EVSE", 1, None),
        ("EVSE", 2, None),
        ("Connector", 1, 1),
        ("Connector", 2, 1),
        ("Connector", 2, 2),
    ]
    expected = {(*a, "Available", "true") for a in addresses}
    busy = {("EVSE", 2, None), ("Connector", 2, 2)}
    expected |= {
        (*a, "AvailabilityState", "Occupied" if a in busy else "Available") for a in addresses
    }
    assert seen == expected
    assert len(data) == len(expected)


def test_unknown_report_base_gives_nothing() -> None:
    model, _ = build()
    assert model.report("EverythingPlease") == []


def test_get_report_by_component_variable() -> None:
    """B08: componentVariable selects a component's variables; missing variable = all of
    them, missing EVSE = every EVSE."""
    model, _ = build()

    def names(data: list[dict[str, Any]]) -> list[tuple[str, Any, str]]:
        return [
            (d["component"]["name"], d["component"].get("evse"), d["variable"]["name"])
            for d in data
        ]

    only_heartbeat = model.report_criteria(
        None,
        [{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}],
    )
    assert names(only_heartbeat) == [("OCPPCommCtrlr", None, "HeartbeatInterval")]

    auth = model.report_criteria(None, [{"component": {"name": "AuthCtrlr"}}])
    assert {n for _, _, n in names(auth)} == {
        "Enabled",
        "AuthorizeRemoteStart",
        "LocalAuthorizeOffline",
        "LocalPreAuthorize",
        "OfflineTxForUnknownIdEnabled",
    }

    all_power = model.report_criteria(
        None, [{"component": {"name": "EVSE"}, "variable": {"name": "Power"}}]
    )
    assert names(all_power) == [("EVSE", {"id": 1}, "Power"), ("EVSE", {"id": 2}, "Power")]

    one_connector = model.report_criteria(
        None,
        [{"component": component("Connector", evse=2, connector=2)}],
    )
    assert {d["component"]["evse"]["connector_id"] for d in one_connector} == {2}

    instance = model.report_criteria(
        None,
        [
            {
                "component": {"name": "DeviceDataCtrlr"},
                "variable": {"name": "ItemsPerMessage", "instance": "SetVariables"},
            }
        ],
    )
    assert [d["variable"] for d in instance] == [
        {"name": "ItemsPerMessage", "instance": "SetVariables"}
    ]
    assert model.report_criteria(None, [{"component": {"name": "Nope"}}]) == []
    check_request("NotifyReport", notify_report(auth + all_power + instance))


def test_get_report_by_component_criteria() -> None:
    """B08: componentCriteria Enabled/Available select components whose variable of that
    name is true; combined with componentVariable, both must hold."""
    model, _ = build()
    set_one(model, component("AuthCtrlr"), "Enabled", "false")

    def components(data: list[dict[str, Any]]) -> set[str]:
        return {d["component"]["name"] for d in data}

    assert components(model.report_criteria(["Enabled"], None)) == {
        "SampledDataCtrlr",
        "SmartChargingCtrlr",
    }
    assert components(model.report_criteria(["Available"], None)) == {
        "ChargingStation",
        "EVSE",
        "Connector",
        "SmartChargingCtrlr",
    }
    assert model.report_criteria(["Problem", "Active"], None) == []
    both = model.report_criteria(
        ["Enabled"],
        [{"component": {"name": "AuthCtrlr"}}, {"component": {"name": "SampledDataCtrlr"}}],
    )
    assert components(both) == {"SampledDataCtrlr"}


def test_chunks_split_reports_for_notify_report() -> None:
    assert chunks(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert chunks(list(range(4)), 2) == [[0, 1], [2, 3]]
    assert chunks([], 20) == []
    assert DeviceModel.chunks([1], 20) == [[1]]
    with pytest.raises(ValueError, match="at least 1"):
        chunks([1], 0)


def test_a_custom_model_rejects_duplicate_definitions() -> None:
    twice = VariableDef("X", "Y", "string", "ReadWrite", "")
    with pytest.raises(ValueError, match=r"X\.Y defined twice"):
        DeviceModel([twice, twice])


# change listeners (ocpp_generic's monitor_variables builds on them)


def test_listeners_see_every_change_with_its_source_and_no_non_change() -> None:
    model, _ = build()
    seen: list[Change] = []
    model.on_change(seen.append)
    model.set_variables(
        [
            {
                "component": component("OCPPCommCtrlr"),
                "variable": {"name": "HeartbeatInterval"},
                "attribute_value": "61",
            }
        ],
        source="display",
    )
    set_one(model, component("OCPPCommCtrlr"), "HeartbeatInterval", "62")
    set_one(model, component("OCPPCommCtrlr"), "HeartbeatInterval", "62")  # unchanged
    model.set_internal("OCPPCommCtrlr", "HeartbeatInterval", "63")
    set_one(model, component("ChargingStation"), "VendorName", "x")  # rejected: read-only
    assert [(c.new, c.source) for c in seen] == [
        ("61", "display"),
        ("62", "CSMS"),
        ("63", "Station"),
    ]


def test_find_names_a_variable_only_if_the_model_has_it() -> None:
    model, _ = build()
    found = model.find(component("EVSE", evse=1), {"name": "AvailabilityState"})
    assert found is not None
    assert found.key == "EVSE[1].AvailabilityState"
    assert model.find(component("EVSE", evse=9), {"name": "AvailabilityState"}) is None
    assert model.find(component("OCPPCommCtrlr"), {"name": "Nope"}) is None
