"""Sending to DSOs with the spec's retries: the library's sends are synchronous and give up
at the first failure, while UFTP asks a sender to retry server errors (5xx), timeouts and
the temporary 419 (key lookup) and 429 (rate limit) with back-off for at least an hour. A
message the peer refuses for what it is (400, 401, other 4xx) is not sent again.

One worker thread per recipient sends in order, so a response never overtakes the message
it follows, and one DSO being down does not hold up another. Kept in memory: a restart
loses what was not yet sent (the DSO's own retries bring its requests again).
"""

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
TEMPORARY_4XX = frozenset({408, 419, 429})

Send = Callable[[str, Any], None]  # (recipient domain, library message); raises on failure


def worth_retrying(exc: Exception) -> bool:
    """A refusal of the message itself (4xx but the temporary ones) is final."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500:
        return status in TEMPORARY_4XX
    return True


class _Worker:
    def __init__(self, outbound: Outbound, recipient: str) -> None:
        self.outbound = outbound
        self.recipient = recipient
        self.items: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"uftp-to-{recipient}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            message = self.items.get()
            try:
                if message is None:
                    return
                self.outbound.deliver(self.recipient, message)
            finally:
                self.items.task_done()


class Outbound:
    def __init__(self, send: Send, retry_for_s: float = RETRY_FOR_S) -> None:
        self.send = send
        self.retry_for_s = retry_for_s
        self.stopping = threading.Event()
        self.workers: dict[str, _Worker] = {}
        self.lock = threading.Lock()
        self.sent = 0
        self.dropped = 0

    def start(self) -> None:
        """Workers start with the first message to each recipient."""

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.items.put(None)
        for worker in workers:
            worker.thread.join(timeout=5)

    def put(self, recipient: str, message: Any) -> None:
        with self.lock:
            worker = self.workers.get(recipient)
            if worker is None:
                worker = self.workers[recipient] = _Worker(self, recipient)
        worker.items.put(message)

    def join(self) -> None:
        """Until everything queued so far was sent or given up (for tests and shutdown)."""
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.items.join()

    def deliver(self, recipient: str, message: Any) -> None:
        kind = type(message).__name__
        deadline = time.monotonic() + self.retry_for_s
        delay = FIRST_DELAY_S
        while True:
            try:
                self.send(recipient, message)
                self.sent += 1
                return
            except Exception as exc:  # any transport failure: retried or given up, logged
                final = not worth_retrying(exc)
                if final or time.monotonic() + delay > deadline or self.stopping.is_set():
                    self.dropped += 1
                    log.error("%s to %s given up: %s", kind, recipient, exc)
                    return
                log.warning("%s to %s failed (%s); retrying in %.0f s", kind, recipient, exc, delay)
                if self.stopping.wait(delay):
                    self.dropped += 1
                    return
                delay = min(delay * 2, MAX_DELAY_S)
