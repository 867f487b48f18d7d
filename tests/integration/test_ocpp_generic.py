"""PyOCPP201's ocpp_generic (EVerest's ``ocpp`` interface, interfaces/ocpp.yaml) at the bridge:
OcppGeneric and the vars the bridge publishes, against the demo CSMS over real websockets,
with the EVerest side in memory (FakeEvents records every var)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call

from everkit.ocpp201.generic import OcppGeneric
from everkit.simulators.csms import DemoCsms, StationHandle, payload_of
from tests.integration.ocpp_harness import (
    SESSION,
    STATION,
    WAIT_S,
    dc_session_start,
    run,
    running_bridge,
    until,
)


def cv(component: str, variable: str, **component_extra: Any) -> dict[str, Any]:
    """An EVerest ComponentVariable."""
    return {"component": {"name": component, **component_extra}, "variable": {"name": variable}}


HEARTBEAT = cv("OCPPCommCtrlr", "HeartbeatInterval")
VENDOR = cv("ChargingStation", "VendorName")  # a ReadOnly variable (no value in the request)
PASSWORD = cv("SecurityCtrlr", "BasicAuthPassword")  # WriteOnly


async def online(csms: DemoCsms, after: int = 0) -> StationHandle:
    await csms.wait_for("StatusNotification", timeout=WAIT_S, after=after)
    return await csms.wait_station(STATION)


# is_connected, boot_notification_response, stop / restart -----------------------------


def test_is_connected_follows_the_websocket_and_starts_with_its_value(tmp_path: Path) -> None:
    """ocpp.yaml is_connected: the value once when the bridge starts, then every
    connect and disconnect (here: the CSMS closing the connection)."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            assert await rig.events.wait("is_connected") is False  # before any connection
            assert await rig.events.wait("is_connected") is True
            await online(csms)
            await csms.kick(STATION)
            assert await rig.events.wait("is_connected") is False
            assert await rig.events.wait("is_connected") is True  # it reconnects
            assert rig.events.of("is_connected") == [False, True, False, True]

    run(scenario())


def test_every_boot_answer_is_published_as_boot_notification_response(tmp_path: Path) -> None:
    """ocpp.yaml boot_notification_response: one per BootNotification answer, Pending too."""

    async def scenario() -> None:
        async with (
            DemoCsms(boot_responses=["Pending", "Accepted"], boot_interval=1) as csms,
            running_bridge(tmp_path, csms) as rig,
        ):
            pending = await rig.events.wait("boot_notification_response")
            accepted = await rig.events.wait("boot_notification_response")
            assert (pending["status"], pending["interval"]) == ("Pending", 1)
            assert accepted["status"] == "Accepted"
            assert accepted["interval"] == csms.heartbeat_interval_s
            assert accepted["current_time"].endswith("Z")

    run(scenario())


def test_stop_closes_the_connection_until_restart(tmp_path: Path) -> None:
    """ocpp.yaml stop: the websocket closes and stays closed (true the first time, false
    when already stopped); restart: connected again with a fresh boot (true)."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            generic = OcppGeneric(rig.bridge)
            await rig.events.wait("is_connected", lambda v: v is True)
            await online(csms)
            assert generic.stop() is True
            assert await rig.events.wait("is_connected") is False
            assert generic.stop() is False
            await csms.stations[STATION].wait_disconnected(WAIT_S)
            boots = len(csms.messages("BootNotification"))
            assert generic.restart() is True
            assert await rig.events.wait("is_connected") is True
            await csms.wait_for("BootNotification", timeout=WAIT_S, after=len(csms.frames))
            assert len(csms.messages("BootNotification")) == boots + 1

    run(scenario())


def test_restart_connects_at_once_without_waiting_out_the_back_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped during a 60 s back-off wait (the CSMS was down), restart connects now."""
    caplog.set_level(logging.INFO, logger="PyOCPP201")

    async def scenario() -> None:
        async with DemoCsms() as csms:
            csms.accepting = False
            async with running_bridge(
                tmp_path, csms, overrides={"OCPPCommCtrlr.RetryBackOffWaitMinimum": "60"}
            ) as rig:
                generic = OcppGeneric(rig.bridge)
                await until(lambda: "reconnecting in 60.0 s" in caplog.text)
                assert generic.stop() is True
                csms.accepting = True
                assert generic.restart() is True
                assert await rig.events.wait("is_connected", lambda v: v is True, timeout=5)
                assert rig.bridge.counters.connects == 1

    run(scenario())


# get_variables / set_variables ------------------------------------------------------------


