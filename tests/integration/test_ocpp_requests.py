"""PyOCPP201's answers to CSMS requests (blocks B, E, F, G) and its CALLERRORs (OCPP-J 4.3),
over real websockets against the demo CSMS, with the EVerest side in memory.

The demo CSMS validates every CALL the station sends against the OCPP 2.0.1 schemas and every
CALLRESULT it receives (``StationHandle.call`` raises InvalidStationReply otherwise), so a
test that passes also says the payloads are well formed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call

from everkit.framework.definitions import Definitions
from everkit.framework.validation import SchemaCompiler
from everkit.ocpp201.ports import SystemPort
from everkit.simulators.csms import (
    CSMS_TO_STATION,
    DemoCsms,
    FrameEntry,
    StationCallError,
    StationHandle,
    payload_of,
)
from tests.integration.ocpp_harness import (
    STATION,
    WAIT_S,
    Calls,
    Rig,
    dc_session_end,
    dc_session_start,
    run,
    running_bridge,
    until,
)

CALLERROR = 4
REMOTE_TOKEN = {"id_token": "REMOTE0001", "type": "Central"}  # as the CSMS sends it
# what EvseManager reports once the provided token authorized the session
REMOTE_CARD = {
    "id_token": {"value": "REMOTE0001", "type": "Central"},
    "authorization_type": "OCPP",
    "request_id": 42,
}


# helpers ------------------------------------------------------------------------------


async def online(csms: DemoCsms, after: int = 0) -> StationHandle:
    """The station's connection once its boot was accepted and its connector reported."""
    await csms.wait_for("StatusNotification", timeout=WAIT_S, after=after)
    return await csms.wait_station(STATION)


