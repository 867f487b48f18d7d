"""The transaction core (block E): EvseManager's DC session events in, TransactionEvent
payloads out. Every payload is checked against the ocpp package's TransactionEventRequest
schema by the Run helper."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from everkit.ocpp201.timestamps import TimestampError, wire_timestamp
from everkit.ocpp201.transactions import (
    STOPPED_REASON,
    TRIGGER_FOR_REASON,
    EvseTransactions,
    TransactionError,
    TxSettings,
)
from tests.unit.ocpp_tx_helpers import (
    SESSION,
    T0,
    Run,
    powermeter,
    provided_token,
    summary,
    validator,
)

REPO = Path(__file__).resolve().parents[2]
ALL_MEASURANDS = (
    "Energy.Active.Import.Register",
    "Power.Active.Import",
    "Current.Import",
    "Voltage",
    "SoC",
    "Current.Offered",
    "Power.Offered",
)


def info(payload: dict[str, Any]) -> dict[str, Any]:
    return payload["transactionInfo"]


# full sessions ---------------------------------------------------------------------------


def test_default_points_start_at_power_path_closed_and_end_at_local_stop() -> None:
    """E01 with TxStartPoint PowerPathClosed, TxStopPoint EVConnected,Authorized (E06);
    E07: a local stop by token ends with StopAuthorized / Local and the stop token."""
    run = Run.make()
    assert run.plug_in() == []
    assert run.authorize() == []
    assert not run.tx.active
    assert run.tx.authorized

    started, charging = run.charge()
    assert summary([started, charging]) == [
        ("Started", "ChargingStateChanged", 0),
        ("Updated", "ChargingStateChanged", 1),
    ]
    assert info(started) == {"transactionId": SESSION, "chargingState": "EVConnected"}
    assert started["evse"] == {"id": 1, "connectorId": 1}
    assert started["idToken"] == {"idToken": "CAFE0001", "type": "ISO14443"}
    assert started["meterValue"][0]["sampledValue"] == [
        {
            "value": 1000,
            "context": "Transaction.Begin",
            "measurand": "Energy.Active.Import.Register",
            "unitOfMeasure": {"unit": "Wh"},
        }
    ]
    assert info(charging) == {"transactionId": SESSION, "chargingState": "Charging"}
    assert "evse" not in charging
    assert "idToken" not in charging

    stopping = run.event("StoppingCharging")
    assert run.event("ChargingFinished") == []
    ended = run.finish("Local")
    assert summary(stopping + ended) == [
        ("Updated", "ChargingStateChanged", 2),
        ("Ended", "StopAuthorized", 3),
    ]
    assert info(ended[0]) == {
        "transactionId": SESSION,
        "chargingState": "EVConnected",
        "stoppedReason": "Local",
    }
    assert ended[0]["idToken"] == {"idToken": "CAFE0001", "type": "ISO14443"}
    assert ended[0]["meterValue"][0]["sampledValue"][0]["value"] == 5000
    assert ended[0]["meterValue"][0]["sampledValue"][0]["context"] == "Transaction.End"
    assert run.unplug() == []
    assert not run.tx.active
    assert run.tx.transaction_id is None


def test_unplug_while_charging_ends_with_ev_communication_lost() -> None:
    """E06 TxStopPoint EVConnected: an unplugged cable is EVCommunicationLost / EVDisconnected
    (EVDeparted is the parking-bay detector's trigger), and the vehicle is gone: Idle."""
    run = Run.make()
    run.plug_in()
    run.authorize()
    run.charge()
    # PyEvseManager on CP state A: the energy stops, then the transaction finishes
    stopped = run.event("ChargingFinished")
    ended = run.finish("EVDisconnected", token=False)
    assert summary(stopped + ended) == [
        ("Updated", "ChargingStateChanged", 2),
        ("Ended", "EVCommunicationLost", 3),
    ]
    assert info(ended[0])["stoppedReason"] == "EVDisconnected"
    assert info(ended[0])["chargingState"] == "Idle"
    assert "idToken" not in ended[0]
    assert run.unplug() == []


def test_start_at_ev_connected_reports_the_token_when_it_arrives() -> None:
    """E02 (cable plug-in first, TxStartPoint EVConnected): Started CablePluggedIn without a
    token; the token follows once in an Updated with triggerReason Authorized (E03.FR.01)."""
    run = Run.make(tx_start_points=frozenset({"EVConnected"}))
    started = run.plug_in()
    assert summary(started) == [("Started", "CablePluggedIn", 0)]
    assert info(started[0])["chargingState"] == "EVConnected"
    assert "idToken" not in started[0]
    assert started[0]["evse"] == {"id": 1, "connectorId": 1}

    # EvseManager's Authorized comes without the token; TransactionStarted brings it
    assert run.event("Authorized") == []
    updated = run.event(
        "TransactionStarted",
        transaction_started={"id_tag": provided_token(), "meter_value": powermeter(1000)},
    )
    assert summary(updated) == [("Updated", "Authorized", 1)]
    assert updated[0]["idToken"] == {"idToken": "CAFE0001", "type": "ISO14443"}
    assert "evse" not in updated[0]

    later = run.charge()
    assert summary(later) == [("Updated", "ChargingStateChanged", 2)]
    assert all("idToken" not in p for p in later)


def test_start_at_authorized_waits_for_the_token() -> None:
    """E03 with TxStartPoint Authorized: the Started carries the token it was authorized with."""
    run = Run.make(tx_start_points=frozenset({"Authorized"}))
    assert run.plug_in() == []
    started = run.authorize()
    assert summary(started) == [("Started", "Authorized", 0)]
    assert started[0]["idToken"]["idToken"] == "CAFE0001"
    assert info(started[0])["chargingState"] == "EVConnected"


def test_authorize_first_session_starts_idle_and_reports_the_plug_in() -> None:
    """E03 (IdToken first): SessionStarted reason Authorized carries the token; EVerest then
    reports the plug-in as TransactionStarted."""
    run = Run.make(tx_start_points=frozenset({"Authorized"}))
    started = run.event(
        "SessionStarted",
        session_started={
            "reason": "Authorized",
            "id_tag": provided_token("AABBCCDD", "ISO15693"),
            "meter_value": powermeter(10),
            "reservation_id": 3,
        },
    )
    assert summary(started) == [("Started", "Authorized", 0)]
    assert info(started[0])["chargingState"] == "Idle"
    assert started[0]["idToken"] == {"idToken": "AABBCCDD", "type": "ISO15693"}
    assert started[0]["reservationId"] == 3
    plugged = run.event(
        "TransactionStarted",
        transaction_started={"id_tag": provided_token("AABBCCDD"), "meter_value": powermeter(10)},
    )
    assert summary(plugged) == [("Updated", "ChargingStateChanged", 1)]
    assert info(plugged[0])["chargingState"] == "EVConnected"
    assert "idToken" not in plugged[0]


# CSMS commands ---------------------------------------------------------------------------


def test_remote_start_before_the_transaction_marks_its_started() -> None:
    """F01: the Started after RequestStartTransaction has triggerReason RemoteStart and the
    remoteStartId, once."""
    run = Run.make()
    run.tx.remote_start(42, {"id_token": "REMOTE01", "type": "Central"})
    run.plug_in()
    run.authorize(provided_token("REMOTE01", "Central"))
    started, charging = run.charge()
    assert summary([started]) == [("Started", "RemoteStart", 0)]
    assert info(started)["remoteStartId"] == 42
    assert started["idToken"] == {"idToken": "REMOTE01", "type": "Central"}
    assert "remoteStartId" not in info(charging)


def test_remote_start_into_a_running_transaction_updates_it() -> None:
    """F02 (transaction already started at EVConnected): Updated with RemoteStart,
    remoteStartId and the remote token."""
    run = Run.make(tx_start_points=frozenset({"EVConnected"}))
    run.plug_in()
    run.tx.remote_start(
        7,
        {
            "id_token": "REMOTE02",
            "type": "Central",
            "additional_info": [{"additional_id_token": "X1", "type": "Custom"}],
        },
    )
    updated = run.event("Authorized")  # the remote token is known: no need to wait
    assert summary(updated) == [("Updated", "RemoteStart", 1)]
    assert info(updated[0])["remoteStartId"] == 7
    assert updated[0]["idToken"] == {
        "idToken": "REMOTE02",
        "type": "Central",
        "additionalInfo": [{"additionalIdToken": "X1", "type": "Custom"}],
    }
    again = run.event(
        "TransactionStarted",
        transaction_started={
            "id_tag": provided_token("REMOTE02", "Central"),
            "meter_value": powermeter(1),
        },
    )
    assert again == []  # the token of this authorization went out already


def test_remote_stop_ends_with_remote_stop() -> None:
    """F03: after RequestStopTransaction the Ended says RemoteStop / Remote."""
    run = Run.make()
    assert run.tx.remote_stop() is False  # nothing to stop
    run.plug_in()
    run.authorize()
    run.charge()
    assert run.tx.remote_stop() is True
    ended = run.finish("Remote", token=False)
    assert summary(ended) == [("Ended", "RemoteStop", 2)]
    assert info(ended[0])["stoppedReason"] == "Remote"


def test_remote_stop_with_stop_point_ev_connected_keeps_its_reason_until_unplug() -> None:
    """E06 with TxStopPoint EVConnected only: the stop ends the authorization (Updated
    RemoteStop), the transaction ends at unplug, still with stoppedReason Remote."""
    run = Run.make(tx_stop_points=frozenset({"EVConnected"}))
    run.plug_in()
    run.authorize()
    run.charge()
    run.tx.remote_stop()
    updated = run.finish("Remote", token=False)
    assert summary(updated) == [("Updated", "RemoteStop", 2)]
    assert info(updated[0])["chargingState"] == "EVConnected"
    ended = run.unplug()
    assert summary(ended) == [("Ended", "EVCommunicationLost", 3)]
    assert info(ended[0]) == {
        "transactionId": SESSION,
        "chargingState": "Idle",
        "stoppedReason": "Remote",
    }


def test_csms_rejecting_the_token_ends_with_deauthorized() -> None:
    """E05 / StopTxOnInvalidId: the CSMS refused the token; whatever reason EvseManager gives
    for the stop, the Ended says Deauthorized / DeAuthorized."""
    run = Run.make()
    run.plug_in()
    run.authorize()
    run.charge()
    assert run.tx.deauthorized() is True
    ended = run.finish("Local")
    assert summary(ended) == [("Ended", "Deauthorized", 2)]
    assert info(ended[0])["stoppedReason"] == "DeAuthorized"
    assert "idToken" not in ended[0]


def test_deauthorized_event_ends_the_transaction() -> None:
    """E06 TxStopPoint Authorized: EvseManager withdrawing the authorization ends it."""
    run = Run.make()
    run.plug_in()
    run.authorize()
    run.charge()
    ended = run.event("Deauthorized")
    assert summary(ended) == [("Ended", "Deauthorized", 2)]
    assert info(ended[0])["stoppedReason"] == "DeAuthorized"


def test_reset_ends_the_transaction_at_once() -> None:
    """B11/B12: an immediate Reset ends the transaction with ResetCommand / ImmediateReset
    before the station goes down; what EvseManager reports afterwards adds nothing."""
    run = Run.make()
    assert run.tx.reset_stop(True, T0) == []
    run.plug_in()
    run.authorize()
    run.charge()
    ended = run.keep(run.tx.reset_stop(True, run.now))
    assert summary(ended) == [("Ended", "ResetCommand", 2)]
    assert info(ended[0])["stoppedReason"] == "ImmediateReset"
    assert info(ended[0])["chargingState"] == "Charging"
    assert run.finish("HardReset") == []
    assert run.unplug() == []


def test_trigger_message_reports_the_running_transaction() -> None:
    """F06 TriggerMessage(TransactionEvent): Updated with triggerReason Trigger, nothing
    without a transaction."""
    run = Run.make(updated_measurands=("Energy.Active.Import.Register", "Power.Active.Import"))
    assert run.tx.trigger(T0) == []
    run.plug_in()
    run.authorize()
    run.charge()
    run.tx.on_powermeter(powermeter(2500.5, power_W={"total": 50000.0}))
    triggered = run.keep(run.tx.trigger(run.now))
    assert summary(triggered) == [("Updated", "Trigger", 2)]
    assert info(triggered[0])["chargingState"] == "Charging"
    values = triggered[0]["meterValue"][0]["sampledValue"]
    assert [(v["measurand"], v["value"], v["context"]) for v in values] == [
        ("Energy.Active.Import.Register", 2500.5, "Trigger"),
        ("Power.Active.Import", 50000, "Trigger"),
    ]


# faults ----------------------------------------------------------------------------------


def test_fault_pause_with_default_points_only_suspends() -> None:
    """A fault ends a transaction only through a TxStopPoint condition: with the default
    points an EVSE pause is a chargingState change."""
    run = Run.make()
    run.plug_in()
    run.authorize()
    run.charge()
    run.tx.set_faulted(True)
    paused = run.event("ChargingPausedEVSE", charging_paused_evse={"reasons": ["Error"]})
    assert summary(paused) == [("Updated", "ChargingStateChanged", 2)]
    assert info(paused[0])["chargingState"] == "SuspendedEVSE"
    assert run.tx.active


def test_fault_pause_with_energy_transfer_stop_point_is_an_abnormal_end() -> None:
    """TxStopPoint EnergyTransfer: a fault stopping the energy flow ends the transaction with
    AbnormalCondition."""
    run = Run.make(tx_stop_points=frozenset({"EnergyTransfer"}))
    run.plug_in()
    run.authorize()
    run.charge()
    run.tx.set_faulted(True)
    ended = run.event("ChargingPausedEVSE", charging_paused_evse={"reasons": ["Error"]})
    assert summary(ended) == [("Ended", "AbnormalCondition", 2)]
    assert info(ended[0]) == {
        "transactionId": SESSION,
        "chargingState": "SuspendedEVSE",
        "stoppedReason": "Other",
    }


def test_energy_transfer_points_give_each_charging_period_its_own_transaction() -> None:
    """TxStartPoint = TxStopPoint = EnergyTransfer: an EV pause ends the transaction
    (StoppedByEV) and resuming starts a new one, with its own id and seqNo from 0."""
    run = Run.make(
        tx_start_points=frozenset({"EnergyTransfer"}),
        tx_stop_points=frozenset({"EnergyTransfer"}),
    )
    run.plug_in()
    run.authorize()
    first = run.charge()
    ended = run.event("ChargingPausedEV")
    second = run.event("ChargingStarted")
    assert summary(first + ended + second) == [
        ("Started", "ChargingStateChanged", 0),
        ("Ended", "ChargingStateChanged", 1),
        ("Started", "ChargingStateChanged", 0),
    ]
    assert info(ended[0])["stoppedReason"] == "StoppedByEV"
    assert info(first[0])["transactionId"] == SESSION
    second_id = info(second[0])["transactionId"]
    assert second_id != SESSION
    assert len(second_id) == 36
    assert second[0]["idToken"]["idToken"] == "CAFE0001"  # a new transaction, told again


def test_a_session_uuid_longer_than_36_characters_becomes_a_stable_id() -> None:
    long_uuid = "session-" + "x" * 40
    ids = []
    for _ in range(2):
        run = Run.make(tx_start_points=frozenset({"EVConnected"}))
        started = run.event(
            "SessionStarted",
            session=long_uuid,
            session_started={"reason": "EVConnected", "meter_value": powermeter(0)},
        )
        ids.append(info(started[0])["transactionId"])
    assert len(ids[0]) == 36
    assert ids[0] == ids[1]


# meter values ----------------------------------------------------------------------------


def test_periodic_samples_follow_a_grid_aligned_to_the_start() -> None:
    """SampledDataCtrlr.TxUpdatedInterval: MeterValuePeriodic / Sample.Periodic every interval
    from the start; missed samples are not made up."""
    run = Run.make(updated_interval_s=60)
    run.plug_in()
    run.authorize()
    run.event("PrepareCharging")
    start = run.now
    assert run.tx.next_deadline() == start + timedelta(seconds=60)
    assert run.tick(start + timedelta(seconds=59)) == []
    run.tx.on_powermeter(powermeter(1200))
    sampled = run.tick(start + timedelta(seconds=60))
    assert summary(sampled) == [("Updated", "MeterValuePeriodic", 1)]
    value = sampled[0]["meterValue"][0]["sampledValue"][0]
    assert (value["value"], value["context"]) == (1200, "Sample.Periodic")
    assert sampled[0]["meterValue"][0]["timestamp"] == wire_timestamp(start + timedelta(seconds=60))
    assert run.tx.next_deadline() == start + timedelta(seconds=120)
    assert len(run.tick(start + timedelta(seconds=250))) == 1  # not three
    assert run.tx.next_deadline() == start + timedelta(seconds=300)
    run.finish("Local")
    assert run.tx.next_deadline() is None
    assert run.tick(start + timedelta(seconds=400)) == []


def test_no_periodic_samples_when_the_interval_is_zero_until_settings_change() -> None:
    run = Run.make()
    run.plug_in()
    run.authorize()
    run.event("PrepareCharging")
    start = run.now
    assert run.tx.next_deadline() is None
    run.tx.settings = TxSettings(evse_id=1, updated_interval_s=30)
    assert run.tx.next_deadline() == start + timedelta(seconds=30)
    with pytest.raises(TransactionError):
        run.tx.settings = TxSettings(evse_id=2)


def test_updated_measurands_dc() -> None:
    """DC readings have no phase; SoC comes from ev_info (location EV); the offered limit
    from the bridge; whole numbers are JSON ints."""
    run = Run.make(tx_start_points=frozenset({"EVConnected"}), updated_measurands=ALL_MEASURANDS)
    run.plug_in()
    run.tx.on_powermeter(
        powermeter(
            12345.0,
            power_W={"total": 49999.5},
            current_A={"DC": 125.0},
            voltage_V={"DC": 399.96},
        )
    )
    run.tx.on_ev_info({"soc": 42.0, "present_voltage": 400})
    run.tx.set_offered(150.0, 60000)
    values = run.keep(run.tx.trigger(run.now))[0]["meterValue"][0]["sampledValue"]
    assert [
        (v["measurand"], v["value"], v["unitOfMeasure"]["unit"], v.get("phase"), v.get("location"))
        for v in values
    ] == [
        ("Energy.Active.Import.Register", 12345, "Wh", None, None),
        ("Power.Active.Import", 49999.5, "W", None, None),
        ("Current.Import", 125, "A", None, None),
        ("Voltage", 399.96, "V", None, None),
        ("SoC", 42, "Percent", None, "EV"),
        ("Current.Offered", 150, "A", None, None),
        ("Power.Offered", 60000, "W", None, None),
    ]


def test_updated_measurands_ac_and_unknown_sources_are_left_out() -> None:
    """AC readings per phase; no SoC without ev_info, no offered values without a limit."""
    run = Run.make(tx_start_points=frozenset({"EVConnected"}), updated_measurands=ALL_MEASURANDS)
    run.plug_in()
    run.tx.on_powermeter(
        powermeter(
            10.0,
            current_A={"L1": 16.0, "L2": 15.5, "L3": 16.0},
            voltage_V={"L1": 230.0, "L2": 231.0, "L3": 229.0},
        )
    )
    values = run.keep(run.tx.trigger(run.now))[0]["meterValue"][0]["sampledValue"]
    assert [(v["measurand"], v.get("phase")) for v in values] == [
        ("Energy.Active.Import.Register", None),
        ("Current.Import", "L1"),
        ("Current.Import", "L2"),
        ("Current.Import", "L3"),
        ("Voltage", "L1-N"),
        ("Voltage", "L2-N"),
        ("Voltage", "L3-N"),
    ]


def test_no_meter_value_without_any_reading() -> None:
    run = Run.make(tx_start_points=frozenset({"EVConnected"}))
    started = run.event("SessionStarted", session_started={"reason": "EVConnected"})
    assert summary(started) == [("Started", "CablePluggedIn", 0)]
    assert "meterValue" not in started[0]


# offline and restarts --------------------------------------------------------------------


def test_offline_events_are_flagged_and_keep_the_sequence() -> None:
    """E04: events that happen while offline carry offline=true; seqNo does not care."""
    run = Run.make()
    run.plug_in()
    run.authorize()
    started = run.event("PrepareCharging", offline=True)
    charging = run.event("ChargingStarted")
    ended = run.event(
        "TransactionFinished",
        offline=True,
        transaction_finished={"meter_value": powermeter(2000), "reason": "Local"},
    )
    assert [(p["seqNo"], p.get("offline")) for p in started + charging + ended] == [
        (0, True),
        (1, None),
        (2, True),
    ]


def test_a_restored_transaction_continues_its_sequence() -> None:
    """E01.FR.07 across a bridge restart: same transactionId, next seqNo, same sample grid."""
    run = Run.make(updated_interval_s=60)
    run.plug_in()
    run.authorize()
    run.charge()
    snapshot = json.loads(json.dumps(run.tx.snapshot()))
    deadline = run.tx.next_deadline()

    restored = Run(EvseTransactions(TxSettings(evse_id=1, updated_interval_s=60), snapshot))
    restored.now = run.now
    assert restored.tx.transaction_id == SESSION
    assert restored.tx.active
    assert restored.tx.next_deadline() == deadline
    assert restored.tx.authorized
    paused = restored.event("ChargingPausedEV")
    ended = restored.finish("Local")
    assert summary(paused + ended) == [
        ("Updated", "ChargingStateChanged", 2),
        ("Ended", "StopAuthorized", 3),
    ]
    assert info(ended[0])["transactionId"] == SESSION


def test_snapshot_is_none_without_a_transaction() -> None:
    run = Run.make()
    run.plug_in()
    assert run.tx.snapshot() is None


def test_a_new_session_ends_a_transaction_whose_end_was_lost() -> None:
    """After a power cut EvseManager starts a new session; the old transaction is ended first
    (AbnormalCondition, PowerLoss) so that the new one does not overlap it."""
    run = Run.make(tx_start_points=frozenset({"EVConnected"}))
    run.plug_in()
    run.authorize()
    snapshot = run.tx.snapshot()
    assert snapshot is not None
    after_reboot = Run(
        EvseTransactions(
            TxSettings(evse_id=1, tx_start_points=frozenset({"EVConnected"})), snapshot
        )
    )
    after_reboot.now = run.now
    out = after_reboot.event(
        "SessionStarted",
        session="0d9c6f3e-1111-4a2b-8c3d-222233334444",
        session_started={"reason": "EVConnected", "meter_value": powermeter(7)},
    )
    assert summary(out) == [("Ended", "AbnormalCondition", 2), ("Started", "CablePluggedIn", 0)]
    assert info(out[0]) == {
        "transactionId": SESSION,
        "chargingState": "EVConnected",
        "stoppedReason": "PowerLoss",
    }
    assert info(out[1])["transactionId"] == "0d9c6f3e-1111-4a2b-8c3d-222233334444"


@pytest.mark.parametrize(
    "broken",
    [
        {"version": 99},
        {"version": 1, "transaction_id": "x"},
        {"version": 1, "transaction_id": "x", "session_id": "x", "started_at": "yesterday"},
    ],
)
def test_an_unusable_snapshot_is_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(TransactionError):
        EvseTransactions(TxSettings(evse_id=1), broken)


# settings, mappings, time ----------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"tx_start_points": frozenset({"ParkingBayOccupancy"})},
        {"tx_stop_points": frozenset()},
        {"updated_measurands": ("Frequency",)},
        {"updated_interval_s": -1},
    ],
)
def test_unsupported_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(TransactionError):
        TxSettings(evse_id=1, **settings)


