"""Hostile CSMS input into PyOCPP201's bridge over a real websocket (issue 8): a raw CSMS
written here sends every OCPP 2.0.1 action, valid-shaped (from the OCPP 2.0.1 JSON schemas
of the `ocpp` package) and malformed, unknown actions, wrong message types, huge frames,
deep nesting, non-JSON text and binary frames. Each CALL must be answered with a
CALLRESULT that fits the action's response schema, or with the CALLERROR that
docs/ocpp201.md ("Bad input from the CSMS") names; the connection stays up, and the
station still serves a Heartbeat and a StatusNotification afterwards."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocpp.messages import MessageType, get_validator
from ocpp.v201.enums import Action
from websockets.asyncio.server import ServerConnection, serve

from everkit.ocpp201.rpc import classify
from everkit.ocpp201.station import HANDLED
from tests.fuzz.conftest import DERANDOMIZE, examples
from tests.fuzz.inputs import JSON_ANY, deep, mutated
from tests.integration.ocpp_harness import make_bridge
from tests.strategies import from_schema

WAIT_S = 30.0
ACTIONS = sorted(a.value for a in Action)
# Reset really restarts the connection (docs/ocpp201.md); it gets malformed payloads only
NO_VALID = {"Reset"}
MAX_FRAME = 4 * 1024 * 1024  # the bridge's websocket max_size (connection.py)


def _schema(action: str) -> dict[str, Any] | None:
    try:
        validator = get_validator(MessageType.Call, action, "2.0.1")
    except (OSError, ValueError):
        return None
    schema: dict[str, Any] = validator.schema
    return schema


SCHEMAS = {a: s for a in ACTIONS if (s := _schema(a)) is not None}


def _station_answer(action: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    answers: dict[str, dict[str, Any]] = {
        "BootNotification": {"currentTime": now, "interval": 300, "status": "Accepted"},
        "Heartbeat": {"currentTime": now},
        "Authorize": {"idTokenInfo": {"status": "Accepted"}},
        "NotifyEVChargingNeeds": {"status": "Accepted"},
    }
    return answers.get(action, {})


@dataclass
class RawCsms:
    """Answers the station's CALLs minimally and sends anything the test wants."""

    loop: asyncio.AbstractEventLoop
    connections: int = 0
    closes: list[Any] = field(default_factory=list)
    station_calls: list[tuple[str, Any]] = field(default_factory=list)
    answers: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    socket: ServerConnection | None = None
    url: str = ""
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handler(self, websocket: ServerConnection) -> None:
        self.connections += 1
        self.socket = websocket
        self.connected.set()
        try:
            async for raw in websocket:
                frame = json.loads(raw)
                if frame[0] == 2:
                    action = frame[2]
                    await websocket.send(json.dumps([3, frame[1], _station_answer(action)]))
                    async with self.changed:
                        self.station_calls.append((action, frame[3]))
                        self.changed.notify_all()
                else:
                    await self.answers.put(frame)
        finally:
            self.closes.append(websocket.close_code)
            self.connected.clear()

    async def send(self, frame: str | bytes) -> None:
        await self.connected.wait()
        assert self.socket is not None
        await self.socket.send(frame)

    async def answer(self, message_id: str, timeout: float = WAIT_S) -> list[Any]:
        """The station's CALLRESULT/CALLERROR with ``message_id`` (others are dropped:
        every test waits for each answer before sending the next CALL)."""
        while True:
            frame = await asyncio.wait_for(self.answers.get(), timeout)
            if frame[1] == message_id:
                return list(frame)

    async def station_call(self, action: str, since: int, timeout: float = WAIT_S) -> Any:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(
                    lambda: any(a == action for a, _ in self.station_calls[since:])
                ),
                timeout,
            )
        return next(p for a, p in self.station_calls[since:] if a == action)


