"""PyOCPP201's SQLite store: round trips, queue order, durability, file safety, versions."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from everkit.framework.errors import EverkitError
from everkit.ocpp201.store import SCHEMA_VERSION, QueuedMessage, Store, StoreError

STARTED = {"eventType": "Started", "seqNo": 0, "transactionInfo": {"transactionId": "t-1"}}
UPDATED = {"eventType": "Updated", "seqNo": 1, "transactionInfo": {"transactionId": "t-1"}}
ENDED = {"eventType": "Ended", "seqNo": 2, "transactionInfo": {"transactionId": "t-1"}}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ocpp201.sqlite"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    with Store.open(path) as opened:
        yield opened


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_variables_round_trip_and_overwrite(store: Store) -> None:
    assert store.load_variables() == {}
    store.save_variable("OCPPCommCtrlr.HeartbeatInterval", "60")
    store.save_variable("SecurityCtrlr.BasicAuthPassword", "0123456789abcdef")
    store.save_variable("OCPPCommCtrlr.HeartbeatInterval", "120")
    assert store.load_variables() == {
        "OCPPCommCtrlr.HeartbeatInterval": "120",
        "SecurityCtrlr.BasicAuthPassword": "0123456789abcdef",
    }


def test_meta_round_trip(store: Store) -> None:
    assert store.get_meta("boot_count") is None
    store.set_meta("boot_count", "1")
    store.set_meta("boot_count", "2")
    assert store.get_meta("boot_count") == "2"


def test_transactions_round_trip_per_evse(store: Store) -> None:
    store.save_transaction(2, {"transactionId": "b", "seqNo": 4})
    store.save_transaction(1, {"transactionId": "a", "seqNo": 0})
    store.save_transaction(1, {"transactionId": "a", "seqNo": 1})
    assert store.load_transactions() == {
        1: {"transactionId": "a", "seqNo": 1},
        2: {"transactionId": "b", "seqNo": 4},
    }
    store.delete_transaction(2)
    store.delete_transaction(7)  # nothing there: not an error
    assert store.load_transactions() == {1: {"transactionId": "a", "seqNo": 1}}


def test_profiles_are_replaced_by_id_and_listed_in_id_order(store: Store) -> None:
    """K01.FR.05: a profile with an id already installed replaces that profile."""
    store.save_profile(9, 0, {"id": 9, "stackLevel": 0})
    store.save_profile(3, 1, {"id": 3, "stackLevel": 1})
    store.save_profile(9, 2, {"id": 9, "stackLevel": 5})
    assert store.load_profiles() == [
        (1, {"id": 3, "stackLevel": 1}),
        (2, {"id": 9, "stackLevel": 5}),
    ]
    store.delete_profile(3)
    assert store.load_profiles() == [(2, {"id": 9, "stackLevel": 5})]


def test_queue_keeps_order_and_counts_attempts(store: Store) -> None:
    assert store.first() is None
    assert store.count() == 0
    ids = [
        store.enqueue("TransactionEvent", STARTED),
        store.enqueue("TransactionEvent", UPDATED),
        store.enqueue("TransactionEvent", ENDED),
    ]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert store.count() == 3
    assert [m.payload["seqNo"] for m in store.pending()] == [0, 1, 2]
    assert store.first() == QueuedMessage(ids[0], "TransactionEvent", STARTED, 0)

    assert store.record_attempt(ids[0]) == 1
    assert store.record_attempt(ids[0]) == 2
    assert store.first() == QueuedMessage(ids[0], "TransactionEvent", STARTED, 2)

    store.remove(ids[0])
    store.remove(ids[0])  # removing twice (e.g. after a crash) is harmless
    first = store.first()
    assert first is not None
    assert (first.id, first.attempts) == (ids[1], 0)
    assert store.count() == 2


def test_replace_payload_keeps_position_and_attempts(store: Store) -> None:
    """E04.FR.03 needs ``offline: true`` set on a message that is already queued."""
    first = store.enqueue("TransactionEvent", STARTED)
    store.enqueue("TransactionEvent", UPDATED)
    store.record_attempt(first)
    store.replace_payload(first, {**STARTED, "offline": True})
    head = store.first()
    assert head == QueuedMessage(first, "TransactionEvent", {**STARTED, "offline": True}, 1)


def test_unknown_queue_ids_raise(store: Store) -> None:
    with pytest.raises(StoreError, match="no queued message with id 42"):
        store.record_attempt(42)
    with pytest.raises(StoreError, match="no queued message with id 42"):
        store.replace_payload(42, STARTED)


def test_ids_never_go_back_even_after_the_newest_is_removed(path: Path) -> None:
    """A message queued later must sort later, also after a restart."""
    with Store.open(path) as store:
        first = store.enqueue("TransactionEvent", STARTED)
        second = store.enqueue("TransactionEvent", UPDATED)
        store.remove(second)
        third = store.enqueue("TransactionEvent", ENDED)
        store.remove(third)
    with Store.open(path) as store:
        fourth = store.enqueue("Heartbeat", {})
        assert first < second < third < fourth
        assert [m.id for m in store.pending()] == [first, fourth]


def test_everything_survives_close_and_reopen(path: Path) -> None:
    with Store.open(path) as store:
        store.save_variable("TxCtrlr.TxStartPoint", "EVConnected")
        message = store.enqueue("TransactionEvent", STARTED)
        store.record_attempt(message)
        store.save_transaction(1, {"transactionId": "t-1", "seqNo": 0})
        store.save_profile(5, 0, {"id": 5})
        store.set_meta("next_request_id", "17")
    with Store.open(path) as store:
        assert store.load_variables() == {"TxCtrlr.TxStartPoint": "EVConnected"}
        assert store.pending() == [QueuedMessage(message, "TransactionEvent", STARTED, 1)]
        assert store.load_transactions() == {1: {"transactionId": "t-1", "seqNo": 0}}
        assert store.load_profiles() == [(0, {"id": 5})]
        assert store.get_meta("next_request_id") == "17"


def test_a_second_store_sees_writes_of_one_never_closed(path: Path) -> None:
    """Every write is committed when the call returns: no close() needed to keep it."""
    crashed = Store.open(path)
    try:
        crashed.enqueue("TransactionEvent", STARTED)
        crashed.save_variable("OCPPCommCtrlr.HeartbeatInterval", "30")
        with Store.open(path) as survivor:
            assert [m.payload for m in survivor.pending()] == [STARTED]
            assert survivor.load_variables() == {"OCPPCommCtrlr.HeartbeatInterval": "30"}
    finally:
        crashed.close()


def test_a_killed_process_loses_nothing(path: Path, tmp_path: Path) -> None:
    """SIGKILL right after the writes: the next process still finds them (WAL, committed)."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from everkit.ocpp201.store import Store
        store = Store.open(Path({str(path)!r}))
        store.enqueue("TransactionEvent", {STARTED!r})
        store.save_transaction(1, {{"seqNo": 0}})
        store.set_meta("boot_count", "3")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    with Store.open(path) as store:
        assert [m.payload for m in store.pending()] == [STARTED]
        assert store.load_transactions() == {1: {"seqNo": 0}}
        assert store.get_meta("boot_count") == "3"


def test_file_is_private_and_parents_are_created(path: Path) -> None:
    with Store.open(path) as store:
        store.save_variable("SecurityCtrlr.BasicAuthPassword", "0123456789abcdef")
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()  # WAL journal in use
        assert mode(wal) == 0o600
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


def test_an_existing_file_with_loose_mode_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "loose.sqlite"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    with Store.open(path):
        pass
    assert mode(path) == 0o600


def test_journal_and_sync_settings(store: Store) -> None:
    with store._db() as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_store_from_a_newer_everkit_is_refused(path: Path) -> None:
    with Store.open(path):
        pass
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer") as raised:
        Store.open(path)
    assert str(path) in str(raised.value)
    assert isinstance(raised.value, EverkitError)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not sqlite, " * 100)
    with pytest.raises(StoreError, match="not a usable") as raised:
        Store.open(path)
    assert str(path) in str(raised.value)


def test_a_closed_store_says_so(path: Path) -> None:
    store = Store.open(path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.count()
