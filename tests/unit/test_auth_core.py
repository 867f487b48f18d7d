"""PyAuth's decision core with a fake clock: every time is an argument, every effect returned."""

from __future__ import annotations

from typing import Any

import pytest

from everkit.auth.core import (
    AuthConfig,
    AuthCore,
    Authorize,
    Effect,
    PublishStatus,
    StopTransaction,
    Validate,
    Withdraw,
    accepted,
    validation_outcome,
)

REJECTED = {"authorization_status": "Invalid", "tariff_messages": []}


def token(value: str = "CARD1", **extra: Any) -> dict[str, Any]:
    return {"id_token": {"value": value, "type": "ISO14443"}, "authorization_type": "RFID", **extra}


def event(kind: str, **extra: Any) -> dict[str, Any]:
    return {"uuid": "s1", "timestamp": "2026-01-01T00:00:00.000Z", "event": kind, **extra}


def plug_in() -> dict[str, Any]:
    started = {"reason": "EVConnected", "meter_value": {"timestamp": "t", "energy_Wh_import": {}}}
    return event("SessionStarted", session_started=started)


def core(evses: int = 1, **config: Any) -> AuthCore:
    return AuthCore.create(AuthConfig(**config), evses)


def statuses(effects: list[Effect]) -> list[str]:
    return [e.status for e in effects if isinstance(e, PublishStatus)]


def authorized(effects: list[Effect]) -> list[tuple[int, str, str]]:
    """(EVSE index, token value, authorization status) of each authorize_response."""
    return [
        (e.evse, e.token["id_token"]["value"], e.result["authorization_status"])
        for e in effects
        if isinstance(e, Authorize)
    ]


def validate_key(effects: list[Effect]) -> int:
    (validate,) = [e for e in effects if isinstance(e, Validate)]
    return validate.key


def test_a_token_before_plug_in_is_held_then_given_to_the_car() -> None:
    auth = core()
    effects = auth.on_token(token(), now=0.0)
    assert statuses(effects) == ["Processing", "Accepted"]
    assert authorized(effects) == []
    effects = auth.on_session_event(0, plug_in(), now=3.0)
    assert authorized(effects) == [(0, "CARD1", "Accepted")]
    assert statuses(effects) == ["UsedToStart"]
    grant = next(e for e in effects if isinstance(e, Authorize))
    assert grant.token["connectors"] == [1]  # the EVSE it went to, as EVerest reports it


def test_a_held_token_times_out_after_connection_timeout() -> None:
    auth = core(connection_timeout_s=10.0)
    auth.on_token(token(), now=0.0)
    assert auth.next_deadline() == 10.0
    assert auth.tick(9.9) == []
    assert statuses(auth.tick(10.0)) == ["TimedOut"]
    assert auth.next_deadline() is None
    assert authorized(auth.on_session_event(0, plug_in(), now=11.0)) == []


def test_without_validator_accept_without_validator_decides() -> None:
    assert statuses(core(accept_without_validator=True).on_token(token(), 0.0)) == [
        "Processing",
        "Accepted",
    ]
    refusing = core(accept_without_validator=False)
    refusing.on_session_event(0, plug_in(), 0.0)
    effects = refusing.on_token(token(), 0.1)
    assert statuses(effects) == ["Processing", "Rejected"]
    assert authorized(effects) == []


def test_a_token_a_validator_rejects_authorizes_nothing_and_the_evse_keeps_waiting() -> None:
    auth = core(has_validators=True)
    auth.on_session_event(0, plug_in(), 0.0)
    effects = auth.on_token(token("BAD"), 0.1)
    assert statuses(effects) == ["Processing"]
    effects = auth.on_validated(validate_key(effects), REJECTED, 0.4)
    assert statuses(effects) == ["Rejected"]
    assert authorized(effects) == []
    effects = auth.on_token(token("GOOD"), 1.0)
    effects = auth.on_validated(validate_key(effects), accepted(), 1.3)
    assert statuses(effects) == ["Accepted", "UsedToStart"]
    assert authorized(effects) == [(0, "GOOD", "Accepted")]


def test_a_refusal_is_told_to_the_evses_the_token_names() -> None:
    """ISO 15118 Plug&Charge waits in its Authorize loop until it hears the outcome."""
    auth = core(has_validators=True)
    auth.on_session_event(0, plug_in(), 0.0)
    effects = auth.on_token(token("EMAID", connectors=[1]), 0.1)
    effects = auth.on_validated(validate_key(effects), REJECTED, 0.2)
    assert authorized(effects) == [(0, "EMAID", "Invalid")]


