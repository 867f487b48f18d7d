"""The one transition table: complete where it must be, and drawn in the docs."""

from __future__ import annotations

from pathlib import Path

from everkit.evse_manager import diagram
from everkit.evse_manager.table import POWER_STATES, TRANSITIONS, State, Trigger

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_diagram_is_generated_from_the_table() -> None:
    committed = (ROOT / "docs" / "evse-manager-states.md").read_text()
    assert committed == diagram.document(), (
        "regenerate: python -m everkit.evse_manager.diagram > docs/evse-manager-states.md"
    )


def test_every_state_is_reachable_from_disabled() -> None:
    reached = {State.DISABLED}
    frontier = [State.DISABLED]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source == state and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(State)


def test_every_session_state_handles_unplugging() -> None:
    """IEC 61851: the car may leave in any state; the charger must never be stuck."""
    for state in set(State) - {State.DISABLED, State.IDLE, State.STOPPING_CHARGING}:
        assert (state, Trigger.UNPLUGGED) in TRANSITIONS, state


def test_every_power_state_leaves_on_fault_unplug_and_deauthorization() -> None:
    for state in POWER_STATES:
        for trigger in (Trigger.FAULT, Trigger.UNPLUGGED, Trigger.DEAUTHORIZED):
            assert TRANSITIONS.get((state, trigger)) == State.STOPPING_CHARGING, (state, trigger)


def test_stopping_charging_has_an_exit_for_every_outcome() -> None:
    for trigger in (Trigger.STOPPED_END, Trigger.STOPPED_PAUSE_EV, Trigger.STOPPED_PAUSE_EVSE):
        assert (State.STOPPING_CHARGING, trigger) in TRANSITIONS


def test_every_trigger_is_used() -> None:
    used = {trigger for _, trigger in TRANSITIONS}
    assert used == set(Trigger)
