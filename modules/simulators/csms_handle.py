"""A test's grip on one station connection: call the station, send it anything, await
what it sends, close the connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from ocpp.exceptions import OCPPError, UnknownCallErrorCodeError
from websockets.asyncio.server import ServerConnection

from .csms_record import (
    CALLERROR,
    STATION_TO_CSMS,
    CsmsError,
    CsmsTimeout,
    FrameEntry,
    FrameLog,
    RecordingConnection,
)
from .csms_station import CsmsChargePoint, CsmsSide


class StationCallError(CsmsError):
    """The station answered our CALL with a CALLERROR."""

    def __init__(self, action: str, code: str, description: str, details: Any) -> None:
        super().__init__(f"{action}: station answered {code}: {description}")
        self.action = action
        self.code = code
        self.description = description
        self.details = details


class InvalidStationReply(CsmsError):
    """The station's CALLRESULT does not match the OCPP 2.0.1 response schema."""

    def __init__(self, action: str, reason: str) -> None:
        super().__init__(f"{action}: invalid CALLRESULT from the station: {reason}")
        self.action = action
        self.reason = reason


class StationHandle:
    """One websocket connection of one station, as seen by the CSMS."""

    def __init__(
        self,
        station_id: str,
        websocket: ServerConnection,
        log: FrameLog,
        csms: CsmsSide,
    ) -> None:
        self.station_id = station_id
        self.websocket = websocket
        self._log = log
        self._registration = csms.registration
        self._connection = RecordingConnection(websocket, station_id, log)
        self._charge_point = CsmsChargePoint(station_id, self._connection, csms)
        self._closed = asyncio.Event()

    @property
    def connected(self) -> bool:
        return not self._closed.is_set()

    async def wait_disconnected(self, timeout: float = 10.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._closed.wait()
        except TimeoutError:
            raise CsmsTimeout(f"{self.station_id} still connected after {timeout} s") from None

    async def call(self, payload: Any, timeout: float = 30.0) -> Any:
        """Send a CALL (an ``ocpp.v201.call.<Action>``) and return the station's result
        (``ocpp.v201.call_result.<Action>``, nested objects as snake_case dicts).

        Raises StationCallError on a CALLERROR, InvalidStationReply on a result that
        breaks the schema, CsmsTimeout without an answer. A payload that breaks the schema
        itself raises ocpp's own error before anything is sent.
        """
        action = type(payload).__name__
        message_id = str(uuid.uuid4())
        if action == "TriggerMessage":
            self._registration.note_trigger(self.station_id, str(payload.requested_message))
        try:
            async with asyncio.timeout(timeout):
                return await self._charge_point.call(payload, suppress=False, unique_id=message_id)
        except TimeoutError:
            raise CsmsTimeout(f"{self.station_id} did not answer {action} in {timeout} s") from None
        except (OCPPError, UnknownCallErrorCodeError) as error:
            reply = self._log.reply_to(self.station_id, message_id)
            if reply is None:
                raise  # our own request broke the schema: nothing was sent
            frame = reply["frame"]
            if frame[0] == CALLERROR:
                raise StationCallError(action, frame[2], frame[3], frame[4]) from None
            raise InvalidStationReply(action, str(error)) from error

    async def send_raw(self, text: str) -> int:
        """Send any text as one frame; returns its index in the frame log, so
        ``next_frame(after=...)`` can await the station's reaction to it."""
        index = len(self._log.entries)
        await self._connection.send(text)
        return index

    async def next_frame(
        self,
        predicate: Callable[[FrameEntry], bool] | None = None,
        timeout: float = 10.0,
        after: int | None = None,
    ) -> FrameEntry:
        """The next frame from this station (from log index ``after``, default: now)
        that satisfies ``predicate``."""

        def matches(entry: FrameEntry) -> bool:
            return (
                entry["station"] == self.station_id
                and entry["dir"] == STATION_TO_CSMS
                and (predicate is None or predicate(entry))
            )

        start = len(self._log.entries) if after is None else after
        return await self._log.wait_for(matches, start, timeout, f"frame from {self.station_id}")

    async def serve(self) -> None:
        """Answer the station until the connection closes."""
        try:
            await self._charge_point.start()
        finally:
            self._closed.set()

    async def close(self, abort: bool = False) -> None:
        """Close the connection (``abort``: drop TCP without a close handshake, like a
        network failure) and wait until the CSMS has let go of it."""
        if abort:
            self.websocket.transport.abort()
        else:
            await self.websocket.close(reason="closed by the demo CSMS")
        await self.wait_disconnected()
