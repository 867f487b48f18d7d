"""Block E invariants of the transaction core under any order of EvseManager events, CSMS
commands, clock ticks and bridge restarts (hypothesis stateful testing).

E01.FR.07 / TransactionEventEnumType: per transaction seqNo is 0, 1, 2, ... without gaps;
the first event is Started, the last Ended, all others Updated; nothing follows Ended.
Also: transactions never overlap on one EVSE, evse is only in Started (E01.FR.16), and every
payload is a valid TransactionEventRequest."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from everkit.ocpp201.metering import MEASURANDS
from everkit.ocpp201.transactions import POINTS, EvseTransactions, TxSettings
from tests.unit.ocpp_tx_helpers import SESSION, T0, assert_valid, session_event

_TYPES = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "types" / "evse_manager.yaml").read_text()
)["types"]
KINDS = _TYPES["SessionEventEnum"]["enum"]
STOP_REASONS = _TYPES["StopTransactionReason"]["enum"]
SESSIONS = [SESSION, "0d9c6f3e-1111-4a2b-8c3d-222233334444", "long-session-" + "y" * 40]

numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**9)
readings = st.fixed_dictionaries(
    {
        "timestamp": st.just("2024-05-01T12:00:00.000Z"),
        "energy_Wh_import": st.fixed_dictionaries({"total": numbers}),
    },
    optional={
        "power_W": st.fixed_dictionaries({"total": numbers}),
        "current_A": st.dictionaries(st.sampled_from(["DC", "L1", "L2", "L3", "N"]), numbers),
        "voltage_V": st.dictionaries(st.sampled_from(["DC", "L1", "L2", "L3"]), numbers),
    },
)
everest_tokens = st.fixed_dictionaries(
    {
        "id_token": st.fixed_dictionaries(
            {
                "value": st.sampled_from(["CAFE0001", "0", "Z" * 36]),
                "type": st.sampled_from(["ISO14443", "Central", "eMAID", "NotAnOcppType"]),
            },
            optional={
                "additional_info": st.lists(
                    st.fixed_dictionaries({"value": st.just("A1"), "type": st.just("x")}),
                    max_size=2,
                )
            },
        ),
        "authorization_type": st.sampled_from(["RFID", "OCPP"]),
    }
)
csms_tokens = st.fixed_dictionaries(
    {
        "id_token": st.sampled_from(["REMOTE01", "CAFE0001"]),
        "type": st.sampled_from(["Central", "ISO14443"]),
    }
)
# PyEvseManager's DC session, in order; "plausible_next" walks it, "session_event" does anything
GRAMMAR = [
    "SessionStarted",
    "AuthRequired",
    "Authorized",
    "TransactionStarted",
    "PrepareCharging",
    "ChargingStarted",
    "ChargingPausedEV",
    "ChargingStarted",
    "ChargingPausedEVSE",
    "ChargingStarted",
    "StoppingCharging",
    "ChargingFinished",
    "TransactionFinished",
    "SessionFinished",
]
point_sets = st.frozensets(st.sampled_from(POINTS), min_size=1)
measurand_tuples = st.lists(st.sampled_from(sorted(MEASURANDS)), unique=True).map(tuple)


def details_for(kind: str, data: st.DataObject) -> dict[str, Any]:
    meter = data.draw(st.none() | readings)
    with_meter = {"meter_value": meter} if meter is not None else {}
    token = data.draw(st.none() | everest_tokens)
    with_token = {"id_tag": token} if token is not None else {}
    if kind == "SessionStarted":
        reason = data.draw(st.sampled_from(["EVConnected", "Authorized"]))
        return {"session_started": {"reason": reason, **with_meter, **with_token}}
    if kind == "TransactionStarted":
        reservation = data.draw(st.none() | st.integers(0, 100))
        extra = {"reservation_id": reservation} if reservation is not None else {}
        return {"transaction_started": {**with_token, **with_meter, **extra}}
    if kind == "TransactionFinished":
        reason = data.draw(st.none() | st.sampled_from(STOP_REASONS))
        extra = {"reason": reason} if reason is not None else {}
        return {"transaction_finished": {**with_meter, **with_token, **extra}}
    if kind == "SessionFinished":
        return {"session_finished": with_meter}
    if kind == "ChargingPausedEVSE":
        reasons = data.draw(
            st.lists(st.sampled_from(["UserPause", "Error", "NoEnergy"]), min_size=1, max_size=3)
        )
        return {"charging_paused_evse": {"reasons": reasons}}
    if kind in ("ChargingStarted", "ChargingPausedEV"):
        return {"charging_state_changed_event": with_meter} if with_meter else {}
    return {}


class TransactionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.seq: dict[str, int] = {}  # next seqNo of each transaction seen
        self.ended: set[str] = set()
        self.open: str | None = None
        self.sessions = 0
        self.current = SESSION
        self.cursor = 0
        self.restarted = False

    @initialize(
        start=point_sets,
        stop=point_sets,
        interval=st.sampled_from([0, 1, 30]),
        measurands=measurand_tuples,
    )
    def setup(
        self,
        start: frozenset[str],
        stop: frozenset[str],
        interval: int,
        measurands: tuple[str, ...],
    ) -> None:
        self.settings = TxSettings(
            evse_id=1,
            tx_start_points=start,
            tx_stop_points=stop,
            updated_interval_s=interval,
            started_measurands=measurands,
            updated_measurands=measurands,
            ended_measurands=measurands,
        )
        self.tx = EvseTransactions(self.settings)

    def record(self, payloads: list[dict[str, Any]]) -> None:
        for payload in payloads:
            assert_valid("TransactionEvent", payload)
            tx_id = payload["transactionInfo"]["transactionId"]
            kind = payload["eventType"]
            if kind == "Started":
                assert self.open is None, "a transaction started while another runs"
                assert tx_id not in self.seq, "a transaction id came back"
                assert payload["seqNo"] == 0
                assert "evse" in payload
                self.seq[tx_id] = 1
                self.open = tx_id
                continue
            assert tx_id == self.open, f"{kind} outside its transaction"
            assert tx_id not in self.ended, f"{kind} after Ended"
            assert payload["seqNo"] == self.seq[tx_id], "seqNo gap"
            assert "evse" not in payload
            self.seq[tx_id] += 1
            if kind == "Ended":
                self.ended.add(tx_id)
                self.open = None

    @invariant()
    def the_core_agrees_on_the_running_transaction(self) -> None:
        if hasattr(self, "tx"):
            assert self.tx.transaction_id == self.open
            assert self.tx.active == (self.open is not None)

    @rule(
        kind=st.sampled_from(KINDS),
        seconds=st.integers(0, 5),
        offline=st.booleans(),
        data=st.data(),
    )
    def session_event(self, kind: str, seconds: int, offline: bool, data: st.DataObject) -> None:
        """EvseManager gives every session a new uuid at SessionStarted (sometimes repeated, as
        a duplicate); other events mostly carry the current one, sometimes a stranger's."""
        self.now += timedelta(seconds=seconds)
        if kind == "SessionStarted":
            # a duplicate is only plausible to the run that saw the original
            if self.restarted or data.draw(st.booleans()):
                self.restarted = False
                self.sessions += 1
                self.current = f"{self.sessions:08d}-3c1d-4e2f-9a7b-1c2d3e4f5a6b"
                if data.draw(st.booleans()):
                    self.current = "long-" + self.current + "-" + "y" * 10
            session = self.current
        else:
            session = data.draw(st.sampled_from([self.current, self.current, *SESSIONS, ""]))
        event = session_event(kind, session, **details_for(kind, data))
        self.record(self.tx.on_session_event(event, self.now, offline=offline))

    @rule(seconds=st.integers(0, 40), offline=st.booleans(), skip=st.booleans(), data=st.data())
    def plausible_next(self, seconds: int, offline: bool, skip: bool, data: st.DataObject) -> None:
        kind = GRAMMAR[self.cursor]
        self.cursor = (self.cursor + 1) % len(GRAMMAR)
        if skip and kind.startswith("ChargingPaused"):
            return
        self.now += timedelta(seconds=seconds)
        if kind == "SessionStarted":
            self.restarted = False
            self.sessions += 1
            self.current = f"{self.sessions:08d}-3c1d-4e2f-9a7b-1c2d3e4f5a6b"
        event = session_event(kind, self.current, **details_for(kind, data))
        self.record(self.tx.on_session_event(event, self.now, offline=offline))

    @rule(seconds=st.integers(0, 100), offline=st.booleans())
    def tick(self, seconds: int, offline: bool) -> None:
        self.now += timedelta(seconds=seconds)
        deadline = self.tx.next_deadline()
        produced = self.tx.tick(self.now, offline=offline)
        self.record(produced)
        if deadline is not None and self.now >= deadline:
            assert self.tx.next_deadline() is None or self.tx.next_deadline() > self.now

    @rule(offline=st.booleans())
    def trigger(self, offline: bool) -> None:
        self.record(self.tx.trigger(self.now, offline=offline))

    @rule(remote_start_id=st.integers(0, 2**31 - 1), token=csms_tokens)
    def remote_start(self, remote_start_id: int, token: dict[str, Any]) -> None:
        self.tx.remote_start(remote_start_id, token)

    @rule()
    def remote_stop(self) -> None:
        assert self.tx.remote_stop() == (self.open is not None)

    @rule()
    def deauthorized(self) -> None:
        assert self.tx.deauthorized() == (self.open is not None)

    @rule(immediate=st.booleans(), offline=st.booleans())
    def reset(self, immediate: bool, offline: bool) -> None:
        was_open = self.open
        self.record(self.tx.reset_stop(immediate, self.now, offline=offline))
        assert self.open is None
        assert was_open is None or was_open in self.ended

    @rule(active=st.booleans())
    def fault(self, active: bool) -> None:
        self.tx.set_faulted(active)

    @rule(reading=readings)
    def powermeter(self, reading: dict[str, Any]) -> None:
        self.tx.on_powermeter(reading)

    @rule(soc=st.floats(0, 100))
    def ev_info(self, soc: float) -> None:
        self.tx.on_ev_info({"soc": soc})

    @rule(current=st.none() | numbers, power=st.none() | numbers)
    def offered(self, current: float | None, power: float | None) -> None:
        self.tx.set_offered(current, power)

    @rule(interval=st.sampled_from([0, 1, 30]), measurands=measurand_tuples)
    def new_settings(self, interval: int, measurands: tuple[str, ...]) -> None:
        self.settings = TxSettings(
            evse_id=1,
            tx_start_points=self.settings.tx_start_points,
            tx_stop_points=self.settings.tx_stop_points,
            updated_interval_s=interval,
            updated_measurands=measurands,
        )
        self.tx.settings = self.settings

    @rule()
    def restart(self) -> None:
        """The bridge restarts: only what snapshot() saved (through JSON, as in SQLite) remains."""
        self.restarted = True
        self.now += timedelta(seconds=1)  # a restart takes its time
        saved = self.tx.snapshot()
        restored = json.loads(json.dumps(saved, allow_nan=False)) if saved else None
        self.tx = EvseTransactions(self.settings, restored)


TransactionMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_transaction_invariants = TransactionMachine.TestCase
