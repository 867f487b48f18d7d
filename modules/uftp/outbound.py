"""Sending to the DSO with the spec's retries: the library's sends are synchronous and give
up at the first failure, while UFTP asks a sender to retry 5xx answers and timeouts with
back-off for at least an hour. One worker thread sends in order, so a response never
overtakes the message it follows. Kept in memory: a restart loses what was not yet sent."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("everkit.uftp")

RETRY_FOR_S = 3600.0
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 60.0

Send = Callable[[str, Any], None]  # (recipient domain, library message); raises on failure


class Outbound:
    def __init__(self, send: Send, retry_for_s: float = RETRY_FOR_S) -> None:
        self.send = send
        self.retry_for_s = retry_for_s
        self.items: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="uftp-outbound", daemon=True)
        self.sent = 0
        self.dropped = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.items.put(None)
        self.thread.join(timeout=5)

    def put(self, recipient: str, message: Any) -> None:
        self.items.put((recipient, message))

    def join(self) -> None:
        """Until everything queued so far was sent or given up (for tests and shutdown)."""
        self.items.join()

    def _run(self) -> None:
        while True:
            item = self.items.get()
            try:
                if item is None:
                    return
                self._deliver(*item)
            finally:
                self.items.task_done()

    def _deliver(self, recipient: str, message: Any) -> None:
        kind = type(message).__name__
        deadline = time.monotonic() + self.retry_for_s
        delay = FIRST_DELAY_S
        while True:
            try:
                self.send(recipient, message)
                self.sent += 1
                return
            except Exception as exc:  # any transport failure is retried
                if time.monotonic() + delay > deadline or self.stopping.is_set():
                    self.dropped += 1
                    log.error("%s to %s given up: %s", kind, recipient, exc)
                    return
                log.warning("%s to %s failed (%s); retrying in %.0f s", kind, recipient, exc, delay)
                if self.stopping.wait(delay):
                    self.dropped += 1
                    return
                delay = min(delay * 2, MAX_DELAY_S)
