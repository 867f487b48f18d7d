"""PyAuth as a module on a real Mosquitto, with test peers around it: a fake EVSE (the whole
evse_manager interface), a token provider, a validator, and a user of the auth interface
that watches token_validation_status and calls withdraw_authorization."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from everkit.auth.module import PyAuth
from everkit.framework.module import Module
from everkit.framework.transport import BrokerAddress
from tests.integration.harness import META, in_process_stack, start_module

pytestmark = pytest.mark.integration
WAIT = 10.0
CARD = {"id_token": {"value": "CARD1", "type": "ISO14443"}, "authorization_type": "RFID"}
ACCEPT = {"authorization_status": "Accepted", "tariff_messages": []}
INVALID = {"authorization_status": "Invalid", "tariff_messages": []}
PEERS = {
    "TestEvse": {
        "description": "a fake EvseManager",
        "provides": {"main": {"interface": "evse_manager", "description": "evse"}},
        "metadata": META,
    },
    "TestTokenProvider": {
        "description": "presents tokens when the test says so",
        "provides": {"main": {"interface": "auth_token_provider", "description": "tokens"}},
        "metadata": META,
    },
    "TestValidator": {
        "description": "answers validate_token as the test says",
        "provides": {"main": {"interface": "auth_token_validator", "description": "validator"}},
        "metadata": META,
    },
    "TestAuthUser": {
        "description": "uses the auth and reservation interfaces",
        "requires": {
            "auth": {"interface": "auth"},
            "reservation": {"interface": "reservation"},
        },
        "metadata": META,
    },
}


@dataclass
class Seen:
    """Things that happened, in order, with time.monotonic(); waiters are woken on each."""

    items: list[tuple[float, str, Any]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, kind: str, value: Any = None) -> None:
        with self.changed:
            self.items.append((time.monotonic(), kind, value))
            self.changed.notify_all()

    def of(self, kind: str) -> list[Any]:
        with self.changed:
            return [value for _, k, value in self.items if k == kind]

    def at(self, kind: str) -> float:
        return next(t for t, k, _ in self.items if k == kind)

    def wait_for(self, kind: str, count: int = 1) -> list[Any]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.of(kind)) >= count, WAIT), (
                f"no {kind}; saw {[k for _, k, _ in self.items]}"
            )
            return self.of(kind)

    def statuses(self) -> list[str]:
        return [message["status"] for message in self.of("status")]


class FakeEvse:
    """Serves every evse_manager command and records them in ``seen``."""

    def __init__(self, module: Module, seen: Seen) -> None:
        self.module = module
        self.seen = seen
        answers: dict[str, Any] = {
            "get_evse": {"id": 1, "connectors": [{"id": 1}]},
            "enable_disable": True,
            "authorize_response": None,
            "withdraw_authorization": None,
            "reserve": False,
            "cancel_reservation": None,
            "pause_charging": False,
            "resume_charging": False,
            "stop_transaction": True,
            "force_unlock": True,
            "external_ready_to_start_charging": False,
            "set_plug_and_charge_configuration": None,
            "update_allowed_energy_transfer_modes": "NoHlc",
        }
        for cmd, answer in answers.items():
            module.implement_command("main", cmd, self._recorder(cmd, answer))

    def _recorder(self, cmd: str, answer: Any) -> Callable[..., Any]:
        def handler(**args: Any) -> Any:
            self.seen.add(cmd, args)
            return answer

        return handler

    def session_event(self, kind: str) -> None:
        event: dict[str, Any] = {
            "uuid": "session-1",
            "timestamp": "2026-01-01T12:00:00.000Z",
            "event": kind,
        }
        if kind == "SessionStarted":
            meter = {"timestamp": "2026-01-01T12:00:00.000Z", "energy_Wh_import": {"total": 0.0}}
            event["session_started"] = {"reason": "EVConnected", "meter_value": meter}
        self.module.publish_variable("main", "session_event", event)


class FakeValidator:
    """Answers ``answer``; holds the answer back while ``hold`` is clear."""

    def __init__(self, module: Module, seen: Seen) -> None:
        self.seen = seen
        self.answer: dict[str, Any] = ACCEPT
        self.hold = threading.Event()
        self.hold.set()
        module.implement_command("main", "validate_token", self.validate_token)

    def validate_token(self, provided_token: dict[str, Any]) -> dict[str, Any]:
        self.seen.add("validate_token", provided_token)
        self.hold.wait(WAIT)
        return self.answer


@dataclass
class AuthStack:
    auth: PyAuth
    evse: FakeEvse
    provider: Module
    validator: FakeValidator
    user: Module
    seen: Seen

    def present(self, token: dict[str, Any]) -> None:
        self.provider.publish_variable("main", "provided_token", token)


def runtime_config(config: dict[str, Any], *, validator: bool) -> dict[str, Any]:
    def to(module_id: str, impl: str = "main") -> list[dict[str, str]]:
        return [{"module_id": module_id, "implementation_id": impl}]

    connections = {"evse_manager": to("evse"), "token_provider": to("provider")}
    if validator:
        connections["token_validator"] = to("validator")
    return {
        "active_modules": {
            "auth": {"module": "PyAuth", "config_module": config, "connections": connections},
            "evse": {"module": "TestEvse"},
            "provider": {"module": "TestTokenProvider"},
            "validator": {"module": "TestValidator"},
            "user": {
                "module": "TestAuthUser",
                "connections": {"auth": to("auth"), "reservation": to("auth", "reservation")},
            },
        }
    }


@pytest.fixture
def make_stack(
    broker: BrokerAddress, prefix: str, tmp_path: Path
) -> Iterator[Callable[..., AuthStack]]:
    """``make_stack(config_module, validator=True)`` starts the stack and waits for ready."""
    with ExitStack() as exits:

        def make(config: dict[str, Any] | None = None, *, validator: bool = True) -> AuthStack:
            setup = runtime_config(config or {}, validator=validator)
            _manager, started = exits.enter_context(
                in_process_stack(broker, prefix, tmp_path, setup, PEERS)
            )
            modules = {}
            for module_id in ("auth", "evse", "provider", "validator", "user"):
                modules[module_id] = started[module_id] = start_module(
                    broker, prefix, module_id, default_timeout=WAIT
                )
            seen = Seen()
            auth = PyAuth.attach(modules["auth"])
            exits.callback(auth.close)
            stack = AuthStack(
                auth,
                FakeEvse(modules["evse"], seen),
                modules["provider"],
                FakeValidator(modules["validator"], seen),
                modules["user"],
                seen,
            )
            exits.callback(stack.validator.hold.set)  # free a held handler before closing
            stack.user.subscribe_variable(
                "auth", "token_validation_status", lambda m: seen.add("status", m)
            )
            ready = threading.Event()
            modules["auth"].init_done(auth.ready)
            for module_id in ("evse", "provider", "validator"):
                modules[module_id].init_done()
            stack.user.init_done(ready.set)
            assert ready.wait(WAIT)
            seen.wait_for("get_evse")  # PyAuth asks each EVSE for its id when ready
            return stack

        yield make


def test_a_card_after_plug_in_is_validated_and_authorizes_the_evse(
    make_stack: Callable[..., AuthStack],
) -> None:
    stack = make_stack()
    stack.evse.session_event("SessionStarted")
    stack.evse.session_event("AuthRequired")
    stack.present(CARD)
    (response,) = stack.seen.wait_for("authorize_response")
    assert response["provided_token"]["id_token"] == CARD["id_token"]
    assert response["provided_token"]["connectors"] == [1]
    assert response["validation_result"]["authorization_status"] == "Accepted"
    assert stack.seen.of("validate_token") == [CARD]
    stack.seen.wait_for("status", 3)
    assert stack.seen.statuses() == ["Processing", "Accepted", "UsedToStart"]


def test_a_card_before_plug_in_is_held_until_the_car_arrives(
    make_stack: Callable[..., AuthStack],
) -> None:
    stack = make_stack({"connection_timeout": 10})
    stack.present(CARD)
    stack.seen.wait_for("status", 2)
    assert stack.seen.statuses() == ["Processing", "Accepted"]
    assert stack.seen.of("authorize_response") == []
    stack.evse.session_event("SessionStarted")
    stack.seen.wait_for("authorize_response")
    assert stack.seen.wait_for("status", 3)[-1]["status"] == "UsedToStart"


def test_a_rejected_card_authorizes_nothing(make_stack: Callable[..., AuthStack]) -> None:
    stack = make_stack()
    stack.validator.answer = INVALID
    stack.evse.session_event("SessionStarted")
    stack.present(CARD)
    stack.seen.wait_for("status", 2)
    assert stack.seen.statuses() == ["Processing", "Rejected"]
    # PyAuth publishes a status only after the EVSE calls before it have returned
    assert stack.seen.of("authorize_response") == []
    assert stack.user.call_command("auth", "withdraw_authorization", {"request": {}}) == (
        "AuthorizationNotFound"
    )


def test_a_validator_that_does_not_answer_in_time_accepts_nothing(
    make_stack: Callable[..., AuthStack],
) -> None:
    stack = make_stack({"validation_timeout_ms": 300})
    stack.validator.hold.clear()
    stack.evse.session_event("SessionStarted")
    stack.present(CARD)
    stack.seen.wait_for("status", 2)
    assert stack.seen.statuses() == ["Processing", "Rejected"]
    assert stack.seen.of("authorize_response") == []


def test_withdraw_authorization_reaches_the_evse_and_reports_what_it_found(
    make_stack: Callable[..., AuthStack],
) -> None:
    stack = make_stack()
    stack.evse.session_event("SessionStarted")
    stack.present(CARD)
    stack.seen.wait_for("authorize_response")

    def withdraw(request: dict[str, Any]) -> str:
        result: str = stack.user.call_command(
            "auth", "withdraw_authorization", {"request": request}
        )
        return result

    assert withdraw({"evse_id": 9}) == "EvseNotFound"
    assert withdraw({"evse_id": 1, "id_token": {"value": "OTHER", "type": "Local"}}) == (
        "AuthorizationNotFound"
    )
    assert withdraw({"evse_id": 1}) == "Accepted"
    assert stack.seen.of("withdraw_authorization") == [{}]  # done before the answer
    assert withdraw({"evse_id": 1}) == "AuthorizationNotFound"
    assert stack.seen.wait_for("status", 4)[-1]["status"] == "Withdrawn"


def test_default_token_authorizes_a_charger_without_token_provider_or_validator(
    make_stack: Callable[..., AuthStack],
) -> None:
    stack = make_stack({"default_token": "FREE", "default_token_delay_ms": 250}, validator=False)
    plugged_in = time.monotonic()
    stack.evse.session_event("SessionStarted")
    (response,) = stack.seen.wait_for("authorize_response")
    assert stack.seen.at("authorize_response") - plugged_in >= 0.25
    assert response["provided_token"]["id_token"]["value"] == "FREE"
    assert response["validation_result"]["authorization_status"] == "Accepted"


def test_settings_commands_and_reservations_are_served(
    make_stack: Callable[..., AuthStack],
) -> None:
    stack = make_stack()
    user = stack.user
    user.call_command("auth", "set_connection_timeout", {"connection_timeout": 60})
    user.call_command("auth", "set_master_pass_group_id", {"master_pass_group_id": "POLICE"})
    assert stack.auth.runner.core.connection_timeout_s == 60
    assert stack.auth.runner.core.master_pass_group_id == "POLICE"
    reservation = {"reservation_id": 1, "id_token": "CARD1", "expiry_time": "2030-01-01T00:00Z"}
    assert user.call_command("reservation", "reserve_now", {"request": reservation}) == "Rejected"
    check = {"id_token": "CARD1"}
    assert user.call_command("reservation", "exists_reservation", {"request": check}) == (
        "NotReserved"
    )
    assert user.call_command("reservation", "cancel_reservation", {"reservation_id": 1}) is False
