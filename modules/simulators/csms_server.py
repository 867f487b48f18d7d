"""The demo CSMS: a websocket server that hands each station to a ``CsmsChargePoint``,
records every frame, and gives tests a handle per station to drive and await it."""

from __future__ import annotations

import asyncio
import hmac
import http
import itertools
import logging
import ssl
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from ocpp.v201 import call
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHeader
from websockets.headers import build_www_authenticate_basic, parse_authorization_basic
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from .csms_handle import StationHandle
from .csms_record import (
    STATION_TO_CSMS,
    Clock,
    CsmsError,
    CsmsTimeout,
    FrameEntry,
    FrameLog,
    answers,
    is_call,
    payload_of,
    rfc3339_ms,
    utc_now,
)
from .csms_station import ErrorSpec, Registration

log = logging.getLogger("everkit.csms")
SUBPROTOCOL = "ocpp2.0.1"
PATH_PREFIX = "/ocpp/"


@dataclass(frozen=True)
class DemoProfile:
    """What the CSMS does in demo mode: a TxProfile in W for every started transaction,
    ``limit_W`` at first, ``lower_limit_W`` from ``lower_after_s`` on and ``limit_W`` again
    from ``raise_after_s`` on (0: never); then it asks for the composite schedule."""

    limit_W: float = 11000.0
    lower_limit_W: float = 5500.0
    lower_after_s: int = 60
    raise_after_s: int = 0


def station_id_from_path(path: str) -> str | None:
    """``/ocpp/<stationId>`` → the station id; any other path → None."""
    path = urlsplit(path).path
    if not path.startswith(PATH_PREFIX):
        return None
    station = unquote(path[len(PATH_PREFIX) :])
    return station if station and "/" not in station else None


