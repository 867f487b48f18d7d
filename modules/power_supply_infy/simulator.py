"""A faithful CAN-level simulator of Infypower REG/CEG modules, for testing the driver.

One module's behaviour is the pure model of ``sim_model.py`` (``SimulatedModule``, and
``step_bus`` for outputs in parallel). ``ModuleStack`` (pure too) is several modules on one
CAN bus and one DC bus: it routes each frame to the modules it addresses and counts the
frames none of them acts on. ``CanSimulator`` hosts a stack on any python-can bus: one
thread receives frames, lets the stack answer them after each module's reply delay, and
advances the output model on a fixed step of monotonic time. Tests use
``interface="virtual"`` with a unique channel; a vcan or serial bus works the same way.

``send_garbage`` puts frames on the bus that a correct driver must ignore, each of a kind
``codec.decode_answer`` names, so the driver's ignore counters can be checked exactly.
"""

from __future__ import annotations

import heapq
import itertools
import random
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable
from types import TracebackType

import can

from .codec import (
    DEFAULT_CONTROLLER,
    READ_COMMANDS,
    Command,
    Device,
    ErrorCode,
    FrameId,
    Ignored,
    decode_request,
)
from .sim_model import (
    CONTROLLERS,
    DEFAULT_LOAD,
    REFUSED_REASONS,
    Clock,
    Dynamics,
    Load,
    Reply,
    SimulatedModule,
    step_bus,
)

__all__ = [
    "DEFAULT_LOAD",
    "GARBAGE_KINDS",
    "CanSimulator",
    "Dynamics",
    "Load",
    "ModuleStack",
    "Reply",
    "SimulatedModule",
    "garbage_message",
]

GARBAGE_KINDS = (
    "standard-id",
    "bad-length",
    "unknown-command",
    "unknown-device",
    "non-finite",
    "bad-on-off",
)
_KNOWN_COMMANDS = READ_COMMANDS | {
    Command.ON_OFF,
    Command.SET_SYSTEM_OUTPUT,
    Command.SET_MODULE_OUTPUT,
}
_UNKNOWN_COMMANDS = [c for c in range(0x40) if c not in _KNOWN_COMMANDS]
_UNKNOWN_DEVICES = [d for d in range(0x10) if d not in (Device.SINGLE, Device.GROUP)]


def garbage_message(
    kind: str, rng: random.Random, controller: int = DEFAULT_CONTROLLER, module: int = 0
) -> can.Message:
    """A frame from ``module`` to ``controller`` that ``decode_answer`` ignores for reason
    ``kind`` (one of GARBAGE_KINDS)."""
    data = bytes(rng.randrange(256) for _ in range(8))

    def frame(command: int, payload: bytes, device: int = Device.SINGLE) -> can.Message:
        arbitration_id = FrameId(command, controller, module, device).pack()
        return can.Message(arbitration_id=arbitration_id, data=payload, is_extended_id=True)

    match kind:
        case "standard-id":
            return can.Message(arbitration_id=rng.randrange(0x800), data=data, is_extended_id=False)
        case "bad-length":
            return frame(Command.READ_MODULE_OUTPUT, data[: rng.randrange(8)])
        case "unknown-command":
            return frame(rng.choice(_UNKNOWN_COMMANDS), data)
        case "unknown-device":
            return frame(Command.READ_MODULE_OUTPUT, data, rng.choice(_UNKNOWN_DEVICES))
        case "non-finite":
            value = rng.choice([float("nan"), float("inf"), float("-inf")])
            return frame(Command.READ_MODULE_OUTPUT, struct.pack(">ff", value, 1.0))
        case "bad-on-off":
            return frame(Command.ON_OFF, bytes([rng.randrange(2, 256)]) + bytes(7))
    raise ValueError(f"unknown garbage kind {kind!r}")


class ModuleStack:
    """Several modules on one CAN bus and one DC bus (outputs in parallel on ``load``)."""

    def __init__(
        self,
        modules: Iterable[SimulatedModule] = (),
        load: Load = DEFAULT_LOAD,
        seed: int | None = None,
    ) -> None:
        self.modules: list[SimulatedModule] = []
        self.load = load
        self.ignored: Counter[str] = Counter()  # frames no module acted on, by reason
        self.rng = random.Random(seed)  # reply jitter
        self._clock = Clock()
        for module in modules:
            self.add(module)

    @classmethod
    def of(
        cls, *addresses: int, group: int = 0, load: Load = DEFAULT_LOAD, seed: int | None = None
    ) -> ModuleStack:
        return cls((SimulatedModule(a, group=group) for a in addresses), load, seed)

    def add(self, module: SimulatedModule) -> None:
        """Hot-plug. A second module with an address already present makes both report
        B5 bit 1 (address duplicated); both keep answering, as real ones would."""
        for other in self.modules:
            if other.address == module.address:
                other.duplicate_address = module.duplicate_address = True
        self.modules.append(module)

    def remove(self, address: int) -> SimulatedModule:
        module = self.module(address)
        self.modules.remove(module)
        return module

    def module(self, address: int) -> SimulatedModule:
        for module in self.modules:
            if module.address == address:
                return module
        raise KeyError(address)

    def set_reply_delay(self, seconds: float, jitter_s: float = 0.0) -> None:
        for module in self.modules:
            module.set_reply_delay(seconds, jitter_s)

    @property
    def bus_voltage_V(self) -> float:
        return max((m.external_voltage_V for m in self.modules), default=0.0)

    @property
    def total_current_A(self) -> float:
        return sum(m.current_A for m in self.modules)

    def handle(
        self, arbitration_id: int, data: bytes, now: float, is_extended: bool = True
    ) -> list[Reply]:
        """Route one frame from the bus to the modules it addresses; their answers."""
        frame_id = self._accept(arbitration_id, bytes(data), is_extended)
        if frame_id is None:
            return []
        reached = [m for m in self.modules if m.addressed_by(frame_id) and not m.silent]
        if not reached:
            self.ignored["not-addressed"] += 1
            return []
        reached.sort(key=lambda m: m.address)
        return [
            Reply(frame, module.draw_delay(self.rng))
            for module in reached
            for frame in module.handle(frame_id, bytes(data), now, reached)
        ]

    def _accept(self, arbitration_id: int, data: bytes, is_extended: bool) -> FrameId | None:
        decoded = decode_request(arbitration_id, data, is_extended)
        if isinstance(decoded, Ignored) and decoded.reason not in REFUSED_REASONS:
            self.ignored[decoded.reason] += 1
            return None
        frame_id = FrameId.unpack(arbitration_id)
        reason = None
        if frame_id.error != ErrorCode.NORMAL:
            reason = "error-set"
        elif frame_id.source not in CONTROLLERS:
            reason = "not-from-controller"
        if reason is not None:
            self.ignored[reason] += 1
            return None
        return frame_id

    def advance(self, now: float) -> None:
        """Integrate every module and the shared bus up to ``now``."""
        for t, dt in self._clock.steps(now):
            step_bus(self.modules, self.load, t, dt)


