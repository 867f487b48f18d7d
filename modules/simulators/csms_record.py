"""The demo CSMS's frame log: every OCPP-J frame in and out, exactly as on the wire.

Each entry is ``{"t", "station", "dir", "frame"}``; ``frame`` is the parsed JSON array
(or the raw text when a peer sent something that is not JSON). Entries are kept in memory
for tests and, optionally, appended to a JSON-lines file for people.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol, TypedDict

from ..framework.errors import EverkitError

STATION_TO_CSMS = "station->csms"
CSMS_TO_STATION = "csms->station"
CALL, CALLRESULT, CALLERROR = 2, 3, 4

Clock = Callable[[], datetime]


class CsmsError(EverkitError):
    """Root of what the demo CSMS raises on purpose."""


class CsmsTimeout(CsmsError, TimeoutError):
    """Something awaited from a station did not happen in time."""


class FrameEntry(TypedDict):
    t: str
    station: str
    dir: str
    frame: Any


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339_ms(moment: datetime) -> str:
    """``2024-05-01T12:00:00.123Z``: UTC, milliseconds, the way OCPP timestamps look."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def payload_of(frame: Any) -> Any:
    """The payload of a frame: a CALL's or CALLRESULT's object; for a CALLERROR its code,
    description and details under their OCPP-J names; None for anything malformed."""
    if not isinstance(frame, list) or not frame:
        return None
    if frame[0] == CALL and len(frame) == 4:
        return frame[3]
    if frame[0] == CALLRESULT and len(frame) == 3:
        return frame[2]
    if frame[0] == CALLERROR and len(frame) == 5:
        return {"errorCode": frame[2], "errorDescription": frame[3], "errorDetails": frame[4]}
    return None


def is_call(frame: Any, action: str | None = None) -> bool:
    return (
        isinstance(frame, list)
        and len(frame) == 4
        and frame[0] == CALL
        and (action is None or frame[2] == action)
    )


def answers(frame: Any, message_id: str) -> bool:
    """True for the CALLRESULT or CALLERROR that answers the CALL ``message_id``."""
    return (
        isinstance(frame, list)
        and len(frame) >= 2
        and frame[0] in (CALLRESULT, CALLERROR)
        and frame[1] == message_id
    )


class FrameLog:
    """Entries in arrival order; awaiting code is woken on every new entry."""

    def __init__(
        self,
        clock: Clock = utc_now,
        path: Path | None = None,
        on_entry: Callable[[FrameEntry], None] | None = None,
    ) -> None:
        self.entries: list[FrameEntry] = []
        self._clock = clock
        self._path = path
        self._file: IO[str] | None = None
        self._on_entry = on_entry
        self._grown = asyncio.Event()

    def open(self) -> None:
        if self._path is not None and self._file is None:
            self._file = self._path.open("a", encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def record(self, station: str, direction: str, text: str) -> FrameEntry:
        try:
            frame: Any = json.loads(text)
        except ValueError:
            frame = text
        entry = FrameEntry(t=rfc3339_ms(self._clock()), station=station, dir=direction, frame=frame)
        self.entries.append(entry)
        if self._file is not None:
            self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._file.flush()
        if self._on_entry is not None:
            self._on_entry(entry)
        # Swap the event so every waiter wakes once and then waits for the *next* entry.
        grown, self._grown = self._grown, asyncio.Event()
        grown.set()
        return entry

    async def wait_for(
        self, matches: Callable[[FrameEntry], bool], after: int, timeout: float, what: str
    ) -> FrameEntry:
        """The first entry at index ``after`` or later that ``matches``, waiting for it."""
        checked = after
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for entry in self.entries[checked:]:
                        if matches(entry):
                            return entry
                    checked = max(checked, len(self.entries))
                    await self._grown.wait()
        except TimeoutError:
            raise CsmsTimeout(f"no {what} within {timeout} s") from None

    def reply_to(self, station: str, message_id: str) -> FrameEntry | None:
        """The station's answer to our CALL ``message_id``, if it arrived."""
        for entry in self.entries[::-1]:
            if (
                entry["station"] == station
                and entry["dir"] == STATION_TO_CSMS
                and answers(entry["frame"], message_id)
            ):
                return entry
        return None


class TextConnection(Protocol):
    async def recv(self, decode: bool | None = None) -> str | bytes: ...
    async def send(self, message: str) -> None: ...


class RecordingConnection:
    """What ``ocpp.ChargePoint`` reads from and writes to: the websocket, recorded."""

    def __init__(self, websocket: TextConnection, station: str, log: FrameLog) -> None:
        self._websocket = websocket
        self._station = station
        self._log = log

    async def recv(self) -> str:
        data = await self._websocket.recv(decode=True)
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        self._log.record(self._station, STATION_TO_CSMS, text)
        return text

    async def send(self, text: str) -> None:
        # Recorded before it leaves, so a quick answer can never be logged ahead of it.
        self._log.record(self._station, CSMS_TO_STATION, text)
        await self._websocket.send(text)
