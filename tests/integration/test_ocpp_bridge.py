"""PyOCPP201's bridge against the demo CSMS (an independent peer on the `ocpp` package) over
real websockets: provisioning (block B) and transactions (block E)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call

from everkit.simulators.csms import DemoCsms, make_test_pki, payload_of
from tests.integration.ocpp_harness import (
    SESSION,
    STATION,
    WAIT_S,
    dc_session_end,
    dc_session_start,
    run,
    running_bridge,
    until,
)


def test_boot_then_status_of_every_connector_B01(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms):
            boot = await csms.wait_for("BootNotification", timeout=WAIT_S)
            status = await csms.wait_for("StatusNotification", timeout=WAIT_S)
            assert payload_of(boot["frame"])["reason"] == "PowerUp"
            assert payload_of(boot["frame"])["chargingStation"] == {
                "vendorName": "everkit",
                "model": "test-dc",
            }
            assert payload_of(status["frame"])["evseId"] == 1
            assert payload_of(status["frame"])["connectorId"] == 1

    run(scenario())


def test_full_transaction_with_meter_values_E01_E06(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            rig.feed(dc_session_start())
            rig.feed(dc_session_end())
            ended = await csms.wait_for(
                "TransactionEvent", lambda p: p["eventType"] == "Ended", timeout=WAIT_S
            )
            events = csms.messages("TransactionEvent")
            assert [e["seqNo"] for e in events] == list(range(len(events)))
            assert events[0]["eventType"] == "Started"
            assert events[0]["transactionInfo"]["transactionId"] == SESSION
            assert events[0]["idToken"] == {"idToken": "CAFE0001", "type": "ISO14443"}
            assert (
                payload_of(ended["frame"])["transactionInfo"]["stoppedReason"] == "EVDisconnected"
            )
            energy = [
                sv
                for mv in payload_of(ended["frame"])["meterValue"]
                for sv in mv["sampledValue"]
                if sv.get("measurand", "Energy.Active.Import.Register")
                == "Energy.Active.Import.Register"
            ]
            assert energy, ended
            assert energy[0]["value"] == 6000
            await until(lambda: not rig.store.pending())  # removed once the CSMS answered

    run(scenario())


def _tx_events(csms: DemoCsms) -> list[dict[str, Any]]:
    return csms.messages("TransactionEvent")


def test_offline_queue_survives_a_bridge_restart_E04(tmp_path: Path) -> None:
    """Events made while the CSMS is unreachable wait in SQLite, survive a restart of the
    bridge mid-transaction, and go out in order with offline=true and continuous seqNo."""

    async def scenario() -> None:
        async with DemoCsms() as csms:
            csms.accepting = False  # the CSMS answers HTTP 503: "down"
            async with running_bridge(tmp_path, csms) as first:
                first.feed(dc_session_start())
                made_offline = len(first.store.pending())
                assert made_offline >= 2
            # a new process: same store, the transaction goes on
            async with running_bridge(tmp_path, csms) as second:
                second.feed(dc_session_end())
                total = len(second.store.pending())
                assert total > made_offline
                csms.accepting = True
                await csms.wait_for(
                    "TransactionEvent", lambda p: p["eventType"] == "Ended", timeout=WAIT_S
                )
                await until(lambda: not second.store.pending())
            events = _tx_events(csms)
            assert len(events) == total  # nothing lost, nothing twice
            assert [e["seqNo"] for e in events] == list(range(total))
            assert all(e.get("offline") is True for e in events)
            assert {e["transactionInfo"]["transactionId"] for e in events} == {SESSION}
            assert events[0]["eventType"] == "Started"
            assert events[-1]["eventType"] == "Ended"

    run(scenario())


def test_callerror_on_a_transaction_event_is_retried(tmp_path: Path) -> None:
    """OCPPCommCtrlr.MessageAttempts: a TransactionEvent the CSMS refuses is sent again."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            csms.reply_with_error["TransactionEvent"] = ("InternalError", "try again", 1)
            rig.feed(dc_session_start())
            await until(lambda: not rig.store.pending())
            events = _tx_events(csms)
            assert events[0]["seqNo"] == events[1]["seqNo"] == 0  # the refused one, again
            assert [e["seqNo"] for e in events[1:]] == list(range(len(events) - 1))

    run(scenario())