def variable(
    component: str,
    name: str,
    *,
    instance: str | None = None,
    evse: int | None = None,
    connector: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A GetVariableData/SetVariableData entry (snake_case, as `ocpp` calls take them)."""
    where: dict[str, Any] = {"name": component}
    if evse is not None:
        where["evse"] = (
            {"id": evse} if connector is None else {"id": evse, "connector_id": connector}
        )
    what: dict[str, Any] = {"name": name}
    if instance is not None:
        what["instance"] = instance
    return {"component": where, "variable": what, **extra}


async def get_values(handle: StationHandle, *entries: dict[str, Any]) -> list[dict[str, Any]]:
    result = await handle.call(call.GetVariables(get_variable_data=list(entries)))
    return list(result.get_variable_result)


async def set_values(handle: StationHandle, *entries: dict[str, Any]) -> list[dict[str, Any]]:
    result = await handle.call(call.SetVariables(set_variable_data=list(entries)))
    return list(result.set_variable_result)


async def start_transaction(
    csms: DemoCsms, rig: Rig, token: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Feed a DC session up to energy transfer; the Started payload."""
    index = len(csms.frames)
    rig.feed(dc_session_start(token) if token is not None else dc_session_start())
    started = await csms.wait_for(
        "TransactionEvent", lambda p: p["eventType"] == "Started", timeout=WAIT_S, after=index
    )
    await until(lambda: not rig.store.pending())  # the CSMS has answered every event
    payload: dict[str, Any] = payload_of(started["frame"])
    return payload


async def ended_entry(csms: DemoCsms, index: int) -> FrameEntry:
    """The first TransactionEvent Ended at frame ``index`` or later."""
    return await csms.wait_for(
        "TransactionEvent", lambda p: p["eventType"] == "Ended", timeout=WAIT_S, after=index
    )


async def ended_after(csms: DemoCsms, index: int) -> dict[str, Any]:
    payload: dict[str, Any] = payload_of((await ended_entry(csms, index))["frame"])
    return payload


def csms_errors(csms: DemoCsms) -> list[Any]:
    """CALLERRORs the CSMS answered the station with (schema failures of its CALLs)."""
    return [
        entry["frame"]
        for entry in csms.frames
        if entry["dir"] == CSMS_TO_STATION
        and isinstance(entry["frame"], list)
        and entry["frame"][0] == CALLERROR
    ]


def index_of(csms: DemoCsms, entry: FrameEntry) -> int:
    return next(i for i, e in enumerate(csms.frames) if e is entry)


# 1. GetVariables (B06) -----------------------------------------------------------------


def test_get_variables_statuses_B06(tmp_path: Path) -> None:
    """B06: one result per requested variable, in order: Accepted with the value,
    UnknownComponent, UnknownVariable, NotSupportedAttributeType (only Actual exists), and
    Rejected for the WriteOnly SecurityCtrlr.BasicAuthPassword (a WriteOnly value is never
    returned)."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms):
            handle = await online(csms)
            results = await get_values(
                handle,
                variable("OCPPCommCtrlr", "HeartbeatInterval"),
                variable("OCPPCommCtrlr", "MessageTimeout", instance="Default"),
                variable("Connector", "ConnectorType", evse=1, connector=1),
                variable("NoSuchCtrlr", "Enabled"),
                variable("OCPPCommCtrlr", "NoSuchVariable"),
                variable("OCPPCommCtrlr", "HeartbeatInterval", attribute_type="Target"),
                variable("SecurityCtrlr", "BasicAuthPassword"),
                variable("EVSE", "Power", evse=2),
            )
            statuses = [r["attribute_status"] for r in results]
            assert statuses == [
                "Accepted",
                "Accepted",
                "Accepted",
                "UnknownComponent",
                "UnknownVariable",
                "NotSupportedAttributeType",
                "Rejected",
                "UnknownComponent",
            ]
            assert results[0]["attribute_value"] == "300"  # the boot's interval
            assert results[1]["attribute_value"] == "30"
            assert results[2]["attribute_value"] == "cCCS2"
            assert results[2]["component"] == {
                "name": "Connector",
                "evse": {"id": 1, "connector_id": 1},
            }
            assert results[5]["attribute_type"] == "Target"
            assert "attribute_value" not in results[6]

    run(scenario())


def test_get_variables_more_than_items_per_message_is_occurrence_violation_B06(
    tmp_path: Path,
) -> None:
    """B06: more entries than DeviceDataCtrlr.ItemsPerMessage(GetVariables) (20) → CALLERROR
    OccurrenceConstraintViolation; the connection stays usable."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms):
            handle = await online(csms)
            entries = [variable("OCPPCommCtrlr", "HeartbeatInterval")] * 21
            with pytest.raises(StationCallError) as refused:
                await get_values(handle, *entries)
            assert refused.value.code == "OccurrenceConstraintViolation"
            assert "ItemsPerMessage" in refused.value.description
            results = await get_values(handle, *entries[:20])
            assert {r["attribute_status"] for r in results} == {"Accepted"}

    run(scenario())


# 2. SetVariables (B05) -----------------------------------------------------------------


def test_set_variables_statuses_B05(tmp_path: Path) -> None:
    """B05: Accepted (and the new value is read back), Rejected ReadOnly, Rejected
    ValueOutOfRange (HeartbeatInterval below its minimum of 1), Rejected InvalidValue,
    RebootRequired for SecurityCtrlr.BasicAuthPassword, UnknownComponent/UnknownVariable."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            results = await set_values(
                handle,
                variable("SampledDataCtrlr", "TxUpdatedInterval", attribute_value="15"),
                variable("SecurityCtrlr", "Identity", attribute_value="OTHER"),
                variable("OCPPCommCtrlr", "HeartbeatInterval", attribute_value="0"),
                variable("AuthCtrlr", "AuthorizeRemoteStart", attribute_value="maybe"),
                variable("SecurityCtrlr", "BasicAuthPassword", attribute_value="0123456789abcdef"),
                variable("NoSuchCtrlr", "Enabled", attribute_value="true"),
                variable("AuthCtrlr", "NoSuchVariable", attribute_value="true"),
            )
            statuses = [r["attribute_status"] for r in results]
            assert statuses == [
                "Accepted",
                "Rejected",
                "Rejected",
                "Rejected",
                "RebootRequired",
                "UnknownComponent",
                "UnknownVariable",
            ]
            reasons = [r.get("attribute_status_info", {}).get("reason_code") for r in results]
            assert reasons[1:4] == ["ReadOnly", "ValueOutOfRange", "InvalidValue"]
            read = await get_values(
                handle,
                variable("SampledDataCtrlr", "TxUpdatedInterval"),
                variable("SecurityCtrlr", "Identity"),
                variable("OCPPCommCtrlr", "HeartbeatInterval"),
            )
            assert [r["attribute_value"] for r in read] == ["15", STATION, "300"]
            # the transaction core got the new interval at once
            assert rig.bridge.evses[1].tx.settings.updated_interval_s == 15
            assert rig.bridge.model.basic_auth_password() == "0123456789abcdef"

    run(scenario())


def test_set_variables_persist_across_a_restart_and_heartbeat_interval_takes_effect_B05(
    tmp_path: Path,
) -> None:
    """B05: accepted values are persistent. A HeartbeatInterval of 1 s makes the next
    Heartbeat come within about a second (G02); after the bridge is stopped and a new one is
    built on the same store folder, GetVariables returns the values set.

    This CSMS answers the boot with interval 0 (no heartbeat interval of its own), so that
    the restarted station's boot does not overwrite the HeartbeatInterval the test set."""

    async def scenario() -> None:
        async with DemoCsms(heartbeat_interval_s=0) as csms:
            async with running_bridge(tmp_path, csms):
                handle = await online(csms)
                results = await set_values(
                    handle,
                    variable("OCPPCommCtrlr", "HeartbeatInterval", attribute_value="1"),
                    variable("SampledDataCtrlr", "TxUpdatedInterval", attribute_value="15"),
                )
                assert [r["attribute_status"] for r in results] == ["Accepted", "Accepted"]
                index = len(csms.frames)
                await csms.wait_for("Heartbeat", timeout=2.0, after=index)
            restart = len(csms.frames)
            async with running_bridge(tmp_path, csms):
                handle = await online(csms, after=restart)
                read = await get_values(
                    handle,
                    variable("OCPPCommCtrlr", "HeartbeatInterval"),
                    variable("SampledDataCtrlr", "TxUpdatedInterval"),
                )
                assert [r["attribute_value"] for r in read] == ["1", "15"]

    run(scenario())


# 3. GetBaseReport (B07) ----------------------------------------------------------------


async def base_report(
    csms: DemoCsms, handle: StationHandle, kind: str, request_id: int
) -> list[dict[str, Any]]:
    """Ask for a report; its NotifyReport payloads, in order, up to the one with tbc false."""
    index = len(csms.frames)
    result = await handle.call(call.GetBaseReport(request_id=request_id, report_base=kind))
    assert result.status == "Accepted"
    await csms.wait_for(
        "NotifyReport",
        lambda p: p["requestId"] == request_id and not p["tbc"],
        timeout=WAIT_S,
        after=index,
    )
    return [p for p in csms.messages("NotifyReport") if p["requestId"] == request_id]


def components_of(reports: list[dict[str, Any]]) -> set[str]:
    return {item["component"]["name"] for p in reports for item in p.get("reportData", [])}


def test_get_base_report_full_inventory_B07(tmp_path: Path) -> None:
    """B07: Accepted, then NotifyReport with seqNo 0..n, tbc true on all but the last, at most
    ItemsPerMessage(GetReport) items each; the FullInventory holds the EVSE and connector
    components and the controllers a CSMS provisions; the CSMS took every payload (it
    validates them against the schema)."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            reports = await base_report(csms, handle, "FullInventory", 7)
            assert [p["seqNo"] for p in reports] == list(range(len(reports)))
            assert len(reports) > 1
            assert [p["tbc"] for p in reports] == [True] * (len(reports) - 1) + [False]
            assert all(len(p["reportData"]) <= 20 for p in reports)
            assert {
                "EVSE",
                "Connector",
                "SmartChargingCtrlr",
                "OCPPCommCtrlr",
                "TxCtrlr",
            } <= components_of(reports)
            items = [item for p in reports for item in p["reportData"]]
            assert len(items) == len(rig.bridge.model.definitions())
            by_key = {(i["component"]["name"], i["variable"]["name"]): i for i in items}
            evse = by_key[("EVSE", "AvailabilityState")]
            assert evse["component"]["evse"] == {"id": 1}
            password = by_key[("SecurityCtrlr", "BasicAuthPassword")]
            assert "value" not in password["variableAttribute"][0]  # WriteOnly
            clock = by_key[("ClockCtrlr", "DateTime")]
            assert clock["variableAttribute"][0]["value"].endswith("Z")
            assert csms_errors(csms) == []

    run(scenario())


def test_get_base_report_configuration_and_summary_inventory_B07(tmp_path: Path) -> None:
    """B07: ConfigurationInventory reports only variables a CSMS may set (no ReadOnly ones);
    SummaryInventory the availability of the station, its EVSEs and connectors."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms):
            handle = await online(csms)
            config = await base_report(csms, handle, "ConfigurationInventory", 8)
            assert [p["seqNo"] for p in config] == list(range(len(config)))
            assert config[-1]["tbc"] is False
            mutabilities = {
                a["mutability"]
                for p in config
                for item in p["reportData"]
                for a in item["variableAttribute"]
            }
            assert mutabilities <= {"ReadWrite", "WriteOnly"}
            assert {"OCPPCommCtrlr", "TxCtrlr", "SampledDataCtrlr"} <= components_of(config)

            summary = await base_report(csms, handle, "SummaryInventory", 9)
            assert [p["tbc"] for p in summary] == [True] * (len(summary) - 1) + [False]
            pairs = {
                (item["component"]["name"], item["variable"]["name"])
                for p in summary
                for item in p["reportData"]
            }
            assert pairs == {
                (c, v)
                for c in ("ChargingStation", "EVSE", "Connector")
                for v in ("Available", "AvailabilityState")
            }
            assert csms_errors(csms) == []

    run(scenario())


# 4. Reset (B11 / B12) ------------------------------------------------------------------


def test_reset_immediate_ends_the_transaction_then_boots_remote_reset_B11(tmp_path: Path) -> None:
    """B11/B12: an Immediate Reset during a transaction → Accepted, TransactionEvent Ended
    (triggerReason ResetCommand, stoppedReason ImmediateReset) before the station goes down,
    the EVSE is told to stop; without a system module the bridge reconnects and boots with
    reason RemoteReset."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            started = await start_transaction(csms, rig)
            index = len(csms.frames)
            result = await handle.call(call.Reset(type="Immediate"))
            assert result.status == "Accepted"
            entry = await ended_entry(csms, index)
            ended = payload_of(entry["frame"])
            assert ended["triggerReason"] == "ResetCommand"
            assert ended["transactionInfo"]["stoppedReason"] == "ImmediateReset"
            assert (
                ended["transactionInfo"]["transactionId"]
                == started["transactionInfo"]["transactionId"]
            )
            assert await rig.evse.calls.next() == ("stop_transaction", "HardReset")
            boot = await csms.wait_for("BootNotification", timeout=WAIT_S, after=index)
            assert payload_of(boot["frame"])["reason"] == "RemoteReset"
            assert index_of(csms, entry) < index_of(csms, boot)

    run(scenario())


def test_reset_with_a_system_module_asks_it_to_reset_B11(tmp_path: Path) -> None:
    """B11: with a system module connected, restarting is its job: system.reset(immediate)
    is called once the Ended has been delivered, and the next boot will say RemoteReset."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            system = EventsAtReset(csms)
            rig.bridge.system = system
            handle = await online(csms)
            await start_transaction(csms, rig)
            result = await handle.call(call.Reset(type="Immediate"))
            assert result.status == "Accepted"
            _, immediate, events = await system.calls.next()
            assert immediate is True
            assert events[-1] == "Ended"  # delivered before the system went down
            assert rig.store.get_meta("boot_reason") == "RemoteReset"
            assert rig.store.pending() == []

    run(scenario())


class EventsAtReset(SystemPort):
    """A system module that notes which TransactionEvents the CSMS had when it was asked to
    reset (it is called from a worker thread; the list is only read)."""

    def __init__(self, csms: DemoCsms) -> None:
        self.csms = csms
        self.calls = Calls()

    def reset(self, immediate: bool) -> bool:
        seen = [m["eventType"] for m in self.csms.messages("TransactionEvent")]
        self.calls.add("reset", immediate, seen)
        return True


def test_reset_on_idle_waits_for_the_transaction_B12(tmp_path: Path) -> None:
    """B12: an OnIdle Reset during a transaction → Scheduled; the transaction is not ended by
    it, and the reset happens once the transaction has ended."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            system = EventsAtReset(csms)
            rig.bridge.system = system
            handle = await online(csms)
            await start_transaction(csms, rig)
            result = await handle.call(call.Reset(type="OnIdle"))
            assert result.status == "Scheduled"
            await handle.call(call.GetTransactionStatus())  # a round trip for the after hook
            assert system.calls.all == []
            assert rig.evse.calls.all == []
            index = len(csms.frames)
            rig.feed(dc_session_end())
            ended = await ended_after(csms, index)
            assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
            _, immediate, events = await system.calls.next()
            assert immediate is False
            assert events[-1] == "Ended"

    run(scenario())


def test_reset_on_idle_without_transaction_reconnects_B12(tmp_path: Path) -> None:
    """B12: OnIdle with nothing running → Accepted and the station resets at once (here: a
    new boot with reason RemoteReset)."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms):
            handle = await online(csms)
            index = len(csms.frames)
            result = await handle.call(call.Reset(type="OnIdle"))
            assert result.status == "Accepted"
            boot = await csms.wait_for("BootNotification", timeout=WAIT_S, after=index)
            assert payload_of(boot["frame"])["reason"] == "RemoteReset"

    run(scenario())


def test_reset_reconnect_while_an_answer_arrives_B11(tmp_path: Path) -> None:
    """B11/B12: the reconnect that restarts the OCPP connection after a Reset (no system
    module) must happen even when the answer to one of the station's CALLs arrives at that
    moment. The frame hook reconnects exactly when the Heartbeat's answer comes in."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:

            def reconnect_on_heartbeat_answer(direction: str, raw: str) -> None:
                frame = json.loads(raw)
                if direction == "in" and frame[0] == 3 and set(frame[2]) == {"currentTime"}:
                    rig.bridge.reconnect()

            rig.bridge.frame_log = reconnect_on_heartbeat_answer  # before the first connect
            await online(csms)
            index = len(csms.frames)
            rig.bridge.send_live("Heartbeat", {})
            reconnected = False
            try:
                await csms.wait_for("BootNotification", timeout=2.0, after=index)
                reconnected = True
            finally:
                if not reconnected:
                    rig.task.cancel()  # it would hang stop() for 10 s too

    run(scenario())


def test_reset_of_one_evse_is_rejected_B11(tmp_path: Path) -> None:
    """B11/B12: resetting a single EVSE is not supported → Rejected, nothing happens."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms, system=True) as rig:
            assert rig.system is not None
            handle = await online(csms)
            result = await handle.call(call.Reset(type="Immediate", evse_id=1))
            assert result.status == "Rejected"
            await handle.call(call.GetTransactionStatus())
            assert rig.system.calls.all == []

    run(scenario())


# 5. ChangeAvailability (G03) -----------------------------------------------------------


def test_change_availability_without_transaction_G03(tmp_path: Path) -> None:
    """G03: Inoperative with no transaction → Accepted and the EVSE is disabled; Operative →
    Accepted and enabled again; the whole station (no evse) addresses every EVSE."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            result = await handle.call(
                call.ChangeAvailability(operational_status="Inoperative", evse={"id": 1})
            )
            assert result.status == "Accepted"
            assert await rig.evse.calls.next() == ("enable", False)
            result = await handle.call(call.ChangeAvailability(operational_status="Operative"))
            assert result.status == "Accepted"
            assert await rig.evse.calls.next() == ("enable", True)

    run(scenario())


def test_change_availability_during_transaction_is_scheduled_G03(tmp_path: Path) -> None:
    """G03: Inoperative while a transaction runs → Scheduled; the EVSE is disabled only after
    the transaction has ended."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            await start_transaction(csms, rig)
            result = await handle.call(
                call.ChangeAvailability(operational_status="Inoperative", evse={"id": 1})
            )
            assert result.status == "Scheduled"
            await handle.call(call.GetTransactionStatus())  # a round trip for the after hook
            assert rig.evse.calls.all == []
            index = len(csms.frames)
            rig.feed(dc_session_end())
            await ended_after(csms, index)
            assert await rig.evse.calls.next() == ("enable", False)

    run(scenario())


def test_change_availability_of_unknown_evse_is_rejected_G03(tmp_path: Path) -> None:
    """G03: an EVSE (or connector) the station does not have → Rejected."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            for evse in ({"id": 2}, {"id": 1, "connector_id": 2}):
                result = await handle.call(
                    call.ChangeAvailability(operational_status="Inoperative", evse=evse)
                )
                assert result.status == "Rejected"
            await handle.call(call.GetTransactionStatus())
            assert rig.evse.calls.all == []

    run(scenario())


# 6. TriggerMessage (F06) ---------------------------------------------------------------


def test_trigger_heartbeat_and_status_notification_F06(tmp_path: Path) -> None:
    """F06: Heartbeat → Accepted and a Heartbeat follows; StatusNotification for EVSE 1
    connector 1 → Accepted and its StatusNotification follows; StatusNotification without
    a connector → Rejected (F06.FR.12)."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            index = len(csms.frames)
            rig.bridge.on_ready(1)  # EvseManager is up: the connector becomes Available
            await csms.wait_for("StatusNotification", timeout=WAIT_S, after=index)
            index = len(csms.frames)
            result = await handle.call(call.TriggerMessage(requested_message="Heartbeat"))
            assert result.status == "Accepted"
            await csms.wait_for("Heartbeat", timeout=WAIT_S, after=index)

            index = len(csms.frames)
            result = await handle.call(
                call.TriggerMessage(
                    requested_message="StatusNotification", evse={"id": 1, "connector_id": 1}
                )
            )
            assert result.status == "Accepted"
            status = await csms.wait_for("StatusNotification", timeout=WAIT_S, after=index)
            assert payload_of(status["frame"])["evseId"] == 1
            assert payload_of(status["frame"])["connectorId"] == 1
            assert payload_of(status["frame"])["connectorStatus"] == "Available"

            for evse in (
                None,
                {"id": 1},
                {"id": 1, "connector_id": 2},
                {"id": 2, "connector_id": 1},
            ):
                result = await handle.call(
                    call.TriggerMessage(requested_message="StatusNotification", evse=evse)
                )
                assert result.status == "Rejected", evse

    run(scenario())


def test_trigger_boot_notification_after_accepted_is_rejected_F06(tmp_path: Path) -> None:
    """F06.FR.17: a BootNotification trigger once the boot was Accepted → Rejected, and no
    BootNotification follows."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms):
            handle = await online(csms)
            result = await handle.call(call.TriggerMessage(requested_message="BootNotification"))
            assert result.status == "Rejected"
            await handle.call(call.TriggerMessage(requested_message="Heartbeat"))
            await csms.wait_for("Heartbeat", timeout=WAIT_S)
            assert len(csms.messages("BootNotification")) == 1

    run(scenario())


def test_trigger_boot_notification_while_pending_F06(tmp_path: Path) -> None:
    """F06 with B02: while the boot is Pending, a BootNotification trigger → Accepted and a
    BootNotification with reason Triggered follows on the same connection."""

    async def scenario() -> None:
        pending = DemoCsms(boot_responses=("Pending",), boot_interval=60)
        async with pending as csms, running_bridge(tmp_path, csms) as rig:
            await until(lambda: rig.bridge.registration == "Pending")
            handle = await csms.wait_station(STATION)
            index = len(csms.frames)
            trigger = call.TriggerMessage(requested_message="BootNotification")
            result = await handle.call(trigger, timeout=2.0)
            assert result.status == "Accepted"
            boot = await csms.wait_for("BootNotification", timeout=2.0, after=index)
            assert payload_of(boot["frame"])["reason"] == "Triggered"
            assert handle.connected

    run(scenario())


def test_trigger_transaction_event_F06(tmp_path: Path) -> None:
    """F06: TransactionEvent without a transaction → Rejected; with one → Accepted and an
    Updated with triggerReason Trigger for that transaction follows."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            result = await handle.call(
                call.TriggerMessage(requested_message="TransactionEvent", evse={"id": 1})
            )
            assert result.status == "Rejected"
            started = await start_transaction(csms, rig)
            index = len(csms.frames)
            result = await handle.call(
                call.TriggerMessage(requested_message="TransactionEvent", evse={"id": 1})
            )
            assert result.status == "Accepted"
            updated = await csms.wait_for(
                "TransactionEvent",
                lambda p: p["triggerReason"] == "Trigger",
                timeout=WAIT_S,
                after=index,
            )
            payload = payload_of(updated["frame"])
            assert payload["eventType"] == "Updated"
            assert (
                payload["transactionInfo"]["transactionId"]
                == started["transactionInfo"]["transactionId"]
            )

    run(scenario())