class DemoCsms:
    """An OCPP 2.0.1 CSMS for demos and tests.

    ``boot_responses``: the statuses the n-th BootNotification of a station gets, then
    Accepted forever; Pending/Rejected carry ``boot_interval`` s, Accepted carries
    ``heartbeat_interval_s``. ``accepted_tokens``: idTokens answered Accepted, others
    Invalid (None: all). ``basic_auth``: station id → password (HTTP 401 otherwise).
    ``demo_profile``: ask each station once for a base report and limit every started
    transaction. Tests may change ``reply_with_error``, ``delay_reply`` (seconds, or an
    event that holds the answer until set) and ``accepting`` (False: HTTP 503) at any time.
    """

    def __init__(
        self,
        *,
        boot_responses: Collection[str] = ("Accepted",),
        boot_interval: int = 10,
        heartbeat_interval_s: int = 300,
        accepted_tokens: Collection[str] | None = None,
        basic_auth: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        record_path: Path | None = None,
        demo_profile: DemoProfile | None = None,
        clock: Clock = utc_now,
        on_frame: Callable[[FrameEntry], None] | None = None,
    ) -> None:
        self.registration = Registration(boot_responses, boot_interval)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.accepted_tokens = accepted_tokens
        self.reply_with_error: dict[str, ErrorSpec] = {}
        self.delay_reply: dict[str, float | asyncio.Event] = {}
        self.accepting = True
        self._passwords = basic_auth
        self._ssl_context = ssl_context
        self._demo = demo_profile
        self._clock = clock
        self._log = FrameLog(clock, record_path, on_frame)
        self._server: Server | None = None
        self._stations: dict[str, StationHandle] = {}
        self._stations_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reported: set[str] = set()
        self._profile_ids = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._log.open()
        self._server = await serve(
            self._serve_station,
            host,
            port,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            process_request=self._check_request,
            ssl=self._ssl_context,
        )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._log.close()

    async def __aenter__(self) -> DemoCsms:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise CsmsError("the CSMS is not started")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The CSMS endpoint; a station appends ``/<stationId>``."""
        scheme = "wss" if self._ssl_context is not None else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/ocpp"

    # -- what tests read and await -----------------------------------------------------

    @property
    def frames(self) -> list[FrameEntry]:
        return self._log.entries

    @property
    def stations(self) -> dict[str, StationHandle]:
        """The latest connection of every station that has connected."""
        return dict(self._stations)

    def messages(self, action: str, station: str | None = None) -> list[Any]:
        """Payloads (camelCase, as on the wire) of the CALLs ``action`` stations sent."""
        return [
            entry["frame"][3]
            for entry in self._log.entries
            if entry["dir"] == STATION_TO_CSMS
            and is_call(entry["frame"], action)
            and station in (None, entry["station"])
        ]

    async def wait_for(
        self,
        action: str,
        predicate: Callable[[Any], bool] | None = None,
        timeout: float = 10.0,
        after: int = 0,
        station: str | None = None,
    ) -> FrameEntry:
        """The first frame from a station, at log index ``after`` or later, that is a CALL
        of ``action`` (or the CALLRESULT/CALLERROR answering message id ``action``) and whose
        payload (see ``payload_of``) satisfies ``predicate``."""

        def matches(entry: FrameEntry) -> bool:
            frame = entry["frame"]
            return (
                entry["dir"] == STATION_TO_CSMS
                and station in (None, entry["station"])
                and (is_call(frame, action) or answers(frame, action))
                and (predicate is None or predicate(payload_of(frame)))
            )

        return await self._log.wait_for(matches, after, timeout, f"{action} from a station")

    async def wait_station(self, station_id: str, timeout: float = 10.0) -> StationHandle:
        """The station's open connection, waiting for it to connect if needed."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    handle = self._stations.get(station_id)
                    if handle is not None and handle.connected:
                        return handle
                    await self._stations_changed.wait()
        except TimeoutError:
            raise CsmsTimeout(f"{station_id} did not connect within {timeout} s") from None

    async def kick(self, station_id: str, abort: bool = False) -> None:
        """Close the station's connection (to test its reconnect)."""
        handle = self._stations.get(station_id)
        if handle is None or not handle.connected:
            raise CsmsError(f"{station_id} is not connected")
        await handle.close(abort=abort)

    # -- CsmsSide: what station connections call back ----------------------------------

    def now(self) -> datetime:
        return self._clock()

    def boot_answered(self, station: str, status: str) -> None:
        if self._demo is not None and status == "Accepted" and station not in self._reported:
            self._reported.add(station)
            self.spawn(self._demo_base_report(station))

    def transaction_started(self, station: str, evse_id: int, transaction_id: str) -> None:
        if self._demo is not None:
            self.spawn(self._demo_tx_profile(station, evse_id, transaction_id, self._demo))

    # -- internals ---------------------------------------------------------------------

    def spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("demo CSMS task failed", exc_info=task.exception())

    def _notify_stations_changed(self) -> None:
        changed, self._stations_changed = self._stations_changed, asyncio.Event()
        changed.set()

    async def _demo_base_report(self, station: str) -> None:
        handle = await self.wait_station(station)
        result = await handle.call(call.GetBaseReport(request_id=1, report_base="FullInventory"))
        log.info("%s: GetBaseReport %s", station, result.status)

    async def _demo_tx_profile(
        self, station: str, evse_id: int, transaction_id: str, demo: DemoProfile
    ) -> None:
        periods = [{"start_period": 0, "limit": demo.limit_W}]
        if demo.lower_after_s > 0:
            periods.append({"start_period": demo.lower_after_s, "limit": demo.lower_limit_W})
        if demo.raise_after_s > demo.lower_after_s > 0:
            periods.append({"start_period": demo.raise_after_s, "limit": demo.limit_W})
        profile = {
            "id": next(self._profile_ids),
            "stack_level": 0,
            "charging_profile_purpose": "TxProfile",
            "charging_profile_kind": "Absolute",
            "transaction_id": transaction_id,
            "charging_schedule": [
                {
                    "id": 1,
                    "start_schedule": rfc3339_ms(self._clock()),
                    "charging_rate_unit": "W",
                    "charging_schedule_period": periods,
                }
            ],
        }
        handle = await self.wait_station(station)
        result = await handle.call(
            call.SetChargingProfile(evse_id=evse_id, charging_profile=profile)
        )
        log.info("%s: SetChargingProfile TxProfile on evse %d: %s", station, evse_id, result.status)
        composite = await handle.call(
            call.GetCompositeSchedule(duration=60, evse_id=evse_id, charging_rate_unit="W")
        )
        log.info("%s: GetCompositeSchedule evse %d: %s", station, evse_id, composite.status)

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.accepting:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "CSMS is down\n")
        station = station_id_from_path(request.path)
        if station is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "use /ocpp/<stationId>\n")
        if self._passwords is not None and not self._authorized(station, request.headers):
            response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
            response.headers["WWW-Authenticate"] = build_www_authenticate_basic("ocpp")
            return response
        return None

    def _authorized(self, station: str, headers: Headers) -> bool:
        """HTTP Basic with user = the station id in the URL (security profiles 1 and 2)."""
        assert self._passwords is not None
        expected = self._passwords.get(station)
        try:
            username, password = parse_authorization_basic(headers["Authorization"])
        except (KeyError, InvalidHeader):
            return False
        return (
            expected is not None
            and username == station
            and hmac.compare_digest(expected.encode(), password.encode())
        )

    async def _serve_station(self, websocket: ServerConnection) -> None:
        station = station_id_from_path(websocket.request.path if websocket.request else "")
        assert station is not None  # _check_request refused every other path
        handle = StationHandle(station, websocket, self._log, self)
        previous = self._stations.get(station)
        self._stations[station] = handle
        self._notify_stations_changed()
        if previous is not None and previous.connected:
            log.warning("%s connected again; closing its older connection", station)
            await previous.websocket.close(reason="replaced by a newer connection")
        try:
            await handle.serve()
        except ConnectionClosed:
            pass
        finally:
            self._notify_stations_changed()
