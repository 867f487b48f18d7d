"""Runs a DriverCore against a python-can bus: the I/O around the pure core.

One reader thread feeds received frames to the core; one timer thread ticks it at its
next deadline. Commands come from the framework's handler threads. All three go through
one lock, so the core sees one event at a time, and the effects of an event are carried
out in order (frames first, then vars and errors) before the next event is looked at.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import can

from .core import DriverCore, Effect, Send

log = logging.getLogger(__name__)

Clock = Callable[[], float]
EffectSink = Callable[[Effect], None]


class DriverRunner:
    def __init__(
        self,
        core: DriverCore,
        bus: can.BusABC,
        sink: EffectSink,
        clock: Clock = time.monotonic,
        send_timeout_s: float = 0.05,
    ) -> None:
        self.core = core
        self.bus = bus
        self._sink = sink
        self._clock = clock
        self._send_timeout_s = send_timeout_s
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.send_failures = 0

    def start(self) -> None:
        for target, name in ((self._read, "infy-can-rx"), (self._tick, "infy-timer")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(2.0)

    def command(self, method: Callable[..., list[Effect]], *args: Any) -> None:
        """Run one core command (its ``now`` is appended) and carry out its effects."""
        with self._changed:
            self._carry_out(method(*args, self._clock()))
            self._changed.notify_all()  # deadlines may have moved

    def query(self, question: Callable[[float], bool]) -> bool:
        """Ask the core something at the current time, between events."""
        with self._changed:
            return question(self._clock())

    def wait_until(self, settled: Callable[[float], bool], limit_s: float) -> bool:
        """Block until ``settled(now)`` holds (re-checked after each event) or the limit."""
        deadline = self._clock() + limit_s
        with self._changed:
            while not settled(self._clock()):
                remaining = deadline - self._clock()
                if remaining <= 0 or self._stopping.is_set():
                    return False
                self._changed.wait(min(remaining, 0.05))
            return True

    def _carry_out(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self._send(effect)
            else:
                self._sink(effect)

    def _send(self, effect: Send) -> None:
        frame = effect.frame
        message = can.Message(
            arbitration_id=frame.arbitration_id, is_extended_id=True, data=frame.data
        )
        try:
            self.bus.send(message, timeout=self._send_timeout_s)
        except can.CanError as exc:  # a full TX queue or a bus-off: the next resend repairs
            self.send_failures += 1
            if self.send_failures in (1, 10, 100) or self.send_failures % 1000 == 0:
                log.warning("CAN send failed (%d so far): %s", self.send_failures, exc)

    def _read(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self.bus.recv(timeout=0.1)
            except can.CanError as exc:
                log.warning("CAN receive failed: %s", exc)
                self._stopping.wait(0.1)
                continue
            if message is None:
                continue
            if message.is_error_frame or message.is_remote_frame:
                with self._changed:  # counted like every other frame the driver ignores
                    kind = "error-frame" if message.is_error_frame else "remote-frame"
                    self.core.ignored[kind] += 1
                continue
            with self._changed:
                self._carry_out(
                    self.core.on_frame(
                        message.arbitration_id,
                        bytes(message.data),
                        message.is_extended_id,
                        self._clock(),
                    )
                )
                self._changed.notify_all()

    def _tick(self) -> None:
        with self._changed:
            while not self._stopping.is_set():
                now = self._clock()
                self._carry_out(self.core.tick(now))
                self._changed.notify_all()
                wait = self.core.next_deadline() - self._clock()
                if wait > 0:
                    self._changed.wait(wait)