def test_default_token_authorizes_after_the_delay_without_provider_token() -> None:
    auth = core(default_token="FREE", default_token_delay_s=0.25)
    assert auth.on_session_event(0, plug_in(), now=5.0) == []
    assert auth.next_deadline() == 5.25
    assert auth.tick(5.2) == []
    effects = auth.tick(5.25)
    assert statuses(effects) == ["Processing", "Accepted", "UsedToStart"]
    assert authorized(effects) == [(0, "FREE", "Accepted")]


def test_a_provider_token_within_the_delay_replaces_the_default_token() -> None:
    auth = core(has_validators=True, default_token="FREE", default_token_delay_s=0.25)
    auth.on_session_event(0, plug_in(), now=0.0)
    effects = auth.on_token(token(), 0.1)
    assert auth.tick(0.25) == []  # validation still running: no default token
    effects = auth.on_validated(validate_key(effects), REJECTED, 0.5)
    assert statuses(effects) == ["Rejected"]
    assert auth.tick(1.0) == []  # the user is there; a second card may follow


def test_two_evses_a_token_goes_to_the_one_waiting() -> None:
    auth = core(evses=2)
    auth.on_session_event(1, plug_in(), 0.0)
    assert authorized(auth.on_token(token("A"), 0.5)) == [(1, "A", "Accepted")]
    # both waiting: the one plugged in first gets the next token
    auth.on_session_event(1, event("SessionFinished"), 1.0)
    auth.on_session_event(1, plug_in(), 2.0)
    auth.on_session_event(0, plug_in(), 3.0)
    assert authorized(auth.on_token(token("B"), 4.0)) == [(1, "B", "Accepted")]
    assert authorized(auth.on_token(token("C"), 5.0)) == [(0, "C", "Accepted")]


def test_a_token_naming_an_evse_waits_for_that_one() -> None:
    auth = core(evses=2)
    auth.set_evse_id(0, 11)
    auth.set_evse_id(1, 12)
    auth.on_session_event(0, plug_in(), 0.0)
    assert authorized(auth.on_token(token(connectors=[12]), 0.5)) == []
    assert authorized(auth.on_session_event(1, plug_in(), 1.0)) == [(1, "CARD1", "Accepted")]


def test_an_authorization_without_transaction_is_withdrawn_after_connection_timeout() -> None:
    auth = core(connection_timeout_s=10.0)
    auth.on_session_event(0, plug_in(), 0.0)
    auth.on_token(token(), 1.0)
    assert auth.next_deadline() == 11.0
    effects = auth.tick(11.0)
    assert effects[0] == Withdraw(0)
    assert statuses(effects) == ["TimedOut"]
    # the car is still there: the next card authorizes it
    assert authorized(auth.on_token(token("OTHER"), 12.0)) == [(0, "OTHER", "Accepted")]


def test_transaction_started_keeps_the_authorization() -> None:
    auth = core(connection_timeout_s=10.0)
    auth.on_session_event(0, plug_in(), 0.0)
    auth.on_token(token(), 1.0)
    auth.on_session_event(0, event("Authorized"), 1.1)
    auth.on_session_event(0, event("TransactionStarted"), 1.2)
    assert auth.next_deadline() is None
    assert auth.tick(100.0) == []


def test_the_same_card_again_stops_its_transaction() -> None:
    auth = core()
    auth.on_session_event(0, plug_in(), 0.0)
    auth.on_token(token(), 1.0)
    auth.on_session_event(0, event("TransactionStarted"), 1.2)
    effects = auth.on_token(token("card1"), 50.0)  # values compare without case
    assert effects[1] == StopTransaction(0, {"reason": "Local", "id_tag": token("card1")})
    assert statuses(effects) == ["Processing", "UsedToStop"]


def test_a_token_presented_again_while_in_process_is_ignored() -> None:
    auth = core(has_validators=True)
    auth.on_token(token(), 0.0)
    assert auth.on_token(token(), 0.1) == []


