"""Shared by the transaction-core tests: EvseManager session events as PyEvseManager
publishes them, a fake clock, and the ocpp package's own JSON schemas as the judge."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import ocpp
from jsonschema import Draft4Validator

from everkit.ocpp201.transactions import EvseTransactions, TxSettings

SCHEMAS = Path(ocpp.__file__).parent / "v201" / "schemas"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SESSION = "5f0e6b8a-3c1d-4e2f-9a7b-1c2d3e4f5a6b"
WIRE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@cache
def validator(action: str) -> Draft4Validator:
    with (SCHEMAS / f"{action}Request.json").open(encoding="utf-8-sig") as f:
        return Draft4Validator(json.load(f))


def assert_valid(action: str, payload: dict[str, Any]) -> None:
    errors = [e.message for e in validator(action).iter_errors(payload)]
    assert not errors, f"{action} {payload} is invalid: {errors}"
    assert WIRE_TIME.match(payload["timestamp"]), payload["timestamp"]
    json.dumps(payload, allow_nan=False)  # what goes into SQLite and onto the wire


def provided_token(value: str = "CAFE0001", kind: str = "ISO14443") -> dict[str, Any]:
    return {"id_token": {"value": value, "type": kind}, "authorization_type": "RFID"}


def powermeter(energy_Wh: float, **extra: Any) -> dict[str, Any]:
    return {
        "timestamp": "2024-05-01T12:00:00.000Z",
        "energy_Wh_import": {"total": energy_Wh},
        **extra,
    }


def session_event(kind: str, session: str = SESSION, **details: Any) -> dict[str, Any]:
    return {
        "uuid": session,
        "timestamp": "2024-05-01T12:00:00.000Z",
        "connector_id": 1,
        "event": kind,
        **details,
    }


@dataclass
class Run:
    """One EVSE's core under a fake clock; every payload it produces is schema-checked."""

    tx: EvseTransactions
    now: datetime = T0
    sent: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def make(cls, **settings: Any) -> Run:
        return cls(EvseTransactions(TxSettings(evse_id=1, **settings)))

    def keep(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for payload in payloads:
            assert_valid("TransactionEvent", payload)
        self.sent += payloads
        return payloads

    def event(
        self, kind: str, *, offline: bool = False, session: str = SESSION, **details: Any
    ) -> list[dict[str, Any]]:
        self.now += timedelta(seconds=1)
        produced = self.tx.on_session_event(
            session_event(kind, session, **details), self.now, offline=offline
        )
        return self.keep(produced)

    def tick(self, at: datetime) -> list[dict[str, Any]]:
        self.now = at
        return self.keep(self.tx.tick(at))

    # PyEvseManager's DC sequence, piece by piece

    def plug_in(self, energy_Wh: float = 1000) -> list[dict[str, Any]]:
        meter = powermeter(energy_Wh)
        out = self.event(
            "SessionStarted", session_started={"reason": "EVConnected", "meter_value": meter}
        )
        return out + self.event("AuthRequired")

    def authorize(
        self, token: dict[str, Any] | None = None, energy_Wh: float = 1000
    ) -> list[dict[str, Any]]:
        started = {"id_tag": token or provided_token(), "meter_value": powermeter(energy_Wh)}
        return self.event("Authorized") + self.event(
            "TransactionStarted", transaction_started=started
        )

    def charge(self) -> list[dict[str, Any]]:
        changed = {"meter_value": powermeter(1000)}
        return self.event("PrepareCharging") + self.event(
            "ChargingStarted", charging_state_changed_event=changed
        )

    def finish(
        self, reason: str, energy_Wh: float = 5000, token: bool = True
    ) -> list[dict[str, Any]]:
        finished: dict[str, Any] = {"meter_value": powermeter(energy_Wh), "reason": reason}
        if token:
            finished["id_tag"] = provided_token()
        return self.event("TransactionFinished", transaction_finished=finished)

    def unplug(self, energy_Wh: float = 5000) -> list[dict[str, Any]]:
        return self.event(
            "SessionFinished", session_finished={"meter_value": powermeter(energy_Wh)}
        )


def summary(payloads: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(p["eventType"], p["triggerReason"], p["seqNo"]) for p in payloads]
