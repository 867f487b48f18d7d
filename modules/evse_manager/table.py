"""The charger's states and its one transition table. Everything that moves the charger
from one state to another is in ``TRANSITIONS``; the core only derives triggers from
what happens (a CP change, a command, a fault) and looks them up here. The diagram in
docs/evse-manager-states.md is generated from this table (``diagram.py``).

States and session events follow EVerest's EvseManager (Charger.cpp; reference
shared/reference/evse-manager.md 1.4).
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    DISABLED = "Disabled"
    IDLE = "Idle"
    WAITING_FOR_AUTHENTICATION = "WaitingForAuthentication"
    PREPARE_CHARGING = "PrepareCharging"  # DC: cable check and pre-charge happen here
    CHARGING = "Charging"  # DC: current demand
    CHARGING_PAUSED_EV = "ChargingPausedEV"
    CHARGING_PAUSED_EVSE = "ChargingPausedEVSE"
    STOPPING_CHARGING = "StoppingCharging"
    FINISHED = "Finished"


class Trigger(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    PLUGGED_IN = "plugged in"
    UNPLUGGED = "unplugged"
    AUTHORIZED = "authorized"
    DEAUTHORIZED = "deauthorized"
    CURRENT_DEMAND_STARTED = "current demand started"
    EV_STOPPED = "EV stopped (PowerDelivery stop / C->B)"
    EVSE_STOP = "EVSE stop (transaction end, pause, no energy)"
    FAULT = "blocking fault"
    RESUMED = "pause reasons cleared"
    STOPPED_END = "output off, session over"
    STOPPED_PAUSE_EVSE = "output off, EVSE pause"
    STOPPED_PAUSE_EV = "output off, EV pause"


S, T = State, Trigger

#: (state, trigger) -> next state. A pair that is absent is ignored in that state.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (S.DISABLED, T.ENABLED): S.IDLE,
    (S.IDLE, T.DISABLED): S.DISABLED,
    (S.IDLE, T.PLUGGED_IN): S.WAITING_FOR_AUTHENTICATION,
    (S.WAITING_FOR_AUTHENTICATION, T.AUTHORIZED): S.PREPARE_CHARGING,
    (S.WAITING_FOR_AUTHENTICATION, T.UNPLUGGED): S.FINISHED,
    (S.WAITING_FOR_AUTHENTICATION, T.FAULT): S.FINISHED,
    (S.WAITING_FOR_AUTHENTICATION, T.DEAUTHORIZED): S.FINISHED,
    (S.PREPARE_CHARGING, T.CURRENT_DEMAND_STARTED): S.CHARGING,
    (S.PREPARE_CHARGING, T.EV_STOPPED): S.STOPPING_CHARGING,
    (S.PREPARE_CHARGING, T.EVSE_STOP): S.STOPPING_CHARGING,
    (S.PREPARE_CHARGING, T.FAULT): S.STOPPING_CHARGING,
    (S.PREPARE_CHARGING, T.DEAUTHORIZED): S.STOPPING_CHARGING,
    (S.PREPARE_CHARGING, T.UNPLUGGED): S.STOPPING_CHARGING,
    (S.CHARGING, T.EV_STOPPED): S.STOPPING_CHARGING,
    (S.CHARGING, T.EVSE_STOP): S.STOPPING_CHARGING,
    (S.CHARGING, T.FAULT): S.STOPPING_CHARGING,
    (S.CHARGING, T.DEAUTHORIZED): S.STOPPING_CHARGING,
    (S.CHARGING, T.UNPLUGGED): S.STOPPING_CHARGING,
    (S.STOPPING_CHARGING, T.STOPPED_END): S.FINISHED,
    (S.STOPPING_CHARGING, T.STOPPED_PAUSE_EVSE): S.CHARGING_PAUSED_EVSE,
    (S.STOPPING_CHARGING, T.STOPPED_PAUSE_EV): S.CHARGING_PAUSED_EV,
    (S.CHARGING_PAUSED_EV, T.UNPLUGGED): S.STOPPING_CHARGING,
    (S.CHARGING_PAUSED_EV, T.DEAUTHORIZED): S.STOPPING_CHARGING,
    (S.CHARGING_PAUSED_EV, T.EVSE_STOP): S.STOPPING_CHARGING,
    (S.CHARGING_PAUSED_EVSE, T.RESUMED): S.PREPARE_CHARGING,
    (S.CHARGING_PAUSED_EVSE, T.UNPLUGGED): S.STOPPING_CHARGING,
    (S.CHARGING_PAUSED_EVSE, T.DEAUTHORIZED): S.STOPPING_CHARGING,
    (S.CHARGING_PAUSED_EVSE, T.EVSE_STOP): S.STOPPING_CHARGING,
    (S.FINISHED, T.UNPLUGGED): S.IDLE,
}

#: States in which the power supply may export (cable check, pre-charge, current demand).
POWER_STATES = frozenset({S.PREPARE_CHARGING, S.CHARGING})

#: States with an open session (the car is or was plugged in and not yet gone).
SESSION_STATES = frozenset(set(State) - {S.DISABLED, S.IDLE})


def next_state(state: State, trigger: Trigger) -> State | None:
    return TRANSITIONS.get((state, trigger))
