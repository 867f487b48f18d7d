"""Fault injection on the running SIL DC stack (`everkit run` with config/sil-dc.yaml, real
Mosquitto, every module its own process, the demo CSMS as its own process): the broker
restarted while charging (briefly, and for longer than the PSU waits), the CAN bus silent
and back, the CSMS unreachable for a whole session, the wall clock stepped during a
charging schedule. Each test ends in a defined, safe state, and every assertion is made
from what crossed the MQTT bus, the websocket (the CSMS's record) or the CAN bus (the
driver's `can_log_file`). Issue 8; the expected behaviour is in docs/reliability.md."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import pytest

from everkit.framework.broker import free_port, start_mosquitto
from everkit.framework.transport import BrokerAddress
from everkit.ocpp201.timestamps import parse_wire_timestamp
from everkit.power_supply_infy.codec import Decoded, OnOff, Output, decode_answer, decode_request
from everkit.power_supply_infy.controller_watch import CONTROLLER_LOSS_OFF_S
from everkit.wallclock import OFFSET_FILE_ENV
from tests.conftest import Captured
from tests.e2e.conftest import start_csms
from tests.e2e.faults import Recorder, Stack, envelope, is_error, is_session_event
from tests.e2e.sil import SCRIPT, sil_config
from tests.e2e.test_sil_dc import assert_ended_safe

pytestmark = pytest.mark.integration
CONTROLLER = 0xF0
COMM_FAULT = "power_supply_DC/CommunicationFault"
INOPERATIVE = "evse_manager/Inoperative"
# what callers log when a command got no result (or the stack was stopping under it)
TIMEOUT_WORDS = ("no result for", "not taken", "did not answer", "Shutdown:")
LONG_OUTAGE_S = CONTROLLER_LOSS_OFF_S + 4.0
SHORT_OUTAGE_S = 2.0  # a broker restart by its service manager
SAFE_V = 60.0  # IEC 61851-23: below this the output counts as de-energized
# the car charges until the test has seen what it waits for; the test then stops the stack
LONG_CHARGE = SCRIPT.format(charge_s=60)


@pytest.fixture
def bus(broker: BrokerAddress, prefix: str) -> Iterator[Recorder]:
    with Recorder(broker, prefix) as recorder:
        yield recorder


def data_of(messages: list[Captured], suffix: str) -> list[tuple[Captured, Any]]:
    return [(m, envelope(m)["data"]) for m in messages if m.topic.endswith(suffix) and m.payload]


def events_of(messages: list[Captured]) -> list[str]:
    return [d["data"]["event"] for _, d in data_of(messages, "evse/var/session_event")]


def is_supply_below(message: Captured, volts: float) -> bool:
    return (
        message.topic.endswith("psu/impl/main/var/voltage_current")
        and bool(message.payload)
        and envelope(message)["data"]["data"]["voltage_V"] < volts
    )


def is_supply_current_above(message: Captured, amperes: float) -> bool:
    return (
        message.topic.endswith("psu/impl/main/var/voltage_current")
        and bool(message.payload)
        and envelope(message)["data"]["data"]["current_A"] > amperes
    )


def can_frames(log_file: Path) -> list[can.Message]:
    with can.LogReader(str(log_file)) as reader:
        return list(reader)


def test_can_silence_stops_safely_and_recovery_replays_the_stored_state_first(
    tmp_path: Path, broker: BrokerAddress, prefix: str, bus: Recorder
) -> None:
    """power-supply-infy.md guideline 2 and errors/power_supply_DC.yaml: on the way back the
    stored mode and setpoints go out before CommunicationFault is cleared. evse-manager.md
    Errors: a High error is an emergency shutdown, the session pauses (ChargingPausedEVSE)."""
    can_log = tmp_path / "can.log"
    recorder = bus
    with start_csms(tmp_path) as csms:
        config = sil_config(
            tmp_path,
            prefix,
            csms.url,
            script=LONG_CHARGE,
            car={"exit_when_done": False},
            psu={"sim_silent_after_s": 12, "sim_silent_for_s": 4, "can_log_file": str(can_log)},
        )
        with Stack(config, tmp_path, broker, prefix):
            recorder.wait_for(is_session_event("ChargingStarted"), timeout=60)
            (raised,) = recorder.wait_for(is_error("RaiseError", COMM_FAULT), timeout=30)
            (cleared,) = recorder.wait_for(is_error("ClearError", COMM_FAULT), timeout=30)
            recorder.wait_for(is_error("ClearError", "evse_manager/Inoperative"), timeout=30)
            # the modules kept delivering through the silence (they never heard the Off);
            # the replayed Off brings the output down
            recorder.wait_for(
                lambda m: m.at > cleared.at and is_supply_below(m, SAFE_V), timeout=30
            )
    messages = recorder.snapshot()

    # the shutdown: Off first, then the relays, and the session paused by the EVSE
    after_fault = [m for m in messages if m.at >= raised.at]
    commands = [
        (m.topic.rsplit("/", 1)[-1], d["args"])
        for m, d in data_of(after_fault, "")
        if envelope(m)["msg_type"] == "Cmd" and "/cmd/" in m.topic
    ]
    off = commands.index(("setMode", {"mode": "Off", "phase": "Charging"}))
    opened = commands.index(
        ("allow_power_on", {"value": {"allow_power_on": False, "reason": "PowerOff"}})
    )
    assert off < opened, commands[:10]
    events = events_of(messages)
    after = events[events.index("ChargingStarted") + 1 :]
    assert after[:2] == ["StoppingCharging", "ChargingPausedEVSE"], events
    fault = envelope(raised)["data"]
    assert fault["severity"] == "High"
    assert "no answer from any module" in fault["message"]
    assert_ended_safe(messages)

    # on the CAN bus: silence, then the first answer, the stored state (Off: EvseManager's
    # setMode(Off) arrived during the silence and was kept) to every module, their echoes,
    # and only then the ClearError on MQTT
    frames = can_frames(can_log)
    answers = [
        (f.timestamp, a.payload)
        for f in frames
        if isinstance(a := decode_answer(f.arbitration_id, bytes(f.data), True), Decoded)
        and a.id.destination == CONTROLLER
    ]
    gap_end = next(
        later
        for (earlier, _), (later, _) in itertools.pairwise(answers)
        if later - earlier > 2.0 and earlier >= raised.at - 2.0
    )
    replay = [
        (f.timestamp, r.id.destination, r.payload)
        for f in frames
        if f.timestamp >= gap_end
        and isinstance(r := decode_request(f.arbitration_id, bytes(f.data), True), Decoded)
        and r.id.destination != CONTROLLER
        and isinstance(r.payload, OnOff)
    ]
    first_replay = {module: (at, p) for at, module, p in reversed(replay)}
    assert set(first_replay) == {1, 2}, replay[:4]
    assert all(not p.on for _, p in first_replay.values()), first_replay
    echoes = [t for t, p in answers if t >= gap_end and isinstance(p, OnOff) and not p.on]
    assert echoes, "no module echoed the replayed Off"
    assert max(at for at, _ in first_replay.values()) <= min(echoes) <= cleared.at
    # the modules still reported the pre-fault voltage when they came back, and went down
    # after the replay
    outputs = [(t, p.voltage_V) for t, p in answers if t >= gap_end and isinstance(p, Output)]
    assert outputs[0][1] > 300.0, outputs[:2]
    assert min(v for _, v in outputs) < SAFE_V, outputs[-4:]
    # the CSMS saw the connector Faulted while Inoperative was active
    statuses = [s["connectorStatus"] for s in csms.calls("StatusNotification")]
    assert "Faulted" in statuses, statuses
    print(json.dumps({"fault_to_clear_s": round(cleared.at - raised.at, 2)}))


def test_a_session_with_the_csms_unreachable_is_delivered_in_order_once_it_is_back(
    tmp_path: Path, broker: BrokerAddress, prefix: str, bus: Recorder
) -> None:
    """OCPP 2.0.1 E04 (transaction messages made offline are queued, sent in order once
    online, with offline: true), E01-E03 (seqNo counts up from 0 without gaps), C15
    (OfflineTxForUnknownIdEnabled lets an unknown token charge offline)."""
    port = free_port()
    script = (
        "sleep 0.5;plugin;iso_wait_slac_matched;iso_start_v2g_session DC;iso_wait_pwr_ready;"
        "iso_dc_power_on;iso_wait_for_stop 6;iso_wait_v2g_session_stopped;sleep 1;unplug;sleep 2"
    )
    recorder = bus
    config = sil_config(
        tmp_path,
        prefix,
        f"ws://127.0.0.1:{port}/ocpp",  # nobody listens here until the session is over
        script=script,
        car={"exit_when_done": False},
    )
    ocpp = config["active_modules"]["ocpp"]["config_module"]
    ocpp["device_model"] += (
        ", AuthCtrlr.OfflineTxForUnknownIdEnabled=true"
        # reconnect every 1-2 s, so the test does not wait out the default back-off
        ", OCPPCommCtrlr.RetryBackOffWaitMinimum=1, OCPPCommCtrlr.RetryBackOffRandomRange=1"
        ", OCPPCommCtrlr.RetryBackOffRepeatTimes=0"
    )
    with Stack(config, tmp_path, broker, prefix):
        recorder.wait_for(
            lambda m: (
                m.topic.endswith("ocpp_generic/var/ocpp_transaction_event")
                and envelope(m)["data"]["data"]["transaction_event"] == "Ended"
            ),
            timeout=90,
        )
        made = data_of(recorder.snapshot(), "ocpp_generic/var/ocpp_transaction_event")
        with start_csms(tmp_path, "--port", str(port)) as csms:
            recorder.wait_for(
                lambda m: m.topic.endswith("ocpp_generic/var/ocpp_transaction_event_response"),
                count=len(made),
                timeout=60,
            )
            boots = csms.calls("BootNotification")
            events = csms.calls("TransactionEvent")

    assert [b["reason"] for b in boots] == ["PowerUp"]
    # every event the bridge made crossed the websocket once, in the order made
    assert len(events) == len(made)
    assert [e["seqNo"] for e in events] == list(range(len(events)))
    kinds = [e["eventType"] for e in events]
    assert kinds[0] == "Started", kinds
    assert kinds[-1] == "Ended", kinds
    assert set(kinds[1:-1]) == {"Updated"}, kinds
    assert len({e["transactionInfo"]["transactionId"] for e in events}) == 1
    assert all(e.get("offline") is True for e in events), [e.get("offline") for e in events]
    stamps = [parse_wire_timestamp(e["timestamp"]) for e in events]
    assert stamps == sorted(stamps)
    assert any(e["triggerReason"] == "MeterValuePeriodic" for e in events)
    assert events[0]["idToken"]["idToken"] == "TOKEN1"
    assert events[-1]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    # the session charged although nobody could validate the token (C15)
    assert "ChargingStarted" in events_of(recorder.snapshot())
    print(json.dumps({"transaction_events_queued_offline": len(events)}))


def commands_and_results(messages: list[Captured]) -> tuple[dict[str, Captured], set[str]]:
    """Cmd messages by call id, and the ids that got a CmdResult."""
    calls: dict[str, Captured] = {}
    answered: set[str] = set()
    for message in messages:
        if not message.payload or "/cmd/" not in message.topic:
            continue
        body = envelope(message)
        if body["msg_type"] == "Cmd":
            calls[body["data"]["id"]] = message
        elif body["msg_type"] == "CmdResult":
            answered.add(body["data"]["data"]["id"])
    return calls, answered


def assert_no_call_hung(messages: list[Captured], output: str) -> None:
    """Every command on the bus got a CmdResult, or its caller logged that it got none."""
    calls, answered = commands_and_results(messages)
    for call_id, message in calls.items():
        if call_id in answered:
            continue
        callee = message.topic.split("/modules/", 1)[1].split("/", 1)[0]
        if not any(f"/modules/{callee}/" in m.topic and m.at > message.at for m in messages):
            continue  # the callee never spoke again: the stack was stopping (a slow run)
        origin = envelope(message)["data"]["origin"]
        logged = [
            line
            for line in output.splitlines()
            if f"[{origin}]" in line and any(words in line for words in TIMEOUT_WORDS)
        ]
        assert logged, f"{message.topic} from {origin}: no result and no timeout logged"


def module_ids(config: dict[str, Any]) -> list[str]:
    return list(config["active_modules"])


def on_off_requests(frames: list[can.Message]) -> list[tuple[float, int, bool]]:
    """(time, module, on) of every 0x1A the driver sent."""
    return [
        (f.timestamp, r.id.destination, r.payload.on)
        for f in frames
        if isinstance(r := decode_request(f.arbitration_id, bytes(f.data), True), Decoded)
        and r.id.destination != CONTROLLER
        and isinstance(r.payload, OnOff)
    ]


@dataclass
class Outage:
    messages: list[Captured]  # what the recorder saw until the test stopped the stack
    config: dict[str, Any]
    output: str  # everkit run's log
    status: int | None  # its exit status if it ended by itself
    killed: float  # wall-clock times: the broker stopped, started again
    restarted: float


def run_with_broker_outage(
    tmp_path: Path, prefix: str, down_s: float, script: str, car: dict[str, Any], until: Any
) -> Outage:
    """The SIL stack on a broker of its own, which is stopped once charging runs at full
    current and started again on the same port ``down_s`` later. ``until`` (called with
    the recorder after the restart) waits for the end the test wants; then the stack is
    stopped if it still runs."""
    port = free_port()
    mosquitto = start_mosquitto(port)
    broker = mosquitto.address
    status: int | None = None
    try:
        with Recorder(broker, prefix) as recorder, start_csms(tmp_path) as csms:
            config = sil_config(
                tmp_path,
                prefix,
                csms.url,
                script=script,
                car=car,
                psu={"can_log_file": str(tmp_path / "can.log")},
            )
            with Stack(config, tmp_path, broker, prefix) as stack:
                recorder.wait_for(is_session_event("ChargingStarted"), timeout=60)
                recorder.wait_for(lambda m: is_supply_current_above(m, 15.0), timeout=30)
                killed = time.time()
                mosquitto.stop()
                assert recorder.wait_disconnected()
                time.sleep(down_s)  # the fault's duration, not a wait for an event
                mosquitto = start_mosquitto(port)
                restarted = time.time()
                assert recorder.wait_subscribed()
                until(recorder)
                messages = recorder.snapshot()
                status = stack.process.poll()
            output = stack.output()
    finally:
        mosquitto.stop()
    return Outage(messages, config, output, status, killed, restarted)


def test_a_broker_restart_during_charging_keeps_the_session_going(
    tmp_path: Path, prefix: str
) -> None:
    """A broker restart (down 2 s; the modules' reconnect back-off makes it a few seconds
    more): every module reconnects and resubscribes, charging goes on at the last setpoint
    (PyInfyPowerDC keeps resending it, which feeds the modules' own watchdog), and the
    session ends normally. Every command got a result or its caller's timeout."""

    def session_over(recorder: Recorder) -> None:
        recorder.wait_for(is_session_event("SessionFinished"), timeout=60)

    outage = run_with_broker_outage(
        tmp_path, prefix, SHORT_OUTAGE_S, SCRIPT.format(charge_s=14), {}, session_over
    )
    messages, output, killed, restarted = (
        outage.messages,
        outage.output,
        outage.killed,
        outage.restarted,
    )
    for module_id in [*module_ids(outage.config), "manager"]:
        assert f"[{module_id}] everkit.framework.transport: reconnected" in output, module_id
    # charging went on: no Off on the CAN bus during the outage, full current after it
    switched = [(t, on) for t, _m, on in on_off_requests(can_frames(tmp_path / "can.log"))]
    assert all(on for t, on in switched if killed <= t <= restarted + 5.0), switched
    resumed = [m for m in messages if m.at > restarted and is_supply_current_above(m, 15.0)]
    assert resumed, "no full-current reading after the restart"
    events = events_of(messages)
    assert events[events.index("ChargingStarted") :] == [
        "ChargingStarted",
        "StoppingCharging",
        "ChargingPausedEV",
        "StoppingCharging",
        "ChargingFinished",
        "TransactionFinished",
        "SessionFinished",
    ], events
    assert not [m for m in messages if is_error("RaiseError", COMM_FAULT)(m)]
    assert_no_call_hung(messages, output)
    assert_ended_safe(messages)
    calls, answered = commands_and_results(messages)
    back = next(m.at for m in messages if m.at > restarted)
    print(
        json.dumps(
            {
                "broker_down_s": round(restarted - killed, 2),
                "bus_silent_s": round(back - killed, 2),
                "commands_without_result": len(set(calls) - answered),
            }
        )
    )


def test_a_broker_that_stays_away_switches_the_output_off_after_the_bound(
    tmp_path: Path, prefix: str
) -> None:
    """The broker down longer than CONTROLLER_LOSS_OFF_S (10 s): PyInfyPowerDC switches the
    modules off on its own, on the CAN bus, while no MQTT message can flow. After the
    reconnect EvseManager learns of it (a CommunicationFault, sub_type Controller, unless
    its own first command was already Off), stops the session (ChargingPausedEVSE) and the
    error is cleared by its Off. Nothing goes back on."""

    def stopped(recorder: Recorder) -> None:
        recorder.wait_for(is_session_event("ChargingPausedEVSE"), timeout=60)
        for kind in ("RaiseError", "ClearError"):  # the PSU's error, if it had to raise it
            if [m for m in recorder.snapshot() if is_error("RaiseError", COMM_FAULT)(m)]:
                recorder.wait_for(is_error(kind, COMM_FAULT), timeout=30)
            if [m for m in recorder.snapshot() if is_error("RaiseError", INOPERATIVE)(m)]:
                recorder.wait_for(is_error(kind, INOPERATIVE), timeout=30)

    outage = run_with_broker_outage(
        tmp_path, prefix, LONG_OUTAGE_S, LONG_CHARGE, {"exit_when_done": False}, stopped
    )
    messages, output, killed, restarted = (
        outage.messages,
        outage.output,
        outage.killed,
        outage.restarted,
    )
    switched = on_off_requests(can_frames(tmp_path / "can.log"))
    offs = [(t, m) for t, m, on in switched if not on and t >= killed]
    assert {m for _, m in offs} == {1, 2}, switched[-6:]
    first_off = min(t for t, _ in offs)
    # off on the modules' side within the bound (plus the watch period), broker still away
    assert killed + CONTROLLER_LOSS_OFF_S <= first_off <= killed + CONTROLLER_LOSS_OFF_S + 2.0
    assert first_off < restarted
    assert not [t for t, _m, on in switched if on and t > first_off], "the output went on again"
    raised = [envelope(m)["data"] for m in messages if is_error("RaiseError", COMM_FAULT)(m)]
    assert all(r["sub_type"] == "Controller" and r["severity"] == "High" for r in raised)
    events = events_of(messages)
    after = events[events.index("ChargingStarted") + 1 :]
    # paused by the EVSE; once the error is cleared it waits in PrepareCharging for a new
    # cable check, which this car (its V2G session failed or stopped) never starts. On a
    # slow run the car's own script may end meanwhile (StoppingCharging, ChargingPausedEV):
    # also safe. What must never come is charging again.
    assert after[:2] == ["StoppingCharging", "ChargingPausedEVSE"], events
    assert not {"ChargingStarted", "ChargingResumed"} & set(after[2:]), events
    assert_no_call_hung(messages, output)
    assert_ended_safe(messages)
    print(
        json.dumps(
            {
                "off_after_kill_s": round(first_off - killed, 2),
                "broker_down_s": round(restarted - killed, 2),
                "controller_error_raised": bool(raised),
            }
        )
    )


def setpoint_power(message: Captured) -> float | None:
    if not message.topic.endswith("psu/impl/main/cmd/setExportVoltageCurrent"):
        return None
    body = envelope(message)
    if body["msg_type"] != "Cmd":
        return None
    args = body["data"]["args"]
    return float(args["voltage"]) * float(args["current"])


def step_clock(offset_file: Path, seconds: float) -> float:
    """Set the stack's wall-clock offset (read by everkit.wallclock); when it was set."""
    partial = offset_file.with_suffix(".new")
    partial.write_text(f"{seconds}\n")
    partial.replace(offset_file)  # one atomic change: a reader never sees half a number
    return time.time()


def test_clock_steps_during_an_absolute_schedule_move_the_limit_not_the_timers(
    tmp_path: Path, broker: BrokerAddress, prefix: str, bus: Recorder
) -> None:
    """OCPP 2.0.1 K01/K08: an Absolute TxProfile is evaluated at the station's wall time;
    SampledDataCtrlr.TxUpdatedInterval and the other timers are intervals. The demo CSMS
    sets 30 kW from the transaction start, 15 kW an hour later, 30 kW after two hours. The
    station's clock is stepped (as NTP would) an hour forward: the setpoints follow the
    15 kW period; then an hour back, before the profile starts: the 50 kW default, so the
    car gets the 120 A it asks for. Meter values keep coming every 2 s throughout, with
    timestamps of the new time."""
    offset_file = tmp_path / "clock-offset"
    offset_file.write_text("0\n")
    env = {**os.environ, OFFSET_FILE_ENV: str(offset_file)}
    recorder = bus
    with start_csms(tmp_path, "--demo-limit-W", "30000", "--demo-step-s", "3600") as csms:
        config = sil_config(
            tmp_path, prefix, csms.url, script=LONG_CHARGE, car={"dc_target_current": 120}
        )
        with Stack(config, tmp_path, broker, prefix, env=env):

            def at_power(low: float, high: float, after: float) -> Callable[[Captured], bool]:
                def check(m: Captured) -> bool:
                    power = setpoint_power(m)
                    return m.at > after and power is not None and low <= power <= high

                return check

            recorder.wait_for(at_power(29000, 30001, 0.0), timeout=60)
            forward = step_clock(offset_file, 3600)
            (fifteen, *_) = recorder.wait_for(at_power(14000, 15001, forward), timeout=25)
            # two meter values in the forward-stepped time (TxUpdatedInterval = 2 s)
            recorder.wait_for(lambda m: m.at > forward + 4.5, timeout=30)
            back = step_clock(offset_file, -3600)
            (full, *_) = recorder.wait_for(at_power(40000, 50001, back), timeout=25)
            # and two in the backward-stepped time
            recorder.wait_for(lambda m: m.at > full.at + 4.5, timeout=30)
        output = csms.calls("TransactionEvent")
        frames = [
            f
            for f in csms.frames()
            if f["dir"] == "station->csms"
            and f["frame"][0] == 2
            and f["frame"][2] == "TransactionEvent"
        ]
    assert len(frames) == len(output)
    # no setpoint of the 30 kW period after the steps took effect
    after_forward = [
        p for m in recorder.snapshot() if fifteen.at <= m.at < back and (p := setpoint_power(m))
    ]
    assert all(p <= 15001 for p in after_forward), after_forward
    # meter values: every 2 s by the CSMS's (unstepped) clock, never stalled or doubled up;
    # their timestamps carry the station's time, an hour ahead and then an hour behind
    periodic = [
        (parse_wire_timestamp(f["t"]), parse_wire_timestamp(f["frame"][3]["timestamp"]))
        for f in frames
        if f["frame"][3]["triggerReason"] == "MeterValuePeriodic"
    ]
    gaps = [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(periodic)]
    assert gaps, periodic
    assert all(1.0 <= gap <= 3.5 for gap in gaps), gaps
    skews = [round((stamp - received).total_seconds() / 3600) for received, stamp in periodic]
    assert skews[0] == 0
    assert 1 in skews
    assert skews[-1] == -1, skews
    print(
        json.dumps(
            {
                "forward_step_to_15kW_setpoint_s": round(fifteen.at - forward, 2),
                "back_step_to_full_current_s": round(full.at - back, 2),
                "meter_value_gaps_s": [min(gaps), max(gaps)],
            }
        )
    )