@pytest.mark.parametrize(
    ("everest_reason", "trigger", "stopped"),
    [
        ("Local", "StopAuthorized", "Local"),
        ("EmergencyStop", "AbnormalCondition", "EmergencyStop"),
        ("HardReset", "ResetCommand", "ImmediateReset"),
        ("SoftReset", "AbnormalCondition", "Other"),
        ("EnergyLimitReached", "EnergyLimitReached", "EnergyLimitReached"),
        ("SOCLimitReached", "EnergyLimitReached", "SOCLimitReached"),
        ("TimeLimitReached", "TimeLimitReached", "TimeLimitReached"),
        ("StoppedByEV", "ChargingStateChanged", "StoppedByEV"),
        ("ReqEnergyTransferRejected", "AbnormalCondition", "Other"),
    ],
)
def test_everest_stop_reasons_become_ocpp_reasons(
    everest_reason: str, trigger: str, stopped: str
) -> None:
    run = Run.make()
    run.plug_in()
    run.authorize()
    run.charge()
    ended = run.finish(everest_reason, token=False)
    assert (ended[0]["triggerReason"], info(ended[0])["stoppedReason"]) == (trigger, stopped)


def test_every_everest_stop_reason_maps_into_the_ocpp_enums() -> None:
    """The contract's StopTransactionReason enum, all of it, lands in 2.0.1 ReasonEnumType and
    TriggerReasonEnumType."""
    types = yaml.safe_load((REPO / "types" / "evse_manager.yaml").read_text())["types"]
    everest = set(types["StopTransactionReason"]["enum"])
    definitions = validator("TransactionEvent").schema["definitions"]
    ocpp_reasons = set(definitions["ReasonEnumType"]["enum"])
    ocpp_triggers = set(definitions["TriggerReasonEnumType"]["enum"])
    assert set(STOPPED_REASON) == everest
    assert set(STOPPED_REASON.values()) <= ocpp_reasons
    assert set(TRIGGER_FOR_REASON) == ocpp_reasons
    assert set(TRIGGER_FOR_REASON.values()) <= ocpp_triggers


def test_wire_timestamps_are_utc_with_milliseconds() -> None:
    moment = datetime(2024, 5, 1, 14, 0, 1, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert wire_timestamp(moment) == "2024-05-01T12:00:01.123Z"
    assert wire_timestamp(datetime(2024, 5, 1, tzinfo=UTC)) == "2024-05-01T00:00:00.000Z"


def test_a_naive_now_is_refused() -> None:
    run = Run.make()
    with pytest.raises(TimestampError):
        run.tx.on_session_event({"uuid": SESSION, "event": "Enabled"}, datetime(2024, 5, 1))
