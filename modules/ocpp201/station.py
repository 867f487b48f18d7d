"""The `ocpp` package's ChargePoint, as the station end of one websocket connection.

It routes CSMS requests to a ``CsmsRequests`` object (the bridge) and does nothing else:
frames are checked by rpc.classify first (the handlers skip the package's own validation,
whose error codes differ from the spec), and every frame in and out goes to the frame log.
Handlers answer at once (only UnlockConnector waits, for the lock); work that needs other
modules or further CALLs runs in the ``after`` hooks, which the package schedules as tasks,
because a handler that awaited a CALL of its own would block the receive loop that has to
deliver its response. An ``after`` hook runs only when the answer promised the work
(Accepted or Scheduled): the package would run it after a Rejected too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from ocpp.routing import after as _after
from ocpp.routing import on as _on
from ocpp.v201 import ChargePoint
from ocpp.v201.enums import Action

from .rpc import classify

log = logging.getLogger("PyOCPP201")
# the package logs every frame at INFO; the frames are in MessageLogPath (and in the CSMS's
# log), so they stay out of the charger's console unless someone asks for them
wire_log = logging.getLogger("PyOCPP201.wire")

FrameLog = Callable[[str, str], None]  # (direction "out"/"in", raw frame)
Handler = TypeVar("Handler", bound=Callable[..., Any])


def on(action: str) -> Callable[[Handler], Handler]:
    # the package validates with its own error codes; rpc.classify did it already
    return cast(Callable[[Handler], Handler], _on(action, skip_schema_validation=True))


def after(action: str) -> Callable[[Handler], Handler]:
    return cast(Callable[[Handler], Handler], _after(action))


HANDLED = frozenset(
    {
        "GetVariables",
        "SetVariables",
        "GetBaseReport",
        "Reset",
        "ChangeAvailability",
        "TriggerMessage",
        "RequestStartTransaction",
        "RequestStopTransaction",
        "UnlockConnector",
        "GetTransactionStatus",
        "SetChargingProfile",
        "ClearChargingProfile",
        "GetChargingProfiles",
        "GetCompositeSchedule",
    }
)


# answers that promise work after the response (the rest: Rejected, NotImplemented, ...)
WORK_FOLLOWS = frozenset({"Accepted", "Scheduled"})


class CsmsRequests(Protocol):
    """What the bridge answers; each method gets the request as the package delivers it
    (snake_case keys) and returns a ``ocpp.v201.call_result`` dataclass."""

    async def answer(self, action: str, request: dict[str, Any]) -> Any: ...

    async def after(self, action: str, request: dict[str, Any]) -> None: ...


class Station(ChargePoint):  # type: ignore[misc]  # the package has no type hints
    def __init__(
        self,
        station_id: str,
        connection: Any,
        requests: CsmsRequests,
        response_timeout: float,
        frame_log: FrameLog | None = None,
    ) -> None:
        super().__init__(station_id, connection, response_timeout=response_timeout, logger=wire_log)
        self._requests = requests
        self._frame_log = frame_log
        self._work_follows: set[str] = set()  # message ids whose after-hook is to run

    async def route_message(self, raw_msg: str) -> None:
        if self._frame_log:
            self._frame_log("in", raw_msg)
        rejection = classify(raw_msg, HANDLED)
        if rejection is not None:
            log.warning("CSMS %s", rejection.log_line())
            await self._send(rejection.frame())
            return
        await super().route_message(raw_msg)

    async def _send(self, message: str) -> None:
        if self._frame_log:
            self._frame_log("out", message)
        await self._connection.send(message)

    # The package runs an after-hook whatever the answer was; the work it does only follows
    # an answer that promised it (a Rejected RequestStartTransaction must provide no token).
    async def _answer(self, action: str, message_id: str, request: dict[str, Any]) -> Any:
        result = await self._requests.answer(action, request)
        if getattr(result, "status", None) in WORK_FOLLOWS:
            self._work_follows.add(message_id)
        return result

    async def _after(self, action: str, message_id: str, request: dict[str, Any]) -> None:
        if message_id in self._work_follows:
            self._work_follows.discard(message_id)
            await self._requests.after(action, request)

    @on(Action.get_variables)
    async def _on_get_variables(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("GetVariables", call_unique_id, request)

    @on(Action.set_variables)
    async def _on_set_variables(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("SetVariables", call_unique_id, request)

    @on(Action.get_base_report)
    async def _on_get_base_report(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("GetBaseReport", call_unique_id, request)

    @after(Action.get_base_report)
    async def _after_get_base_report(self, call_unique_id: str, **request: Any) -> None:
        await self._after("GetBaseReport", call_unique_id, request)

    @on(Action.reset)
    async def _on_reset(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("Reset", call_unique_id, request)

    @after(Action.reset)
    async def _after_reset(self, call_unique_id: str, **request: Any) -> None:
        await self._after("Reset", call_unique_id, request)

    @on(Action.change_availability)
    async def _on_change_availability(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("ChangeAvailability", call_unique_id, request)

    @after(Action.change_availability)
    async def _after_change_availability(self, call_unique_id: str, **request: Any) -> None:
        await self._after("ChangeAvailability", call_unique_id, request)

    @on(Action.trigger_message)
    async def _on_trigger_message(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("TriggerMessage", call_unique_id, request)

    @after(Action.trigger_message)
    async def _after_trigger_message(self, call_unique_id: str, **request: Any) -> None:
        await self._after("TriggerMessage", call_unique_id, request)

    @on(Action.request_start_transaction)
    async def _on_request_start(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("RequestStartTransaction", call_unique_id, request)

    @after(Action.request_start_transaction)
    async def _after_request_start(self, call_unique_id: str, **request: Any) -> None:
        await self._after("RequestStartTransaction", call_unique_id, request)

    @on(Action.request_stop_transaction)
    async def _on_request_stop(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("RequestStopTransaction", call_unique_id, request)

    @after(Action.request_stop_transaction)
    async def _after_request_stop(self, call_unique_id: str, **request: Any) -> None:
        await self._after("RequestStopTransaction", call_unique_id, request)

    @on(Action.unlock_connector)
    async def _on_unlock_connector(self, call_unique_id: str, **request: Any) -> Any:
        # awaits the connector lock (bounded by the bridge); no CALL, so no deadlock
        return await self._answer("UnlockConnector", call_unique_id, request)

    @on(Action.get_transaction_status)
    async def _on_get_transaction_status(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("GetTransactionStatus", call_unique_id, request)

    @on(Action.set_charging_profile)
    async def _on_set_charging_profile(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("SetChargingProfile", call_unique_id, request)

    @on(Action.clear_charging_profile)
    async def _on_clear_charging_profile(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("ClearChargingProfile", call_unique_id, request)

    @on(Action.get_charging_profiles)
    async def _on_get_charging_profiles(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("GetChargingProfiles", call_unique_id, request)

    @after(Action.get_charging_profiles)
    async def _after_get_charging_profiles(self, call_unique_id: str, **request: Any) -> None:
        await self._after("GetChargingProfiles", call_unique_id, request)

    @on(Action.get_composite_schedule)
    async def _on_get_composite_schedule(self, call_unique_id: str, **request: Any) -> Any:
        return await self._answer("GetCompositeSchedule", call_unique_id, request)