class CanSimulator:
    """Hosts a ``ModuleStack`` on a python-can bus, in a thread of its own.

    The thread never sleeps longer than ``tick_s``: it waits in ``bus.recv`` for at most the
    time to the next model step or pending reply, so replies leave close to their due time
    and ``stop`` returns within a tick. Change the stack from another thread only while
    holding ``lock``.
    """

    def __init__(
        self,
        bus: can.BusABC,
        stack: ModuleStack,
        *,
        tick_s: float = 0.01,
        owns_bus: bool = True,
    ) -> None:
        self.stack = stack
        self.bus = bus
        self.tick_s = tick_s
        self.owns_bus = owns_bus  # stop() shuts the bus down (the usual: a bus of its own)
        self.lock = threading.RLock()
        self.sent: Counter[str] = Counter()  # "reply", "garbage", "send-failed"
        self._pending: list[tuple[float, int, str, can.Message]] = []
        self._order = itertools.count()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._closed = False

    @property
    def stopped(self) -> threading.Event:
        """Set once stop() was called; schedules around the simulator wait on it."""
        return self._stopping

    def __enter__(self) -> CanSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> CanSimulator:
        if self._thread is not None or self._closed:
            raise RuntimeError("a CanSimulator starts once")
        with self.lock:
            self.stack.advance(time.monotonic())
        self._thread = threading.Thread(target=self._run, name="infy-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (idempotent); re-raises what made the thread fail, once."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self.owns_bus:
            self.bus.shutdown()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise RuntimeError("the simulator thread failed") from failure

    def ignored(self) -> Counter[str]:
        """What the modules ignored so far, by reason (a copy)."""
        with self.lock:
            return Counter(self.stack.ignored)

    def send_garbage(self, n: int, rng: random.Random) -> Counter[str]:
        """Queue ``n`` frames a driver must ignore, of random kinds; returns how many of
        each kind (the reason ``decode_answer`` gives) were queued."""
        kinds: Counter[str] = Counter()
        module = min((m.address for m in self.stack.modules), default=0)
        with self.lock:
            for _ in range(n):
                kind = rng.choice(GARBAGE_KINDS)
                kinds[kind] += 1
                message = garbage_message(kind, rng, module=module)
                self._queue(time.monotonic(), message, "garbage")
        return kinds

    # the thread

    def _run(self) -> None:
        try:
            next_step = time.monotonic() + self.tick_s
            while not self._stopping.is_set():
                now = time.monotonic()
                if now >= next_step:
                    with self.lock:
                        self.stack.advance(now)
                    next_step += self.tick_s
                    if next_step <= now:  # stalled (a loaded machine): no catching up
                        next_step = now + self.tick_s
                self._send_due(now)
                message = self.bus.recv(timeout=self._wait(next_step))
                if message is not None:
                    self._receive(message)
        except BaseException as failure:  # surfaced by stop(), not lost in the thread
            self._failure = failure

    def _wait(self, next_step: float) -> float:
        with self.lock:
            due = self._pending[0][0] if self._pending else next_step
        return max(0.0, min(due, next_step) - time.monotonic())

    def _receive(self, message: can.Message) -> None:
        now = time.monotonic()
        with self.lock:
            if message.is_error_frame or message.is_remote_frame:
                self.stack.ignored["error-or-remote"] += 1
                return
            replies = self.stack.handle(
                message.arbitration_id, bytes(message.data), now, message.is_extended_id
            )
            for reply in replies:
                self._queue(now + reply.delay_s, _message(reply), "reply")

    def _queue(self, due: float, message: can.Message, kind: str) -> None:
        heapq.heappush(self._pending, (due, next(self._order), kind, message))

    def _send_due(self, now: float) -> None:
        while True:
            with self.lock:
                if not self._pending or self._pending[0][0] > now:
                    return
                _, _, kind, message = heapq.heappop(self._pending)
            try:
                self.bus.send(message)
                self.sent[kind] += 1
            except can.CanError:
                self.sent["send-failed"] += 1


def _message(reply: Reply) -> can.Message:
    frame = reply.frame
    return can.Message(arbitration_id=frame.arbitration_id, data=frame.data, is_extended_id=True)
