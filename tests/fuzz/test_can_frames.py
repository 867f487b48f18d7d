"""Random CAN frames into PyInfyPowerDC while it runs a setpoint with the simulated modules
(issue 8): standard and extended ids, DLC 0-8, random data, error and remote frames, and
frames addressed like module answers (to the controller, from the real addresses) with
random commands and data. The driver must keep running, count what it ignores by reason
(docs/power-supply-infy.md, "ignored frames counted by reason"), and the real modules'
readings must still arrive and a new setpoint must still reach them."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import can
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from everkit.power_supply_infy import codec
from everkit.power_supply_infy.codec import Command, Device, FrameId
from tests.fuzz.conftest import DERANDOMIZE, examples
from tests.integration import test_infy_driver as infy
from tests.integration.test_infy_driver import PsuStack, export

pytestmark = pytest.mark.integration
psu = infy.psu  # the driver on a real Mosquitto with simulated modules, as its tests use it
CONTROLLER = codec.DEFAULT_CONTROLLER
ADDRESSES = (1, 2)


def _answer_like_id(draw: st.DrawFn) -> int:
    """An id the driver must decode: to the controller, from a real or unknown module."""
    frame_id = FrameId(
        command=draw(st.sampled_from(list(Command) * 3 + list(range(0x40)))),
        destination=draw(st.sampled_from([CONTROLLER] * 6 + [0x3F, 0])),
        source=draw(st.sampled_from([*ADDRESSES, 0, 9, 0xF0])),
        device=draw(st.sampled_from([Device.SINGLE] * 16 + list(range(16)))),
        error=draw(st.sampled_from([0] * 6 + [2, 3, 7])),
    )
    return frame_id.pack()


@st.composite
def frames(draw: st.DrawFn) -> can.Message:
    kind = draw(st.sampled_from(["answer-like", "answer-like", "extended", "standard"]))
    if kind == "standard":
        arbitration_id, extended = draw(st.integers(0, 0x7FF)), False
    elif kind == "extended":
        arbitration_id, extended = draw(st.integers(0, 0x1FFFFFFF)), True
    else:
        arbitration_id, extended = _answer_like_id(draw), True
    full = kind == "answer-like" and draw(st.integers(0, 3)) > 0  # mostly 8 bytes: decodable
    data = draw(st.binary(min_size=8, max_size=8) if full else st.binary(max_size=8))
    flag = draw(st.sampled_from(["data"] * 8 + ["error", "remote"]))
    return can.Message(
        arbitration_id=arbitration_id,
        is_extended_id=extended,
        data=b"" if flag == "remote" else data,
        dlc=len(data),
        is_error_frame=flag == "error",
        is_remote_frame=flag == "remote",
    )


@pytest.fixture
def injector(psu: PsuStack) -> Iterator[can.BusABC]:
    bus = can.Bus(interface="virtual", channel=psu.can.bus.channel_id)
    yield bus
    bus.shutdown()


def expected_reason(message: can.Message) -> str | None:
    """What the driver must count ``message`` as, or None when it takes it as an answer."""
    if message.is_error_frame:
        return "error-frame"
    if message.is_remote_frame:
        return "remote-frame"
    decoded = codec.decode_answer(
        message.arbitration_id, bytes(message.data), message.is_extended_id
    )
    if isinstance(decoded, codec.Ignored):
        return decoded.reason
    if decoded.id.destination != CONTROLLER:
        return "not-for-us"
    if decoded.id.source not in ADDRESSES:
        return "unknown-module"
    if isinstance(decoded.payload, codec.Limits) and (
        decoded.payload.min_voltage_V > decoded.payload.max_voltage_V
    ):
        return "implausible-limits"
    if isinstance(decoded.payload, codec.Refused):
        return f"refused-{decoded.payload.command:#04x}-code-{decoded.payload.code}"
    return None


def test_random_frames_are_counted_and_the_setpoint_survives(
    psu: PsuStack, injector: can.BusABC, fuzz_counts: Counter[str]
) -> None:
    export(psu, 400.0, 20.0)
    psu.seen.wait(lambda: abs(psu.seen.latest("voltage_current")["current_A"] - 20.0) < 1.0)
    original_caps = psu.seen.latest("capabilities")
    core = psu.driver.runner.core
    with psu.driver.runner._changed:
        before = Counter(core.ignored)
    sent: Counter[str] = Counter()

    @settings(
        max_examples=examples(100),
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(st.lists(frames(), min_size=1, max_size=50))
    def blast(batch: list[can.Message]) -> None:
        for message in batch:
            injector.send(message)
            sent[expected_reason(message) or "taken-as-answer"] += 1
        fuzz_counts["can frames"] += len(batch)

    blast()
    # the reader works through the queue; all is counted once every bad frame is
    expected = {k: v for k, v in sent.items() if k != "taken-as-answer"}

    def counted() -> bool:
        with psu.driver.runner._changed:
            delta = Counter(core.ignored) - before
        return all(delta[reason] >= n for reason, n in expected.items())

    _wait(counted, 30.0)
    for reason, n in sorted(sent.items()):
        fuzz_counts[f"can frames {reason}"] += n
    assert all(t.is_alive() for t in psu.driver.runner._threads), "a driver thread died"
    assert len(core.modules) == len(ADDRESSES)  # random sources did not add modules
    # the modules' own readings still arrive: a well-formed limits answer forged from a
    # real address is believed until the next poll re-reads the modules (every 10 s)
    psu.seen.wait(lambda: psu.seen.latest("capabilities") == original_caps, timeout=30.0)
    # and a new setpoint still reaches them
    since = time.monotonic()
    export(psu, 450.0, 30.0)
    psu.can.wait_for(Command.SET_MODULE_OUTPUT, since)
    psu.seen.wait(
        lambda: any(
            at > since and abs(v["current_A"] - 30.0) < 1.0
            for at, v in psu.seen.vars["voltage_current"]
        ),
        timeout=30.0,
    )
    psu.peer.call_command("psu", "setMode", {"mode": "Off", "phase": "Other"})


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    """The driver's counters have no event; they are read under its lock until they match."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the driver did not count every ignored frame"
        threading.Event().wait(0.02)
