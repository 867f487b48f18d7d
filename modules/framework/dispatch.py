"""Run message handlers off the MQTT thread: in order per topic, in parallel across topics.

This is EVerest's rule (protocol reference section 2, "Receive path"): operations on the same
topic run sequentially, different topics run in parallel. Keeping handlers off the network
thread means a handler may itself call a command and wait for its result.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

Job = Callable[[], Any]


class OrderedExecutor:
    def __init__(self, max_workers: int = 16, name: str = "everkit") -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
        self._queues: dict[str, deque[Job]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, key: str, job: Job) -> None:
        with self._lock:
            if self._closed:
                return
            queue = self._queues.get(key)
            if queue is not None:
                queue.append(job)
                return
            self._queues[key] = deque([job])
        self._pool.submit(self._drain, key)

    def _drain(self, key: str) -> None:
        while True:
            with self._lock:
                queue = self._queues[key]
                if not queue:
                    del self._queues[key]
                    return
                job = queue.popleft()
            try:
                job()
            except Exception:  # a handler bug must not stop the topic's queue
                log.exception("handler for %s failed", key)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            self._queues.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