def test_undeliverable_transaction_event_is_reported_not_silently_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        overrides = {"OCPPCommCtrlr.MessageAttempts(TransactionEvent)": "2"}
        async with DemoCsms() as csms, running_bridge(tmp_path, csms, overrides=overrides) as rig:
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            csms.reply_with_error["TransactionEvent"] = ("InternalError", "never", 2)
            rig.feed(dc_session_start())  # Started (refused twice), then Updated
            await until(lambda: not rig.store.pending())
            assert rig.bridge.counters.undeliverable == 1
            events = _tx_events(csms)
            assert [e["seqNo"] for e in events] == [0, 0, *range(1, len(events) - 1)]

    with caplog.at_level(logging.ERROR, logger="PyOCPP201"):
        run(scenario())
    assert "TransactionEvent undeliverable after 2 attempts" in caplog.text
    assert "'seqNo': 0" in caplog.text


def test_authorize_asks_the_csms_C01(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with DemoCsms(accepted_tokens={"GOOD0001"}) as csms:
            async with running_bridge(tmp_path, csms) as rig:
                await csms.wait_for("StatusNotification", timeout=WAIT_S)
                good = await rig.bridge.authorize({"id_token": "GOOD0001", "type": "ISO14443"})
                bad = await rig.bridge.authorize({"id_token": "BAD00001", "type": "ISO14443"})
            assert good["status"] == "Accepted"
            assert bad["status"] == "Invalid"
            asked = [m["idToken"]["idToken"] for m in csms.messages("Authorize")]
            assert asked == ["GOOD0001", "BAD00001"]

    run(scenario())


def test_authorize_offline_follows_auth_ctrlr_C15(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms:
            csms.accepting = False
            async with running_bridge(tmp_path / "a", csms) as rig:
                strict = await rig.bridge.authorize({"id_token": "X", "type": "Local"})
            lenient = {"AuthCtrlr.OfflineTxForUnknownIdEnabled": "true"}
            async with running_bridge(tmp_path / "b", csms, overrides=lenient) as rig:
                allowed = await rig.bridge.authorize({"id_token": "X", "type": "Local"})
            assert strict["status"] == "Unknown"
            assert allowed["status"] == "Accepted"
            assert not csms.messages("Authorize")

    run(scenario())


PASSWORD = "correct-horse-battery"


def test_security_profile_1_wrong_password_is_refused_with_401(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with DemoCsms(basic_auth={STATION: PASSWORD}) as csms:
            wrong = {"security_profile": 1, "password": "not-the-password-at-all"}
            async with running_bridge(tmp_path / "a", csms, **wrong) as rig:
                await until(lambda: "HTTP 401" in caplog.text)
                assert rig.bridge.counters.connects == 0
            right = {"security_profile": 1, "password": PASSWORD}
            async with running_bridge(tmp_path / "b", csms, **right):
                await csms.wait_for("BootNotification", timeout=WAIT_S)

    with caplog.at_level(logging.WARNING, logger="PyOCPP201"):
        run(scenario())


def test_security_profile_2_with_a_self_made_ca(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_test_pki(tmp_path / "pki")

    async def scenario() -> None:
        async with DemoCsms(basic_auth={STATION: PASSWORD}, ssl_context=pki.server_context) as csms:
            assert csms.url.startswith("wss://")
            untrusted = {"security_profile": 2, "password": PASSWORD}  # system CAs only
            async with running_bridge(tmp_path / "a", csms, **untrusted) as rig:
                await until(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text)
                assert rig.bridge.counters.connects == 0
            trusted = {**untrusted, "ca_file": str(pki.ca_file)}
            async with running_bridge(tmp_path / "b", csms, **trusted):
                await csms.wait_for("BootNotification", timeout=WAIT_S)

    with caplog.at_level(logging.WARNING, logger="PyOCPP201"):
        run(scenario())


def test_pending_boot_is_retried_after_the_interval_and_nothing_else_is_sent_B02(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with DemoCsms(boot_responses=("Pending", "Accepted"), boot_interval=1) as csms:
            async with running_bridge(tmp_path, csms):
                await csms.wait_for("StatusNotification", timeout=WAIT_S)
            actions = [f["frame"][2] for f in csms.frames if f["frame"][0] == 2]
            assert actions[:3] == ["BootNotification", "BootNotification", "StatusNotification"]

    run(scenario())


def test_reconnects_after_the_csms_drops_the_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            await csms.kick(STATION, abort=True)
            rig.feed(dc_session_start())  # possibly made while reconnecting
            await csms.wait_for(
                "TransactionEvent", lambda p: p["eventType"] == "Started", timeout=WAIT_S
            )
            await until(lambda: not rig.store.pending())
            assert len(csms.messages("BootNotification")) == 2
            events = _tx_events(csms)
            assert [e["seqNo"] for e in events] == list(range(len(events)))

    run(scenario())


def test_csms_calls_are_answered_while_a_station_call_waits(tmp_path: Path) -> None:
    """OCPP-J: one outstanding CALL per direction. While the station's TransactionEvent
    waits for its answer, the station still answers the CSMS's own CALL."""

    async def scenario() -> None:
        hold = asyncio.Event()
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            csms.delay_reply["TransactionEvent"] = hold
            rig.feed(dc_session_start())
            await csms.wait_for("TransactionEvent", timeout=WAIT_S)
            handle = await csms.wait_station(STATION)
            asked = [
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
            ]
            result = await handle.call(call.GetVariables(get_variable_data=asked), timeout=WAIT_S)
            assert result.get_variable_result[0]["attribute_status"] == "Accepted"
            assert rig.store.pending()  # the TransactionEvent is still unanswered
            hold.set()
            await until(lambda: not rig.store.pending())

    run(scenario())


def _enforced(watts: float, source: str) -> dict[str, Any]:
    return {
        "uuid": "evse_manager",
        "valid_for": 10,
        "schedule": [],
        "limits_root_side": {"total_power_W": {"value": watts, "source": source}},
    }


def test_a_grid_limit_is_reported_K11_and_its_end_K13(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            rig.bridge.on_enforced_limits(1, _enforced(11000, "SO"))
            notified = await csms.wait_for("NotifyChargingLimit", timeout=WAIT_S)
            rig.bridge.on_enforced_limits(1, _enforced(50000, "PyEnergyNode grid fuse"))
            cleared = await csms.wait_for("ClearedChargingLimit", timeout=WAIT_S)
            assert payload_of(notified["frame"]) == {
                "chargingLimit": {"chargingLimitSource": "SO"},
                "evseId": 1,
            }
            assert payload_of(cleared["frame"]) == {"chargingLimitSource": "SO", "evseId": 1}

    run(scenario())


def test_a_grid_limit_that_began_while_offline_is_reported_once_online_K11(
    tmp_path: Path,
) -> None:
    """K11/K12: the CSMS learns of an external limit in force when the connection returns;
    one that began and ended while it was down leaves nothing to report (net change)."""

    async def scenario() -> None:
        async with DemoCsms() as csms:
            csms.accepting = False
            async with running_bridge(tmp_path, csms) as rig:
                rig.bridge.on_enforced_limits(1, _enforced(9000, "EMS"))
                rig.bridge.on_enforced_limits(1, _enforced(50000, "PyEnergyNode grid fuse"))
                rig.bridge.on_enforced_limits(1, _enforced(11000, "SO"))
                csms.accepting = True
                notified = await csms.wait_for("NotifyChargingLimit", timeout=WAIT_S)
                await csms.wait_for("StatusNotification", timeout=WAIT_S)
                assert payload_of(notified["frame"]) == {
                    "chargingLimit": {"chargingLimitSource": "SO"},
                    "evseId": 1,
                }
                assert len(csms.messages("NotifyChargingLimit")) == 1
                assert csms.messages("ClearedChargingLimit") == []

    run(scenario())


def test_a_significant_rate_change_during_a_transaction_is_reported_K11(tmp_path: Path) -> None:
    """SmartChargingCtrlr.LimitChangeSignificance (10 %): a 5 % change is not reported, a
    40 % change is a TransactionEvent Updated with ChargingRateChanged."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            rig.feed(dc_session_start())
            rig.bridge.on_enforced_limits(1, _enforced(50000, "CSO"))
            rig.bridge.on_enforced_limits(1, _enforced(47500, "CSO"))
            rig.bridge.on_enforced_limits(1, _enforced(30000, "CSO"))
            changed = await csms.wait_for(
                "TransactionEvent",
                lambda p: p["triggerReason"] == "ChargingRateChanged",
                timeout=WAIT_S,
            )
            await until(lambda: not rig.store.pending())
            reasons = [e["triggerReason"] for e in _tx_events(csms)]
            assert reasons.count("ChargingRateChanged") == 1
            assert payload_of(changed["frame"])["eventType"] == "Updated"

    run(scenario())


def _log_count(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


def test_A00_FR_202_203_profile_1_basic_auth_on_every_connection_wrong_password_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """OCPP 2.0.1 Part 2, A00.FR.202/203 (security profile 1): the station authenticates
    with HTTP Basic (user = its identity, password = BasicAuthPassword) on every connection
    request. A refused password (HTTP 401) lets no OCPP frame through, and the station keeps
    retrying with its credentials, never without them; the right one is accepted, and
    again on the reconnect after the CSMS drops the connection."""

    async def scenario() -> None:
        async with DemoCsms(basic_auth={STATION: PASSWORD}) as csms:
            wrong = {"security_profile": 1, "password": "not-the-password-at-all"}
            async with running_bridge(tmp_path / "a", csms, **wrong) as rig:
                await until(lambda: _log_count(caplog, "HTTP 401") >= 2)
                assert rig.bridge.counters.connects == 0
                assert csms.frames == []
            right = {"security_profile": 1, "password": PASSWORD}
            async with running_bridge(tmp_path / "b", csms, **right):
                await csms.wait_for("BootNotification", timeout=WAIT_S)
                await csms.kick(STATION, abort=True)
                await until(lambda: len(csms.messages("BootNotification")) == 2)

    with caplog.at_level(logging.WARNING, logger="PyOCPP201"):
        run(scenario())


def test_A00_FR_308_profile_2_untrusted_csms_certificate_refused_nothing_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """OCPP 2.0.1 Part 2, A00.FR.308 (security profile 2): the station verifies the
    certification path of the CSMS's certificate. Signed by a CA it does not trust, the TLS
    handshake fails before any HTTP request, so neither the Basic-auth password nor an OCPP
    frame leaves the station, however often it retries; with the CA in ca_file it boots."""
    pki = make_test_pki(tmp_path / "pki")

    async def scenario() -> None:
        async with DemoCsms(basic_auth={STATION: PASSWORD}, ssl_context=pki.server_context) as csms:
            untrusted = {"security_profile": 2, "password": PASSWORD}
            async with running_bridge(tmp_path / "a", csms, **untrusted) as rig:
                await until(lambda: _log_count(caplog, "CERTIFICATE_VERIFY_FAILED") >= 2)
                assert rig.bridge.counters.connects == 0
                assert csms.frames == []
            trusted = {**untrusted, "ca_file": str(pki.ca_file)}
            async with running_bridge(tmp_path / "b", csms, **trusted):
                await csms.wait_for("BootNotification", timeout=WAIT_S)

    with caplog.at_level(logging.WARNING, logger="PyOCPP201"):
        run(scenario())
