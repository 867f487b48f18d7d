"""Answers to the CSMS's requests (blocks B, C, E, F, G) and the work that follows them.

``answer`` decides the response from the bridge's state and returns at once; ``after``
runs once the response is on its way (the `ocpp` package schedules it as a task) and does
what takes time or sends further CALLs: EVSE commands, reports, resets.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.exceptions import OccurrenceConstraintViolationError
from ocpp.v201 import call_result

from .ports import PORT_TIMEOUT_S
from .timestamps import wire_timestamp

if TYPE_CHECKING:
    from .bridge import Bridge, Evse

log = logging.getLogger("PyOCPP201")

TRIGGERABLE = ("BootNotification", "Heartbeat", "StatusNotification", "TransactionEvent")


def _status(result: type[Any], status: str, reason: str = "", **extra: Any) -> Any:
    info = {"reason_code": reason} if reason else None
    return result(status=status, status_info=info, **extra)


class CsmsRequestHandler:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    async def answer(self, action: str, request: dict[str, Any]) -> Any:
        self.bridge.counters.received_calls += 1
        result = getattr(self, "answer_" + _snake(action))(**request)
        return await result if inspect.isawaitable(result) else result

    async def after(self, action: str, request: dict[str, Any]) -> None:
        method = getattr(self, "after_" + _snake(action), None)
        if method is None:
            return
        try:
            await method(**request)
        except Exception:  # a task of the package: nobody else would see this
            log.exception("handling %s after the response failed", action)

    # B06 / B05: device model -----------------------------------------------------------

    def _items_limit(self, instance: str, count: int) -> None:
        limit = self.bridge.model.get_int("DeviceDataCtrlr", "ItemsPerMessage", instance=instance)
        if count > limit:
            # B05.FR.09 / B06.FR.16: more items than ItemsPerMessage → OccurrenceConstraint
            raise OccurrenceConstraintViolationError(
                description=f"{count} items; DeviceDataCtrlr.ItemsPerMessage is {limit}"
            )

    def answer_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        self._items_limit("GetVariables", len(get_variable_data))
        self.bridge.refresh_clock()
        results = self.bridge.model.get_variables(get_variable_data)
        return call_result.GetVariables(get_variable_result=results)

    def answer_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        self._items_limit("SetVariables", len(set_variable_data))
        results, changes = self.bridge.model.set_variables(set_variable_data)
        if changes:
            self.bridge.settings_changed()
        return call_result.SetVariables(set_variable_result=results)

    def answer_get_base_report(self, request_id: int, report_base: str, **_: Any) -> Any:
        return _status(call_result.GetBaseReport, "Accepted")

    async def after_get_base_report(self, request_id: int, report_base: str, **_: Any) -> None:
        model = self.bridge.model
        self.bridge.refresh_clock()
        items = model.report(report_base)
        per_message = model.get_int("DeviceDataCtrlr", "ItemsPerMessage", instance="GetReport")
        chunks = model.chunks(items, per_message) or [[]]
        generated_at = wire_timestamp(self.bridge.clock())
        for seq_no, chunk in enumerate(chunks):
            payload: dict[str, Any] = {
                "requestId": request_id,
                "generatedAt": generated_at,
                "seqNo": seq_no,
                "tbc": seq_no < len(chunks) - 1,
            }
            if chunk:
                payload["reportData"] = _camel(chunk)
            self.bridge.send_live("NotifyReport", payload, requested=True)

    # B11 / B12: reset --------------------------------------------------------------------

    def answer_reset(self, type: str, evse_id: int | None = None, **_: Any) -> Any:
        if evse_id is not None:
            return _status(call_result.Reset, "Rejected", "EvseResetUnsupported")
        if type == "OnIdle" and any(e.tx.active for e in self.bridge.evses.values()):
            self.bridge.schedule_reset()
            return _status(call_result.Reset, "Scheduled")
        return _status(call_result.Reset, "Accepted")

    async def after_reset(self, type: str, evse_id: int | None = None, **_: Any) -> None:
        if evse_id is None and (type == "Immediate" or not self.bridge.reset_scheduled):
            await self.bridge.reset(immediate=type == "Immediate")

    # G03 / G04: availability ---------------------------------------------------------------

    def _targets(self, evse: dict[str, Any] | None) -> list[Evse] | None:
        """The EVSEs a request names (all for none or EVSE 0); None for an unknown one."""
        if not evse or evse.get("id", 0) == 0:
            return list(self.bridge.evses.values())
        found = self.bridge.evses.get(evse["id"])
        if found is None or evse.get("connector_id", found.connector_id) != found.connector_id:
            return None
        return [found]

    def answer_change_availability(
        self, operational_status: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> Any:
        targets = self._targets(evse)
        if targets is None:
            return _status(call_result.ChangeAvailability, "Rejected", "UnknownEvse")
        operative = operational_status == "Operative"
        busy = [e for e in targets if e.tx.active and not operative]
        for e in busy:
            e.pending_availability = operative  # G03.FR.05: after the transaction
        return _status(call_result.ChangeAvailability, "Scheduled" if busy else "Accepted")

    async def after_change_availability(
        self, operational_status: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> None:
        operative = operational_status == "Operative"
        for target in self._targets(evse) or []:
            if target.pending_availability is None:
                await self.bridge.set_operative(target, operative)

    # F06: trigger message ------------------------------------------------------------------

    def answer_trigger_message(
        self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> Any:
        if requested_message not in TRIGGERABLE:
            return _status(call_result.TriggerMessage, "NotImplemented")
        if requested_message == "BootNotification" and self.bridge.registration == "Accepted":
            return _status(call_result.TriggerMessage, "Rejected", "AlreadyAccepted")  # F06.FR.17
        if requested_message == "StatusNotification" and "connector_id" not in (evse or {}):
            # F06.FR.12: a StatusNotification is about one connector, so it must be named
            return _status(call_result.TriggerMessage, "Rejected", "MissingParam")
        targets = self._targets(evse)
        if targets is None:
            return _status(call_result.TriggerMessage, "Rejected", "UnknownEvse")
        if requested_message == "TransactionEvent" and not any(e.tx.active for e in targets):
            return _status(call_result.TriggerMessage, "Rejected", "NoTransaction")
        return _status(call_result.TriggerMessage, "Accepted")

    async def after_trigger_message(
        self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> None:
        bridge = self.bridge
        now = bridge.clock()
        if requested_message == "Heartbeat":
            bridge.send_live("Heartbeat", {}, requested=True)
        elif requested_message == "BootNotification" and bridge.registration != "Accepted":
            bridge.trigger_boot()
        elif requested_message == "StatusNotification":
            for target in self._targets(evse) or []:
                bridge.send_live("StatusNotification", target.status.current(now), requested=True)
        elif requested_message == "TransactionEvent":
            for target in self._targets(evse) or []:
                for payload in target.tx.trigger(now, offline=not bridge.online):
                    bridge.emit_transaction_event(payload)

    # F01 / F03: remote start and stop --------------------------------------------------------

    def answer_request_start_transaction(
        self,
        id_token: dict[str, Any],
        remote_start_id: int,
        evse_id: int | None = None,
        charging_profile: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        evse = self.bridge.evses.get(evse_id) if evse_id is not None else None
        if evse_id is not None and evse is None:
            return _status(call_result.RequestStartTransaction, "Rejected", "UnknownEvse")
        if evse is not None and evse.tx.authorized:
            return _status(call_result.RequestStartTransaction, "Rejected", "TxInProgress")
        if charging_profile is not None:  # K05: a TxProfile for the transaction to come
            profile = _camel(charging_profile)
            verdict = self.bridge.smart.profiles.validate(
                evse_id or 0, profile, self.bridge.smart.running(), remote_start=True
            )
            if not verdict.accepted:
                return _status(
                    call_result.RequestStartTransaction,
                    "Rejected",
                    verdict.reason_code or "InvalidProfile",
                )
            self.bridge.remote_profiles[remote_start_id] = profile
        tx_id = evse.tx.transaction_id if evse is not None else None
        return _status(call_result.RequestStartTransaction, "Accepted", transaction_id=tx_id)

    async def after_request_start_transaction(
        self,
        id_token: dict[str, Any],
        remote_start_id: int,
        evse_id: int | None = None,
        **_: Any,
    ) -> None:
        bridge = self.bridge
        targets = [bridge.evses[evse_id]] if evse_id is not None else list(bridge.evses.values())
        for target in targets:
            target.tx.remote_start(remote_start_id, id_token)
        token: dict[str, Any] = {
            "request_id": remote_start_id,
            "id_token": {"value": id_token["id_token"], "type": id_token["type"]},
            "authorization_type": "OCPP",
            # F01.FR.01/02: AuthorizeRemoteStart false means the CSMS already authorized it
            "prevalidated": not bridge.model.get_bool("AuthCtrlr", "AuthorizeRemoteStart"),
        }
        if evse_id is not None:
            token["connectors"] = [evse_id]
        await asyncio.to_thread(bridge.tokens.provide, token)

    def answer_request_stop_transaction(self, transaction_id: str, **_: Any) -> Any:
        if self.bridge.evse_with_transaction(transaction_id) is None:
            return _status(call_result.RequestStopTransaction, "Rejected", "UnknownTransaction")
        return _status(call_result.RequestStopTransaction, "Accepted")

    async def after_request_stop_transaction(self, transaction_id: str, **_: Any) -> None:
        evse = self.bridge.evse_with_transaction(transaction_id)
        if evse is None:
            return
        evse.tx.remote_stop()
        await asyncio.wait_for(asyncio.to_thread(evse.port.stop_transaction, "Remote"), 5)

    # F05: unlock ------------------------------------------------------------------------------

    async def answer_unlock_connector(self, evse_id: int, connector_id: int, **_: Any) -> Any:
        evse = self.bridge.evses.get(evse_id)
        if evse is None or evse.connector_id != connector_id:
            return _status(call_result.UnlockConnector, "UnknownConnector")
        if evse.tx.authorized:
            return _status(call_result.UnlockConnector, "OngoingAuthorizedTransaction")
        try:
            unlocked = await asyncio.wait_for(
                asyncio.to_thread(evse.port.force_unlock, connector_id), PORT_TIMEOUT_S
            )
        except Exception as exc:
            log.error("force_unlock of EVSE %d failed: %s", evse_id, exc)
            unlocked = False
        return _status(call_result.UnlockConnector, "Unlocked" if unlocked else "UnlockFailed")

    # E14: transaction status ------------------------------------------------------------------

    def answer_get_transaction_status(self, transaction_id: str | None = None, **_: Any) -> Any:
        queued = self.bridge.queued_transaction_events(transaction_id) > 0
        ongoing = (
            self.bridge.evse_with_transaction(transaction_id) is not None
            if transaction_id is not None
            else None
        )
        return call_result.GetTransactionStatus(messages_in_queue=queued, ongoing_indicator=ongoing)

    # K01 / K08-K10: smart charging (smart_charging.py does the work) ------------------

    def answer_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_: Any
    ) -> Any:
        return self.bridge.smart.answer_set(evse_id, charging_profile)

    def answer_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        return self.bridge.smart.answer_clear(charging_profile_id, charging_profile_criteria)

    def answer_get_charging_profiles(
        self,
        request_id: int,
        charging_profile: dict[str, Any],
        evse_id: int | None = None,
        **_: Any,
    ) -> Any:
        return self.bridge.smart.answer_get_profiles(request_id, charging_profile, evse_id)

    async def after_get_charging_profiles(
        self,
        request_id: int,
        charging_profile: dict[str, Any],
        evse_id: int | None = None,
        **_: Any,
    ) -> None:
        self.bridge.smart.after_get_profiles(request_id, charging_profile, evse_id)

    def answer_get_composite_schedule(
        self, duration: int, evse_id: int, charging_rate_unit: str | None = None, **_: Any
    ) -> Any:
        return self.bridge.smart.answer_get_composite(duration, evse_id, charging_rate_unit)


def _snake(action: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in action).lstrip("_")


def _camel(value: Any) -> Any:
    return snake_to_camel_case(value)