def test_trigger_of_an_unsupported_message_is_not_implemented_F06(tmp_path: Path) -> None:
    """F06: a message the station cannot trigger (LogStatusNotification: no GetLog here) →
    NotImplemented."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms):
            handle = await online(csms)
            result = await handle.call(
                call.TriggerMessage(requested_message="LogStatusNotification")
            )
            assert result.status == "NotImplemented"

    run(scenario())


# 7. RequestStartTransaction / RequestStopTransaction (F01 / F03) -----------------------

PROVIDED_ID_TOKEN = SchemaCompiler(Definitions.from_dirs()).compile(
    {"$ref": "/authorization#/ProvidedIdToken"}, "auth_token_provider provided_token", "token"
)


def test_request_start_transaction_F01(tmp_path: Path) -> None:
    """F01: RequestStartTransaction → Accepted; the token goes to EVerest as a
    ProvidedIdToken (authorization_type OCPP, request_id = remoteStartId, the EVSE's
    connector, prevalidated because AuthCtrlr.AuthorizeRemoteStart is false, F01.FR.02);
    the Started that follows says RemoteStart and carries the remoteStartId."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            result = await handle.call(
                call.RequestStartTransaction(id_token=REMOTE_TOKEN, remote_start_id=42, evse_id=1)
            )
            assert result.status == "Accepted"
            kind, token = await rig.tokens.calls.next()
            assert kind == "provide"
            PROVIDED_ID_TOKEN(token)
            assert token == {
                "request_id": 42,
                "id_token": {"value": "REMOTE0001", "type": "Central"},
                "authorization_type": "OCPP",
                "connectors": [1],
                "prevalidated": True,
            }
            started = await start_transaction(csms, rig, REMOTE_CARD)
            assert started["triggerReason"] == "RemoteStart"
            assert started["transactionInfo"]["remoteStartId"] == 42
            assert started["idToken"] == {"idToken": "REMOTE0001", "type": "Central"}

    run(scenario())


