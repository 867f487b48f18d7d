"""What the dashboard knows about a charger, learned only from its EVerest bus (sans-IO).

``Board.feed(topic, payload, now)`` takes every message under the prefix; the board keeps,
per EVSE (each module providing ``evse_manager``), the session phase, the car's SoC and
targets, the power supply's setpoint and reading, the limit the energy manager enforces and
who set it, and, for the whole station, the active errors, the OCPP connection and the last
notable events. It reads the same vars and cmds an EVerest C++ EvseManager publishes, so it
shows an upstream stack as well as ours.

Which module is what comes from the runtime config (``Layout.from_config``): an EVSE is a
module named ``EvseManager`` or ``PyEvseManager``; its ``hlc`` and ``powersupply_DC``
connections name the car side and the power supply.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

EVSE_MODULES = frozenset({"EvseManager", "PyEvseManager"})
OCPP_MODULES = frozenset({"OCPP201", "PyOCPP201", "OCPP"})
RECENT_EVENTS = 10

#: The DC session's milestones, in order, and the bus message that marks each one.
PHASES = ("plugged in", "authorized", "cable check", "pre-charge", "charging", "finished")
_PHASE_OF_SESSION_EVENT = {
    "SessionStarted": "plugged in",
    "Authorized": "authorized",
    "ChargingStarted": "charging",
    "ChargingFinished": "finished",
    "TransactionFinished": "finished",
}
_PHASE_OF_HLC_VAR = {"start_cable_check": "cable check", "start_pre_charge": "pre-charge"}

#: The state a session event leaves the EVSE in, as an operator would name it.
_STATE_OF_SESSION_EVENT = {
    "Enabled": "available",
    "Disabled": "disabled",
    "SessionStarted": "plugged in",
    "AuthRequired": "waiting for authorization",
    "Authorized": "authorized",
    "Deauthorized": "deauthorized",
    "TransactionStarted": "transaction started",
    "PrepareCharging": "preparing",
    "ChargingStarted": "charging",
    "ChargingResumed": "charging",
    "ChargingPausedEV": "paused by the car",
    "ChargingPausedEVSE": "paused by the charger",
    "StoppingCharging": "stopping",
    "ChargingFinished": "finished",
    "TransactionFinished": "finished",
    "SessionFinished": "available",
}


@dataclass(frozen=True)
class EvseLayout:
    """One EVSE: its EvseManager module id and the (module, impl) of its peers."""

    module_id: str
    hlc: tuple[str, str] | None = None
    power_supply: tuple[str, str] | None = None


@dataclass(frozen=True)
class Layout:
    evses: tuple[EvseLayout, ...]
    ocpp: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Layout:
        """From a runtime config as loaded from YAML (``active_modules`` ...)."""
        modules = config.get("active_modules") or {}
        evses, ocpp = [], []
        for module_id, entry in modules.items():
            name = entry.get("module") if isinstance(entry, dict) else None
            if name in EVSE_MODULES:
                connections = entry.get("connections") or {}
                evses.append(
                    EvseLayout(
                        str(module_id),
                        hlc=_first_connection(connections, "hlc"),
                        power_supply=_first_connection(connections, "powersupply_DC"),
                    )
                )
            elif name in OCPP_MODULES:
                ocpp.append(str(module_id))
        return cls(tuple(evses), tuple(ocpp), tuple(str(m) for m in modules))


def _first_connection(connections: Mapping[str, Any], requirement: str) -> tuple[str, str] | None:
    for target in connections.get(requirement) or []:
        if isinstance(target, dict) and "module_id" in target and "implementation_id" in target:
            return str(target["module_id"]), str(target["implementation_id"])
    return None


@dataclass(frozen=True)
class Limit:
    watts: float
    source: str


@dataclass
class EvseView:
    """Everything shown for one EVSE; None until the bus said it."""

    layout: EvseLayout
    state: str = "unknown"
    phases_reached: dict[str, float] = field(default_factory=dict)  # phase -> `now` reached
    session_started: float | None = None
    session_ended: float | None = None
    soc: float | None = None
    ev_target: tuple[float, float] | None = None  # V, A the car asks for
    setpoint: tuple[float, float] | None = None  # V, A commanded to the power supply
    present: tuple[float, float] | None = None  # V, A the power supply reports
    power_W: float | None = None
    energy_Wh: float | None = None
    session_start_Wh: float | None = None
    limit: Limit | None = None
    next_limit: tuple[str, Limit] | None = None  # (timestamp, limit) of the next change
    peak_power_W: float = 0.0

    @property
    def delivered_Wh(self) -> float | None:
        if self.energy_Wh is None or self.session_start_Wh is None:
            return None
        return self.energy_Wh - self.session_start_Wh

    @property
    def current_phase(self) -> str | None:
        reached = [phase for phase in PHASES if phase in self.phases_reached]
        return reached[-1] if reached else None


@dataclass(frozen=True)
class ActiveError:
    module_id: str
    impl_id: str
    type: str
    sub_type: str
    severity: str
    message: str
    since: float


@dataclass(frozen=True)
class Event:
    seq: int  # 1, 2, ... over the board's life: a reader knows what it has seen
    at: float
    text: str


@dataclass
class OcppView:
    module_id: str
    connected: bool | None = None
    boot_status: str | None = None
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=6))


class Board:
    """The dashboard's state; fed with raw bus messages, read by the views."""

    def __init__(self, layout: Layout, prefix: str = "everest/", started: float = 0.0) -> None:
        self.layout = layout
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.started = started
        self.evses = {e.module_id: EvseView(e) for e in layout.evses}
        self.ocpp = {m: OcppView(m) for m in layout.ocpp}
        self.ready: set[str] = set()
        self.global_ready = False
        self.errors: dict[tuple[str, str, str, str], ActiveError] = {}
        self.events: deque[Event] = deque(maxlen=RECENT_EVENTS)
        self.event_count = 0
        self.messages = 0
        self.unreadable = 0
        self._hlc = {e.hlc: e.module_id for e in layout.evses if e.hlc}
        self._psu = {e.power_supply: e.module_id for e in layout.evses if e.power_supply}

    # input

    def feed(self, topic: str, payload: bytes, now: float) -> None:
        if not topic.startswith(self.prefix) or not payload:
            return  # cleared retained topics are empty
        self.messages += 1
        path = topic[len(self.prefix) :].split("/")
        try:
            body = json.loads(payload)
            msg_type, data = body["msg_type"], body["data"]
        except (ValueError, TypeError, KeyError):
            self.unreadable += 1  # a checker's business (`everkit check`), not a dashboard's
            return
        if path == ["ready"] and msg_type == "GlobalReady":
            self.global_ready = True
            self._event(now, "all modules ready")
        elif len(path) == 3 and path[0] == "modules" and path[2] == "ready":
            if msg_type == "ModuleReady" and data is True:
                self.ready.add(path[1])
        elif len(path) >= 5 and path[0] == "modules" and path[2] == "impl":
            self._on_impl(path[1], path[3], path[4:], body, now)

    def note(self, now: float, text: str) -> None:
        """An event from outside the bus (the demo's CSMS, a step of the demo)."""
        self._event(now, text)

    def note_ocpp(self, line: str) -> None:
        """One OCPP message as the demo CSMS printed it."""
        for view in self.ocpp.values():
            view.recent.append(line)

    def _on_impl(
        self, module_id: str, impl_id: str, rest: list[str], body: Any, now: float
    ) -> None:
        kind, msg_type, data = rest[0], body["msg_type"], body["data"]
        if kind == "var" and len(rest) == 2 and msg_type == "Var" and isinstance(data, dict):
            self._on_var(module_id, impl_id, rest[1], data.get("data"), now)
        elif kind == "cmd" and len(rest) == 2 and msg_type == "Cmd" and isinstance(data, dict):
            self._on_cmd(module_id, impl_id, rest[1], data.get("args"))
        elif kind == "error" and msg_type in ("RaiseError", "ClearError"):
            self._on_error(module_id, impl_id, msg_type == "RaiseError", data, now)

    def _on_var(self, module_id: str, impl_id: str, name: str, value: Any, now: float) -> None:
        evse = self.evses.get(module_id)
        if evse is not None and impl_id == "evse":
            self._on_evse_var(evse, name, value, now)
            return
        hlc_of = self._hlc.get((module_id, impl_id))
        if hlc_of is not None:
            self._on_hlc_var(self.evses[hlc_of], name, value, now)
            return
        psu_of = self._psu.get((module_id, impl_id))
        if psu_of is not None and name == "voltage_current" and isinstance(value, dict):
            pair = _pair(value.get("voltage_V"), value.get("current_A"))
            if pair is not None:
                self.evses[psu_of].present = pair
            return
        ocpp = self.ocpp.get(module_id)
        if ocpp is not None:
            self._on_ocpp_var(ocpp, name, value, now)

    def _on_evse_var(self, evse: EvseView, name: str, value: Any, now: float) -> None:
        if name == "session_event" and isinstance(value, dict):
            self._on_session_event(evse, str(value.get("event")), now)
        elif name == "ev_info" and isinstance(value, dict):
            evse.soc = _number(value.get("soc"), evse.soc)
        elif name == "powermeter" and isinstance(value, dict):
            evse.energy_Wh = _number(
                (value.get("energy_Wh_import") or {}).get("total"), evse.energy_Wh
            )
            if evse.session_start_Wh is None and evse.session_started is not None:
                evse.session_start_Wh = evse.energy_Wh
            evse.power_W = _number((value.get("power_W") or {}).get("total"))
            if evse.power_W is not None and evse.session_ended is None:
                evse.peak_power_W = max(evse.peak_power_W, evse.power_W)
        elif name == "enforced_limits" and isinstance(value, dict):
            self._on_enforced_limits(evse, value, now)

    def _on_session_event(self, evse: EvseView, event: str, now: float) -> None:
        if event == "SessionStarted":
            evse.phases_reached.clear()
            evse.session_started, evse.session_ended = now, None
            evse.session_start_Wh = evse.energy_Wh
            evse.peak_power_W = 0.0
        elif event == "SessionFinished":
            evse.session_ended = now
            evse.ev_target = evse.setpoint = None  # the car has gone; its last wish has too
        phase = _PHASE_OF_SESSION_EVENT.get(event)
        if phase is not None:
            evse.phases_reached.setdefault(phase, now)
        evse.state = _STATE_OF_SESSION_EVENT.get(event, evse.state)
        self._event(now, f"{evse.layout.module_id}: {event}")

    def _on_enforced_limits(self, evse: EvseView, value: Mapping[str, Any], now: float) -> None:
        limit = _limit_of(value.get("limits_root_side"))
        if limit is not None and limit != evse.limit:
            if evse.limit is not None:
                self._event(
                    now,
                    f"{evse.layout.module_id}: limit {limit.watts / 1000:.1f} kW ({limit.source})",
                )
            evse.limit = limit
        evse.next_limit = None
        for entry in value.get("schedule") or []:
            later = _limit_of(entry.get("limits_to_root")) if isinstance(entry, dict) else None
            if later is not None and later != evse.limit:
                evse.next_limit = (str(entry.get("timestamp")), later)
                break

    def _on_hlc_var(self, evse: EvseView, name: str, value: Any, now: float) -> None:
        phase = _PHASE_OF_HLC_VAR.get(name)
        if phase is not None and evse.session_started is not None:
            evse.phases_reached.setdefault(phase, now)
            evse.state = phase
            self._event(now, f"{evse.layout.module_id}: {phase}")
        elif name == "dc_ev_target_voltage_current" and isinstance(value, dict):
            target = _pair(value.get("dc_ev_target_voltage"), value.get("dc_ev_target_current"))
            evse.ev_target = target or evse.ev_target
        elif name == "dc_ev_status" and isinstance(value, dict):
            evse.soc = _number(value.get("dc_ev_ress_soc"), evse.soc)

    def _on_cmd(self, module_id: str, impl_id: str, name: str, args: Any) -> None:
        psu_of = self._psu.get((module_id, impl_id))
        if psu_of is None or not isinstance(args, dict):
            return
        if name == "setExportVoltageCurrent":
            pair = _pair(args.get("voltage"), args.get("current"))
            self.evses[psu_of].setpoint = pair or self.evses[psu_of].setpoint
        elif name == "setMode" and args.get("mode") == "Off":
            self.evses[psu_of].setpoint = None

    def _on_ocpp_var(self, ocpp: OcppView, name: str, value: Any, now: float) -> None:
        if name == "is_connected" and isinstance(value, bool):
            if value != ocpp.connected:
                was = "lost" if ocpp.connected else "not connected"
                self._event(now, f"{ocpp.module_id}: CSMS {'connected' if value else was}")
            ocpp.connected = value
        elif name == "boot_notification_response" and isinstance(value, dict):
            ocpp.boot_status = str(value.get("status"))

    def _on_error(self, module_id: str, impl_id: str, raised: bool, data: Any, now: float) -> None:
        if not isinstance(data, dict) or "type" not in data:
            self.unreadable += 1
            return
        key = (module_id, impl_id, str(data["type"]), str(data.get("sub_type", "")))
        if raised:
            self.errors[key] = ActiveError(
                module_id,
                impl_id,
                key[2],
                key[3],
                str(data.get("severity", "")),
                str(data.get("message", "")),
                now,
            )
            self._event(now, f"{module_id}: error {key[2]} raised")
        elif self.errors.pop(key, None) is not None:
            self._event(now, f"{module_id}: error {key[2]} cleared")

    def _event(self, now: float, text: str) -> None:
        self.event_count += 1
        self.events.append(Event(self.event_count, now, text))


def _number(value: Any, otherwise: float | None = None) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return otherwise


def _pair(first: Any, second: Any) -> tuple[float, float] | None:
    a, b = _number(first), _number(second)
    return None if a is None or b is None else (a, b)


def _limit_of(side: Any) -> Limit | None:
    power = side.get("total_power_W") if isinstance(side, dict) else None
    watts = _number(power.get("value")) if isinstance(power, dict) else None
    if watts is None or not isinstance(power, dict):
        return None
    return Limit(watts, str(power.get("source", "")))