@dataclass
class Rig:
    csms: RawCsms
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Any, timeout: float = WAIT_S * 2) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def exchange(self, frame: str | bytes, message_id: str) -> list[Any]:
        async def go() -> list[Any]:
            await self.csms.send(frame)
            return await self.csms.answer(message_id)

        result: list[Any] = self.run(go())
        return result


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    folder = tmp_path_factory.mktemp("ocpp-fuzz")

    async def start() -> tuple[RawCsms, Any, Any, asyncio.Task[None]]:
        csms = RawCsms(loop)
        server = await serve(
            csms.handler, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"], max_size=None
        )
        port = server.sockets[0].getsockname()[1]
        bridge, store, *_ = make_bridge(folder, f"ws://127.0.0.1:{port}/ocpp")
        task = asyncio.create_task(bridge.run())
        await csms.station_call("BootNotification", 0)
        await csms.station_call("StatusNotification", 0)
        return csms, server, (bridge, store), task

    future = asyncio.run_coroutine_threadsafe(start(), loop)
    csms, server, (bridge, store), task = future.result(WAIT_S)

    async def stop() -> None:
        await bridge.stop()
        await asyncio.wait_for(task, WAIT_S)
        store.close()
        server.close()
        await server.wait_closed()

    try:
        yield Rig(csms, loop)
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(WAIT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def expected(frame: str | bytes) -> tuple[str, str | None]:
    """(message id, CALLERROR code) the station must answer with; code None: CALLRESULT."""
    rejection = classify(frame, HANDLED)
    if rejection is not None:
        return rejection.message_id, rejection.code
    return json.loads(frame)[1], None


def check_answer(frame: str | bytes, answer: list[Any]) -> None:
    message_id, code = expected(frame)
    assert answer[1] == message_id
    if code is None:
        action = json.loads(frame)[2]
        assert answer[0] == 3, f"{action}: expected a CALLRESULT, got {answer}"
        validator = get_validator(MessageType.CallResult, action, "2.0.1")
        errors = list(validator.iter_errors(answer[2]))
        assert not errors, f"{action} CALLRESULT does not fit its schema: {errors[0].message}"
    else:
        assert answer[0] == 4, (code, answer)
        assert answer[2] == code, (code, answer)


def still_serving(rig: Rig) -> None:
    """The station answers TriggerMessage and sends what it was asked for."""
    connector = {"evse": {"id": 1, "connectorId": 1}}
    for message, where in (("Heartbeat", {}), ("StatusNotification", connector)):
        since = len(rig.csms.station_calls)
        message_id = f"trigger-{uuid.uuid4().hex[:8]}"
        request = {"requestedMessage": message, **where}
        frame = json.dumps([2, message_id, "TriggerMessage", request])
        answer = rig.exchange(frame, message_id)
        assert answer[:2] == [3, message_id], answer
        assert answer[2]["status"] == "Accepted", answer
        rig.run(rig.csms.station_call(message, since))
    assert rig.csms.connections == 1, "the connection was not kept"


def sweep_frames() -> list[tuple[str, str | bytes]]:
    """One of each kind of bad frame, plus a minimal valid CALL of every action."""
    frames: list[tuple[str, str | bytes]] = [
        ("not-json", "this is not json"),
        ("not-an-array", '{"a": 1}'),
        ("empty-array", "[]"),
        ("message-type-9", '[9, "m-type9", "Heartbeat", {}]'),
        ("message-type-string", '["2", "m-type-str", "Heartbeat", {}]'),
        ("call-3-elements", '[2, "m-three", "Heartbeat"]'),
        ("call-5-elements", '[2, "m-five", "Heartbeat", {}, {}]'),
        ("id-not-string", '[2, 17, "Heartbeat", {}]'),
        ("action-not-string", '[2, "m-action", 5, {}]'),
        ("payload-not-object", '[2, "m-payload", "GetVariables", [1]]'),
        ("unknown-action", '[2, "m-unknown", "MakeCoffee", {}]'),
        ("deep", deep()),
        ("deep-payload", f'[2, "m-deep", "GetVariables", {{"x": {deep()}}}]'),
        ("nested-500", f'[2, "m-nested", "GetVariables", {{"x": {deep(500)}}}]'),
        ("binary-call", b'[2, "m-binary", "GetTransactionStatus", {}]'),
        ("binary-garbage", b"\xff\xfe\x00garbage"),
        ("huge-1MB", json.dumps([2, "m-huge1", "GetVariables", {"x": "x" * (1024 * 1024)}])),
        ("huge-3.9MB", json.dumps([2, "m-huge4", "DataTransfer", {"x": "y" * (MAX_FRAME - 200)}])),
    ]
    for action in SCHEMAS:
        if action not in NO_VALID:
            frames.append((f"minimal:{action}", json.dumps([2, f"m-{action}", action, {}])))
    return frames


def test_every_kind_of_bad_frame_gets_the_documented_callerror(
    rig: Rig, fuzz_counts: Counter[str]
) -> None:
    for kind, frame in sweep_frames():
        message_id, _code = expected(frame)
        answer = rig.exchange(frame, message_id)
        check_answer(frame, answer)
        fuzz_counts["ocpp sweep frames"] += 1
        assert rig.csms.connections == 1, f"connection lost after {kind}"
    still_serving(rig)


def _call(data: st.DataObject) -> tuple[str, str]:
    # half the CALLs go to the actions the station handles, the rest to any name
    handled = st.sampled_from(sorted(HANDLED))
    anything = st.sampled_from([*SCHEMAS, "MakeCoffee", "reset", ""])
    action = data.draw(st.one_of(handled, anything), label="action")
    schema = SCHEMAS.get(action, {"type": "object"})
    payload = data.draw(from_schema(schema) if action in SCHEMAS else JSON_ANY, label="payload")
    if action in NO_VALID or data.draw(st.booleans(), label="mutate"):
        payload = data.draw(mutated(payload, schema), label="mutated")
    message_id = uuid.uuid4().hex[:12]
    frame: list[Any] = [2, message_id, action, payload]
    mangle = data.draw(st.sampled_from(["none"] * 6 + ["type", "length", "id"]), label="mangle")
    if mangle == "type":
        frame[0] = data.draw(st.sampled_from([0, 1, 5, -2, "2", None]))
    elif mangle == "length":
        frame = frame[: data.draw(st.integers(1, 3))] + [{}] * data.draw(st.integers(0, 1))
    elif mangle == "id":
        frame[1] = data.draw(st.sampled_from([None, 7, [], {"id": 1}]))
    text = json.dumps(frame)
    if expected(text)[1] is None and action in NO_VALID:  # a mutation that stayed valid
        text = json.dumps([2, message_id, action, {"fuzz": "not allowed"}])
    return text, expected(text)[0]


@settings(
    max_examples=examples(200),
    deadline=None,
    database=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_calls_get_a_schema_valid_result_or_the_right_callerror(
    rig: Rig, fuzz_counts: Counter[str], data: st.DataObject
) -> None:
    text, message_id = _call(data)
    as_binary = data.draw(st.booleans(), label="binary frame")
    frame: str | bytes = text.encode() if as_binary else text
    answer = rig.exchange(frame, message_id)
    check_answer(frame, answer)
    fuzz_counts["ocpp random frames"] += 1
    fuzz_counts[f"ocpp random answered {expected(frame)[1] or 'CALLRESULT'}"] += 1
    assert rig.csms.connections == 1


def test_after_the_fuzzing_the_station_still_serves_heartbeat_and_status(rig: Rig) -> None:
    still_serving(rig)


def test_a_frame_above_the_size_limit_closes_the_connection_and_the_station_comes_back(
    rig: Rig, fuzz_counts: Counter[str], tmp_path: Path
) -> None:
    """Beyond max_size the websocket library closes with 1009 (message too big) before
    anything is parsed; the bridge reconnects and boots again."""
    since = len(rig.csms.station_calls)
    too_big = json.dumps([2, "m-too-big", "DataTransfer", {"x": "z" * MAX_FRAME}])
    rig.run(rig.csms.send(too_big))
    fuzz_counts["ocpp frames above max_size"] += 1
    rig.run(rig.csms.station_call("BootNotification", since))
    assert rig.csms.closes[-1] == 1009
    rig.csms.connections = 1  # the reconnect was expected
    still_serving(rig)