def test_local_start_after_an_unused_remote_start_is_not_remote_F01(tmp_path: Path) -> None:
    """F01: remoteStartId and triggerReason RemoteStart belong to the transaction the
    RequestStartTransaction started. When its authorization lapsed unused (nobody plugged
    in) and a card starts the next session, the Started is not a remote start."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            result = await handle.call(
                call.RequestStartTransaction(id_token=REMOTE_TOKEN, remote_start_id=42, evse_id=1)
            )
            assert result.status == "Accepted"
            await rig.tokens.calls.next()
            started = await start_transaction(csms, rig)  # the RFID card of the harness
            assert started["idToken"] == {"idToken": "CAFE0001", "type": "ISO14443"}
            assert started["triggerReason"] != "RemoteStart"
            assert "remoteStartId" not in started["transactionInfo"]

    run(scenario())


def test_request_start_transaction_when_authorize_remote_start_F01(tmp_path: Path) -> None:
    """F01.FR.01: with AuthCtrlr.AuthorizeRemoteStart true the token must still be
    authorized, so it goes to EVerest not prevalidated."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            results = await set_values(
                handle, variable("AuthCtrlr", "AuthorizeRemoteStart", attribute_value="true")
            )
            assert results[0]["attribute_status"] == "Accepted"
            result = await handle.call(
                call.RequestStartTransaction(id_token=REMOTE_TOKEN, remote_start_id=43)
            )
            assert result.status == "Accepted"
            _, token = await rig.tokens.calls.next()
            PROVIDED_ID_TOKEN(token)
            assert token["prevalidated"] is False
            assert token["request_id"] == 43
            assert "connectors" not in token  # no EVSE named: any connector

    run(scenario())


