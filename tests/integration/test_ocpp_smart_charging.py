"""Block K over real websockets: the demo CSMS sets, reads and clears profiles and asks for
composite schedules; the bridge pushes the composite to a (fake) EnergyNode."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call

from everkit.simulators.csms import DemoCsms, StationCallError, StationHandle, payload_of
from tests.integration.ocpp_harness import (
    SESSION,
    STATION,
    WAIT_S,
    FakeLimits,
    dc_session_end,
    dc_session_start,
    run,
    running_bridge,
    until,
)

# a 50 kW DC charger: both defaults must allow 50 kW (73 A x 230 V x 3 >= 50000 W), as the
# station total counts an EVSE without a limit as the default in each unit
DC_DEFAULT = {
    "SmartChargingCtrlr.CompositeScheduleDefaultLimitWatts": "50000",
    "SmartChargingCtrlr.CompositeScheduleDefaultLimitAmps": "73",
}


def tx_profile(
    limit_W: float, profile_id: int = 7, transaction_id: str = SESSION
) -> dict[str, Any]:
    return {
        "id": profile_id,
        "stack_level": 0,
        "charging_profile_purpose": "TxProfile",
        "charging_profile_kind": "Relative",
        "transaction_id": transaction_id,
        "charging_schedule": [
            {
                "id": 1,
                "charging_rate_unit": "W",
                "charging_schedule_period": [{"start_period": 0, "limit": limit_W}],
            }
        ],
    }


async def charging(csms: DemoCsms, rig: Any) -> StationHandle:
    await csms.wait_for("StatusNotification", timeout=WAIT_S)
    rig.feed(dc_session_start())
    await csms.wait_for("TransactionEvent", timeout=WAIT_S)
    return await csms.wait_station(STATION)


async def composite_W(handle: StationHandle, evse_id: int = 1) -> list[tuple[int, float]]:
    result = await handle.call(
        call.GetCompositeSchedule(duration=600, evse_id=evse_id, charging_rate_unit="W")
    )
    assert result.status == "Accepted"
    return [(p["start_period"], p["limit"]) for p in result.schedule["charging_schedule_period"]]


def test_a_tx_profile_sets_the_composite_and_reaches_the_energy_node_K01_K08(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms, overrides=DC_DEFAULT) as rig:
            sink = FakeLimits()
            rig.bridge.smart.sinks[1] = sink
            handle = await charging(csms, rig)
            assert await composite_W(handle) == [(0, 50000.0)]
            result = await handle.call(
                call.SetChargingProfile(evse_id=1, charging_profile=tx_profile(11000))
            )
            assert result.status == "Accepted"
            assert await composite_W(handle) == [(0, 11000.0)]
            while True:  # the push that follows the Set (earlier ones carry the default)
                _, limits = await sink.calls.next()
                leaves = limits["schedule_import"][0]["limits_to_leaves"]
                if leaves["total_power_W"]["value"] == 11000.0:
                    break
            assert leaves["total_power_W"]["source"] == "CSO"

    run(scenario())


def test_a_tx_profile_without_that_transaction_is_rejected_K01_FR_09(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            handle = await csms.wait_station(STATION)
            result = await handle.call(
                call.SetChargingProfile(evse_id=1, charging_profile=tx_profile(11000))
            )
            assert result.status == "Rejected"
            assert result.status_info["reason_code"] == "TxNotFound"
            assert rig.bridge.smart.profiles.all() == []

    run(scenario())


def test_get_clear_and_the_end_of_the_transaction_K09_K10_K02(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            handle = await charging(csms, rig)
            for profile_id in (7, 8):
                profile = {**tx_profile(11000, profile_id), "stack_level": profile_id}
                result = await handle.call(
                    call.SetChargingProfile(evse_id=1, charging_profile=profile)
                )
                assert result.status == "Accepted"
            index = len(csms.frames)
            result = await handle.call(
                call.GetChargingProfiles(
                    request_id=11, charging_profile={"charging_profile_purpose": "TxProfile"}
                )
            )
            assert result.status == "Accepted"
            report = payload_of(
                (await csms.wait_for("ReportChargingProfiles", timeout=WAIT_S, after=index))[
                    "frame"
                ]
            )
            assert report["requestId"] == 11
            assert report["tbc"] is False
            assert sorted(p["id"] for p in report["chargingProfile"]) == [7, 8]
            cleared = await handle.call(call.ClearChargingProfile(charging_profile_id=7))
            again = await handle.call(call.ClearChargingProfile(charging_profile_id=7))
            assert (cleared.status, again.status) == ("Accepted", "Unknown")
            rig.feed(dc_session_end())  # K02.FR.05: profile 8 goes with its transaction
            await until(lambda: rig.bridge.smart.profiles.all() == [])
            none = await handle.call(call.GetChargingProfiles(request_id=12, charging_profile={}))
            assert none.status == "NoProfiles"

    run(scenario())


def test_external_constraints_cannot_come_from_the_csms_K01_FR_22(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms):
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            handle = await csms.wait_station(STATION)
            profile = {
                **tx_profile(11000),
                "charging_profile_purpose": "ChargingStationExternalConstraints",
                "charging_profile_kind": "Absolute",
            }
            del profile["transaction_id"]
            profile["charging_schedule"][0]["start_schedule"] = "2024-01-01T00:00:00Z"
            result = await handle.call(call.SetChargingProfile(evse_id=0, charging_profile=profile))
            assert result.status == "Rejected"
            cleared = await handle.call(
                call.ClearChargingProfile(
                    charging_profile_criteria={
                        "charging_profile_purpose": "ChargingStationExternalConstraints"
                    }
                )
            )
            assert cleared.status == "Unknown"

    run(scenario())


def test_composite_requests_for_unknown_evse_or_unit_are_rejected_K08_FR_05_07(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        overrides = {"SmartChargingCtrlr.RateUnit": "W"}
        async with DemoCsms() as csms, running_bridge(tmp_path, csms, overrides=overrides):
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            handle = await csms.wait_station(STATION)
            unknown = await handle.call(call.GetCompositeSchedule(duration=60, evse_id=9))
            amps = await handle.call(
                call.GetCompositeSchedule(duration=60, evse_id=1, charging_rate_unit="A")
            )
            assert unknown.status_info["reason_code"] == "EvseDoesNotExist"
            assert amps.status_info["reason_code"] == "UnsupportedRateUnit"

    run(scenario())


def test_smart_charging_not_available_is_a_callerror_K01_FR_29(tmp_path: Path) -> None:
    async def scenario() -> None:
        overrides = {"SmartChargingCtrlr.Available": "false"}
        async with DemoCsms() as csms, running_bridge(tmp_path, csms, overrides=overrides) as rig:
            handle = await charging(csms, rig)
            with pytest.raises(StationCallError) as refused:
                await handle.call(
                    call.SetChargingProfile(evse_id=1, charging_profile=tx_profile(11000))
                )
            assert refused.value.code == "NotSupported"

    run(scenario())


def test_profiles_survive_a_bridge_restart(tmp_path: Path) -> None:
    max_profile = {
        "id": 3,
        "stack_level": 0,
        "charging_profile_purpose": "ChargingStationMaxProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": [
            {
                "id": 1,
                "start_schedule": "2024-01-01T00:00:00Z",
                "charging_rate_unit": "W",
                "charging_schedule_period": [{"start_period": 0, "limit": 40000.0}],
            }
        ],
    }

    async def scenario() -> None:
        async with DemoCsms() as csms:
            async with running_bridge(tmp_path, csms):
                await csms.wait_for("StatusNotification", timeout=WAIT_S)
                handle = await csms.wait_station(STATION)
                result = await handle.call(
                    call.SetChargingProfile(evse_id=0, charging_profile=max_profile)
                )
                assert result.status == "Accepted"
            index = len(csms.frames)
            async with running_bridge(tmp_path, csms, overrides=DC_DEFAULT):
                await csms.wait_for("StatusNotification", timeout=WAIT_S, after=index)
                handle = await csms.wait_station(STATION)
                assert await composite_W(handle, evse_id=0) == [(0, 40000.0)]

    run(scenario())


def test_a_period_boundary_pushes_the_next_limit(tmp_path: Path) -> None:
    """The pushed schedule carries both periods; at the boundary a push starts with the new
    one, so an EnergyNode that only looks at the first slot still follows."""

    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms, overrides=DC_DEFAULT) as rig:
            sink = FakeLimits()
            rig.bridge.smart.sinks[1] = sink
            handle = await charging(csms, rig)
            profile = tx_profile(11000)
            periods = profile["charging_schedule"][0]["charging_schedule_period"]
            periods.append({"start_period": 1, "limit": 5500.0})
            result = await handle.call(call.SetChargingProfile(evse_id=1, charging_profile=profile))
            assert result.status == "Accepted"
            firsts: list[float] = []
            while 5500.0 not in firsts:
                _, limits = await asyncio.wait_for(sink.calls.next(), WAIT_S)
                firsts.append(
                    limits["schedule_import"][0]["limits_to_leaves"]["total_power_W"]["value"]
                )
            assert 11000.0 in firsts

    run(scenario())


def test_a_remote_start_with_a_tx_profile_applies_it_to_that_transaction_K05(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms, overrides=DC_DEFAULT) as rig:
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            handle = await csms.wait_station(STATION)
            profile = tx_profile(7000, profile_id=21)
            del profile["transaction_id"]  # K05: the CSMS cannot know it yet
            result = await handle.call(
                call.RequestStartTransaction(
                    id_token={"id_token": "APP-1", "type": "Central"},
                    remote_start_id=99,
                    evse_id=1,
                    charging_profile=profile,
                )
            )
            assert result.status == "Accepted"
            await rig.tokens.calls.next()  # the token went to PyAuth
            remote = {
                "id_token": {"value": "APP-1", "type": "Central"},
                "authorization_type": "OCPP",
            }
            rig.feed(dc_session_start(token=remote))
            started = await csms.wait_for("TransactionEvent", timeout=WAIT_S)
            assert payload_of(started["frame"])["transactionInfo"]["remoteStartId"] == 99
            assert await composite_W(handle) == [(0, 7000.0)]
            (installed,) = rig.bridge.smart.profiles.all()
            assert installed.transaction_id == SESSION

    run(scenario())


def test_a_remote_start_with_an_invalid_profile_is_rejected_K05(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            handle = await csms.wait_station(STATION)
            profile = {**tx_profile(7000), "charging_profile_purpose": "TxDefaultProfile"}
            del profile["transaction_id"]
            result = await handle.call(
                call.RequestStartTransaction(
                    id_token={"id_token": "APP-1", "type": "Central"},
                    remote_start_id=98,
                    evse_id=1,
                    charging_profile=profile,
                )
            )
            assert result.status == "Rejected"
            assert rig.bridge.remote_profiles == {}

    run(scenario())