def test_get_variables_answers_as_the_csms_getvariables_does(tmp_path: Path) -> None:
    """Same device model, same statuses: Accepted with the value, UnknownComponent,
    UnknownVariable, NotSupportedAttributeType, Rejected for WriteOnly (B06)."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            generic = OcppGeneric(rig.bridge)
            asked = [
                HEARTBEAT,
                cv("NoSuchCtrlr", "X"),
                cv("OCPPCommCtrlr", "NoSuchVariable"),
                PASSWORD,
            ]
            local = generic.get_variables(
                [{"component_variable": a} for a in asked]
                + [{"component_variable": HEARTBEAT, "attribute_type": "MaxSet"}]
            )
            remote = await handle.call(
                call.GetVariables(
                    get_variable_data=[
                        {"component": a["component"], "variable": a["variable"]} for a in asked
                    ]
                    + [{**HEARTBEAT, "attribute_type": "MaxSet"}]
                )
            )
            assert [r["status"] for r in local] == [
                r["attribute_status"] for r in remote.get_variable_result
            ]
            assert [r["status"] for r in local] == [
                "Accepted",
                "UnknownComponent",
                "UnknownVariable",
                "Rejected",
                "NotSupportedAttributeType",
            ]
            assert local[0]["value"] == remote.get_variable_result[0]["attribute_value"]
            assert local[0]["component_variable"] == HEARTBEAT
            assert "value" not in local[3]  # never the password

    run(scenario())


def test_set_variables_applies_the_device_model_rules(tmp_path: Path) -> None:
    """B05's statuses for a local writer; an accepted value is in force (the next
    GetVariables from the CSMS reads it) and persisted like a CSMS-set one."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            generic = OcppGeneric(rig.bridge)
            results = generic.set_variables(
                [
                    {"component_variable": HEARTBEAT, "value": "77"},
                    {"component_variable": VENDOR, "value": "other"},
                    {"component_variable": HEARTBEAT, "value": "soon"},
                    {"component_variable": cv("NoSuchCtrlr", "X"), "value": "1"},
                ],
                "dashboard",
            )
            assert [r["status"] for r in results] == [
                "Accepted",
                "Rejected",
                "Rejected",
                "UnknownComponent",
            ]
            assert results[0] == {
                "status": "Accepted",
                "attribute_type": "Actual",
                "component_variable": HEARTBEAT,
            }
            read = await handle.call(
                call.GetVariables(
                    get_variable_data=[
                        {"component": HEARTBEAT["component"], "variable": HEARTBEAT["variable"]}
                    ]
                )
            )
            assert read.get_variable_result[0]["attribute_value"] == "77"
            assert rig.store.load_variables()["OCPPCommCtrlr.HeartbeatInterval"] == "77"

    run(scenario())


# change_availability --------------------------------------------------------------------


def test_change_availability_takes_the_csms_path_G03(tmp_path: Path) -> None:
    """Accepted → enable_disable on the EVSE; an unknown EVSE is Rejected (UnknownEvse);
    Inoperative during a transaction is Scheduled and waits for its end (G03.FR.05)."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await online(csms)
            generic = OcppGeneric(rig.bridge)
            answer = await generic.change_availability(
                {"operational_status": "Inoperative", "evse": {"id": 1}}
            )
            assert answer == {"status": "Accepted"}
            assert await rig.evse.calls.next() == ("enable", False)
            unknown = await generic.change_availability(
                {"operational_status": "Operative", "evse": {"id": 7}}
            )
            assert unknown == {"status": "Rejected", "status_info": {"reason_code": "UnknownEvse"}}
            rig.feed(dc_session_start())
            busy = await generic.change_availability({"operational_status": "Inoperative"})
            assert busy["status"] == "Scheduled"
            assert rig.bridge.evses[1].pending_availability is False

    run(scenario())


# monitor_variables → event_data -------------------------------------------------------------


def test_a_monitored_variable_changed_by_the_csms_is_published(tmp_path: Path) -> None:
    """ocpp.yaml monitor_variables/event_data: a CSMS SetVariables of a watched variable
    publishes its new value; repeated calls add to the watched set."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            generic = OcppGeneric(rig.bridge)
            generic.monitor_variables([HEARTBEAT])
            generic.monitor_variables([cv("TxCtrlr", "EVConnectionTimeOut")])
            await handle.call(
                call.SetVariables(
                    set_variable_data=[
                        {**HEARTBEAT, "attribute_value": "120"},
                        {**cv("TxCtrlr", "EVConnectionTimeOut"), "attribute_value": "45"},
                    ]
                )
            )
            first = await rig.events.wait("event_data")
            second = await rig.events.wait("event_data")
            assert first["component_variable"] == HEARTBEAT
            assert (first["actual_value"], first["trigger"]) == ("120", "Delta")
            assert first["tech_info"] == "set by CSMS"
            assert second["actual_value"] == "45"
            assert second["event_id"] == first["event_id"] + 1

    run(scenario())


