"""rpc.classify: which CALLERROR (OCPP-J 2.0.1 section 4.3) a frame from the CSMS gets, if any."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ocpp.routing import create_route_map

from everkit.ocpp201.rpc import MAX_DESCRIPTION, UNREADABLE_ID, Rejection, classify
from everkit.ocpp201.station import HANDLED, Station

RESET = {"type": "Immediate"}
GET_HEARTBEAT = {
    "getVariableData": [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
    ]
}


def call_frame(action: str, payload: Any, message_id: Any = "m1") -> str:
    return json.dumps([2, message_id, action, payload])


def rejected(raw: str | bytes) -> Rejection:
    rejection = classify(raw, HANDLED)
    assert rejection is not None, raw
    return rejection


# frames the package may have ---------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        call_frame("Reset", RESET),
        call_frame("Reset", {"type": "OnIdle", "evseId": 1}),
        call_frame("GetVariables", GET_HEARTBEAT),
        call_frame("TriggerMessage", {"requestedMessage": "StatusNotification"}),
        json.dumps([3, "m1", {"status": "Accepted"}]),  # answers go to the waiting call()
        json.dumps([4, "m1", "InternalError", "", {}]),
    ],
)
def test_well_formed_frames_pass(raw: str) -> None:
    assert classify(raw, HANDLED) is None


class NoRequests:
    async def answer(self, action: str, request: dict[str, Any]) -> Any:
        raise AssertionError("not called")

    async def after(self, action: str, request: dict[str, Any]) -> None:
        raise AssertionError("not called")


def test_handled_actions_are_exactly_the_stations_handlers() -> None:
    """A handled action without a handler would reach the package's own NotImplemented; a
    handler not in HANDLED would never be reached (NotSupported first)."""
    station = Station("CS", connection=None, requests=NoRequests(), response_timeout=1)
    routes = create_route_map(station)
    assert {action for action, hooks in routes.items() if "_on_action" in hooks} == HANDLED


# framing: RpcFrameworkError, MessageTypeNotSupported (OCPP-J 4.3) --------------------


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        b"\xff\xfe\x00",
        "",
        "[" * 100_000,  # deeper than the parser goes: still a CALLERROR, not a crash
        "{}",
        '"text"',
        "[]",
        "42",
    ],
)
def test_unreadable_frames_are_rpc_framework_errors_with_id_minus_1(raw: str | bytes) -> None:
    """OCPP-J 4.3 RpcFrameworkError: the content is not a valid RPC request; its message id
    cannot be read, so the CALLERROR carries "-1"."""
    rejection = rejected(raw)
    assert rejection.code == "RpcFrameworkError"
    assert rejection.message_id == UNREADABLE_ID


@pytest.mark.parametrize(
    ("frame", "message_id"),
    [
        ([2, "m1", "Reset"], "m1"),  # no payload
        ([2, "m1", "Reset", RESET, "extra"], "m1"),
        ([2, 17, "Reset", RESET], UNREADABLE_ID),  # the id must be a string
        ([2], UNREADABLE_ID),
        ([2, "m1", 5, RESET], "m1"),  # the action must be a string
    ],
)
def test_malformed_calls_are_rpc_framework_errors(frame: list[Any], message_id: str) -> None:
    rejection = rejected(json.dumps(frame))
    assert (rejection.code, rejection.message_id) == ("RpcFrameworkError", message_id)


@pytest.mark.parametrize("kind", [0, 1, 5, 7, "2", None])
def test_unknown_message_type_is_message_type_not_supported(kind: Any) -> None:
    """OCPP-J 4.3 MessageTypeNotSupported: a message type number we do not know."""
    rejection = rejected(json.dumps([kind, "m9", "Reset", RESET]))
    assert (rejection.code, rejection.message_id) == ("MessageTypeNotSupported", "m9")


# actions: NotImplemented / NotSupported ----------------------------------------------


def test_action_unknown_to_ocpp_201_is_not_implemented() -> None:
    """OCPP-J 4.3 NotImplemented: 'Requested Action is not known by receiver'."""
    rejection = rejected(call_frame("MakeCoffee", {}))
    assert rejection.code == "NotImplemented"
    assert "MakeCoffee" in rejection.description


@pytest.mark.parametrize("action", ["ReserveNow", "CancelReservation", "GetLog", "DataTransfer"])
def test_known_action_we_do_not_handle_is_not_supported(action: str) -> None:
    """OCPP-J 4.3 NotSupported: 'recognized but not supported by the receiver' (checked
    before the payload: we do not judge a payload we would not act on)."""
    rejection = rejected(call_frame(action, {}))
    assert (rejection.code, rejection.action) == ("NotSupported", action)


def test_payload_that_is_not_an_object_is_a_format_violation() -> None:
    rejection = rejected(call_frame("Reset", ["Immediate"]))
    assert (rejection.code, rejection.action) == ("FormatViolation", "Reset")


# payloads: the schema's complaint decides the code (OCPP-J 4.3) ----------------------

LONG_NAME = {"getVariableData": [{"component": {"name": "X" * 51}, "variable": {"name": "Y"}}]}


@pytest.mark.parametrize(
    ("action", "payload", "code", "field"),
    [
        ("Reset", {}, "OccurrenceConstraintViolation", "type"),
        (
            "GetVariables",
            {"getVariableData": [{"component": {"name": "OCPPCommCtrlr"}}]},
            "OccurrenceConstraintViolation",
            "getVariableData.0.variable",
        ),
        (
            "GetVariables",
            {"getVariableData": []},
            "OccurrenceConstraintViolation",
            "getVariableData",
        ),
        ("Reset", {"type": 1}, "TypeConstraintViolation", "type"),
        ("Reset", {"type": "Immediate", "evseId": "1"}, "TypeConstraintViolation", "evseId"),
        ("GetVariables", {"getVariableData": "all"}, "TypeConstraintViolation", "getVariableData"),
        ("Reset", {"type": "Sometime"}, "PropertyConstraintViolation", "type"),
        (
            "GetVariables",
            LONG_NAME,
            "PropertyConstraintViolation",
            "getVariableData.0.component.name",
        ),
        (
            "RequestStartTransaction",
            {"idToken": {"idToken": "A" * 37, "type": "Central"}, "remoteStartId": 1},
            "PropertyConstraintViolation",
            "idToken.idToken",
        ),
        ("Reset", {"type": "Immediate", "when": "now"}, "FormatViolation", "when"),
        (
            "GetVariables",
            {
                "getVariableData": [
                    {"component": {"name": "C", "colour": "red"}, "variable": {"name": "V"}}
                ]
            },
            "FormatViolation",
            "getVariableData.0.component.colour",
        ),
    ],
)
def test_schema_violations_get_the_spec_code_and_name_the_field(
    action: str, payload: dict[str, Any], code: str, field: str
) -> None:
    """OCPP-J 4.3: missing field / too few items → OccurrenceConstraintViolation, wrong JSON
    type → TypeConstraintViolation, enum or length → PropertyConstraintViolation, an
    unexpected property → FormatViolation; errorDetails names the field."""
    rejection = rejected(call_frame(action, payload, "m-bad"))
    assert (rejection.code, rejection.field, rejection.action) == (code, field, action)
    assert rejection.message_id == "m-bad"
    assert json.loads(rejection.frame())[4] == {"field": field}
    assert action in rejection.log_line()
    assert field in rejection.log_line()
    assert "m-bad" in rejection.log_line()


def test_description_of_a_huge_value_is_cut_to_255_characters() -> None:
    """The schema message quotes the offending value, which the CSMS chose; OCPP-J limits
    errorDescription to 255 characters."""
    payload = {
        "getVariableData": [{"component": {"name": "X" * 100_000}, "variable": {"name": "Y"}}]
    }
    rejection = rejected(call_frame("GetVariables", payload))
    assert rejection.code == "PropertyConstraintViolation"
    assert len(rejection.description) <= MAX_DESCRIPTION
    assert len(rejection.frame()) < 1000


# the CALLERROR frame itself ----------------------------------------------------------


def test_rejection_frame_is_an_ocpp_j_callerror() -> None:
    """[4, messageId, errorCode, errorDescription, errorDetails] (OCPP-J 4.2.3)."""
    frame = json.loads(Rejection("m1", "NotSupported", "no reservations", "ReserveNow").frame())
    assert frame == [4, "m1", "NotSupported", "no reservations", {}]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(
    st.one_of(
        st.text(max_size=50),
        json_values.map(json.dumps),
        st.tuples(
            st.sampled_from([2, 3, 4, 5]),
            st.text(max_size=5) | st.integers(),
            st.sampled_from([*HANDLED, "ReserveNow", "Nope"]),
            json_values,
        ).map(lambda parts: json.dumps(list(parts))),
    )
)
def test_any_frame_is_classified_without_raising(raw: str) -> None:
    """Whatever the CSMS sends, classify answers (the receive loop must never die on it) and
    a rejection is a well-formed CALLERROR."""
    rejection = classify(raw, HANDLED)
    if rejection is None:
        return
    frame = json.loads(rejection.frame())
    assert frame[0] == 4
    assert isinstance(frame[1], str)
    assert isinstance(frame[2], str)
    assert len(frame[3]) <= MAX_DESCRIPTION
    assert isinstance(frame[4], dict)