def test_request_start_transaction_rejected_F01(tmp_path: Path) -> None:
    """F01: an unknown EVSE → Rejected; an EVSE with an authorized transaction → Rejected;
    no token is provided to EVerest for either."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            result = await handle.call(
                call.RequestStartTransaction(id_token=REMOTE_TOKEN, remote_start_id=1, evse_id=2)
            )
            assert result.status == "Rejected"
            await start_transaction(csms, rig)
            result = await handle.call(
                call.RequestStartTransaction(id_token=REMOTE_TOKEN, remote_start_id=2, evse_id=1)
            )
            assert result.status == "Rejected"
            await handle.call(call.GetTransactionStatus())
            assert rig.tokens.calls.all == []

    run(scenario())


def test_request_stop_transaction_F03(tmp_path: Path) -> None:
    """F03: RequestStopTransaction for the running transaction → Accepted, the EVSE is told
    to stop (reason Remote); the Ended says RemoteStop / Remote. An unknown transaction id →
    Rejected."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            result = await handle.call(call.RequestStopTransaction(transaction_id="no-such-tx"))
            assert result.status == "Rejected"
            started = await start_transaction(csms, rig)
            tx_id = started["transactionInfo"]["transactionId"]
            result = await handle.call(call.RequestStopTransaction(transaction_id=tx_id))
            assert result.status == "Accepted"
            assert await rig.evse.calls.next() == ("stop_transaction", "Remote")
            index = len(csms.frames)
            rig.feed(dc_session_end(reason="Remote"))
            ended = await ended_after(csms, index)
            assert ended["triggerReason"] == "RemoteStop"
            assert ended["transactionInfo"]["stoppedReason"] == "Remote"
            assert ended["transactionInfo"]["transactionId"] == tx_id

    run(scenario())


