"""PyOCPP201's memory across restarts: one SQLite file.

What lives here, and why it must survive a restart:

- ``variables``     device-model values the CSMS set (keys built by ``device_model``);
- ``queue``         outgoing messages that must not be lost (TransactionEvents first of all),
                    sent in id order; ids only ever grow (AUTOINCREMENT), so a message queued
                    after a restart still sorts after the ones queued before it;
- ``transactions``  per-EVSE transaction state, so a restarted bridge continues seqNo and
                    transactionId instead of starting a second transaction;
- ``profiles``      installed charging profiles with their EVSE and chargingLimitSource
                    (``profiles.ProfileStore`` validates and reads them);
- ``meta``          small counters (boot count, next request id, ...).

Durability: every write commits before its method returns. The journal is WAL with
``synchronous=NORMAL``: a killed process loses nothing that was committed; only a power cut
may lose the last commits (SQLite's documented trade-off for NORMAL in WAL mode).

The file holds the BasicAuthPassword, so it is created with mode 0600 (an existing file is
tightened to 0600 too) and new parent directories get 0700. SQLite gives its -wal and -shm
files the mode of the database file.

The schema version is ``PRAGMA user_version``. An older file is migrated forward on open; a
file written by a newer everkit raises ``StoreError`` rather than being misread.

Used from one asyncio thread; a ``threading.Lock`` still serialises every call, so a helper
thread (an executor) cannot interleave statements.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..framework.errors import EverkitError

Payload = dict[str, Any]

# MIGRATIONS[n] takes a file from user_version n to n + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE variables (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE queue ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " action TEXT NOT NULL,"
        " payload TEXT NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0)",
        "CREATE TABLE transactions (evse_id INTEGER PRIMARY KEY, state TEXT NOT NULL)",
        "CREATE TABLE profiles ("
        " profile_id INTEGER PRIMARY KEY,"
        " evse_id INTEGER NOT NULL,"
        " profile TEXT NOT NULL)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    # GetChargingProfiles filters and reports by chargingLimitSource (K09); everything stored
    # before this column existed came from SetChargingProfile, i.e. from the CSO.
    ("ALTER TABLE profiles ADD COLUMN source TEXT NOT NULL DEFAULT 'CSO'",),
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(EverkitError):
    """The store file cannot be used (wrong version, not a database, closed, unknown id)."""


@dataclass(frozen=True)
class QueuedMessage:
    """One message waiting to be sent; ``attempts`` counts the sends tried so far."""

    id: int
    action: str
    payload: Payload
    attempts: int


def _encode(value: Payload) -> str:
    return json.dumps(value, separators=(",", ":"))


def _decode(text: str) -> Payload:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise StoreError(f"stored JSON is not an object: {text[:80]!r}")
    return value


class Store:
    """The SQLite file. Open with ``Store.open(path)``; every write is committed on return."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        # Store.open is the way in: it creates the file safely and migrates the schema.
        self._connection: sqlite3.Connection | None = connection
        self._lock = threading.Lock()
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Store:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(descriptor)
        os.chmod(path, 0o600)
        # isolation_level=None: no implicit transactions; single statements commit at once and
        # multi-statement writes say BEGIN/COMMIT themselves.
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            _migrate(connection, path)
        except sqlite3.DatabaseError as error:
            connection.close()
            raise StoreError(f"{path}: not a usable PyOCPP201 store ({error})") from error
        except StoreError:
            connection.close()
            raise
        return cls(connection, path)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._connection is None:
                raise StoreError(f"{self.path}: the store is closed")
            yield self._connection

    # device-model values

    def load_variables(self) -> dict[str, str]:
        with self._db() as db:
            return dict(db.execute("SELECT key, value FROM variables ORDER BY key").fetchall())

    def save_variable(self, key: str, value: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO variables (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # outgoing message queue

    def enqueue(self, action: str, payload: Payload) -> int:
        """Queue a message behind all others; returns its id (larger than any before it)."""
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO queue (action, payload) VALUES (?, ?)", (action, _encode(payload))
            )
            assert cursor.lastrowid is not None  # an INSERT into a rowid table always sets it
            return cursor.lastrowid

    def pending(self) -> list[QueuedMessage]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id, action, payload, attempts FROM queue ORDER BY id"
            ).fetchall()
        return [QueuedMessage(row[0], row[1], _decode(row[2]), row[3]) for row in rows]

    def first(self) -> QueuedMessage | None:
        with self._db() as db:
            row = db.execute(
                "SELECT id, action, payload, attempts FROM queue ORDER BY id LIMIT 1"
            ).fetchone()
        return None if row is None else QueuedMessage(row[0], row[1], _decode(row[2]), row[3])

    def record_attempt(self, message_id: int) -> int:
        """Count one more send of the message; returns the attempts made so far."""
        with self._db() as db:
            row = db.execute(
                "UPDATE queue SET attempts = attempts + 1 WHERE id = ? RETURNING attempts",
                (message_id,),
            ).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no queued message with id {message_id}")
        attempts: int = row[0]
        return attempts

    def remove(self, message_id: int) -> None:
        """Drop a message (sent, or given up). Removing an id that is gone is not an error."""
        with self._db() as db:
            db.execute("DELETE FROM queue WHERE id = ?", (message_id,))

    def count(self) -> int:
        with self._db() as db:
            (total,) = db.execute("SELECT COUNT(*) FROM queue").fetchone()
        return int(total)

    def replace_payload(self, message_id: int, payload: Payload) -> None:
        with self._db() as db:
            cursor = db.execute(
                "UPDATE queue SET payload = ? WHERE id = ?", (_encode(payload), message_id)
            )
        if cursor.rowcount == 0:
            raise StoreError(f"{self.path}: no queued message with id {message_id}")

    # per-EVSE transaction state

    def save_transaction(self, evse_id: int, state: Payload) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO transactions (evse_id, state) VALUES (?, ?)"
                " ON CONFLICT (evse_id) DO UPDATE SET state = excluded.state",
                (evse_id, _encode(state)),
            )

    def delete_transaction(self, evse_id: int) -> None:
        with self._db() as db:
            db.execute("DELETE FROM transactions WHERE evse_id = ?", (evse_id,))

    def load_transactions(self) -> dict[int, Payload]:
        with self._db() as db:
            rows = db.execute("SELECT evse_id, state FROM transactions ORDER BY evse_id")
            return {evse_id: _decode(state) for evse_id, state in rows.fetchall()}

    # charging profiles

    def save_profile(
        self, profile_id: int, evse_id: int, profile: Payload, source: str = "CSO"
    ) -> None:
        """Install or replace (same id, on any EVSE) a profile; ``source`` is its
        chargingLimitSource."""
        with self._db() as db:
            db.execute(
                "INSERT INTO profiles (profile_id, evse_id, profile, source) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (profile_id) DO UPDATE SET evse_id = excluded.evse_id,"
                " profile = excluded.profile, source = excluded.source",
                (profile_id, evse_id, _encode(profile), source),
            )

    def delete_profile(self, profile_id: int) -> None:
        with self._db() as db:
            db.execute("DELETE FROM profiles WHERE profile_id = ?", (profile_id,))

    def delete_profiles(self, profile_ids: Iterable[int]) -> None:
        """Remove several profiles at once: all of them or, on failure, none."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "DELETE FROM profiles WHERE profile_id = ?", [(i,) for i in profile_ids]
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def load_profiles(self) -> list[tuple[int, Payload]]:
        """(evse_id, profile) pairs in profile-id order."""
        return [(evse_id, profile) for evse_id, profile, _source in self.load_profile_rows()]

    def load_profile_rows(self) -> list[tuple[int, Payload, str]]:
        """(evse_id, profile, source) in profile-id order."""
        with self._db() as db:
            rows = db.execute(
                "SELECT evse_id, profile, source FROM profiles ORDER BY profile_id"
            ).fetchall()
        return [(evse_id, _decode(profile), source) for evse_id, profile, source in rows]

    # counters and metadata

    def get_meta(self, key: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    # The version is read inside the write transaction, so two processes opening a new file at
    # once cannot both create the tables.
    connection.execute("BEGIN IMMEDIATE")
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: store schema version {version} is newer than this everkit"
                f" understands ({SCHEMA_VERSION}); use a newer everkit or move the file away"
            )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                connection.execute(statement)
        # PRAGMA takes no bound parameters; SCHEMA_VERSION is our own integer.
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
