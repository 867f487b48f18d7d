"""Shared fixtures: a real Mosquitto on a free loopback port, per-test EVerest prefixes,
and a raw paho recorder/injector that sees the bus the way a foreign peer would."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from everkit.framework.broker import PrivateBroker, find_mosquitto, start_mosquitto
from everkit.framework.transport import BrokerAddress

WAIT_S = 10.0


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[PrivateBroker]:
    """A real Mosquitto for the whole session; never port 1883, never a shared broker."""
    if find_mosquitto() is None:
        pytest.fail(
            "Mosquitto is not installed: `make test` installs it (apt-get install mosquitto)"
        )
    broker = start_mosquitto()
    assert broker.address.port != 1883
    yield broker
    broker.stop()


@pytest.fixture
def broker(mosquitto: PrivateBroker) -> BrokerAddress:
    return mosquitto.address


@pytest.fixture
def prefix() -> str:
    """Each test its own EVerest prefix, so tests never see each other's retained topics."""
    return f"everkit-test-{uuid.uuid4().hex[:10]}/"


@dataclass
class Captured:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    at: float = 0.0  # time.monotonic() on arrival


def wait_for_captured(
    changed: threading.Condition,
    messages: list[Captured],
    predicate: Callable[[Captured], bool],
    timeout: float,
    count: int = 1,
) -> list[Captured]:
    """Wait on ``changed`` (notified on every new message) until ``count`` of ``messages``
    satisfy ``predicate``; return them, or fail naming the last topics seen."""
    with changed:
        found: list[Captured] = []

        def enough() -> bool:
            nonlocal found
            found = [m for m in messages if predicate(m)]
            return len(found) >= count

        assert changed.wait_for(enough, timeout), (
            f"timed out; saw {len(messages)} messages: "
            + ", ".join(m.topic for m in messages[-10:])
        )
        return found


@dataclass
class RawClient:
    """A plain paho client: records everything under a filter, publishes anything."""

    client: paho.Client
    messages: list[Captured] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def publish(self, topic: str, payload: bytes | str, qos: int = 2, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(WAIT_S)

    def subscribe(self, topic_filter: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_: done.set()
        self.client.subscribe(topic_filter, qos=2)
        assert done.wait(WAIT_S), f"no SUBACK for {topic_filter}"

    def wait_for(
        self, predicate: Callable[[Captured], bool], timeout: float = WAIT_S, count: int = 1
    ) -> list[Captured]:
        """Wait until ``count`` captured messages satisfy ``predicate``; return them."""
        return wait_for_captured(self._changed, self.messages, predicate, timeout, count)

    def on_topic(self, topic: str, **kwargs: float) -> list[Captured]:
        return self.wait_for(lambda m: m.topic == topic, **kwargs)  # type: ignore[arg-type]

    def _record(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(
                Captured(msg.topic, bytes(msg.payload), msg.retain, msg.qos, time.monotonic())
            )
            self._changed.notify_all()


def _raw_client(address: BrokerAddress) -> RawClient:
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    raw = RawClient(client)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.on_message = raw._record
    client.on_socket_open = lambda _c, _u, sock: sock.setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    client.connect(address.host, address.port)
    client.loop_start()
    assert connected.wait(WAIT_S), "raw client could not connect"
    return raw


@pytest.fixture
def raw_client(broker: BrokerAddress) -> Iterator[RawClient]:
    raw = _raw_client(broker)
    yield raw
    raw.client.disconnect()
    raw.client.loop_stop()


@pytest.fixture
def recorder(broker: BrokerAddress, prefix: str) -> Iterator[RawClient]:
    """Records every message under this test's prefix."""
    raw = _raw_client(broker)
    raw.subscribe(f"{prefix}#")
    yield raw
    raw.client.disconnect()
    raw.client.loop_stop()
