"""The spec's checks on every inbound message that the library leaves to the application
(Shapeshifter "Message validation"): the recipient is us, the sender is a peer we know, a
MessageID is used once, and the message is recent. Sans-IO: ``now`` is passed in.

Replays. An exact copy of a message already taken gets "Already Submitted" (the spec: the
copy counts as delivered, it is not processed again); a reused MessageID with other content
gets "Duplicate Identifier". MessageIDs are remembered for ``window``, and a message whose
TimeStamp lies outside that window is refused, so a replay can never outlive the memory.
The memory is a file, so a restart of the adapter forgets nothing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from .messages import Header

log = logging.getLogger("everkit.uftp")

DEFAULT_WINDOW = timedelta(days=2)
CLOCK_SKEW = timedelta(minutes=5)
TIDY_EVERY = timedelta(hours=1)


@dataclass(frozen=True)
class Seen:
    digest: str
    timestamp: datetime


class SeenMessages:
    """MessageID → (digest, TimeStamp), kept in memory and appended to ``path`` (JSON lines)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.entries: dict[str, Seen] = {}
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                    self.entries[item["id"]] = Seen(
                        item["digest"], datetime.fromisoformat(item["timestamp"])
                    )
                except (ValueError, KeyError, TypeError):
                    log.warning("%s: unreadable line skipped", path)

    def get(self, message_id: str) -> Seen | None:
        return self.entries.get(message_id)

    def add(self, message_id: str, seen: Seen) -> None:
        self.entries[message_id] = seen
        if self.path is not None:
            line = json.dumps(
                {"id": message_id, "digest": seen.digest, "timestamp": seen.timestamp.isoformat()}
            )
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(line + "\n")
                file.flush()
                os.fsync(file.fileno())

    def forget_before(self, oldest: datetime) -> None:
        """Drop what is too old to be replayed anyway, and rewrite the file (fsynced before
        it replaces the old one, so a crash leaves one or the other whole)."""
        stale = [key for key, seen in self.entries.items() if seen.timestamp < oldest]
        if not stale:
            return
        for key in stale:
            del self.entries[key]
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as file:
                for key, seen in self.entries.items():
                    line = {
                        "id": key,
                        "digest": seen.digest,
                        "timestamp": seen.timestamp.isoformat(),
                    }
                    file.write(json.dumps(line) + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)


class InboundGuard:
    def __init__(
        self,
        own_domain: str,
        peers: Iterable[str],
        seen: SeenMessages,
        window: timedelta = DEFAULT_WINDOW,
    ) -> None:
        self.own_domain = own_domain
        self.peers = frozenset(peers)
        self.seen = seen
        self.window = window
        self.tidied: datetime | None = None

    def check(self, header: Header, now: datetime) -> str:
        """The rejection reason, or '' when the message may be processed. A message that
        passes is remembered, so calling this twice for one message refuses the second."""
        if header.recipient_domain != self.own_domain:
            return "Unknown RecipientDomain"
        if header.sender_domain not in self.peers:
            return "Unknown SenderDomain (message)"
        earlier = self.seen.get(header.message_id)
        if earlier is not None:
            if earlier.digest == header.digest:
                return "Already Submitted"
            return "Duplicate Identifier"
        if header.timestamp < now - self.window:
            hours = self.window.total_seconds() / 3600
            return f"Invalid Message: TimeStamp older than {hours:g} hours"
        if header.timestamp > now + CLOCK_SKEW:
            return "Invalid Message: TimeStamp in the future"
        if self.tidied is None or now - self.tidied >= TIDY_EVERY:
            # entries past the window are harmless (their TimeStamp is refused anyway):
            # dropping them is housekeeping, not worth rewriting the file per message
            self.seen.forget_before(now - self.window - CLOCK_SKEW)
            self.tidied = now
        self.seen.add(header.message_id, Seen(header.digest, header.timestamp))
        return ""