def test_a_master_pass_may_not_start_a_transaction() -> None:
    auth = core(has_validators=True, master_pass_group_id="POLICE")
    auth.on_session_event(0, plug_in(), 0.0)
    effects = auth.on_token(token(), 0.1)
    parent = {"value": "police", "type": "Central"}
    effects = auth.on_validated(validate_key(effects), accepted(parent), 0.2)
    assert statuses(effects) == ["Rejected"]
    assert authorized(effects) == []


def test_a_prevalidated_token_skips_the_validators() -> None:
    auth = core(has_validators=True)
    auth.on_session_event(0, plug_in(), 0.0)
    effects = auth.on_token(token(prevalidated=True), 0.1)
    assert not any(isinstance(e, Validate) for e in effects)
    assert authorized(effects) == [(0, "CARD1", "Accepted")]


def test_a_session_started_by_authorization_does_not_wait_for_a_token() -> None:
    auth = core()
    started = {"reason": "Authorized", "meter_value": {"timestamp": "t", "energy_Wh_import": {}}}
    auth.on_session_event(0, event("SessionStarted", session_started=started), 0.0)
    assert authorized(auth.on_token(token(), 0.1)) == []


def test_auth_required_after_session_started_changes_nothing() -> None:
    auth = core(default_token="FREE")
    auth.on_session_event(0, plug_in(), 0.0)
    auth.on_token(token(), 0.1)
    assert auth.on_session_event(0, event("AuthRequired"), 0.2) == []
    assert auth.tick(1.0) == []  # no default token on top of the card


def test_set_connection_timeout_applies_to_new_tokens() -> None:
    auth = core(connection_timeout_s=10.0)
    auth.set_connection_timeout(30)
    auth.on_token(token(), 0.0)
    assert auth.next_deadline() == 30.0


def test_withdraw_an_authorization_before_the_transaction() -> None:
    auth = core()
    auth.on_session_event(0, plug_in(), 0.0)
    auth.on_token(token(), 0.1)
    result, effects = auth.withdraw({"evse_id": 1}, 1.0)
    assert result == "Accepted"
    assert effects[0] == Withdraw(0)
    assert statuses(effects) == ["Withdrawn"]
    assert auth.withdraw({"evse_id": 1}, 1.1) == ("AuthorizationNotFound", [])


def test_withdraw_during_a_transaction_stops_it() -> None:
    auth = core()
    auth.on_session_event(0, plug_in(), 0.0)
    auth.on_token(token(), 0.1)
    auth.on_session_event(0, event("TransactionStarted"), 0.2)
    result, effects = auth.withdraw({"id_token": {"value": "CARD1", "type": "ISO14443"}}, 1.0)
    assert (result, effects) == ("Accepted", [StopTransaction(0, {"reason": "DeAuthorized"})])


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ({"evse_id": 7}, "EvseNotFound"),
        ({"id_token": {"value": "OTHER", "type": "ISO14443"}}, "AuthorizationNotFound"),
        (
            {"evse_id": 1, "id_token": {"value": "OTHER", "type": "ISO14443"}},
            "AuthorizationNotFound",
        ),
        ({}, "Accepted"),
    ],
)
def test_withdraw_results(request_: dict[str, Any], expected: str) -> None:
    auth = core()
    auth.on_session_event(0, plug_in(), 0.0)
    auth.on_token(token(), 0.1)
    assert auth.withdraw(request_, 1.0)[0] == expected


def test_withdraw_held_and_validating_tokens() -> None:
    auth = core(has_validators=True)
    held_key = validate_key(auth.on_token(token("HELD"), 0.0))
    auth.on_validated(held_key, accepted(), 0.1)
    validating_key = validate_key(auth.on_token(token("SLOW"), 0.2))
    result, effects = auth.withdraw({}, 0.3)
    assert result == "Accepted"
    assert statuses(effects) == ["Withdrawn"]  # the held one at once
    assert statuses(auth.on_validated(validating_key, accepted(), 0.4)) == ["Withdrawn"]
    assert authorized(auth.on_session_event(0, plug_in(), 0.5)) == []


def test_validation_outcome_first_accepted_wins_and_silence_accepts_nothing() -> None:
    blocked = {"authorization_status": "Blocked", "tariff_messages": []}
    good = accepted({"value": "G", "type": "Central"})
    assert validation_outcome([None, blocked, good, REJECTED]) is good
    assert validation_outcome([blocked, None]) is blocked
    assert validation_outcome([None])["authorization_status"] == "Timeout"
    assert validation_outcome([])["authorization_status"] == "Timeout"
