"""One EVSE's EVerest session events as OCPP 2.0.1 TransactionEvent requests (block E).

Sans-IO: events, readings and CSMS decisions go in, ``TransactionEventRequest`` payloads come
out as camelCase dicts exactly as a CSMS receives them (the bridge stores and sends them
unchanged). Time is passed in as ``now`` (timezone-aware); nothing here reads a clock.

Conditions (the TxStartPoint/TxStopPoint names), set by EvseManager's ``session_event``:

    event                 EVConnected  Authorized  PowerPathClosed  EnergyTransfer
    SessionStarted        true (1)     true (1)
    Authorized                         true (2)
    TransactionStarted    true         true
    PrepareCharging                                true
    ChargingStarted                                true             true
    ChargingPausedEV/EVSE                                           false
    StoppingCharging                                                false
    ChargingFinished                                   false            false
    TransactionFinished                false           false            false
    Deauthorized                       false
    PluginTimeout                      false
    SessionFinished       false        false           false            false

    (1) reason EVConnected (or none) sets EVConnected; reason Authorized sets Authorized, and
        EVerest then reports the plug-in as TransactionStarted.
    (2) only once the token is known (from SessionStarted, a remote start, ...): EvseManager
        sends Authorized right before TransactionStarted, which carries the token, and a
        transaction must not start without the token it was authorized with (E03).

Transactions (E01, E06):
- A transaction starts when a TxStartPoint condition turns true while none runs. Its id is the
  EvseManager session uuid; a second transaction in the same session (possible with the
  EnergyTransfer points) or a uuid longer than 36 characters gets a stable uuid5 instead.
  A session begins only with a SessionStarted of a new uuid (EvseManager's uuids are unique);
  the uuid of any other event is taken as the session's only when none is known yet (the
  bridge started mid-session), and then ids are uuid5 of uuid and start time, because an
  earlier run of the bridge may have used the uuid already.
- It ends when a TxStopPoint condition turns false, when the session ends (nothing outlives
  its EvseManager session), at once on ``reset_stop`` (B11/B12: the Ended must be queued
  before the station goes down), or when a new session starts while it still runs (its end
  was lost, e.g. in a power cut: AbnormalCondition, PowerLoss).
- seqNo counts 0, 1, 2, ... over Started, Updated and Ended of one transaction (E01.FR.07).
- Started carries evse {id, connectorId} (only there, E01.FR.16), chargingState, the idToken if
  authorized, reservationId if known, and the TxStartedMeasurands (context Transaction.Begin).
  Its triggerReason: CablePluggedIn (EVConnected), Authorized (Authorized),
  ChargingStateChanged (PowerPathClosed, EnergyTransfer); RemoteStart with remoteStartId
  when a remote start was noted.
- Updated, at most one per session event, for: the token of a new authorization (Authorized,
  or RemoteStart with remoteStartId; the idToken is sent once per authorization, E03.FR.01), a
  change of chargingState (ChargingStateChanged), an authorization ending without ending the
  transaction (the stop cause's trigger, e.g. StopAuthorized). Also periodic samples every
  TxUpdatedInterval from the start (MeterValuePeriodic, Sample.Periodic) via ``tick`` and
  TriggerMessage (Trigger) via ``trigger``.
- Ended carries stoppedReason and the TxEndedMeasurands (Transaction.End). The stoppedReason
  is the first authorization-ending cause of the transaction (a user's local stop stays
  "Local" even if the transaction only ends at unplug), else the cause of this event. Its
  triggerReason is this event's cause. The stop token goes along for StopAuthorized.

Causes (triggerReason, stoppedReason), strongest first: a noted RequestStopTransaction
(RemoteStop, Remote) or token rejection by the CSMS (Deauthorized, DeAuthorized);
TransactionFinished's reason (mapped below; the trigger follows from the reason as EVerest's
OCPP201 module does it); Deauthorized (Deauthorized, DeAuthorized); PluginTimeout
(EVConnectTimeout, Timeout); SessionFinished (EVCommunicationLost, EVDisconnected: the spec's
trigger for an unplugged cable, EVDeparted being the parking-bay detector's); a pause or stop
of energy transfer: (AbnormalCondition, Other) while a fault is active or EvseManager names an
Error, (ChargingStateChanged, StoppedByEV) for an EV pause, else (ChargingStateChanged, Other).
A fault by itself changes no condition: what it stops, EvseManager reports as session events,
so a fault ends a transaction only through a TxStopPoint condition it makes fall.
A Reset ends the transaction with (ResetCommand, ImmediateReset; Reboot when not immediate).

chargingState: Idle without a vehicle, Charging during energy transfer, SuspendedEV /
SuspendedEVSE after a pause, else EVConnected; an Ended for an unplugged cable says Idle.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..framework.errors import EverkitError
from .metering import MEASURANDS, Sources, meter_value
from .timestamps import parse_wire_timestamp, require_aware, wire_timestamp

POINTS = ("EVConnected", "Authorized", "PowerPathClosed", "EnergyTransfer")

_START_TRIGGER = {
    "EVConnected": "CablePluggedIn",
    "Authorized": "Authorized",
    "PowerPathClosed": "ChargingStateChanged",
    "EnergyTransfer": "ChargingStateChanged",
}

_CHANGES: dict[str, dict[str, bool]] = {
    "TransactionStarted": {"EVConnected": True, "Authorized": True},
    "PrepareCharging": {"PowerPathClosed": True},
    "ChargingStarted": {"PowerPathClosed": True, "EnergyTransfer": True},
    "ChargingPausedEV": {"EnergyTransfer": False},
    "ChargingPausedEVSE": {"EnergyTransfer": False},
    "StoppingCharging": {"EnergyTransfer": False},
    "ChargingFinished": {"PowerPathClosed": False, "EnergyTransfer": False},
    "TransactionFinished": {"Authorized": False, "PowerPathClosed": False, "EnergyTransfer": False},
    "Deauthorized": {"Authorized": False},
    "PluginTimeout": {"Authorized": False},
    "SessionFinished": dict.fromkeys(POINTS, False),
}

_SUSPENDED_BY = {"ChargingPausedEV": "SuspendedEV", "ChargingPausedEVSE": "SuspendedEVSE"}
_RESUMED_BY = frozenset(
    {
        "PrepareCharging",
        "ChargingStarted",
        "StoppingCharging",
        "ChargingFinished",
        "TransactionFinished",
        "SessionFinished",
    }
)

# EVerest StopTransactionReason -> OCPP 2.0.1 ReasonEnumType (as EVerest's OCPP201 module maps it;
# the 2.0.1 enum lacks SoftReset, UnlockCommand and ReqEnergyTransferRejected).
STOPPED_REASON = {
    "EmergencyStop": "EmergencyStop",
    "EVDisconnected": "EVDisconnected",
    "HardReset": "ImmediateReset",
    "Local": "Local",
    "Other": "Other",
    "PowerLoss": "PowerLoss",
    "Reboot": "Reboot",
    "Remote": "Remote",
    "SoftReset": "Other",
    "UnlockCommand": "Other",
    "DeAuthorized": "DeAuthorized",
    "EnergyLimitReached": "EnergyLimitReached",
    "GroundFault": "GroundFault",
    "LocalOutOfCredit": "LocalOutOfCredit",
    "MasterPass": "MasterPass",
    "OvercurrentFault": "OvercurrentFault",
    "PowerQuality": "PowerQuality",
    "SOCLimitReached": "SOCLimitReached",
    "StoppedByEV": "StoppedByEV",
    "TimeLimitReached": "TimeLimitReached",
    "Timeout": "Timeout",
    "ReqEnergyTransferRejected": "Other",
}

# OCPP stoppedReason -> triggerReason of the message that reports it.
TRIGGER_FOR_REASON = {
    "DeAuthorized": "Deauthorized",
    "EmergencyStop": "AbnormalCondition",
    "EnergyLimitReached": "EnergyLimitReached",
    "EVDisconnected": "EVCommunicationLost",
    "GroundFault": "AbnormalCondition",
    "ImmediateReset": "ResetCommand",
    "Local": "StopAuthorized",
    "LocalOutOfCredit": "ChargingStateChanged",
    "MasterPass": "StopAuthorized",
    "Other": "AbnormalCondition",
    "OvercurrentFault": "AbnormalCondition",
    "PowerLoss": "AbnormalCondition",
    "PowerQuality": "AbnormalCondition",
    "Reboot": "ResetCommand",
    "Remote": "RemoteStop",
    "SOCLimitReached": "EnergyLimitReached",
    "StoppedByEV": "ChargingStateChanged",
    "TimeLimitReached": "TimeLimitReached",
    "Timeout": "EVConnectTimeout",
}

ID_TOKEN_TYPES = frozenset(
    {
        "Central",
        "eMAID",
        "ISO14443",
        "ISO15693",
        "KeyCode",
        "Local",
        "MacAddress",
        "NoAuthorization",
    }
)

# Transaction ids derived from a session uuid live in this namespace.
_TRANSACTION_NAMESPACE = uuid.UUID("6f1c2f57-3b0e-5d43-9a57-0c1d3e5b7a21")
_SNAPSHOT_VERSION = 1


class TransactionError(EverkitError):
    """Settings or a restored snapshot that the transaction core cannot work with."""


@dataclass(frozen=True)
class TxSettings:
    """What the device model says about transactions of one EVSE (TxCtrlr, SampledDataCtrlr)."""

    evse_id: int
    connector_id: int = 1
    tx_start_points: frozenset[str] = frozenset({"PowerPathClosed"})
    tx_stop_points: frozenset[str] = frozenset({"EVConnected", "Authorized"})
    updated_interval_s: int = 0  # 0: no periodic samples
    started_measurands: tuple[str, ...] = ("Energy.Active.Import.Register",)
    updated_measurands: tuple[str, ...] = ("Energy.Active.Import.Register",)
    ended_measurands: tuple[str, ...] = ("Energy.Active.Import.Register",)

    def __post_init__(self) -> None:
        for name, points in (
            ("TxStartPoint", self.tx_start_points),
            ("TxStopPoint", self.tx_stop_points),
        ):
            unknown = set(points) - set(POINTS)
            if unknown or not points:
                raise TransactionError(
                    f"{name} {sorted(points)}: needs one or more of {', '.join(POINTS)}"
                )
        measurands = (*self.started_measurands, *self.updated_measurands, *self.ended_measurands)
        unknown = set(measurands) - MEASURANDS
        if unknown:
            raise TransactionError(f"unsupported measurands {sorted(unknown)}")
        if self.updated_interval_s < 0:
            raise TransactionError(f"TxUpdatedInterval {self.updated_interval_s} < 0")


@dataclass(frozen=True)
class _Cause:
    trigger: str
    reason: str


@dataclass(frozen=True)
class _RemoteStart:
    remote_start_id: int
    token: dict[str, Any]


@dataclass
class _Transaction:
    id: str
    session_id: str
    started_at: datetime
    seq_no: int = 0  # of the next event
    charging_state: str = "Idle"  # as last reported to the CSMS
    token_sent: bool = False  # for the current authorization
    stopped_reason: str | None = None
    next_sample: datetime | None = None
    last_sample: datetime | None = None  # the grid's start until the first sample

    def __post_init__(self) -> None:
        self.last_sample = self.last_sample or self.started_at


@dataclass
class _Session:
    id: str = ""
    transactions: int = 0
    adopted: bool = False  # we did not see it start: an earlier run may have used its uuid
    token: dict[str, Any] | None = None  # wire IdTokenType
    reservation_id: int | None = None
    suspended: str | None = None
    conditions: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(POINTS, False))


class EvseTransactions:
    """The transaction core of one EVSE. Each event-producing method returns the
    ``TransactionEventRequest`` payloads to queue, in order."""

    def __init__(self, settings: TxSettings, restored: Mapping[str, Any] | None = None) -> None:
        self._settings = settings
        self._session = _Session()
        self._tx: _Transaction | None = None
        self._remote_start: _RemoteStart | None = None
        self._stop_request: _Cause | None = None
        self._faulted = False
        self._powermeter: Mapping[str, Any] | None = None
        self._soc: float | None = None
        self._offered: tuple[float | None, float | None] = (None, None)
        if restored is not None:
            self._restore(restored)

    # what the bridge reads

    @property
    def settings(self) -> TxSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: TxSettings) -> None:
        """New device-model values. A running transaction keeps its start-aligned sample grid:
        the next sample is the first grid point of the new interval after the last sample."""
        if (settings.evse_id, settings.connector_id) != (
            self._settings.evse_id,
            self._settings.connector_id,
        ):
            raise TransactionError("settings of another connector")
        self._settings = settings
        if self._tx is not None:
            self._tx.next_sample = self._sample_after(self._tx.started_at, self._tx.last_sample)

    @property
    def authorized(self) -> bool:
        """An authorization is in force on this EVSE (the Authorized condition)."""
        return self._session.conditions["Authorized"]

    @property
    def active(self) -> bool:
        return self._tx is not None

    @property
    def started_at(self) -> datetime | None:
        """When the running transaction started (Relative profiles begin there)."""
        return self._tx.started_at if self._tx is not None else None

    @property
    def transaction_id(self) -> str | None:
        return self._tx.id if self._tx else None

    def next_deadline(self) -> datetime | None:
        """When ``tick`` has work to do next (the next periodic sample), if ever."""
        return self._tx.next_sample if self._tx else None

    def clock_stepped(self, step: timedelta) -> None:
        """The wall clock jumped by ``step`` (NTP): the transaction started as long ago as
        before, so its start (the anchor of Relative profiles) and the sample grid move
        with the clock. Without this a step back would hold the next sample for as long as
        the step, and a step forward would send one at once."""
        tx = self._tx
        if tx is None:
            return
        tx.started_at += step
        if tx.next_sample is not None:
            tx.next_sample += step
        if tx.last_sample is not None:
            tx.last_sample += step

    # inputs that produce no message by themselves

    def on_powermeter(self, reading: Mapping[str, Any]) -> None:
        self._powermeter = reading

    def on_ev_info(self, info: Mapping[str, Any]) -> None:
        soc = info.get("soc")
        if isinstance(soc, int | float) and not isinstance(soc, bool):
            self._soc = float(soc)

    def set_offered(self, current_A: float | None, power_W: float | None) -> None:
        """The limit applied to this EVSE, for Current.Offered / Power.Offered."""
        self._offered = (current_A, power_W)

    def set_faulted(self, active: bool) -> None:
        self._faulted = active

    # CSMS decisions, noted so the next messages carry the right reasons

    def remote_start(self, remote_start_id: int, id_token: Mapping[str, Any]) -> None:
        """RequestStartTransaction accepted; ``id_token`` as the ocpp package delivers it."""
        self._remote_start = _RemoteStart(remote_start_id, _token_from_csms(id_token))

    def remote_stop(self) -> bool:
        """RequestStopTransaction for the running transaction; False when none runs."""
        if self._tx is None:
            return False
        self._stop_request = _Cause("RemoteStop", "Remote")
        return True

    def deauthorized(self) -> bool:
        """The CSMS refused the token of the running transaction (idTokenInfo not Accepted);
        the stop EvseManager reports next is a Deauthorized one. False when none runs."""
        if self._tx is None:
            return False
        self._stop_request = _Cause("Deauthorized", "DeAuthorized")
        return True

    def reset_stop(
        self, immediate: bool, now: datetime, *, offline: bool = False
    ) -> list[dict[str, Any]]:
        """B11/B12: a Reset ends the running transaction now, so that its Ended is queued before
        the station goes down (ResetCommand; ImmediateReset, or Reboot when not immediate).
        What EvseManager reports afterwards about the same session starts nothing new."""
        require_aware(now)
        if self._tx is None:
            return []
        cause = _Cause("ResetCommand", "ImmediateReset" if immediate else "Reboot")
        return [self._ended(cause, None, self._powermeter, now, offline)]

    # event-producing inputs

    def on_session_event(
        self, event: Mapping[str, Any], now: datetime, *, offline: bool = False
    ) -> list[dict[str, Any]]:
        require_aware(now)
        kind = str(event.get("event", ""))
        out: list[dict[str, Any]] = []
        session_uuid = str(event.get("uuid") or "")
        if kind == "SessionStarted" and session_uuid and session_uuid != self._session.id:
            if self._tx is not None:
                stale = self._stop_request or _Cause("AbnormalCondition", "PowerLoss")
                out.append(self._ended(stale, None, self._powermeter, now, offline))
            self._session = _Session(id=session_uuid)
        elif session_uuid and not self._session.id:
            self._session.id = session_uuid  # its SessionStarted happened before we were there
            self._session.adopted = True
        before = dict(self._session.conditions)
        self._apply(kind, event)
        after = self._session.conditions
        rose = [point for point in POINTS if after[point] and not before[point]]
        fell = [point for point in POINTS if before[point] and not after[point]]
        reading = _event_reading(event)
        if reading is not None:
            self._powermeter = reading  # as recent as the powermeter var, often more
        if self._tx is not None:
            if self._ends(kind, fell):
                cause = self._cause(kind, event)
                out.append(self._ended(cause, event, reading, now, offline))
            else:
                out += self._updated_by_event(kind, event, fell, now, offline)
        else:
            starting = [point for point in rose if point in self._settings.tx_start_points]
            if starting:
                out.append(self._started(starting[0], reading, now, offline))
        if kind == "SessionFinished":
            self._finish_session()
        return out

    def tick(self, now: datetime, *, offline: bool = False) -> list[dict[str, Any]]:
        """Periodic samples (MeterValuePeriodic) that are due by ``now``; missed ones are not
        made up, the next is the first grid point after ``now``."""
        require_aware(now)
        tx = self._tx
        if tx is None or tx.next_sample is None or now < tx.next_sample:
            return []
        tx.next_sample = self._sample_after(tx.started_at, now)
        tx.last_sample = now
        sample = self._meter(self._settings.updated_measurands, "Sample.Periodic", None, now)
        if sample is None:
            return []
        return [
            self._payload("Updated", "MeterValuePeriodic", now, offline, {"meterValue": [sample]})
        ]

    def trigger(self, now: datetime, *, offline: bool = False) -> list[dict[str, Any]]:
        """TriggerMessage(TransactionEvent): an Updated with the current state and readings."""
        require_aware(now)
        if self._tx is None:
            return []
        state = self._charging_state()
        self._tx.charging_state = state
        body: dict[str, Any] = {"transactionInfo": {"chargingState": state}}
        sample = self._meter(self._settings.updated_measurands, "Trigger", None, now)
        if sample is not None:
            body["meterValue"] = [sample]
        return [self._payload("Updated", "Trigger", now, offline, body)]

    def charging_rate_changed(
        self, now: datetime, *, offline: bool = False
    ) -> list[dict[str, Any]]:
        """K11/K13: the applied limit changed by more than LimitChangeSignificance during the
        transaction (the bridge decides that): an Updated with ChargingRateChanged and the
        readings, Current.Offered/Power.Offered included when they are measurands."""
        require_aware(now)
        if self._tx is None:
            return []
        body: dict[str, Any] = {"transactionInfo": {}}
        sample = self._meter(self._settings.updated_measurands, "Other", None, now)
        if sample is not None:
            body["meterValue"] = [sample]
        return [self._payload("Updated", "ChargingRateChanged", now, offline, body)]

    # persistence

    def snapshot(self) -> dict[str, Any] | None:
        """JSON-able state of the running transaction (None when none runs); hand it to the
        constructor as ``restored`` to continue the same transaction with the next seqNo."""
        tx = self._tx
        if tx is None:
            return None
        session = self._session
        return {
            "version": _SNAPSHOT_VERSION,
            "transaction_id": tx.id,
            "session_id": tx.session_id,
            "started_at": wire_timestamp(tx.started_at),
            "seq_no": tx.seq_no,
            "charging_state": tx.charging_state,
            "token_sent": tx.token_sent,
            "stopped_reason": tx.stopped_reason,
            "next_sample": wire_timestamp(tx.next_sample) if tx.next_sample else None,
            "last_sample": wire_timestamp(tx.last_sample or tx.started_at),
            "session_transactions": session.transactions,
            "session_adopted": session.adopted,
            "token": session.token,
            "reservation_id": session.reservation_id,
            "suspended": session.suspended,
            "conditions": dict(session.conditions),
            "stop_request": (
                [self._stop_request.trigger, self._stop_request.reason]
                if self._stop_request
                else None
            ),
        }

    def _restore(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != _SNAPSHOT_VERSION:
            raise TransactionError(f"snapshot version {state.get('version')!r} is not supported")
        try:
            self._tx = _Transaction(
                id=str(state["transaction_id"]),
                session_id=str(state["session_id"]),
                started_at=parse_wire_timestamp(state["started_at"]),
                seq_no=int(state["seq_no"]),
                charging_state=str(state["charging_state"]),
                token_sent=bool(state["token_sent"]),
                stopped_reason=state["stopped_reason"],
                next_sample=(
                    parse_wire_timestamp(state["next_sample"]) if state["next_sample"] else None
                ),
                last_sample=parse_wire_timestamp(state["last_sample"]),
            )
            conditions = {point: bool(state["conditions"][point]) for point in POINTS}
            self._session = _Session(
                id=self._tx.session_id,
                transactions=int(state["session_transactions"]),
                adopted=bool(state["session_adopted"]),
                token=state["token"],
                reservation_id=state["reservation_id"],
                suspended=state["suspended"],
                conditions=conditions,
            )
            request = state["stop_request"]
            self._stop_request = _Cause(str(request[0]), str(request[1])) if request else None
        except (KeyError, TypeError, ValueError, IndexError, EverkitError) as exc:
            raise TransactionError(f"snapshot unusable: {exc!r}") from exc

    # how events change the conditions

    def _apply(self, kind: str, event: Mapping[str, Any]) -> None:
        session = self._session
        changes = dict(_CHANGES.get(kind, {}))
        if kind == "SessionStarted":
            details = _details(event, "session_started")
            self._learn(details)
            authorized_first = details.get("reason") == "Authorized"
            changes = {"Authorized": True} if authorized_first else {"EVConnected": True}
        elif kind == "TransactionStarted":
            self._learn(_details(event, "transaction_started"))
        elif kind == "Authorized" and self._known_token() is not None:
            changes = {"Authorized": True}
        if kind in _SUSPENDED_BY:
            session.suspended = _SUSPENDED_BY[kind]
        elif kind in _RESUMED_BY:
            session.suspended = None
        session.conditions.update(changes)

    def _learn(self, details: Mapping[str, Any]) -> None:
        token = _token_from_everest(details.get("id_tag"))
        if token is not None:
            self._session.token = token
        reservation = details.get("reservation_id")
        if isinstance(reservation, int) and not isinstance(reservation, bool):
            self._session.reservation_id = reservation

    def _remote_start_of_session(self) -> _RemoteStart | None:
        """The pending RequestStartTransaction, unless this session's token is known and
        is another one (F01): an unused remote start must not label a card's session.
        Before EvseManager names the token, the remote one is the best guess, as in
        ``_known_token``."""
        remote, token = self._remote_start, self._session.token
        if remote is None or token is None:
            return remote
        same = (token.get("idToken"), token.get("type")) == (
            remote.token.get("idToken"),
            remote.token.get("type"),
        )
        return remote if same else None

    def _known_token(self) -> dict[str, Any] | None:
        if self._session.token is not None:
            return self._session.token
        return self._remote_start.token if self._remote_start else None

    def _ends(self, kind: str, fell: list[str]) -> bool:
        if kind == "SessionFinished":
            return True
        return any(point in self._settings.tx_stop_points for point in fell)

    def _cause(self, kind: str, event: Mapping[str, Any]) -> _Cause:
        if self._stop_request is not None:
            return self._stop_request
        if kind == "TransactionFinished":
            everest_reason = _details(event, "transaction_finished").get("reason")
            reason = STOPPED_REASON.get(str(everest_reason), "Other")
            return _Cause(TRIGGER_FOR_REASON[reason], reason)
        if kind == "Deauthorized":
            return _Cause("Deauthorized", "DeAuthorized")
        if kind == "PluginTimeout":
            return _Cause("EVConnectTimeout", "Timeout")
        if kind == "SessionFinished":
            return _Cause("EVCommunicationLost", "EVDisconnected")
        pause_reasons = _details(event, "charging_paused_evse").get("reasons") or []
        if self._faulted or "Error" in pause_reasons:
            return _Cause("AbnormalCondition", "Other")
        if kind == "ChargingPausedEV":
            return _Cause("ChargingStateChanged", "StoppedByEV")
        return _Cause("ChargingStateChanged", "Other")

    def _charging_state(self) -> str:
        conditions = self._session.conditions
        if not conditions["EVConnected"]:
            return "Idle"
        if conditions["EnergyTransfer"]:
            return "Charging"
        return self._session.suspended or "EVConnected"

    def _finish_session(self) -> None:
        session = self._session
        self._session = _Session(session.id, session.transactions, session.adopted)
        self._remote_start = None
        self._stop_request = None
        self._soc = None

    # the three kinds of message

    def _started(
        self, point: str, reading: Mapping[str, Any] | None, now: datetime, offline: bool
    ) -> dict[str, Any]:
        session = self._session
        session.transactions += 1
        state = self._charging_state()
        self._tx = _Transaction(
            id=self._new_transaction_id(now),
            session_id=session.id,
            started_at=now,
            charging_state=state,
            next_sample=self._sample_after(now, now),
        )
        trigger = _START_TRIGGER[point]
        body: dict[str, Any] = {
            "transactionInfo": {"chargingState": state},
            "evse": {"id": self._settings.evse_id, "connectorId": self._settings.connector_id},
        }
        remote = self._remote_start_of_session()
        if remote is not None:
            trigger = "RemoteStart"
            body["transactionInfo"]["remoteStartId"] = remote.remote_start_id
        token = self._sendable_token()
        if token is not None:
            body["idToken"] = token
            self._tx.token_sent = True
        if remote is not None or self._session.token is not None:
            self._remote_start = None  # used, or stale: another token started this one
        if session.reservation_id is not None:
            body["reservationId"] = session.reservation_id
        sample = self._meter(self._settings.started_measurands, "Transaction.Begin", reading, now)
        if sample is not None:
            body["meterValue"] = [sample]
        return self._payload("Started", trigger, now, offline, body)

    def _updated_by_event(
        self, kind: str, event: Mapping[str, Any], fell: list[str], now: datetime, offline: bool
    ) -> list[dict[str, Any]]:
        tx = self._tx
        assert tx is not None
        triggers: list[str] = []
        info: dict[str, Any] = {}
        body: dict[str, Any] = {}
        if "Authorized" in fell:
            cause = self._cause(kind, event)
            self._stop_request = None  # used up: the unplug that may follow has its own cause
            triggers.append(cause.trigger)
            tx.stopped_reason = tx.stopped_reason or cause.reason
            tx.token_sent = False
            stop_token = self._stop_token(cause, event)
            if stop_token is not None:
                body["idToken"] = stop_token
        token = self._sendable_token()
        if token is not None:
            remote = self._remote_start_of_session()
            if remote is not None:
                triggers.append("RemoteStart")
                info["remoteStartId"] = remote.remote_start_id
            self._remote_start = None
            triggers.append("Authorized")
            body["idToken"] = token
            tx.token_sent = True
        state = self._charging_state()
        if state != tx.charging_state:
            triggers.append("ChargingStateChanged")
            info["chargingState"] = state
            tx.charging_state = state
        if not triggers:
            return []
        return [
            self._payload("Updated", triggers[0], now, offline, {"transactionInfo": info, **body})
        ]

    def _ended(
        self,
        cause: _Cause,
        event: Mapping[str, Any] | None,
        reading: Mapping[str, Any] | None,
        now: datetime,
        offline: bool,
    ) -> dict[str, Any]:
        tx = self._tx
        assert tx is not None
        state = "Idle" if cause.reason == "EVDisconnected" else self._charging_state()
        body: dict[str, Any] = {
            "transactionInfo": {
                "chargingState": state,
                "stoppedReason": tx.stopped_reason or cause.reason,
            }
        }
        stop_token = self._stop_token(cause, event) if event is not None else None
        if stop_token is not None:
            body["idToken"] = stop_token
        sample = self._meter(self._settings.ended_measurands, "Transaction.End", reading, now)
        if sample is not None:
            body["meterValue"] = [sample]
        payload = self._payload("Ended", cause.trigger, now, offline, body)
        self._tx = None
        self._stop_request = None
        return payload

    def _payload(
        self, event_type: str, trigger: str, now: datetime, offline: bool, body: dict[str, Any]
    ) -> dict[str, Any]:
        tx = self._tx
        assert tx is not None
        info = {"transactionId": tx.id, **body.pop("transactionInfo", {})}
        payload: dict[str, Any] = {
            "eventType": event_type,
            "timestamp": wire_timestamp(now),
            "triggerReason": trigger,
            "seqNo": tx.seq_no,
            "transactionInfo": info,
            **body,
        }
        if offline:
            payload["offline"] = True
        tx.seq_no += 1
        return payload

    # helpers

    def _sendable_token(self) -> dict[str, Any] | None:
        tx = self._tx
        if tx is None or tx.token_sent or not self._session.conditions["Authorized"]:
            return None
        return self._known_token()

    def _stop_token(self, cause: _Cause, event: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if cause.trigger != "StopAuthorized" or event is None:
            return None
        return _token_from_everest(_details(event, "transaction_finished").get("id_tag"))

    def _meter(
        self,
        measurands: Iterable[str],
        context: str,
        reading: Mapping[str, Any] | None,
        now: datetime,
    ) -> dict[str, Any] | None:
        current_A, power_W = self._offered
        sources = Sources(reading or self._powermeter, self._soc, current_A, power_W)
        return meter_value(sources, measurands, context, now)

    def _sample_after(self, start: datetime, now: datetime | None) -> datetime | None:
        interval = self._settings.updated_interval_s
        if interval <= 0:
            return None
        elapsed = (now - start).total_seconds() if now else 0.0
        periods = max(0, math.floor(elapsed / interval)) + 1
        return start + timedelta(seconds=interval * periods)

    def _new_transaction_id(self, now: datetime) -> str:
        session = self._session
        if session.adopted or not session.id:
            seed = f"{session.id or self._settings.evse_id} {wire_timestamp(now)}"
        elif session.transactions == 1 and len(session.id) <= 36:
            return session.id
        else:
            seed = session.id
        return str(uuid.uuid5(_TRANSACTION_NAMESPACE, f"{seed}#{session.transactions}"))


def _details(event: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    details = event.get(key)
    return details if isinstance(details, Mapping) else {}


def _event_reading(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The meter reading an event brings along (EvseManager attaches one to most events)."""
    for key in (
        "transaction_started",
        "transaction_finished",
        "session_started",
        "session_finished",
        "charging_state_changed_event",
        "authorization_event",
    ):
        reading = _details(event, key).get("meter_value")
        if isinstance(reading, Mapping):
            return reading
    return None


