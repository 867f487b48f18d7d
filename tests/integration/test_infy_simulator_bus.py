"""The Infy simulator on a python-can virtual bus, talked to by a plain python-can client."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import can
import pytest

from everkit.power_supply_infy.codec import (
    BROADCAST,
    Command,
    Decoded,
    FrameId,
    Ignored,
    Limits,
    ModuleCount,
    OnOff,
    Output,
    OutputSetpoint,
    Payload,
    Read,
    Status,
    decode_answer,
    encode,
)
from everkit.power_supply_infy.simulator import CanSimulator, ModuleStack
from everkit.power_supply_infy.status import DC_OFF, is_set

pytestmark = pytest.mark.integration

CONTROLLER = 0xF0
WAIT_S = 2.0


@dataclass
class Client:
    """The controller's side: a plain python-can bus."""

    bus: can.BusABC

    def send(self, payload: Payload, destination: int = 1) -> None:
        frame = encode(payload, destination, CONTROLLER)
        self.raw(frame.arbitration_id, frame.data)

    def raw(self, arbitration_id: int, data: bytes, is_extended: bool = True) -> None:
        message = can.Message(arbitration_id=arbitration_id, data=data, is_extended_id=is_extended)
        self.bus.send(message)

    def answer(self, timeout: float = WAIT_S) -> Decoded:
        message = self.bus.recv(timeout)
        assert message is not None, "no answer"
        decoded = decode_answer(message.arbitration_id, bytes(message.data), True)
        assert isinstance(decoded, Decoded)
        return decoded

    def ask(self, payload: Payload, destination: int = 1) -> Decoded:
        self.send(payload, destination)
        return self.answer()


@pytest.fixture
def channel() -> str:
    return f"infy-sim-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(channel: str) -> Iterator[Client]:
    bus = can.Bus(interface="virtual", channel=channel)
    try:
        yield Client(bus)
    finally:
        bus.shutdown()


def simulate(stack: ModuleStack, channel: str) -> CanSimulator:
    bus = can.Bus(interface="virtual", channel=channel)
    return CanSimulator(bus, stack)


def test_requests_are_answered_over_the_bus(client: Client, channel: str) -> None:
    with simulate(ModuleStack.of(1), channel):
        limits = client.ask(Read(Command.READ_LIMITS))
        assert limits.id == FrameId(Command.READ_LIMITS, CONTROLLER, 1)
        assert limits.payload == Limits(1000, 150, 1000, 3000)
        assert client.ask(OutputSetpoint.of(400, 20)).payload == OutputSetpoint(400_000, 20_000)
        assert client.ask(OnOff(on=True)).payload == OnOff(on=True)
        status = client.ask(Read(Command.READ_MODULE_STATUS)).payload
        assert isinstance(status, Status)
        assert not is_set(status, DC_OFF)
        assert isinstance(client.ask(Read(Command.READ_MODULE_OUTPUT)).payload, Output)


def test_several_modules_answer_a_broadcast(client: Client, channel: str) -> None:
    with simulate(ModuleStack.of(1, 2, 3), channel) as simulator:
        with simulator.lock:
            simulator.stack.set_reply_delay(0.002, jitter_s=0.018)  # 2..20 ms, can-psu.md 3.6
        client.send(Read(Command.READ_MODULE_OUTPUT), BROADCAST)
        sources = sorted(client.answer().id.source for _ in range(3))
        assert sources == [1, 2, 3]
        count = client.ask(Read(Command.READ_MODULE_COUNT), BROADCAST)
        assert (count.id.source, count.payload) == (BROADCAST, ModuleCount(3))


def test_a_silent_module_does_not_answer(client: Client, channel: str) -> None:
    stack = ModuleStack.of(1, 2)
    stack.module(2).go_silent()
    with simulate(stack, channel):
        client.send(Read(Command.READ_MODULE_OUTPUT), 2)
        client.send(Read(Command.READ_MODULE_OUTPUT), 1)
        assert client.answer().id.source == 1  # frames are served in order: 2 said nothing
        assert client.bus.recv(0.1) is None


def test_malformed_frames_are_counted_and_ignored(client: Client, channel: str) -> None:
    with simulate(ModuleStack.of(1), channel) as simulator:
        read = FrameId(Command.READ_MODULE_OUTPUT, 1, CONTROLLER)
        client.raw(0x123, bytes(8), is_extended=False)
        client.raw(read.pack(), bytes(3))
        client.raw(FrameId(Command.READ_MODULE_OUTPUT, 1, CONTROLLER, device=3).pack(), bytes(8))
        client.raw(FrameId(Command.READ_MODULE_OUTPUT, 1, 0x05).pack(), bytes(8))
        client.raw(FrameId(Command.READ_MODULE_OUTPUT, 9, CONTROLLER).pack(), bytes(8))
        client.raw(read.pack(), bytes(8))  # answered only after all the above were handled
        assert client.answer().id.source == 1
        assert simulator.ignored() == Counter(
            {
                "standard-id": 1,
                "bad-length": 1,
                "unknown-device": 1,
                "not-from-controller": 1,
                "not-addressed": 1,
            }
        )


def test_injected_garbage_reaches_the_client_and_decodes_as_ignored(
    client: Client, channel: str
) -> None:
    with simulate(ModuleStack.of(1), channel) as simulator:
        expected = simulator.send_garbage(30, random.Random(1))
        seen: Counter[str] = Counter()
        for _ in range(30):
            message = client.bus.recv(WAIT_S)
            assert message is not None
            data = bytes(message.data)
            decoded = decode_answer(message.arbitration_id, data, message.is_extended_id)
            assert isinstance(decoded, Ignored)
            seen[decoded.reason] += 1
        assert seen == expected
        assert simulator.sent["garbage"] == 30


def test_stop_is_idempotent_and_shuts_an_owned_bus(channel: str) -> None:
    simulator = simulate(ModuleStack.of(1), channel).start()
    simulator.stop()
    simulator.stop()
    with pytest.raises(can.CanOperationError):
        simulator.bus.send(can.Message(arbitration_id=1, data=bytes(8)))
