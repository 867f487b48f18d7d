"""The dashboard's board (fed with real wire payloads) and its two views."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from everkit.dashboard.board import Board, Layout
from everkit.dashboard.view import LineView, render, status_line
from everkit.framework.wire import MsgType, Topics, cmd_payload, encode, var_payload

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "everest/"
TOPICS = Topics(PREFIX)


def sil_layout() -> Layout:
    return Layout.from_config(yaml.safe_load((ROOT / "config" / "sil-dc.yaml").read_text()))


class Bus:
    """Feeds a board the way the broker would, with a fake clock."""

    def __init__(self) -> None:
        self.now = 100.0
        self.board = Board(sil_layout(), PREFIX, started=self.now)

    def var(self, module: str, impl: str, name: str, value: Any, after: float = 1.0) -> None:
        self.now += after
        self.board.feed(TOPICS.var(module, impl, name), var_payload(value), self.now)

    def cmd(self, module: str, impl: str, name: str, args: dict[str, Any]) -> None:
        self.board.feed(TOPICS.cmd(module, impl, name), cmd_payload("1", args, "x"), self.now)

    def session_event(self, event: str) -> None:
        self.var("evse_manager", "evse", "session_event", {"event": event, "uuid": ""})

    def error(
        self, raised: bool, error_type: str = "evse_board_support/MREC2GroundFailure"
    ) -> None:
        error = {
            "type": error_type,
            "sub_type": "",
            "message": "ground fault",
            "severity": "High",
            "origin": {"module_id": "hardware", "implementation_id": "board_support"},
        }
        kind = MsgType.RAISE_ERROR if raised else MsgType.CLEAR_ERROR
        topic = TOPICS.error("hardware", "board_support", error_type)
        self.board.feed(topic, encode(kind, error), self.now)


def limits(watts: float, source: str, later: float | None = None) -> dict[str, Any]:
    side = {"total_power_W": {"value": watts, "source": source}}
    schedule = [{"timestamp": "2026-11-22T10:00:00.000Z", "limits_to_root": side}]
    if later is not None:
        schedule.append(
            {
                "timestamp": "2026-11-22T10:00:15.000Z",
                "limits_to_root": {"total_power_W": {"value": later, "source": source}},
            }
        )
    return {"uuid": "evse_manager", "valid_for": 10, "limits_root_side": side, "schedule": schedule}


def charging_session(bus: Bus) -> None:
    bus.var("evse_manager", "evse", "powermeter", {"energy_Wh_import": {"total": 1000.0}})
    for event in ("SessionStarted", "AuthRequired", "Authorized", "TransactionStarted"):
        bus.session_event(event)
    bus.session_event("PrepareCharging")
    bus.var("car", "charger", "start_cable_check", None)
    bus.var("car", "charger", "start_pre_charge", None)
    bus.session_event("ChargingStarted")
    bus.var("car", "charger", "dc_ev_target_voltage_current", {
        "dc_ev_target_voltage": 371.2, "dc_ev_target_current": 120.0,
    })  # fmt: skip
    bus.cmd("psu", "main", "setExportVoltageCurrent", {"voltage": 371.2, "current": 80.8})
    bus.var("psu", "main", "voltage_current", {"voltage_V": 368.1, "current_A": 80.8})
    bus.var("evse_manager", "evse", "ev_info", {"soc": 30.2, "present_voltage": 368.1})
    bus.var("evse_manager", "evse", "enforced_limits", limits(30000, "CSO", later=15000))
    bus.var(
        "evse_manager",
        "evse",
        "powermeter",
        {"energy_Wh_import": {"total": 1144.0}, "power_W": {"total": 29800.0}},
    )


def test_the_layout_of_the_sil_config_names_the_evse_its_car_side_psu_and_ocpp() -> None:
    layout = sil_layout()
    assert [e.module_id for e in layout.evses] == ["evse_manager"]
    assert layout.evses[0].hlc == ("car", "charger")
    assert layout.evses[0].power_supply == ("psu", "main")
    assert layout.ocpp == ("ocpp",)


def test_a_session_is_followed_from_plug_in_through_the_dc_phases_to_charging() -> None:
    bus = Bus()
    charging_session(bus)
    evse = bus.board.evses["evse_manager"]
    assert evse.state == "charging"
    assert list(evse.phases_reached) == [
        "plugged in",
        "authorized",
        "cable check",
        "pre-charge",
        "charging",
    ]
    assert evse.current_phase == "charging"
    assert evse.ev_target == (371.2, 120.0)
    assert evse.setpoint == (371.2, 80.8)
    assert evse.present == (368.1, 80.8)
    assert evse.soc == 30.2
    assert evse.delivered_Wh == 144.0
    assert evse.power_W == 29800.0
    assert evse.limit is not None
    assert (evse.limit.watts, evse.limit.source) == (30000, "CSO")
    assert evse.next_limit is not None
    assert evse.next_limit[1].watts == 15000


def test_a_limit_change_is_an_event_naming_the_new_limit_and_its_source() -> None:
    bus = Bus()
    charging_session(bus)
    bus.var("evse_manager", "evse", "enforced_limits", limits(15000, "CSO"))
    assert bus.board.events[-1].text == "evse_manager: limit 15.0 kW (CSO)"
    bus.var("evse_manager", "evse", "enforced_limits", limits(15000, "CSO"))
    assert bus.board.events[-1].text == "evse_manager: limit 15.0 kW (CSO)"
    assert sum("limit" in e.text for e in bus.board.events) == 1  # a repeat is no change


def test_the_end_of_a_session_clears_the_cars_wish_and_the_setpoint_and_keeps_the_energy() -> None:
    bus = Bus()
    charging_session(bus)
    bus.cmd("psu", "main", "setMode", {"mode": "Off", "phase": "Charging"})
    for event in ("ChargingFinished", "TransactionFinished", "SessionFinished"):
        bus.session_event(event)
    evse = bus.board.evses["evse_manager"]
    assert evse.state == "available"
    assert evse.phases_reached.keys() >= {"charging", "finished"}
    assert evse.ev_target is None
    assert evse.setpoint is None
    assert evse.delivered_Wh == 144.0
    assert evse.session_ended == bus.now


def test_errors_are_active_from_raise_to_clear_and_each_is_an_event() -> None:
    bus = Bus()
    bus.error(raised=True)
    (active,) = bus.board.errors.values()
    assert (active.module_id, active.type, active.severity) == (
        "hardware",
        "evse_board_support/MREC2GroundFailure",
        "High",
    )
    bus.error(raised=False)
    assert not bus.board.errors
    assert [e.text for e in bus.board.events][-2:] == [
        "hardware: error evse_board_support/MREC2GroundFailure raised",
        "hardware: error evse_board_support/MREC2GroundFailure cleared",
    ]


def test_the_ocpp_connection_comes_from_the_ocpp_interfaces_is_connected_var() -> None:
    bus = Bus()
    bus.var("ocpp", "ocpp_generic", "is_connected", False)
    bus.var("ocpp", "ocpp_generic", "is_connected", True)
    bus.var("ocpp", "ocpp_generic", "boot_notification_response", {"status": "Accepted"})
    bus.var("ocpp", "ocpp_generic", "is_connected", False)
    assert [e.text for e in bus.board.events] == [
        "ocpp: CSMS not connected",
        "ocpp: CSMS connected",
        "ocpp: CSMS lost",
    ]
    assert bus.board.ocpp["ocpp"].boot_status == "Accepted"


def test_readiness_counts_module_ready_and_global_ready() -> None:
    bus = Bus()
    bus.board.feed(TOPICS.module_ready("psu"), encode(MsgType.MODULE_READY, True), bus.now)
    assert bus.board.ready == {"psu"}
    assert not bus.board.global_ready
    bus.board.feed(TOPICS.global_ready, encode(MsgType.GLOBAL_READY, True), bus.now)
    assert bus.board.global_ready


@settings(max_examples=300, deadline=None)
@given(
    suffix=st.sampled_from(
        [
            "modules/evse_manager/impl/evse/var/session_event",
            "modules/evse_manager/impl/evse/var/enforced_limits",
            "modules/evse_manager/impl/evse/var/powermeter",
            "modules/car/impl/charger/var/dc_ev_target_voltage_current",
            "modules/psu/impl/main/cmd/setExportVoltageCurrent",
            "modules/psu/impl/main/var/voltage_current",
            "modules/hardware/impl/board_support/error/a/B",
            "modules/x/ready",
            "ready",
            "modules/x/impl",
        ]
    ),
    data=st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    ),
    msg_type=st.sampled_from([m.value for m in MsgType] + ["Nonsense"]),
    raw=st.binary(max_size=40),
)
def test_no_payload_on_any_topic_breaks_the_board(
    suffix: str, data: Any, msg_type: str, raw: bytes
) -> None:
    """The dashboard watches other people's buses: malformed input is counted, never fatal."""
    bus = Bus()
    topic = PREFIX + suffix
    bus.board.feed(topic, json.dumps({"msg_type": msg_type, "data": data}).encode(), bus.now)
    bus.board.feed(topic, json.dumps({"msg_type": msg_type, "data": {"data": data}}).encode(), 1)
    bus.board.feed(topic, raw, bus.now)
    render(bus.board, bus.now, "fuzz")  # and it still draws


