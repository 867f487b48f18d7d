"""Connector status for StatusNotification (B01 after boot, G01 on every change)."""

from __future__ import annotations

from datetime import timedelta

from everkit.ocpp201.connector_status import ConnectorStatus
from tests.unit.ocpp_tx_helpers import T0, assert_valid, powermeter, session_event


def statuses(*payloads: dict[str, object] | None) -> list[object]:
    for payload in payloads:
        if payload is not None:
            assert_valid("StatusNotification", payload)
    return [p["connectorStatus"] if p else None for p in payloads]


def test_unavailable_until_the_evse_is_ready() -> None:
    """Before EvseManager reports ready the connector is Unavailable; B01 sends it as is."""
    connector = ConnectorStatus(evse_id=2, connector_id=1)
    assert connector.status == "Unavailable"
    assert connector.on_session_event(session_event("Enabled", ""), T0) is None
    first = connector.current(T0)
    assert first == {
        "timestamp": "2024-05-01T12:00:00.000Z",
        "connectorStatus": "Unavailable",
        "evseId": 2,
        "connectorId": 1,
    }
    assert statuses(first, connector.set_ready(True, T0 + timedelta(seconds=1))) == [
        "Unavailable",
        "Available",
    ]


def test_a_plugged_session_occupies_the_connector() -> None:
    """G01: Occupied from plug-in (SessionStarted) to unplug (SessionFinished), one
    notification per change and none for events that change nothing."""
    connector = ConnectorStatus(1)
    connector.set_ready(True, T0)
    plugged = session_event(
        "SessionStarted", session_started={"reason": "EVConnected", "meter_value": powermeter(0)}
    )
    assert statuses(
        connector.on_session_event(plugged, T0),
        connector.on_session_event(session_event("AuthRequired"), T0),
        connector.on_session_event(session_event("ChargingStarted"), T0),
        connector.on_session_event(session_event("SessionFinished"), T0),
    ) == ["Occupied", None, None, "Available"]


def test_authorize_first_is_occupied_only_at_plug_in() -> None:
    connector = ConnectorStatus(1)
    connector.set_ready(True, T0)
    authorized = session_event("SessionStarted", session_started={"reason": "Authorized"})
    assert connector.on_session_event(authorized, T0) is None
    assert statuses(connector.on_session_event(session_event("TransactionStarted"), T0)) == [
        "Occupied"
    ]


def test_faulted_wins_then_unavailable_then_occupied_then_reserved() -> None:
    connector = ConnectorStatus(1)
    connector.set_ready(True, T0)
    assert statuses(
        connector.on_session_event(session_event("ReservationStart"), T0),
        connector.on_session_event(session_event("SessionStarted"), T0),
        connector.on_session_event(session_event("Disabled", ""), T0),
        connector.set_faulted(True, T0),
        connector.on_session_event(session_event("Enabled", ""), T0),
        connector.set_faulted(False, T0),
        connector.on_session_event(session_event("SessionFinished"), T0),
        connector.on_session_event(session_event("ReservationEnd"), T0),
    ) == [
        "Reserved",
        "Occupied",
        "Unavailable",
        "Faulted",
        None,
        "Occupied",
        "Reserved",
        "Available",
    ]