# 8. UnlockConnector (F05) --------------------------------------------------------------


def test_unlock_connector_F05(tmp_path: Path) -> None:
    """F05: Unlocked when the EVSE unlocks, UnlockFailed when it cannot, UnknownConnector for
    a connector the station does not have, without asking the EVSE."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            result = await handle.call(call.UnlockConnector(evse_id=1, connector_id=1))
            assert result.status == "Unlocked"
            assert await rig.evse.calls.next() == ("force_unlock", 1)
            rig.evse.unlock_result = False
            result = await handle.call(call.UnlockConnector(evse_id=1, connector_id=1))
            assert result.status == "UnlockFailed"
            assert await rig.evse.calls.next() == ("force_unlock", 1)
            for evse_id, connector_id in ((2, 1), (1, 2)):
                result = await handle.call(
                    call.UnlockConnector(evse_id=evse_id, connector_id=connector_id)
                )
                assert result.status == "UnknownConnector"
            assert len(rig.evse.calls.all) == 2

    run(scenario())


def test_unlock_connector_during_authorized_transaction_F05(tmp_path: Path) -> None:
    """F05.FR.02: an authorized transaction on the connector → OngoingAuthorizedTransaction,
    and the connector stays locked (the EVSE is not asked)."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await online(csms)
            await start_transaction(csms, rig)
            result = await handle.call(call.UnlockConnector(evse_id=1, connector_id=1))
            assert result.status == "OngoingAuthorizedTransaction"
            assert rig.evse.calls.all == []

    run(scenario())


