"""PyAuth's decisions: which token goes to which EVSE, when, and whom to tell.

Pure: no threads, no MQTT, no clock. Every entry point takes ``now`` (monotonic seconds)
and returns the effects the caller must carry out, in order; module.py owns the lock, the
clock, the threads and the bus. That keeps every rule testable with a fake clock.

The rules, in short (EVerest's Auth module is the model; see module.py for the
differences):

- An EVSE is WAITING from SessionStarted (a car plugged in) or AuthRequired until it is
  authorized; AUTHORIZED from Authorized / TransactionStarted (or from our own
  authorize_response); DONE after TransactionFinished or PluginTimeout; FREE again after
  SessionFinished.
- A provided token is validated at once (first validator that answers Accepted wins).
  Accepted, it goes to the EVSE that has been WAITING longest, or is held for
  ``connection_timeout`` seconds until a car plugs in.
- An authorization we gave that is not followed by TransactionStarted within
  ``connection_timeout`` is withdrawn, as EVerest does.
- ``default_token``: an EVSE that waits ``default_token_delay`` without any provider token
  gets this token, so a charger without token provider (SIL, free vend) still starts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

Token = dict[str, Any]  # a ProvidedIdToken as it travels on the wire
Result = dict[str, Any]  # a ValidationResult

ACCEPTED = "Accepted"


class Phase(Enum):
    FREE = "free"  # no car: a token meant for this EVSE waits until one plugs in
    WAITING = "waiting"  # a session waits for authorization
    AUTHORIZED = "authorized"  # authorized (by us or otherwise), or a transaction runs
    DONE = "done"  # transaction over or plug-in timed out: only an unplug frees it


# effects, carried out by the module in the order returned


@dataclass(frozen=True)
class PublishStatus:
    """Publish token_validation_status."""

    token: Token
    status: str  # TokenValidationStatus


@dataclass(frozen=True)
class Validate:
    """Ask the validators about ``token``; report with ``AuthCore.on_validated(key, ...)``."""

    key: int
    token: Token


@dataclass(frozen=True)
class Authorize:
    """Call authorize_response on the EVSE of connection ``evse`` (its index)."""

    evse: int
    token: Token
    result: Result


@dataclass(frozen=True)
class Withdraw:
    """Call withdraw_authorization on the EVSE of connection ``evse``."""

    evse: int


@dataclass(frozen=True)
class StopTransaction:
    """Call stop_transaction on the EVSE of connection ``evse``."""

    evse: int
    request: dict[str, Any]


Effect = PublishStatus | Validate | Authorize | Withdraw | StopTransaction


@dataclass(frozen=True)
class AuthConfig:
    connection_timeout_s: float = 10.0
    accept_without_validator: bool = True
    has_validators: bool = False
    default_token: str = ""  # empty: off
    default_token_delay_s: float = 0.25
    master_pass_group_id: str = ""


@dataclass
class Grant:
    """An authorization we handed to an EVSE."""

    token: Token
    deadline: float  # withdrawn if no transaction has started by then


@dataclass
class EvseState:
    index: int  # position among the evse_manager connections
    evse_id: int  # EVSE id as get_evse reports it; tokens and requests use this one
    phase: Phase = Phase.FREE
    waiting_since: float = 0.0
    token_seen: bool = False  # a provider token arrived while waiting: no default token
    default_due: float | None = None
    transaction: bool = False
    grant: Grant | None = None


@dataclass
class PendingToken:
    key: int
    token: Token
    default_for: int | None = None  # EVSE index a default token was made for
    result: Result | None = None  # set once accepted: the token is then held
    deadline: float = math.inf  # while held
    withdrawn: bool = False  # withdrawn while the validators were asked


@dataclass
class AuthCore:
    config: AuthConfig
    evses: list[EvseState]
    connection_timeout_s: float = field(init=False)
    master_pass_group_id: str = field(init=False)
    pending: list[PendingToken] = field(default_factory=list)
    _keys: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.connection_timeout_s = self.config.connection_timeout_s
        self.master_pass_group_id = self.config.master_pass_group_id

    @classmethod
    def create(cls, config: AuthConfig, evse_count: int) -> AuthCore:
        """EVSE ids default to position + 1 until get_evse tells otherwise."""
        return cls(config, [EvseState(i, i + 1) for i in range(evse_count)])

    # settings

    def set_evse_id(self, index: int, evse_id: int) -> None:
        self.evses[index].evse_id = evse_id

    def set_connection_timeout(self, seconds: float) -> None:
        """Applies to tokens and authorizations from now on."""
        self.connection_timeout_s = seconds

    def set_master_pass_group_id(self, group_id: str) -> None:
        self.master_pass_group_id = group_id

    # tokens

    def on_token(self, token: Token, now: float) -> list[Effect]:
        """A token from a provider."""
        referenced = self._referenced(token)
        for evse in referenced:
            if evse.phase is Phase.WAITING:
                evse.token_seen = True
        if self._in_process(token, referenced):
            return []  # presented again while still being handled: EVerest ignores it too
        effects: list[Effect] = [PublishStatus(token, "Processing")]
        stop = self._transaction_of(token, referenced)
        if stop is not None:
            request = {"reason": "Local", "id_tag": token}
            return [
                *effects,
                StopTransaction(stop.index, request),
                PublishStatus(token, "UsedToStop"),
            ]
        return effects + self._admit(PendingToken(next(self._keys), token), now)

    def on_validated(self, key: int, result: Result, now: float) -> list[Effect]:
        """The validators' combined answer (see ``validation_outcome``) for ``Validate(key)``."""
        pending = next((p for p in self.pending if p.key == key), None)
        if pending is None:
            return []
        return self._decide(pending, result, now)

    def _admit(self, pending: PendingToken, now: float) -> list[Effect]:
        token = pending.token
        if not any(e.phase in (Phase.FREE, Phase.WAITING) for e in self._referenced(token)):
            return [PublishStatus(token, "Rejected")]  # no EVSE could take it anyway
        self.pending.append(pending)
        if token.get("prevalidated"):
            return self._decide(pending, accepted(token.get("parent_id_token")), now)
        if self.config.has_validators:
            return [Validate(pending.key, token)]
        if self.config.accept_without_validator:
            return self._decide(pending, accepted(), now)
        return self._decide(
            pending, {"authorization_status": "Unknown", "tariff_messages": []}, now
        )

    def _decide(self, pending: PendingToken, result: Result, now: float) -> list[Effect]:
        token = pending.token
        if pending.withdrawn:
            self.pending.remove(pending)
            return [PublishStatus(token, "Withdrawn")]
        if self._is_master_pass(result):
            self.pending.remove(pending)  # a master pass may stop transactions, never start one
            return [PublishStatus(token, "Rejected")]
        if result["authorization_status"] != ACCEPTED:
            self.pending.remove(pending)
            # EVerest tells the EVSEs a token names about a refusal: ISO 15118 Plug&Charge
            # would otherwise wait in its Authorize loop until its own timeout. Not for our
            # default token: a card may still be presented.
            named = "connectors" in token and pending.default_for is None
            told = [
                Authorize(e.index, token, result)
                for e in self._referenced(token)
                if named and e.phase is Phase.WAITING
            ]
            return [*told, PublishStatus(token, "Rejected")]
        if "parent_id_token" in result:
            token = pending.token = {**token, "parent_id_token": result["parent_id_token"]}
        pending.result = result
        pending.deadline = now + self.connection_timeout_s
        effects: list[Effect] = [PublishStatus(token, ACCEPTED)]
        waiting = [e for e in self._referenced(token) if e.phase is Phase.WAITING]
        if waiting:
            effects += self._grant(min(waiting, key=lambda e: e.waiting_since), pending, now)
        return effects

    def _grant(self, evse: EvseState, pending: PendingToken, now: float) -> list[Effect]:
        assert pending.result is not None
        self.pending.remove(pending)
        token = {**pending.token, "connectors": [evse.evse_id]}
        evse.phase = Phase.AUTHORIZED
        evse.default_due = None
        evse.grant = Grant(token, now + self.connection_timeout_s)
        return [Authorize(evse.index, token, pending.result), PublishStatus(token, "UsedToStart")]

    # EVSEs

    def on_session_event(self, index: int, event: dict[str, Any], now: float) -> list[Effect]:
        evse = self.evses[index]
        kind = event["event"]
        if kind == "SessionStarted":
            self._reset(evse)
            if event.get("session_started", {}).get("reason") == "Authorized":
                evse.phase = Phase.AUTHORIZED  # authorized before plug-in, not by us
                return []
            return self._start_waiting(evse, now)
        if kind == "AuthRequired" and evse.phase is Phase.FREE:
            return self._start_waiting(evse, now)  # we missed SessionStarted (e.g. restart)
        if kind == "Authorized" and evse.phase in (Phase.FREE, Phase.WAITING):
            evse.phase = Phase.AUTHORIZED  # e.g. EvseManager's own free-vend mode
            evse.default_due = None
        elif kind == "TransactionStarted":
            evse.phase = Phase.AUTHORIZED
            evse.transaction = True
            evse.default_due = None
        elif kind == "Deauthorized" and evse.phase is Phase.AUTHORIZED and not evse.transaction:
            evse.grant = None
            self._wait_again(evse, now)
        elif kind in ("TransactionFinished", "PluginTimeout"):
            evse.transaction = False
            evse.grant = None
            evse.phase = Phase.DONE
            evse.default_due = None
        elif kind == "SessionFinished":
            self._reset(evse)
        return []

    def _reset(self, evse: EvseState) -> None:
        evse.phase = Phase.FREE
        evse.transaction = False
        evse.grant = None
        evse.default_due = None
        evse.token_seen = False

    def _start_waiting(self, evse: EvseState, now: float) -> list[Effect]:
        self._wait_again(evse, now)
        # a token still being validated for this EVSE counts as seen: no default token race
        evse.token_seen = any(evse in self._referenced(p.token) for p in self.pending)
        if self.config.default_token:
            evse.default_due = now + self.config.default_token_delay_s
        held = [
            p for p in self.pending if p.result is not None and evse in self._referenced(p.token)
        ]
        return self._grant(evse, held[0], now) if held else []

    def _wait_again(self, evse: EvseState, now: float) -> None:
        """Waiting, but no held token jumps in and no default token: after a withdrawal the
        EVSE waits for someone to present a token again."""
        evse.phase = Phase.WAITING
        evse.waiting_since = now

    # time

    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for pending in list(self.pending):
            if pending.result is not None and pending.deadline <= now:
                self.pending.remove(pending)  # no car plugged in in time
                effects.append(PublishStatus(pending.token, "TimedOut"))
        for evse in self.evses:
            if evse.grant is not None and not evse.transaction and evse.grant.deadline <= now:
                effects += [Withdraw(evse.index), PublishStatus(evse.grant.token, "TimedOut")]
                evse.grant = None
                self._wait_again(evse, now)
        for evse in self.evses:
            if evse.default_due is not None and evse.default_due <= now:
                evse.default_due = None
                if evse.phase is Phase.WAITING and not evse.token_seen:
                    default = self._default_token(evse)
                    pending = PendingToken(next(self._keys), default, evse.index)
                    effects += [PublishStatus(default, "Processing"), *self._admit(pending, now)]
        return effects

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do; None: nothing is timed."""
        times = [p.deadline for p in self.pending if p.result is not None]
        times += [e.grant.deadline for e in self.evses if e.grant is not None and not e.transaction]
        times += [e.default_due for e in self.evses if e.default_due is not None]
        return min(times, default=None)

    # withdraw_authorization

    def withdraw(self, request: dict[str, Any], now: float) -> tuple[str, list[Effect]]:
        """EVerest's rules: evse_id and/or id_token narrow the request; a token still being
        handled is dropped; a granted authorization is withdrawn, or its transaction stopped
        (reason DeAuthorized) if one runs. Returns (WithdrawAuthorizationResult, effects)."""
        evse_id = request.get("evse_id")
        if evse_id is not None and not any(e.evse_id == evse_id for e in self.evses):
            return "EvseNotFound", []
        wanted = request.get("id_token")

        def matches(token: Token, evses: Sequence[EvseState]) -> bool:
            token_ok = wanted is None or same_token(token["id_token"], wanted)
            return token_ok and (evse_id is None or any(e.evse_id == evse_id for e in evses))

        result = "AuthorizationNotFound"
        effects: list[Effect] = []
        for pending in list(self.pending):
            if not pending.withdrawn and matches(pending.token, self._referenced(pending.token)):
                result = ACCEPTED
                if pending.result is None:
                    pending.withdrawn = True  # reported when the validators answer
                else:
                    self.pending.remove(pending)
                    effects.append(PublishStatus(pending.token, "Withdrawn"))
        for evse in self.evses:
            if evse.grant is not None and matches(evse.grant.token, [evse]):
                result = ACCEPTED
                if evse.transaction:
                    effects.append(StopTransaction(evse.index, {"reason": "DeAuthorized"}))
                else:
                    effects += [Withdraw(evse.index), PublishStatus(evse.grant.token, "Withdrawn")]
                    evse.grant = None
                    self._wait_again(evse, now)
        return result, effects

    # helpers

    def _referenced(self, token: Token) -> list[EvseState]:
        """The EVSEs a token may go to: those it names in ``connectors``, else all."""
        if "connectors" not in token:
            return list(self.evses)
        return [e for e in self.evses if e.evse_id in token["connectors"]]

    def _in_process(self, token: Token, referenced: Sequence[EvseState]) -> bool:
        """Being validated or held, or granted to an EVSE that has not started yet."""
        id_token = token["id_token"]
        if any(
            p.default_for is None and not p.withdrawn and same_token(p.token["id_token"], id_token)
            for p in self.pending
        ):
            return True
        return any(
            e.grant is not None
            and not e.transaction
            and same_token(e.grant.token["id_token"], id_token)
            for e in referenced
        )

    def _transaction_of(self, token: Token, referenced: Sequence[EvseState]) -> EvseState | None:
        """An RFID card presented again ends the transaction it started (EVerest's rule)."""
        if token["authorization_type"] != "RFID":
            return None
        return next(
            (
                e
                for e in referenced
                if e.transaction
                and e.grant is not None
                and same_token(e.grant.token["id_token"], token["id_token"])
            ),
            None,
        )

    def _is_master_pass(self, result: Result) -> bool:
        parent = result.get("parent_id_token")
        group = self.master_pass_group_id
        return bool(group) and parent is not None and parent["value"].casefold() == group.casefold()

    def _default_token(self, evse: EvseState) -> Token:
        return {
            "id_token": {"value": self.config.default_token, "type": "Local"},
            "authorization_type": "RFID",
            "connectors": [evse.evse_id],
        }


def same_token(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """IdTokens compare by value, ignoring case (the type says so)."""
    return str(a["value"]).casefold() == str(b["value"]).casefold()


def accepted(parent_id_token: dict[str, Any] | None = None) -> Result:
    result: Result = {"authorization_status": ACCEPTED, "tariff_messages": []}
    if parent_id_token is not None:
        result["parent_id_token"] = parent_id_token
    return result


TIMEOUT_RESULT: Result = {"authorization_status": "Timeout", "tariff_messages": []}


def validation_outcome(results: Sequence[Result | None]) -> Result:
    """Combine the validators' answers, asked in connection order: the first Accepted wins;
    otherwise the last refusal; a validator that failed or timed out (None) accepts nothing.
    """
    for result in results:
        if result is not None and result["authorization_status"] == ACCEPTED:
            return result
    refusals = [r for r in results if r is not None]
    return refusals[-1] if refusals else dict(TIMEOUT_RESULT)
