"""One station's connection as the demo CSMS sees it: an ``ocpp.v201.ChargePoint`` whose
handlers answer the way a permissive CSMS does, plus the registration rules of B02/B03.

Handlers receive the station's payload as snake_case keyword arguments (the ``ocpp``
package converts) and must never await a CALL of their own: the receive loop is waiting
for them to return, so anything that talks back to the station goes through ``CsmsSide``
hooks, which start tasks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

from ocpp.exceptions import InternalError, SecurityError
from ocpp.routing import after as _after
from ocpp.routing import on as _on
from ocpp.v201 import ChargePoint, call_result
from ocpp.v201.enums import Action

from .csms_record import rfc3339_ms

Handler = TypeVar("Handler", bound=Callable[..., Any])
# (code, description) fails every call of the action; (code, description, n) the next n.
ErrorSpec = tuple[str, str] | tuple[str, str, int]
ACCEPTED, PENDING, REJECTED = "Accepted", "Pending", "Rejected"
# TriggerMessage's requestedMessage values that are not action names themselves.
TRIGGERED_ACTION = {
    "SignChargingStationCertificate": "SignCertificate",
    "SignV2GCertificate": "SignCertificate",
    "SignCombinedCertificate": "SignCertificate",
}


def on(action: str) -> Callable[[Handler], Handler]:
    return cast(Callable[[Handler], Handler], _on(action))


def after(action: str) -> Callable[[Handler], Handler]:
    return cast(Callable[[Handler], Handler], _after(action))


class Registration:
    """Answers BootNotifications from a scripted list of statuses and decides which CALLs a
    station may send meanwhile.

    B02.FR.09: while Pending, only BootNotification and what the CSMS asked for
    (NotifyReport after GetBaseReport/GetReport, whatever TriggerMessage requested).
    B03.FR.07: while Rejected, only BootNotification. A station this CSMS has not seen boot
    may send anything: it may have booted before the CSMS (re)started.
    """

    def __init__(self, responses: Collection[str], pending_interval_s: int) -> None:
        self._responses = list(responses)
        self._pending_interval_s = pending_interval_s
        self._boots: dict[str, int] = {}
        self.status: dict[str, str] = {}
        self._triggered: dict[str, list[str]] = {}

    def answer_boot(self, station: str) -> str:
        count = self._boots.get(station, 0)
        self._boots[station] = count + 1
        status = self._responses[count] if count < len(self._responses) else ACCEPTED
        self.status[station] = status
        self._triggered.pop(station, None)
        return status

    def retry_interval_s(self) -> int:
        return self._pending_interval_s

    def note_trigger(self, station: str, requested_message: str) -> None:
        action = TRIGGERED_ACTION.get(requested_message, requested_message)
        self._triggered.setdefault(station, []).append(action)

    def allows(self, station: str, action: str) -> bool:
        status = self.status.get(station)
        if action == Action.boot_notification or status in (None, ACCEPTED):
            return True
        if status == REJECTED:
            return False
        if action == Action.notify_report:
            return True
        triggered = self._triggered.get(station, [])
        if action in triggered:
            triggered.remove(action)
            return True
        return False


class CsmsSide(Protocol):
    """What a station connection needs from the CSMS that owns it."""

    registration: Registration
    reply_with_error: dict[str, ErrorSpec]
    delay_reply: dict[str, float | asyncio.Event]
    accepted_tokens: Collection[str] | None
    heartbeat_interval_s: int

    def now(self) -> datetime: ...
    def spawn(self, coroutine: Any) -> None: ...
    def boot_answered(self, station: str, status: str) -> None: ...
    def transaction_started(self, station: str, evse_id: int, transaction_id: str) -> None: ...


def injected_error(code: str, description: str) -> Exception:
    """An OCPP error with any wire code; ``ocpp`` turns it into that CALLERROR."""
    error: Exception = InternalError(description=description)
    error.code = code  # type: ignore[attr-defined]
    return error


def _action_of(raw: str) -> str | None:
    try:
        frame = json.loads(raw)
    except ValueError:
        return None
    if isinstance(frame, list) and len(frame) > 2 and frame[0] == 2:
        return str(frame[2])
    return None


# ocpp's ChargePoint is untyped (Any), which mypy --strict does not let us subclass silently.
class CsmsChargePoint(ChargePoint):  # type: ignore[misc]
    def __init__(self, station: str, connection: Any, csms: CsmsSide) -> None:
        # The CSMS's own call timeout governs (StationHandle.call); ocpp's must not fire first.
        super().__init__(station, connection, response_timeout=24 * 3600)
        self._csms = csms

    async def route_message(self, raw_msg: str) -> None:
        # A held reply must not hold the receive loop: the station may answer our own
        # CALLs meanwhile (OCPP-J allows one outstanding CALL per direction).
        if self._csms.delay_reply and _action_of(raw_msg) in self._csms.delay_reply:
            self._csms.spawn(super().route_message(raw_msg))
            return
        await super().route_message(raw_msg)

    async def _handle_call(self, msg: Any) -> Any:
        # The one place every incoming CALL passes before its handler, including actions
        # we have no handler for: registration rules and the tests' overrides apply here.
        # ocpp's route_message turns an OCPPError raised here into the CALLERROR.
        action = str(msg.action)
        if not self._csms.registration.allows(self.id, action):
            status = self._csms.registration.status.get(self.id)
            raise SecurityError(description=f"{action} not allowed while {status}")
        delay = self._csms.delay_reply.get(action)
        if isinstance(delay, asyncio.Event):
            await delay.wait()
        elif delay is not None:
            await asyncio.sleep(delay)
        spec = self._csms.reply_with_error.get(action)
        if spec is not None:
            if len(spec) == 3:
                remaining = spec[2] - 1
                if remaining > 0:
                    self._csms.reply_with_error[action] = (spec[0], spec[1], remaining)
                else:
                    del self._csms.reply_with_error[action]
            raise injected_error(spec[0], spec[1])
        return await super()._handle_call(msg)

    def _token_status(self, id_token: dict[str, Any]) -> str:
        allowed = self._csms.accepted_tokens
        if allowed is None or id_token.get("type") == "NoAuthorization":
            return ACCEPTED
        return ACCEPTED if id_token.get("id_token") in allowed else "Invalid"

    @on(Action.boot_notification)
    def on_boot_notification(self, **_: Any) -> Any:
        status = self._csms.registration.answer_boot(self.id)
        interval = (
            self._csms.heartbeat_interval_s
            if status == ACCEPTED
            else self._csms.registration.retry_interval_s()
        )
        return call_result.BootNotification(
            current_time=rfc3339_ms(self._csms.now()), interval=interval, status=status
        )

    @after(Action.boot_notification)
    def after_boot_notification(self, **_: Any) -> None:
        self._csms.boot_answered(self.id, self._csms.registration.status[self.id])

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=rfc3339_ms(self._csms.now()))

    @on(Action.authorize)
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        return call_result.Authorize(id_token_info={"status": self._token_status(id_token)})

    @on(Action.transaction_event)
    def on_transaction_event(self, id_token: dict[str, Any] | None = None, **_: Any) -> Any:
        if id_token is None:
            return call_result.TransactionEvent()
        return call_result.TransactionEvent(id_token_info={"status": self._token_status(id_token)})

    @after(Action.transaction_event)
    def after_transaction_event(
        self,
        event_type: str,
        transaction_info: dict[str, Any],
        evse: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        if event_type == "Started" and evse is not None:
            self._csms.transaction_started(
                self.id, int(evse["id"]), str(transaction_info["transaction_id"])
            )

    @on(Action.notify_ev_charging_needs)
    def on_notify_ev_charging_needs(self, **_: Any) -> Any:
        return call_result.NotifyEVChargingNeeds(status=ACCEPTED)

    @on(Action.notify_ev_charging_schedule)
    def on_notify_ev_charging_schedule(self, **_: Any) -> Any:
        return call_result.NotifyEVChargingSchedule(status=ACCEPTED)

    # Notifications: the CSMS takes note (the frame log has them) and answers empty.
    @on(Action.status_notification)
    def on_status_notification(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on(Action.notify_report)
    def on_notify_report(self, **_: Any) -> Any:
        return call_result.NotifyReport()

    @on(Action.meter_values)
    def on_meter_values(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on(Action.security_event_notification)
    def on_security_event_notification(self, **_: Any) -> Any:
        return call_result.SecurityEventNotification()

    @on(Action.notify_event)
    def on_notify_event(self, **_: Any) -> Any:
        return call_result.NotifyEvent()

    @on(Action.report_charging_profiles)
    def on_report_charging_profiles(self, **_: Any) -> Any:
        return call_result.ReportChargingProfiles()

    @on(Action.notify_charging_limit)
    def on_notify_charging_limit(self, **_: Any) -> Any:
        return call_result.NotifyChargingLimit()

    @on(Action.cleared_charging_limit)
    def on_cleared_charging_limit(self, **_: Any) -> Any:
        return call_result.ClearedChargingLimit()

    @on(Action.firmware_status_notification)
    def on_firmware_status_notification(self, **_: Any) -> Any:
        return call_result.FirmwareStatusNotification()

    @on(Action.log_status_notification)
    def on_log_status_notification(self, **_: Any) -> Any:
        return call_result.LogStatusNotification()