def _token_from_everest(provided: Any) -> dict[str, Any] | None:
    """ProvidedIdToken -> OCPP IdTokenType (wire form)."""
    if not isinstance(provided, Mapping):
        return None
    token = provided.get("id_token")
    if not isinstance(token, Mapping) or "value" not in token:
        return None
    extra = [
        {"additionalIdToken": str(item["value"]), "type": str(item["type"])}
        for item in token.get("additional_info") or []
        if isinstance(item, Mapping) and "value" in item and "type" in item
    ]
    return _wire_token(str(token["value"]), token.get("type"), extra)


def _token_from_csms(token: Mapping[str, Any]) -> dict[str, Any]:
    """IdTokenType as the ocpp package hands it over (snake_case) -> wire form."""
    value = token.get("id_token", token.get("idToken"))
    if value is None:
        raise TransactionError(f"remote start token without a value: {dict(token)!r}")
    extra = []
    for item in token.get("additional_info", token.get("additionalInfo")) or []:
        additional = item.get("additional_id_token", item.get("additionalIdToken"))
        if additional is not None and "type" in item:
            extra.append({"additionalIdToken": str(additional), "type": str(item["type"])})
    return _wire_token(str(value), token.get("type"), extra)


def _wire_token(value: str, kind: Any, extra: list[dict[str, str]]) -> dict[str, Any]:
    # EVerest's IdTokenType equals the OCPP enum; anything else is a token we only know locally.
    wire: dict[str, Any] = {"idToken": value, "type": kind if kind in ID_TOKEN_TYPES else "Local"}
    if extra:
        wire["additionalInfo"] = extra
    return wire