# 9. GetTransactionStatus (E14) ---------------------------------------------------------


def test_get_transaction_status_E14(tmp_path: Path) -> None:
    """E14: without transactionId only messagesInQueue is answered (E14.FR.06); for the
    running transaction ongoingIndicator is true (E14.FR.02), for an ended or unknown one
    false (E14.FR.03); messagesInQueue is true while a TransactionEvent of that transaction
    still waits for delivery (E14.FR.04: here the CSMS refused the first attempt and the
    retry is a second away) and false once it was delivered (E14.FR.05)."""

    async def scenario() -> None:
        retry_in_1_s = {"OCPPCommCtrlr.MessageAttemptInterval(TransactionEvent)": "1"}
        async with (
            DemoCsms() as csms,
            running_bridge(tmp_path, csms, overrides=retry_in_1_s) as rig,
        ):
            handle = await online(csms)
            result = await handle.call(call.GetTransactionStatus())
            assert result.messages_in_queue is False
            assert result.ongoing_indicator is None
            started = await start_transaction(csms, rig)
            tx_id = started["transactionInfo"]["transactionId"]
            result = await handle.call(call.GetTransactionStatus(transaction_id=tx_id))
            assert (result.ongoing_indicator, result.messages_in_queue) == (True, False)
            result = await handle.call(call.GetTransactionStatus(transaction_id="no-such-tx"))
            assert (result.ongoing_indicator, result.messages_in_queue) == (False, False)

            csms.reply_with_error["TransactionEvent"] = ("InternalError", "try again", 1)
            index = len(csms.frames)
            result = await handle.call(call.TriggerMessage(requested_message="TransactionEvent"))
            assert result.status == "Accepted"
            first = await csms.wait_for("TransactionEvent", timeout=WAIT_S, after=index)
            result = await handle.call(call.GetTransactionStatus(transaction_id=tx_id))
            assert (result.ongoing_indicator, result.messages_in_queue) == (True, True)
            result = await handle.call(call.GetTransactionStatus())
            assert (result.ongoing_indicator, result.messages_in_queue) == (None, True)
            result = await handle.call(call.GetTransactionStatus(transaction_id="no-such-tx"))
            assert result.messages_in_queue is False
            retry = await csms.wait_for(
                "TransactionEvent", timeout=WAIT_S, after=index_of(csms, first) + 1
            )
            assert payload_of(retry["frame"]) == payload_of(first["frame"])
            await until(lambda: not rig.store.pending())
            result = await handle.call(call.GetTransactionStatus(transaction_id=tx_id))
            assert (result.ongoing_indicator, result.messages_in_queue) == (True, False)

            index = len(csms.frames)
            rig.feed(dc_session_end())
            await ended_after(csms, index)
            await until(lambda: not rig.store.pending())
            result = await handle.call(call.GetTransactionStatus(transaction_id=tx_id))
            assert (result.ongoing_indicator, result.messages_in_queue) == (False, False)

    run(scenario())