def test_the_live_view_shows_state_phases_values_limit_source_errors_and_ocpp() -> None:
    bus = Bus()
    charging_session(bus)
    bus.error(raised=True)
    bus.board.note_ocpp("10:00:01 station → TransactionEvent Updated MeterValuePeriodic seq 7")
    console = Console(record=True, width=120, force_terminal=False)
    console.print(render(bus.board, bus.now, "everkit demo"))
    text = console.export_text()
    for shown in (
        "EVSE evse_manager  charging",
        "✓ cable check",
        "● charging",
        "○ finished",
        "30.2 %",
        "371.2 V",
        "120.0 A",
        "368.1 V",
        "30.0 kW from CSO",
        "then 15.0 kW at 10:00:15",
        "0.144 kWh",
        "evse_board_support/MREC2GroundFailure",
        "TransactionEvent Updated MeterValuePeriodic seq 7",
    ):
        assert shown in text, shown


def test_the_line_view_prints_each_event_once_and_a_status_line_at_its_interval() -> None:
    bus = Bus()
    lines: list[str] = []
    view = LineView(lines.append, status_every_s=5.0)
    charging_session(bus)
    view.update(bus.board, bus.now)
    view.update(bus.board, bus.now + 1)
    assert sum("ChargingStarted" in line for line in lines) == 1
    status = [line for line in lines if "charging " in line and "kWh" in line]
    assert len(status) == 1
    view.update(bus.board, bus.now + 5)
    assert len([line for line in lines if "kWh" in line]) == 2
    evse = bus.board.evses["evse_manager"]
    assert "limit 30.0 kW from CSO" in status_line(evse)
    assert "SoC 30.2 %" in status_line(evse)
