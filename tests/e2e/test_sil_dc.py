"""Whole DC sessions: `everkit run` with config/sil-dc.yaml (PyEvseManager, PyInfyPowerDC
with simulated modules, PyHardwareSim, PyEvSimulator, PyAuth, PyOCPP201) on a real
Mosquitto, with the demo CSMS as its own process; every assertion is made from what crossed
the bus or the websocket."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from everkit.framework.transport import BrokerAddress
from tests.conftest import Captured, RawClient
from tests.e2e.conftest import CsmsProcess
from tests.e2e.sil import SCRIPT, sil_config
from tests.runner import run_config
from tests.wire_rules import violations

pytestmark = pytest.mark.integration
SESSION = [
    "SessionStarted",
    "AuthRequired",
    "Authorized",
    "TransactionStarted",
    "PrepareCharging",
    "ChargingStarted",
    "StoppingCharging",
    "ChargingPausedEV",
    "StoppingCharging",
    "ChargingFinished",
    "TransactionFinished",
    "SessionFinished",
]


def run_session(
    tmp_path: Path,
    broker: BrokerAddress,
    prefix: str,
    csms: CsmsProcess,
    *,
    script: str = SCRIPT.format(charge_s=6),
    car: dict[str, Any] | None = None,
    hardware: dict[str, Any] | None = None,
    psu: dict[str, Any] | None = None,
) -> str:
    config = sil_config(
        tmp_path, prefix, csms.url, script=script, car=car, hardware=hardware, psu=psu
    )
    _status, output = run_config(config, tmp_path, broker, prefix)
    return output


def payloads(recorder: RawClient, suffix: str) -> list[tuple[Captured, Any]]:
    return [
        (m, json.loads(m.payload)["data"])
        for m in recorder.messages
        if m.topic.endswith(suffix) and m.payload
    ]


def session_events(recorder: RawClient) -> list[str]:
    return [d["data"]["event"] for _, d in payloads(recorder, "evse/var/session_event")]


def raised(recorder: RawClient) -> list[tuple[str, str]]:
    return [
        (d["type"], d["sub_type"])
        for m, d in payloads(recorder, "")
        if "/error/" in m.topic and json.loads(m.payload)["msg_type"] == "RaiseError"
    ]


def assert_ended_safe(messages: list[Captured]) -> None:
    """The output is off and the relays open at the end; Off always came first."""
    mode, relays = "Off", False
    for message in messages:
        body = json.loads(message.payload) if message.payload else {}
        if body.get("msg_type") != "Cmd":
            continue
        if message.topic.endswith("/main/cmd/setMode"):
            mode = body["data"]["args"]["mode"]
        elif message.topic.endswith("/impl/board_support/cmd/allow_power_on"):
            relays = body["data"]["args"]["value"]["allow_power_on"]
            assert relays or mode != "Export", "relays opened while exporting"
    assert mode != "Export", "the session ended with the PSU exporting"
    assert not relays, "the session ended with the relays allowed"


def assert_reported_over_ocpp(csms: CsmsProcess, meter_Wh: float) -> None:
    """What the CSMS saw: boot, statuses, the token checked, one whole transaction."""
    assert [b["reason"] for b in csms.calls("BootNotification")] == ["PowerUp"]
    statuses = [s["connectorStatus"] for s in csms.calls("StatusNotification")]
    assert statuses == ["Available", "Occupied", "Available"], statuses
    assert [a["idToken"]["idToken"] for a in csms.calls("Authorize")] == ["TOKEN1"]
    events = csms.calls("TransactionEvent")
    assert [e["seqNo"] for e in events] == list(range(len(events)))
    kinds = [e["eventType"] for e in events]
    assert kinds[0] == "Started", kinds
    assert kinds[-1] == "Ended", kinds
    assert set(kinds[1:-1]) == {"Updated"}
    assert len({e["transactionInfo"]["transactionId"] for e in events}) == 1
    assert events[0]["idToken"]["idToken"] == "TOKEN1"
    assert events[-1]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert any(e["triggerReason"] == "MeterValuePeriodic" for e in events)
    measurands = {
        sv.get("measurand", "Energy.Active.Import.Register")
        for e in events
        for mv in e.get("meterValue", [])
        for sv in mv["sampledValue"]
    }
    assert {"Energy.Active.Import.Register", "Power.Active.Import", "SoC"} <= measurands
    ended_energy = [
        sv["value"]
        for mv in events[-1]["meterValue"]
        for sv in mv["sampledValue"]
        if sv.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register"
    ]
    assert ended_energy == [pytest.approx(meter_Wh, abs=1.0)]


def test_a_full_dc_session_from_plug_in_to_unplug(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient, csms: CsmsProcess
) -> None:
    output = run_session(tmp_path, broker, prefix, csms)
    assert "exited with status 0" in output, output[-3000:]
    assert session_events(recorder) == ["Enabled", *SESSION]
    finished = payloads(recorder, "evse/var/session_event")[-2][1]["data"]
    assert finished["transaction_finished"]["reason"] == "EVDisconnected"

    # the PSU setpoints follow the car's requests, clamped (50 kW budget, 25 A/s ramp)
    requests = [
        d["data"] for _, d in payloads(recorder, "charger/var/dc_ev_target_voltage_current")
    ]
    setpoints = [
        d["args"] for _, d in payloads(recorder, "psu/impl/main/cmd/setExportVoltageCurrent")
    ]
    asked = max(r["dc_ev_target_current"] for r in requests)
    assert asked == pytest.approx(20.0)
    assert any(s["current"] == pytest.approx(asked) for s in setpoints), setpoints[-5:]
    assert all(s["current"] * s["voltage"] <= 50000.0 + 1e-6 for s in setpoints)
    targets = {r["dc_ev_target_voltage"] for r in requests}
    assert {s["voltage"] for s in setpoints if s["current"] > 2.0} <= targets

    # energy: the meter agrees with V x I integrated from the PSU's own measurements
    readings = payloads(recorder, "psu/impl/main/var/voltage_current")
    integral_Wh = sum(
        d["data"]["voltage_V"] * d["data"]["current_A"] * (b.at - a.at) / 3600
        for (a, _), (b, d) in itertools.pairwise(readings)
    )
    meter = payloads(recorder, "hardware/impl/powermeter/var/powermeter")[-1][1]["data"]
    assert integral_Wh > 5.0
    assert meter["energy_Wh_import"]["total"] == pytest.approx(integral_Wh, rel=0.15)
    assert_ended_safe(recorder.messages)
    assert raised(recorder) == []
    assert_reported_over_ocpp(csms, meter_Wh=meter["energy_Wh_import"]["total"])
    for message in recorder.messages:
        assert (
            violations(
                message.topic, message.payload, prefix, qos=message.qos, retain=message.retain
            )
            == []
        )


def test_an_isolation_fault_fails_the_cable_check_safely(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient, csms: CsmsProcess
) -> None:
    run_session(tmp_path, broker, prefix, csms, hardware={"imd_resistance_F_Ohm": 50000})
    events = session_events(recorder)
    assert "ChargingStarted" not in events
    assert events[-3:] == ["ChargingFinished", "TransactionFinished", "SessionFinished"] or (
        "ChargingPausedEVSE" in events
    )
    errors = {t for t, _ in raised(recorder)}
    assert {
        "evse_manager/MREC22ResistanceFault",
        "evse_manager/MREC11CableCheckFault",
        "evse_manager/Inoperative",
    } <= errors
    results = [
        d["args"] for _, d in payloads(recorder, "car/impl/charger/cmd/cable_check_finished")
    ]
    assert results == [{"status": False}]
    assert_ended_safe(recorder.messages)


@pytest.mark.parametrize(
    ("knobs", "error"),
    [
        (
            {"psu": {"sim_overtemperature_after_s": 8}},
            ("power_supply_DC/OverTemperature", "module 1"),
        ),
        ({"psu": {"sim_silent_after_s": 8}}, ("power_supply_DC/CommunicationFault", "")),
        (
            {"hardware": {"emergency_stop_after_s": 12}},
            ("evse_board_support/MREC8EmergencyStop", ""),
        ),
    ],
    ids=["psu over-temperature", "CAN silence", "emergency stop"],
)
def test_a_fault_during_charging_stops_safely_with_the_right_errors(
    tmp_path: Path,
    broker: BrokerAddress,
    prefix: str,
    recorder: RawClient,
    csms: CsmsProcess,
    knobs: dict[str, dict[str, Any]],
    error: tuple[str, str],
) -> None:
    # the car stays plugged in a while after the EVSE stopped: on a loaded machine the safe
    # stop (Off, relays open, their feedback) must not race the car's exit, which ends the run
    script = SCRIPT.format(charge_s=20).replace("sleep 1;unplug", "sleep 6;unplug")
    output = run_session(tmp_path, broker, prefix, csms, script=script, **knobs)
    events = session_events(recorder)
    assert "ChargingStarted" in events
    after = events[events.index("ChargingStarted") + 1 :]
    assert after[:2] == ["StoppingCharging", "ChargingPausedEVSE"], (events, output[-3000:])
    found = raised(recorder)
    assert error in found
    assert ("evse_manager/Inoperative", "") in found
    assert_ended_safe(recorder.messages)
    # the CSMS learns of it: the connector is Faulted while Inoperative is active
    statuses = [s["connectorStatus"] for s in csms.calls("StatusNotification")]
    assert "Faulted" in statuses, statuses


def test_the_car_stops_at_its_target_soc(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient, csms: CsmsProcess
) -> None:
    run_session(
        tmp_path,
        broker,
        prefix,
        csms,
        script=SCRIPT.format(charge_s=60),
        car={"soc": 97, "target_soc": 98, "dc_energy_capacity": 1000},
    )
    assert session_events(recorder) == ["Enabled", *SESSION]
    status = [d["data"] for _, d in payloads(recorder, "charger/var/dc_ev_status")]
    assert status[-1]["dc_ev_ress_soc"] >= 98
    assert_ended_safe(recorder.messages)


def test_unplugging_during_charging_switches_off_before_the_relays_open(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient, csms: CsmsProcess
) -> None:
    script = (
        "sleep 0.5;plugin;iso_wait_slac_matched;iso_start_v2g_session DC;iso_wait_pwr_ready;"
        "iso_dc_power_on;sleep 3;unplug;sleep 2"
    )
    run_session(tmp_path, broker, prefix, csms, script=script)
    events = session_events(recorder)
    assert events[-5:] == [
        "ChargingStarted",
        "StoppingCharging",
        "ChargingFinished",
        "TransactionFinished",
        "SessionFinished",
    ]
    finished = payloads(recorder, "evse/var/session_event")[-2][1]["data"]
    assert finished["transaction_finished"]["reason"] == "EVDisconnected"
    assert_ended_safe(recorder.messages)