# 10. CALLERRORs (OCPP-J 2.0.1 section 4.3) ----------------------------------------------

CALLERROR_CASES = [
    pytest.param(
        "this is not json", "-1", "RpcFrameworkError", "", "", id="not-json-RpcFrameworkError"
    ),
    pytest.param(
        json.dumps([7, "m-type", "Reset", {"type": "Immediate"}]),
        "m-type",
        "MessageTypeNotSupported",
        "",
        "",
        id="message-type-MessageTypeNotSupported",
    ),
    pytest.param(
        json.dumps([2, "m-missing", "Reset", {}]),
        "m-missing",
        "OccurrenceConstraintViolation",
        "Reset",
        "type",
        id="missing-field-OccurrenceConstraintViolation",
    ),
    pytest.param(
        json.dumps([2, "m-type-violation", "Reset", {"type": 1}]),
        "m-type-violation",
        "TypeConstraintViolation",
        "Reset",
        "type",
        id="wrong-type-TypeConstraintViolation",
    ),
    pytest.param(
        json.dumps([2, "m-enum", "Reset", {"type": "Sometime"}]),
        "m-enum",
        "PropertyConstraintViolation",
        "Reset",
        "type",
        id="bad-enum-PropertyConstraintViolation",
    ),
    pytest.param(
        json.dumps(
            [
                2,
                "m-long",
                "GetVariables",
                {"getVariableData": [{"component": {"name": "X" * 51}, "variable": {"name": "Y"}}]},
            ]
        ),
        "m-long",
        "PropertyConstraintViolation",
        "GetVariables",
        "getVariableData.0.component.name",
        id="too-long-PropertyConstraintViolation",
    ),
    pytest.param(
        json.dumps([2, "m-extra", "Reset", {"type": "Immediate", "when": "now"}]),
        "m-extra",
        "FormatViolation",
        "Reset",
        "when",
        id="extra-property-FormatViolation",
    ),
    pytest.param(
        json.dumps([2, "m-unknown", "MakeCoffee", {}]),
        "m-unknown",
        "NotImplemented",
        "MakeCoffee",
        "",
        id="unknown-action-NotImplemented",
    ),
    pytest.param(
        json.dumps(
            [
                2,
                "m-reserve",
                "ReserveNow",
                {
                    "id": 1,
                    "expiryDateTime": "2030-01-01T00:00:00.000Z",
                    "idToken": {"idToken": "A", "type": "Central"},
                },
            ]
        ),
        "m-reserve",
        "NotSupported",
        "ReserveNow",
        "",
        id="unsupported-action-NotSupported",
    ),
]


@pytest.mark.parametrize(("frame", "message_id", "code", "action", "field"), CALLERROR_CASES)
def test_callerror_codes_OCPP_J_4_3(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    frame: str,
    message_id: str,
    code: str,
    action: str,
    field: str,
) -> None:
    """OCPP-J 2.0.1 section 4.3: each malformed or unwanted CALL gets the CALLERROR code the
    spec names for it (message id "-1" when it cannot be read), the log names the message and
    the field, and the connection keeps working."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms):
            handle = await online(csms)
            index = await handle.send_raw(frame)
            reply = await handle.next_frame(
                lambda e: isinstance(e["frame"], list) and e["frame"][0] == CALLERROR,
                timeout=WAIT_S,
                after=index,
            )
            error = reply["frame"]
            assert len(error) == 5
            assert error[1] == message_id
            assert error[2] == code
            assert isinstance(error[3], str)
            assert isinstance(error[4], dict)
            if field:
                assert error[4].get("field") == field
            results = await get_values(handle, variable("OCPPCommCtrlr", "HeartbeatInterval"))
            assert results[0]["attribute_status"] == "Accepted"
            assert handle.connected

    with caplog.at_level(logging.WARNING, logger="PyOCPP201"):
        run(scenario())
    lines = [
        r.getMessage() for r in caplog.records if r.name == "PyOCPP201" and code in r.getMessage()
    ]
    assert lines, caplog.text
    if action:
        assert any(action in line for line in lines), lines
    if field:
        assert any(field in line for line in lines), lines
    assert any(message_id in line for line in lines), lines