def test_local_changes_are_published_and_unwatched_ones_are_not(tmp_path: Path) -> None:
    """A local set_variables of a watched variable publishes event_data naming its source;
    an unchanged value or an unwatched variable publishes nothing, and a WriteOnly value is
    never handed out."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await online(csms)
            generic = OcppGeneric(rig.bridge)
            generic.monitor_variables([HEARTBEAT, PASSWORD, cv("NoSuchCtrlr", "X")])
            generic.set_variables(
                [
                    {"component_variable": cv("TxCtrlr", "EVConnectionTimeOut"), "value": "33"},
                    {"component_variable": PASSWORD, "value": "a-long-password-0123"},
                    {"component_variable": HEARTBEAT, "value": "99"},
                ],
                "display",
            )
            published = rig.events.of("event_data")
            names = [e["component_variable"]["variable"]["name"] for e in published]
            assert "EVConnectionTimeOut" not in names
            password = next(e for e in published if e["component_variable"] == PASSWORD)
            assert password["actual_value"] == ""
            assert published[-1]["component_variable"] == HEARTBEAT
            assert published[-1]["actual_value"] == "99"
            assert published[-1]["tech_info"] == "set by display"
            count = len(published)
            generic.set_variables([{"component_variable": HEARTBEAT, "value": "99"}], "display")
            assert len(rig.events.of("event_data")) == count  # no change, no event

    run(scenario())


# security_event ------------------------------------------------------------------------------


def test_critical_security_events_go_to_the_csms_A04(tmp_path: Path) -> None:
    """ocpp.yaml security_event: every event is published as the security_event var; a
    critical one (by its flag, else by the OCPP appendix) becomes a
    SecurityEventNotification, a non-critical one does not."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await online(csms)
            generic = OcppGeneric(rig.bridge)
            generic.security_event({"type": "InvalidMessages", "info": "not sent"})
            generic.security_event({"type": "TamperDetectionActivated", "info": "lid open"})
            generic.security_event({"type": "VendorThing", "critical": True})
            first = await csms.wait_for("SecurityEventNotification", timeout=WAIT_S)
            await csms.wait_for(
                "SecurityEventNotification", lambda p: p["type"] == "VendorThing", timeout=WAIT_S
            )
            sent = csms.messages("SecurityEventNotification")
            assert [m["type"] for m in sent] == ["TamperDetectionActivated", "VendorThing"]
            assert payload_of(first["frame"])["techInfo"] == "lid open"
            published = rig.events.of("security_event")
            assert [e["type"] for e in published] == [
                "InvalidMessages",
                "TamperDetectionActivated",
                "VendorThing",
            ]
            assert all(e["timestamp"] for e in published)

    run(scenario())


def test_security_events_made_while_stopped_go_out_after_the_next_boot(tmp_path: Path) -> None:
    """A04: a critical event while there is no connection is held, then sent once the
    CSMS accepted the station again."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await online(csms)
            generic = OcppGeneric(rig.bridge)
            await rig.events.wait("is_connected", lambda v: v is True)
            generic.stop()
            await rig.events.wait("is_connected", lambda v: v is False)
            generic.security_event({"type": "ResetOrReboot", "info": "while offline"})
            mark = len(csms.frames)
            generic.restart()
            sent = await csms.wait_for("SecurityEventNotification", timeout=WAIT_S, after=mark)
            assert payload_of(sent["frame"])["techInfo"] == "while offline"
            boots = [
                i
                for i, e in enumerate(csms.frames)
                if i >= mark and "BootNotification" in str(e["frame"])
            ]
            assert boots
            assert boots[0] < csms.frames.index(sent)

    run(scenario())


# ocpp_transaction_event / ocpp_transaction_event_response -------------------------------------


def test_transaction_events_and_their_responses_are_published(tmp_path: Path) -> None:
    """ocpp.yaml ocpp_transaction_event(_response): each TransactionEvent made, with
    EvseManager's session id (our transaction id), and the CSMS's answer to it."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await online(csms)
            rig.feed(dc_session_start())
            started = await rig.events.wait("ocpp_transaction_event")
            assert started == {
                "transaction_event": "Started",
                "session_id": SESSION,
                "transaction_id": SESSION,
                "evse": {"id": 1, "connector_id": 1},
            }
            response = await rig.events.wait("ocpp_transaction_event_response")
            assert response["original_transaction_event"] == started
            updated = [e for e in rig.events.of("ocpp_transaction_event") if e != started]
            assert all(e["transaction_event"] == "Updated" for e in updated)

    run(scenario())
