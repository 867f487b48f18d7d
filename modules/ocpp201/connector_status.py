"""The OCPP 2.0.1 status of one connector, as StatusNotification payloads (B01, G01).

Inputs: EvseManager's session events, whether a fault is active, and whether the EVSE is
ready. Status, first match wins:

    Faulted      a fault is active (evse_manager/Inoperative or another fault of this EVSE)
    Unavailable  the EVSE has not said it is ready yet, or it is disabled (Disabled event)
    Occupied     a vehicle is plugged in: SessionStarted (reason EVConnected) or
                 TransactionStarted, until SessionFinished
    Reserved     between ReservationStart and ReservationEnd
    Available    otherwise

Before the EVSE reports ready the connector is Unavailable, as EVerest's OCPP module reports
Available only once the EVSE manager is ready; the bridge calls ``set_ready(True)`` then.
An authorize-first session (SessionStarted reason Authorized) leaves the connector as it is:
nothing is plugged in until TransactionStarted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .timestamps import wire_timestamp


class ConnectorStatus:
    def __init__(self, evse_id: int, connector_id: int = 1) -> None:
        self.evse_id = evse_id
        self.connector_id = connector_id
        self._ready = False
        self._enabled = True
        self._faulted = False
        self._occupied = False
        self._reserved = False
        self._reported = self.status  # only changes are notified; current() gives the rest

    @property
    def status(self) -> str:
        if self._faulted:
            return "Faulted"
        if not self._ready or not self._enabled:
            return "Unavailable"
        if self._occupied:
            return "Occupied"
        if self._reserved:
            return "Reserved"
        return "Available"

    def on_session_event(self, event: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
        """A StatusNotificationRequest payload when the event changed the status, else None."""
        kind = event.get("event")
        if kind == "Enabled":
            self._enabled = True
        elif kind == "Disabled":
            self._enabled = False
        elif kind == "SessionStarted":
            details = event.get("session_started")
            reason = details.get("reason") if isinstance(details, Mapping) else None
            if reason != "Authorized":
                self._occupied = True
        elif kind == "TransactionStarted":
            self._occupied = True
        elif kind == "SessionFinished":
            self._occupied = False
        elif kind == "ReservationStart":
            self._reserved = True
        elif kind == "ReservationEnd":
            self._reserved = False
        return self._changed(now)

    def set_faulted(self, active: bool, now: datetime) -> dict[str, Any] | None:
        self._faulted = active
        return self._changed(now)

    def set_ready(self, ready: bool, now: datetime) -> dict[str, Any] | None:
        self._ready = ready
        return self._changed(now)

    def current(self, now: datetime) -> dict[str, Any]:
        """The status as it is, for the round of notifications after (re)connecting."""
        self._reported = self.status
        return self._payload(self._reported, now)

    def _changed(self, now: datetime) -> dict[str, Any] | None:
        status = self.status
        if status == self._reported:
            return None
        self._reported = status
        return self._payload(status, now)

    def _payload(self, status: str, now: datetime) -> dict[str, Any]:
        return {
            "timestamp": wire_timestamp(now),
            "connectorStatus": status,
            "evseId": self.evse_id,
            "connectorId": self.connector_id,
        }
