"""Let the main thread sleep until a signal arrives or another thread wakes it.

Linux hands a process-directed signal (SIGTERM, SIGINT) to any thread. Python runs the
handler only in the main thread, and only once that thread executes bytecode again: a main
thread blocked in ``Event.wait()`` or ``Queue.get()`` while the signal landed on the MQTT
thread may never notice it. ``signal.set_wakeup_fd`` closes that gap: the C-level handler
writes to a socket, whatever thread it runs on, and the main thread waits in ``select``.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from types import FrameType


class MainThreadWaiter:
    """Install with ``with``; ``wait()`` returns after a signal or a ``wake()``."""

    def __init__(
        self,
        signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
        on_signal: Callable[[signal.Signals], None] | None = None,
    ) -> None:
        self._signals = tuple(signals)
        self._on_signal = on_signal
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._previous: dict[signal.Signals, object] = {}
        self._previous_fd = -1

    def __enter__(self) -> MainThreadWaiter:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signals can only be handled in the main thread")
        self._previous_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._previous_fd)
        self._read.close()
        self._write.close()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._on_signal is not None:
            self._on_signal(signal.Signals(signum))

    def wake(self) -> None:
        """Callable from any thread."""
        with contextlib.suppress(OSError):  # already awake (buffer full), or closed
            self._write.send(b"\0")

    def wait(self, timeout: float | None = None) -> None:
        """Sleep until woken; Python signal handlers run right after this returns."""
        select.select([self._read], [], [], timeout)
        with contextlib.suppress(OSError):  # drained
            while self._read.recv(512):
                pass
