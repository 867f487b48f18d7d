"""PyAuth: a minimal EVerest Auth module. Binds the decision core (core.py) to the bus.

Tokens from any ``token_provider`` are checked by the ``token_validator`` connections and
handed to the EVSE (``evse_manager``) that waits for authorization. ``token_validation_status``
reports every step. See manifests/PyAuth.yaml for the config keys.

``default_token`` lets a charger without any token provider (a SIL stack, a free-vend
charger) start sessions: an EVSE that waits ``default_token_delay_ms`` without a token gets
this one. The alternative is EvseManager's own free-vend setting, which skips Auth altogether;
the default token still goes through the validators (and so to OCPP, if connected).

What differs from EVerest's Auth:

- No reservations: ``reservation`` is provided so that configs connecting it keep working,
  but reserve_now answers Rejected ("not set up to take reservations") and no
  reservation_update is ever published.
- Selection: a token goes to an EVSE with a car waiting for authorization (the one waiting
  longest), or is held until a car plugs in. No EVSE is authorized before a car is there,
  whatever ``selection_algorithm`` says; with one EVSE the outcome is the same as EVerest's.
- Validators are asked one after the other and asking stops at the first Accepted (EVerest
  asks all); each call is bounded by ``validation_timeout_ms``, and a timeout counts as
  not accepted. Without validators, ``accept_without_validator`` decides.
- The master pass group only blocks starting; a master pass does not stop transactions.
- Not implemented: validate_result_update, the Inoperative error of EVSEs, the kvs
  requirement and the config keys prioritize_authorization_over_stopping_transaction,
  ignore_connector_faults and plug_in_timeout_enabled.

Threads: bus callbacks only touch the core under a lock and return at once. Validations run
on a small pool; EVSE calls and publications run in order on one worker, each call bounded
by ``EVSE_CALL_TIMEOUT_S``; a timer thread runs the core's deadlines.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from ..framework import CommandError, Fulfillment, Module
from .core import (
    ACCEPTED,
    AuthConfig,
    AuthCore,
    Authorize,
    Effect,
    PublishStatus,
    Result,
    StopTransaction,
    Token,
    Validate,
    Withdraw,
    validation_outcome,
)

log = logging.getLogger("PyAuth")
MAIN = "main"
RESERVATION = "reservation"
EVSE_CALL_TIMEOUT_S = 5.0  # EvseManager answers these at once; a slow one must not stall us
VALIDATION_THREADS = 4

Step = Callable[[float], list[Effect]]


def auth_config(cfg: dict[str, Any], has_validators: bool) -> AuthConfig:
    return AuthConfig(
        connection_timeout_s=float(cfg["connection_timeout"]),
        accept_without_validator=bool(cfg["accept_without_validator"]),
        has_validators=has_validators,
        default_token=str(cfg["default_token"]),
        default_token_delay_s=cfg["default_token_delay_ms"] / 1000,
        master_pass_group_id=str(cfg["master_pass_group_id"]),
    )


def redact(value: str) -> str:
    """Token values identify people: logs show only the first characters, as EVerest does."""
    return value[:2] + "*" * max(0, len(value) - 2)


class AuthRunner:
    """The core behind one lock, plus the threads that carry out its effects."""

    def __init__(
        self,
        module: Module,
        core: AuthCore,
        validation_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.module = module
        self.core = core
        self.validation_timeout_s = validation_timeout_s
        self.clock = clock
        self.evses = module.connections("evse_manager")
        self.validators = module.connections("token_validator")
        self._cond = threading.Condition()
        self._closed = False
        self._calls = futures.ThreadPoolExecutor(1, thread_name_prefix="auth-calls")
        self._validations = futures.ThreadPoolExecutor(
            VALIDATION_THREADS, thread_name_prefix="auth-validate"
        )
        self._timer = threading.Thread(target=self._run_timer, name="auth-timer", daemon=True)

    def start(self) -> None:
        self._timer.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._timer.join(2)
        self._validations.shutdown(wait=False, cancel_futures=True)
        self._calls.shutdown(wait=False, cancel_futures=True)

    def run(self, step: Step) -> list[futures.Future[None]]:
        """Run one core step now; returns the futures of the EVSE calls it caused."""
        with self._cond:
            if self._closed:
                return []
            calls = self._apply(step(self.clock()))
            self._cond.notify_all()  # deadlines may have changed
        return calls

    def update(self, change: Callable[[AuthCore], None]) -> None:
        """Change a setting of the core, under the lock."""
        with self._cond:
            change(self.core)
            self._cond.notify_all()

    def submit_call(self, fn: Callable[[], None]) -> futures.Future[None]:
        """Queue work behind the EVSE calls already queued (keeps their order)."""
        return self._calls.submit(fn)

    def _apply(self, effects: list[Effect]) -> list[futures.Future[None]]:
        """Only queues work, so it is safe under the lock."""
        calls = []
        for effect in effects:
            if isinstance(effect, Validate):
                self._validations.submit(self._validate, effect.key, effect.token)
            else:
                future = self._calls.submit(self._carry_out, effect)
                if not isinstance(effect, PublishStatus):
                    calls.append(future)
        return calls

    def _carry_out(self, effect: Effect) -> None:
        try:
            if isinstance(effect, PublishStatus):
                self._publish(effect.token, effect.status)
            elif isinstance(effect, Authorize):
                args = {"provided_token": effect.token, "validation_result": effect.result}
                log.info(
                    "EVSE %s: authorize_response %s",
                    self.core.evses[effect.evse].evse_id,
                    effect.result["authorization_status"],
                )
                self._call(effect.evse, "authorize_response", args)
            elif isinstance(effect, Withdraw):
                log.info("EVSE %s: withdraw_authorization", self.core.evses[effect.evse].evse_id)
                self._call(effect.evse, "withdraw_authorization", None)
            elif isinstance(effect, StopTransaction):
                log.info("EVSE %s: stop_transaction", self.core.evses[effect.evse].evse_id)
                self._call(effect.evse, "stop_transaction", {"request": effect.request})
        except Exception:
            log.exception("could not carry out %s", type(effect).__name__)
            raise

    def _publish(self, token: Token, status: str) -> None:
        log.info("token %s: %s", redact(token["id_token"]["value"]), status)
        message = {"token": token, "status": status}
        self.module.publish_variable(MAIN, "token_validation_status", message)

    def _call(self, evse: int, cmd: str, args: dict[str, Any] | None) -> None:
        self.module.call_command(self.evses[evse], cmd, args, timeout=EVSE_CALL_TIMEOUT_S)

    def _validate(self, key: int, token: Token) -> None:
        results: list[Result | None] = []
        for validator in self.validators:
            results.append(self._ask(validator, token))
            if results[-1] is not None and results[-1]["authorization_status"] == ACCEPTED:
                break
        outcome = validation_outcome(results)
        self.run(lambda now: self.core.on_validated(key, outcome, now))

    def _ask(self, validator: Fulfillment, token: Token) -> Result | None:
        try:
            result: Result = self.module.call_command(
                validator,
                "validate_token",
                {"provided_token": token},
                timeout=self.validation_timeout_s,
            )
        except CommandError as exc:
            log.warning("validator %s did not answer: %s", validator.module_id, exc)
            return None
        return result

    def _run_timer(self) -> None:
        with self._cond:
            while not self._closed:
                deadline = self.core.next_deadline()
                now = self.clock()
                if deadline is not None and deadline <= now:
                    self._apply(self.core.tick(now))
                    continue
                self._cond.wait(None if deadline is None else deadline - now)


class AuthCommands:
    """The ``auth`` interface: thin calls into the core."""

    def __init__(self, module: Module, runner: AuthRunner) -> None:
        self.runner = runner
        module.implement_command(MAIN, "set_connection_timeout", self.set_connection_timeout)
        module.implement_command(MAIN, "set_master_pass_group_id", self.set_master_pass_group_id)
        module.implement_command(MAIN, "withdraw_authorization", self.withdraw_authorization)

    def set_connection_timeout(self, connection_timeout: int) -> None:
        self.runner.update(lambda core: core.set_connection_timeout(connection_timeout))

    def set_master_pass_group_id(self, master_pass_group_id: str) -> None:
        self.runner.update(lambda core: core.set_master_pass_group_id(master_pass_group_id))

    def withdraw_authorization(self, request: dict[str, Any]) -> str:
        """Waits (bounded) for the EVSE calls: Rejected if one failed or did not finish."""
        outcome: list[str] = []

        def step(now: float) -> list[Effect]:
            result, effects = self.runner.core.withdraw(request, now)
            outcome.append(result)
            return effects

        calls = self.runner.run(step)
        done, not_done = futures.wait(calls, timeout=2 * EVSE_CALL_TIMEOUT_S)
        if not_done or any(f.exception() is not None for f in done):
            return "Rejected"
        return outcome[0] if outcome else "Rejected"


class NoReservations:
    """The ``reservation`` interface of a charger that takes no reservations."""

    def __init__(self, module: Module) -> None:
        module.implement_command(RESERVATION, "reserve_now", self.reserve_now)
        module.implement_command(RESERVATION, "cancel_reservation", self.cancel_reservation)
        module.implement_command(RESERVATION, "exists_reservation", self.exists_reservation)

    def reserve_now(self, request: dict[str, Any]) -> str:
        log.info("reservation %s refused: PyAuth takes no reservations", request["reservation_id"])
        return "Rejected"

    def cancel_reservation(self, reservation_id: int) -> bool:
        return False

    def exists_reservation(self, request: dict[str, Any]) -> str:
        return "NotReserved"


@dataclass
class PyAuth:
    module: Module
    runner: AuthRunner

    @classmethod
    def attach(cls, module: Module) -> PyAuth:
        """Build PyAuth for ``module``'s config, register handlers and subscriptions, start
        its threads. Call before ``init_done``; pass ``ready`` to it."""
        cfg = module.module_config
        evses = module.connections("evse_manager")
        validators = module.connections("token_validator")
        core = AuthCore.create(auth_config(cfg, bool(validators)), len(evses))
        runner = AuthRunner(module, core, cfg["validation_timeout_ms"] / 1000)
        AuthCommands(module, runner)
        NoReservations(module)
        for provider in module.connections("token_provider"):
            module.subscribe_variable(
                provider, "provided_token", functools.partial(on_token, runner)
            )
        for index, evse in enumerate(evses):
            callback = functools.partial(on_session_event, runner, index)
            module.subscribe_variable(evse, "session_event", callback)
        if not validators:
            verdict = "accepted" if core.config.accept_without_validator else "rejected"
            log.info("no token validator connected: every token is %s", verdict)
        runner.start()
        return cls(module, runner)

    def ready(self) -> None:
        """Learn the EVSE ids (tokens and withdraw requests name EVSEs by id), on the call
        worker so that the ready callback returns at once."""
        for index in range(len(self.runner.evses)):
            self.runner.submit_call(functools.partial(self._learn_evse_id, index))

    def _learn_evse_id(self, index: int) -> None:
        evse = self.runner.evses[index]
        try:
            description = self.module.call_command(evse, "get_evse", timeout=EVSE_CALL_TIMEOUT_S)
        except CommandError as exc:
            log.warning(
                "get_evse of %s failed (%s): using EVSE id %d", evse.module_id, exc, index + 1
            )
            return
        self.runner.update(lambda core: core.set_evse_id(index, description["id"]))

    def close(self) -> None:
        self.runner.close()


def on_token(runner: AuthRunner, token: Token) -> None:
    runner.run(lambda now: runner.core.on_token(token, now))


def on_session_event(runner: AuthRunner, index: int, event: dict[str, Any]) -> None:
    runner.run(lambda now: runner.core.on_session_event(index, event, now))


def main() -> None:
    module = Module.start()
    auth = PyAuth.attach(module)
    module.init_done(auth.ready)
    try:
        module.serve_forever()
    finally:
        auth.close()
