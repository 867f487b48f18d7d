"""The demo CSMS against a minimal station written here on ``ocpp.v201.ChargePoint``, over
real websockets on loopback (free ports, no sleeps: every wait is on an event or a frame)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ocpp.exceptions import InternalError, SecurityError
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from everkit.simulators.csms import (
    CSMS_TO_STATION,
    STATION_TO_CSMS,
    DemoCsms,
    DemoProfile,
    StationCallError,
    make_test_pki,
)

WAIT_S = 10.0
OCPP201 = Subprotocol("ocpp2.0.1")
FIXED_NOW = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 60))


class Station(ChargePoint):  # type: ignore[misc]
    """Answers the CSMS like an obliging station and keeps every request it got."""

    def __init__(self, station_id: str, connection: ClientConnection) -> None:
        super().__init__(station_id, connection)
        self.websocket = connection
        self.requests: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def boot(self) -> Any:
        return await self.call(
            call.BootNotification(
                charging_station={"model": "DC-1", "vendor_name": "everkit"}, reason="PowerUp"
            ),
            suppress=False,
        )

    async def status(self, status: str = "Available") -> Any:
        return await self.call(
            call.StatusNotification(
                timestamp="2025-03-01T12:00:00Z",
                connector_status=status,
                evse_id=1,
                connector_id=1,
            ),
            suppress=False,
        )

    async def request(self, action: str) -> dict[str, Any]:
        got, payload = await asyncio.wait_for(self.requests.get(), WAIT_S)
        assert got == action, (got, payload)
        return payload

    @on("GetBaseReport")
    def on_get_base_report(self, **payload: Any) -> Any:
        self.requests.put_nowait(("GetBaseReport", payload))
        return call_result.GetBaseReport(status="Accepted")

    @on("SetChargingProfile")
    def on_set_charging_profile(self, **payload: Any) -> Any:
        self.requests.put_nowait(("SetChargingProfile", payload))
        return call_result.SetChargingProfile(status="Accepted")

    @on("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        return call_result.SetVariables(
            set_variable_result=[
                {
                    "attribute_status": "Accepted",
                    "component": item["component"],
                    "variable": item["variable"],
                }
                for item in set_variable_data
            ]
        )

    @on("TriggerMessage")
    def on_trigger_message(self, **payload: Any) -> Any:
        self.requests.put_nowait(("TriggerMessage", payload))
        return call_result.TriggerMessage(status="Accepted")


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@contextlib.asynccontextmanager
async def station(
    url: str,
    station_id: str = "CS001",
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Station]:
    async with connect(
        f"{url}/{station_id}",
        subprotocols=[OCPP201],
        additional_headers=headers,
        ssl=tls,
        open_timeout=WAIT_S,
    ) as websocket:
        cp = Station(station_id, websocket)
        loop = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await loop


def test_boot_is_accepted_over_the_ocpp201_subprotocol() -> None:
    async def scenario() -> None:
        async with DemoCsms(heartbeat_interval_s=42, clock=lambda: FIXED_NOW) as csms:
            assert csms.url == f"ws://127.0.0.1:{csms.port}/ocpp"
            async with station(csms.url) as cs:
                assert cs.websocket.subprotocol == "ocpp2.0.1"
                result = await cs.boot()
                assert (result.status, result.interval) == ("Accepted", 42)
                assert result.current_time == "2025-03-01T12:00:00.123Z"
                handle = await csms.wait_station("CS001")
                assert handle.connected
                heartbeat = await cs.call(call.Heartbeat(), suppress=False)
                assert heartbeat.current_time == "2025-03-01T12:00:00.123Z"
            await handle.wait_disconnected()
            assert not handle.connected

    run(scenario())


def test_a_client_without_the_subprotocol_or_with_another_path_is_refused() -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms:
            with pytest.raises(InvalidStatus) as no_subprotocol:
                async with connect(f"{csms.url}/CS001"):
                    pass
            assert no_subprotocol.value.response.status_code == 400
            for path in ("/other/CS001", "/ocpp", "/ocpp/", "/ocpp/CS001/extra"):
                with pytest.raises(InvalidStatus) as wrong_path:
                    async with connect(
                        f"ws://127.0.0.1:{csms.port}{path}",
                        subprotocols=[OCPP201],
                    ):
                        pass
                assert wrong_path.value.response.status_code == 404, path
            assert csms.stations == {}

    run(scenario())


def test_pending_then_accepted_with_the_retry_interval_and_security_error_meanwhile() -> None:
    """B02.FR.09: while Pending a station may only boot or send what the CSMS asked for."""

    async def scenario() -> None:
        async with (
            DemoCsms(
                boot_responses=["Pending", "Accepted"], boot_interval=7, heartbeat_interval_s=300
            ) as csms,
            station(csms.url) as cs,
        ):
            first = await cs.boot()
            assert (first.status, first.interval) == ("Pending", 7)
            with pytest.raises(SecurityError):
                await cs.status()
            # ... unless the CSMS triggered exactly that message
            handle = await csms.wait_station("CS001")
            trigger = call.TriggerMessage(requested_message="StatusNotification")
            assert (await handle.call(trigger)).status == "Accepted"
            await cs.status()
            with pytest.raises(SecurityError):
                await cs.status()
            second = await cs.boot()
            assert (second.status, second.interval) == ("Accepted", 300)
            await cs.status()
            # messages() lists what the station sent, refused or not
            assert len(csms.messages("StatusNotification")) == 4

    run(scenario())


def test_rejected_station_may_only_boot() -> None:
    """B03.FR.07: after Rejected, anything but BootNotification gets SecurityError."""

    async def scenario() -> None:
        rejecting = DemoCsms(boot_responses=["Rejected"], boot_interval=9)
        async with rejecting as csms, station(csms.url) as cs:
            result = await cs.boot()
            assert (result.status, result.interval) == ("Rejected", 9)
            with pytest.raises(SecurityError):
                await cs.call(call.Heartbeat(), suppress=False)
            assert (await cs.boot()).status == "Accepted"
            await cs.call(call.Heartbeat(), suppress=False)

    run(scenario())


def test_authorize_and_transaction_event_answer_by_the_accepted_tokens() -> None:
    async def scenario() -> None:
        async with DemoCsms(accepted_tokens={"TOKEN1"}) as csms, station(csms.url) as cs:
            await cs.boot()
            known = await cs.call(
                call.Authorize(id_token={"id_token": "TOKEN1", "type": "Central"}),
                suppress=False,
            )
            unknown = await cs.call(
                call.Authorize(id_token={"id_token": "OTHER", "type": "Central"}),
                suppress=False,
            )
            assert known.id_token_info == {"status": "Accepted"}
            assert unknown.id_token_info == {"status": "Invalid"}
            started = await cs.call(
                call.TransactionEvent(
                    event_type="Started",
                    timestamp="2025-03-01T12:00:00Z",
                    trigger_reason="Authorized",
                    seq_no=0,
                    transaction_info={"transaction_id": "tx-1"},
                    id_token={"id_token": "OTHER", "type": "Central"},
                ),
                suppress=False,
            )
            assert started.id_token_info == {"status": "Invalid"}
            without_token = await cs.call(
                call.TransactionEvent(
                    event_type="Updated",
                    timestamp="2025-03-01T12:00:01Z",
                    trigger_reason="MeterValuePeriodic",
                    seq_no=1,
                    transaction_info={"transaction_id": "tx-1"},
                ),
                suppress=False,
            )
            assert without_token.id_token_info is None

    run(scenario())


def test_every_frame_is_recorded_raw_in_both_directions(tmp_path: Path) -> None:
    record = tmp_path / "frames.jsonl"

    async def scenario() -> None:
        async with DemoCsms(record_path=record) as csms:
            async with station(csms.url) as cs:
                await cs.boot()
                await cs.call(call.Heartbeat(), suppress=False)
            lines = [json.loads(line) for line in record.read_text().splitlines()]
            assert lines == csms.frames
            assert [(e["dir"], e["frame"][0]) for e in lines] == [
                (STATION_TO_CSMS, 2),
                (CSMS_TO_STATION, 3),
                (STATION_TO_CSMS, 2),
                (CSMS_TO_STATION, 3),
            ]
            boot_call, boot_result = lines[0]["frame"], lines[1]["frame"]
            assert boot_call[2] == "BootNotification"
            assert boot_call[3]["chargingStation"] == {"model": "DC-1", "vendorName": "everkit"}
            assert boot_result[1] == boot_call[1]
            assert boot_result[2]["status"] == "Accepted"
            assert all(e["station"] == "CS001" and RFC3339_MS.match(e["t"]) for e in lines)

    run(scenario())


def test_basic_auth_wrong_or_missing_password_is_http_401() -> None:
    """Security profile 1: user is the station id, password per station."""

    async def scenario() -> None:
        async with DemoCsms(basic_auth={"CS001": "secret-password", "CS002": "other"}) as csms:
            for station_id, headers in (
                ("CS001", basic("CS001", "wrong")),
                ("CS001", None),
                ("CS001", basic("CS002", "secret-password")),  # user is not the station
                ("CS003", basic("CS003", "")),
            ):
                with pytest.raises(InvalidStatus) as refused:
                    async with station(csms.url, station_id, headers):
                        pass
                assert refused.value.response.status_code == 401
            async with station(csms.url, "CS001", basic("CS001", "secret-password")) as cs:
                assert (await cs.boot()).status == "Accepted"

    run(scenario())


def test_tls_with_the_test_ca_works_and_without_it_fails(tmp_path: Path) -> None:
    """Security profile 2: wss with a server certificate the station must verify."""
    pki = make_test_pki(tmp_path / "pki")
    assert pki.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")

    async def scenario() -> None:
        async with DemoCsms(ssl_context=pki.server_context) as csms:
            assert csms.url.startswith("wss://127.0.0.1:")
            async with station(csms.url, tls=pki.client_context()) as cs:
                assert (await cs.boot()).status == "Accepted"
            with pytest.raises(ssl.SSLCertVerificationError):
                async with station(csms.url, tls=ssl.create_default_context()):
                    pass

    run(scenario())


def test_kick_closes_the_connection_and_the_station_can_come_back() -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms:
            async with station(csms.url) as cs:
                await cs.boot()
                first = await csms.wait_station("CS001")
                await csms.kick("CS001")
                assert not first.connected
                await asyncio.wait_for(cs.websocket.wait_closed(), WAIT_S)
                assert cs.websocket.close_code == 1000
            async with station(csms.url) as cs:
                second = await csms.wait_station("CS001")
                assert second is not first
                assert second.connected
                await csms.kick("CS001", abort=True)
                await asyncio.wait_for(cs.websocket.wait_closed(), WAIT_S)
                assert not second.connected

    run(scenario())


def test_csms_calls_the_station_and_gets_its_result_or_its_callerror() -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, station(csms.url) as cs:
            await cs.boot()
            handle = await csms.wait_station("CS001")
            result = await handle.call(
                call.SetVariables(
                    set_variable_data=[
                        {
                            "attribute_value": "60",
                            "component": {"name": "OCPPCommCtrlr"},
                            "variable": {"name": "HeartbeatInterval"},
                        }
                    ]
                )
            )
            assert result.set_variable_result[0]["attribute_status"] == "Accepted"
            # the station has no Reset handler: ocpp answers NotImplemented
            with pytest.raises(StationCallError) as error:
                await handle.call(call.Reset(type="Immediate"))
            assert (error.value.code, error.value.action) == ("NotImplemented", "Reset")
            assert error.value.description

    run(scenario())


def test_reply_with_error_sends_callerror_for_the_next_n_or_all_calls() -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, station(csms.url) as cs:
            await cs.boot()
            csms.reply_with_error["Heartbeat"] = ("InternalError", "test", 1)
            with pytest.raises(InternalError) as once:
                await cs.call(call.Heartbeat(), suppress=False)
            assert once.value.description == "test"
            await cs.call(call.Heartbeat(), suppress=False)
            csms.reply_with_error["StatusNotification"] = ("SecurityError", "always")
            for _ in range(2):
                with pytest.raises(SecurityError):
                    await cs.status()

    run(scenario())


def test_send_raw_and_next_frame_see_the_stations_callerror_for_a_malformed_call() -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, station(csms.url) as cs:
            await cs.boot()
            handle = await csms.wait_station("CS001")
            sent = await handle.send_raw('[2, "raw-1", "SetVariables", {}]')
            assert csms.frames[sent]["frame"] == [2, "raw-1", "SetVariables", {}]
            reply = await handle.next_frame(lambda e: e["frame"][1] == "raw-1", after=sent)
            assert reply["frame"][0] == 4
            assert reply is await csms.wait_for("raw-1")
            error = await csms.wait_for("raw-1", lambda p: "errorCode" in p)
            assert error["frame"][2] in {"OccurrenceConstraintViolation", "ProtocolError"}

    run(scenario())


def test_wait_for_and_messages_find_station_calls_by_action_and_payload() -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, station(csms.url) as cs:
            await cs.boot()
            mark = len(csms.frames)
            await cs.status("Occupied")
            await cs.status("Available")
            entry = await csms.wait_for(
                "StatusNotification",
                lambda p: p["connectorStatus"] == "Available",
                after=mark,
            )
            assert csms.frames.index(entry) > mark
            assert [p["connectorStatus"] for p in csms.messages("StatusNotification")] == [
                "Occupied",
                "Available",
            ]
            assert csms.messages("StatusNotification", station="CS002") == []

    run(scenario())


def test_not_accepting_refuses_connections_with_http_503() -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms:
            csms.accepting = False
            with pytest.raises(InvalidStatus) as refused:
                async with station(csms.url):
                    pass
            assert refused.value.response.status_code == 503
            csms.accepting = True
            async with station(csms.url) as cs:
                assert (await cs.boot()).status == "Accepted"

    run(scenario())


def test_delay_reply_holds_the_answer_until_released() -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, station(csms.url) as cs:
            await cs.boot()
            release = asyncio.Event()
            csms.delay_reply["Heartbeat"] = release
            heartbeat = asyncio.create_task(cs.call(call.Heartbeat(), suppress=False))
            arrived = await csms.wait_for("Heartbeat")
            assert not heartbeat.done()
            assert csms.frames[-1] is arrived  # nothing answered yet
            release.set()
            assert (await asyncio.wait_for(heartbeat, WAIT_S)).current_time

    run(scenario())


def test_demo_mode_asks_for_a_base_report_and_limits_started_transactions() -> None:
    async def scenario() -> None:
        demo = DemoProfile(limit_W=7000, lower_limit_W=3500, lower_after_s=30)
        async with (
            DemoCsms(demo_profile=demo, clock=lambda: FIXED_NOW) as csms,
            station(csms.url) as cs,
        ):
            await cs.boot()
            report = await cs.request("GetBaseReport")
            assert report["report_base"] == "FullInventory"
            await cs.call(
                call.TransactionEvent(
                    event_type="Started",
                    timestamp="2025-03-01T12:00:00Z",
                    trigger_reason="CablePluggedIn",
                    seq_no=0,
                    transaction_info={"transaction_id": "tx-7"},
                    evse={"id": 1, "connector_id": 1},
                ),
                suppress=False,
            )
            request = await cs.request("SetChargingProfile")
            profile = request["charging_profile"]
            assert request["evse_id"] == 1
            assert profile["charging_profile_purpose"] == "TxProfile"
            assert profile["transaction_id"] == "tx-7"
            schedule = profile["charging_schedule"][0]
            assert schedule["charging_rate_unit"] == "W"
            assert schedule["start_schedule"] == "2025-03-01T12:00:00.123Z"
            assert schedule["charging_schedule_period"] == [
                {"start_period": 0, "limit": 7000},
                {"start_period": 30, "limit": 3500},
            ]
            # a second boot is not asked for another report
            await cs.boot()
            await cs.call(call.Heartbeat(), suppress=False)
            assert cs.requests.empty()

    run(scenario())


def test_cli_prints_its_url_and_one_line_per_frame_and_stops_on_sigterm(tmp_path: Path) -> None:
    record = tmp_path / "cli.jsonl"

    async def scenario() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "everkit.simulators.csms",
            "--port",
            "0",
            "--record",
            str(record),
            "--token",
            "TOKEN1",
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            url = (await asyncio.wait_for(process.stdout.readline(), WAIT_S)).decode().strip()
            assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/ocpp", url), url
            async with station(url) as cs:
                await cs.boot()
            lines = [
                (await asyncio.wait_for(process.stdout.readline(), WAIT_S)).decode().strip()
                for _ in range(2)
            ]
            assert lines[0].endswith("CS001 → BootNotification PowerUp"), lines
            assert lines[1].endswith("CS001 ← BootNotification: Accepted"), lines
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), WAIT_S) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        frames = [json.loads(line)["frame"] for line in record.read_text().splitlines()]
        assert [frame[0] for frame in frames] == [2, 3]

    run(scenario())
