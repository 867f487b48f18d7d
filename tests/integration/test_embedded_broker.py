"""Integration tests of the embedded MQTT broker with real paho-mqtt 2.x clients."""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from everkit.framework.embedded_broker import run_in_thread, topic_matches, valid_topic_filter

pytestmark = pytest.mark.integration

TIMEOUT = 5.0
BROKER_LOGGER = "everkit.framework.embedded_broker"


class Peer:
    """A paho client on its own network thread, with awaitable events."""

    def __init__(self, port: int, client_id: str = "") -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        self._acks: dict[int, threading.Event] = {}
        self.granted: dict[int, list[object]] = {}
        self.client.on_connect = lambda *_args: self.connected.set()
        self.client.on_disconnect = lambda *_args: self.disconnected.set()
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = self._on_ack
        self.client.on_unsubscribe = self._on_ack
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"

    def _ack_event(self, mid: int) -> threading.Event:
        with self._lock:
            return self._acks.setdefault(mid, threading.Event())

    def _on_ack(self, _c: object, _u: object, mid: int, codes: list[object], _p: object) -> None:
        self.granted[mid] = [getattr(code, "value", code) for code in codes]
        self._ack_event(mid).set()

    def subscribe(self, *filters: tuple[str, int]) -> list[object]:
        _rc, mid = self.client.subscribe(list(filters))
        assert self._ack_event(mid).wait(TIMEOUT), "no SUBACK"
        return self.granted[mid]

    def unsubscribe(self, topic_filter: str) -> None:
        _rc, mid = self.client.unsubscribe(topic_filter)
        assert self._ack_event(mid).wait(TIMEOUT), "no UNSUBACK"

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos, retain).wait_for_publish(TIMEOUT)

    def next_message(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=TIMEOUT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(autouse=True)
def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail on asyncio "exception in callback" or broker errors, even during teardown."""
    yield
    records = caplog.get_records("call") + caplog.get_records("teardown")
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert not errors


@pytest.fixture
def broker_port() -> Iterator[int]:
    port, stop = run_in_thread("127.0.0.1", 0)
    yield port
    stop()


@pytest.fixture
def peer(broker_port: int) -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def make(client_id: str = "") -> Peer:
        peers.append(Peer(broker_port, client_id))
        return peers[-1]

    yield make
    for p in peers:
        p.close()


def connect_packet(client_id: bytes = b"raw", keepalive: int = 60, level: int = 4) -> bytes:
    body = b"\x00\x04MQTT" + bytes([level, 0x02]) + struct.pack("!H", keepalive)
    return encode(0x10, body + struct.pack("!H", len(client_id)) + client_id)


def encode(header: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes([header, len(body)]) + body


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


def raw_client(port: int, keepalive: int = 60) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(connect_packet(keepalive=keepalive))
    assert recv_exactly(sock, 4) == b"\x20\x02\x00\x00"
    return sock


def assert_closed_by_broker(sock: socket.socket) -> None:
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(1024) == b""


@pytest.mark.parametrize("pub_qos", [0, 1, 2])
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_publish_round_trip_at_min_qos(
    peer: Callable[..., Peer], pub_qos: int, sub_qos: int
) -> None:
    sub, pub = peer(), peer()
    assert sub.subscribe(("t/x", sub_qos)) == [sub_qos]
    pub.publish("t/x", b"hello", qos=pub_qos)
    msg = sub.next_message()
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == (
        "t/x",
        b"hello",
        min(pub_qos, sub_qos),
        False,
    )


def test_large_payload_round_trip(peer: Callable[..., Peer]) -> None:
    sub, pub = peer(), peer()
    sub.subscribe(("big", 2))
    payload = bytes(range(256)) * 8192  # 2 MiB: multi-byte remaining length, write back-pressure
    pub.publish("big", payload, qos=2)
    assert sub.next_message().payload == payload


def test_wildcard_subscriptions(peer: Callable[..., Peer]) -> None:
    plus, hash_, pub = peer(), peer(), peer()
    plus.subscribe(("a/+/c", 1))
    hash_.subscribe(("a/#", 1), ("+/sys", 1))
    topics = ["a/b/d", "a/b/c/d", "$SYS/x", "$SYS/sys", "a", "a/b/c", "a/x/c", "b/sys", "a/z/c"]
    for topic in topics:
        pub.publish(topic, topic.encode(), qos=1)
    # The last topic matches both subscribers, so anything wrongly routed shows up before it.
    assert [plus.next_message().topic for _ in range(3)] == ["a/b/c", "a/x/c", "a/z/c"]
    expected = ["a/b/d", "a/b/c/d", "a", "a/b/c", "a/x/c", "b/sys", "a/z/c"]
    assert [hash_.next_message().topic for _ in expected] == expected


def test_invalid_filter_is_refused_and_connection_survives(broker_port: int) -> None:
    # paho refuses to send invalid filters, so this test speaks raw MQTT.
    filters = [(b"a/#/b", 1), (b"a+/b", 1), (b"ok/#", 2)]
    body = b"\x00\x07" + b"".join(struct.pack("!H", len(f)) + f + bytes([q]) for f, q in filters)
    with raw_client(broker_port) as sock:
        sock.sendall(encode(0x82, body))
        assert recv_exactly(sock, 7) == b"\x90\x05\x00\x07\x80\x80\x02"
        publish = encode(0x30, b"\x00\x04ok/1x")
        sock.sendall(publish)
        assert recv_exactly(sock, len(publish)) == publish


def test_overlapping_subscriptions_deliver_once_at_max_qos(peer: Callable[..., Peer]) -> None:
    sub, pub = peer(), peer()
    sub.subscribe(("o/#", 0), ("o/+", 2), ("o/a", 1))
    pub.publish("o/a", b"1", qos=2)
    pub.publish("o/end", b"2", qos=2)
    first, second = sub.next_message(), sub.next_message()
    assert (first.topic, first.qos) == ("o/a", 2)
    assert (second.topic, second.qos) == ("o/end", 2)


def test_retained_delivery_and_deletion(peer: Callable[..., Peer]) -> None:
    pub, live = peer(), peer()
    live.subscribe(("r/#", 2))
    pub.publish("r/1", b"v1", qos=1, retain=True)
    msg = live.next_message()
    assert (msg.payload, msg.retain) == (b"v1", False)

    late = peer()
    late.subscribe(("r/+", 2))
    msg = late.next_message()
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == ("r/1", b"v1", 1, True)

    pub.publish("r/1", b"", qos=1, retain=True)
    assert live.next_message().payload == b""
    after = peer()
    after.subscribe(("r/+", 2))
    pub.publish("r/end", b"sentinel", qos=1)
    assert after.next_message().topic == "r/end"


def test_unsubscribe_stops_delivery(peer: Callable[..., Peer]) -> None:
    sub, pub = peer(), peer()
    sub.subscribe(("u/a", 1), ("u/b", 1))
    pub.publish("u/a", b"1", qos=1)
    assert sub.next_message().topic == "u/a"
    sub.unsubscribe("u/a")
    pub.publish("u/a", b"2", qos=1)
    pub.publish("u/b", b"3", qos=1)
    assert sub.next_message().payload == b"3"


def test_thousand_qos2_messages_arrive_in_order(peer: Callable[..., Peer]) -> None:
    sub, pub = peer(), peer()
    sub.subscribe(("order", 2))
    infos = [pub.client.publish("order", str(i).encode(), qos=2) for i in range(1000)]
    infos[-1].wait_for_publish(30)
    received = [int(sub.messages.get(timeout=30).payload) for _ in range(1000)]
    assert received == list(range(1000))


def test_client_takeover_closes_old_connection(peer: Callable[..., Peer]) -> None:
    old = peer("same-id")
    old.subscribe(("take/#", 1))
    new = peer("same-id")
    assert old.disconnected.wait(TIMEOUT)
    new.subscribe(("take/#", 1))
    peer().publish("take/1", b"x", qos=1)
    assert new.next_message().topic == "take/1"
    assert not new.disconnected.is_set()


def test_empty_client_id_gets_generated(peer: Callable[..., Peer]) -> None:
    a, b = peer(""), peer("")
    a.subscribe(("e", 1))
    b.publish("e", b"x", qos=1)
    assert a.next_message().payload == b"x"
    assert not a.disconnected.is_set()


GARBAGE = {
    "http request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad remaining length": b"\x10\xff\xff\xff\xff",
    "wrong protocol name": encode(0x10, b"\x00\x04HTTP\x04\x02\x00\x3c\x00\x01x"),
}
AFTER_CONNECT = {
    "publish qos 3": encode(0x36, b"\x00\x01t\x00\x01"),
    "subscribe bad flags": encode(0x80, b"\x00\x01\x00\x01t\x00"),
    "wildcard topic name": encode(0x30, b"\x00\x01#"),
    "second connect": connect_packet(),
    "unknown packet type": encode(0xF0, b""),
}


@pytest.mark.parametrize(
    "garbage",
    list(GARBAGE.values()) + list(AFTER_CONNECT.values()),
    ids=list(GARBAGE) + [f"after connect: {k}" for k in AFTER_CONNECT],
)
def test_malformed_input_closes_only_that_connection(
    broker_port: int, peer: Callable[..., Peer], garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    good = peer()
    good.subscribe(("g", 1))
    caplog.set_level(logging.WARNING, logger=BROKER_LOGGER)
    if garbage in AFTER_CONNECT.values():
        sock = raw_client(broker_port)
    else:
        sock = socket.create_connection(("127.0.0.1", broker_port), timeout=TIMEOUT)
    with sock:
        sock.sendall(garbage)
        assert_closed_by_broker(sock)
    assert any("protocol error" in r.getMessage() for r in caplog.records)
    peer().publish("g", b"still works", qos=1)
    assert good.next_message().payload == b"still works"


def test_mqtt5_connect_is_refused(broker_port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=BROKER_LOGGER)
    with socket.create_connection(("127.0.0.1", broker_port), timeout=TIMEOUT) as sock:
        sock.sendall(encode(0x10, b"\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x01x"))
        assert recv_exactly(sock, 4) == b"\x20\x02\x00\x01"
        assert_closed_by_broker(sock)
    assert any("protocol level 5" in r.getMessage() for r in caplog.records)


def test_paho_mqtt5_client_sees_unsupported_protocol_version(broker_port: int) -> None:
    results: queue.Queue[object] = queue.Queue()
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=False,
    )
    client.on_connect = lambda _c, _u, _f, reason, _p: results.put(reason)
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    try:
        assert str(results.get(timeout=TIMEOUT)) == "Unsupported protocol version"
    finally:
        client.loop_stop()


def test_keepalive_expiry_disconnects_silent_client(broker_port: int) -> None:
    with raw_client(broker_port, keepalive=1) as sock:
        sock.sendall(b"\xc0\x00")  # PINGREQ
        assert recv_exactly(sock, 2) == b"\xd0\x00"
        started = time.monotonic()
        assert_closed_by_broker(sock)
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 4.0


def test_will_message_published_on_abnormal_close(
    broker_port: int, peer: Callable[..., Peer]
) -> None:
    sub = peer()
    sub.subscribe(("will/#", 1))
    body = b"\x00\x04MQTT\x04" + bytes([0x02 | 0x04 | 0x08]) + b"\x00\x3c"
    body += b"\x00\x01w" + b"\x00\x06will/w" + b"\x00\x04gone"
    with socket.create_connection(("127.0.0.1", broker_port), timeout=TIMEOUT) as sock:
        sock.sendall(encode(0x10, body))
        assert recv_exactly(sock, 4) == b"\x20\x02\x00\x00"
    msg = sub.next_message()
    assert (msg.topic, msg.payload, msg.qos) == ("will/w", b"gone", 1)


def test_no_will_after_clean_disconnect(broker_port: int, peer: Callable[..., Peer]) -> None:
    sub = peer()
    sub.subscribe(("will/#", 1))
    body = b"\x00\x04MQTT\x04\x06\x00\x3c\x00\x01w\x00\x06will/w\x00\x04gone"
    with socket.create_connection(("127.0.0.1", broker_port), timeout=TIMEOUT) as sock:
        sock.sendall(encode(0x10, body))
        assert recv_exactly(sock, 4) == b"\x20\x02\x00\x00"
        sock.sendall(b"\xe0\x00")
        assert_closed_by_broker(sock)
    peer().publish("will/end", b"", qos=1)
    assert sub.next_message().topic == "will/end"


def test_stop_closes_connected_clients() -> None:
    port, stop = run_in_thread()
    client = Peer(port)
    client.subscribe(("s", 1))
    stop()
    assert client.disconnected.wait(TIMEOUT)
    client.client.loop_stop()
    stop()  # idempotent


def test_start_on_a_busy_port_raises(broker_port: int) -> None:
    with pytest.raises(OSError, match="ddress already in use"):
        run_in_thread("127.0.0.1", broker_port)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/#", "a", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/+", "a/b/c", False),
        ("+", "", True),
        ("a//b", "a//b", True),
    ],
)
def test_topic_matching(topic_filter: str, topic: str, matches: bool) -> None:
    assert valid_topic_filter(topic_filter)
    assert topic_matches(topic_filter, topic) is matches


def test_command_line_entry_point() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "everkit.framework.embedded_broker",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("embedded MQTT broker listening on 127.0.0.1:")
        client = Peer(int(line.rsplit(":", 1)[1]))
        client.subscribe(("cli", 1))
        client.publish("cli", b"x", qos=1)
        assert client.next_message().payload == b"x"
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
