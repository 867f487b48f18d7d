"""The MQTT connection of one process: paho-mqtt 2.x, tuned for EVerest traffic.

* TCP_NODELAY on the client socket. Without it a QoS 2 request/response on loopback
  takes ~44-88 ms (Nagle + delayed ACK); with it (and ``set_tcp_nodelay true`` in
  mosquitto.conf) under a millisecond.
* QoS 2 for everything EVerest sends at QoS 2; never retained, except by the manager.
* Reconnect with exponential back-off (paho's loop thread), then resubscribe every filter
  (clean sessions lose them). Messages published while disconnected stay in paho's queue
  and go out after the reconnect; messages other clients sent meanwhile are lost, and the
  log says so.
* Incoming messages: exact-topic handlers first (one dict lookup), then wildcard filters.
  A handler marked ``inline`` runs on the network thread (only for trivially short work
  such as resolving a command future); the rest run through ``OrderedExecutor``.
* Credentials from ``EV_MQTT_USERNAME`` / ``EV_MQTT_PASSWORD`` when set (a broker with
  ``allow_anonymous false``, e.g. the docker-compose deployment in docs/deploy.md).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from .dispatch import OrderedExecutor
from .errors import TransportError

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]


@dataclass(frozen=True)
class BrokerAddress:
    host: str = "127.0.0.1"
    port: int = 1883

    @classmethod
    def parse(cls, text: str) -> BrokerAddress:
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"broker address must be HOST:PORT, got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class MqttCredentials:
    """MQTT username and password (the password may be absent, as MQTT allows)."""

    username: str
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> MqttCredentials | None:
        """``EV_MQTT_USERNAME`` / ``EV_MQTT_PASSWORD``, or None without a username."""
        env = os.environ if environ is None else environ
        username = env.get("EV_MQTT_USERNAME")
        if not username:
            return None
        return cls(username, env.get("EV_MQTT_PASSWORD"))


@dataclass(frozen=True)
class _Subscription:
    handler: MessageHandler
    qos: int
    inline: bool


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching with ``+`` and ``#``."""
    pattern_parts = pattern.split("/")
    topic_parts = topic.split("/")
    for index, part in enumerate(pattern_parts):
        if part == "#":
            return True
        if index >= len(topic_parts):
            return False
        if part not in ("+", topic_parts[index]):
            return False
    return len(pattern_parts) == len(topic_parts)


class Transport:
    """One paho client with routing, ordered dispatch and resubscription."""

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        client_id: str | None = None,
        executor: OrderedExecutor | None = None,
        reconnect_delay: tuple[float, float] = (0.1, 5.0),
        credentials: MqttCredentials | None = None,
    ) -> None:
        """``credentials`` default to the environment's (``MqttCredentials.from_environ``):
        the manager and every module read them there, as they read the broker address."""
        self.broker = broker
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"everkit-{uuid.uuid4().hex[:12]}",
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        credentials = credentials or MqttCredentials.from_environ()
        if credentials is not None:
            self._client.username_pw_set(credentials.username, credentials.password)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)  # unbounded: nothing we send is dropped
        self._client.reconnect_delay_set(int(reconnect_delay[0]) or 1, int(reconnect_delay[1]))
        self._client.on_socket_open = self._on_socket_open
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._executor = executor or OrderedExecutor()
        self._exact: dict[str, _Subscription] = {}
        self._wildcard: dict[str, _Subscription] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._ever_connected = False
        self._resubscribe_mid: int | None = None  # connected once the broker acked it
        self._closing = False
        self.reconnects = 0

    # connection lifecycle

    def connect(self, timeout: float = 10.0) -> None:
        """Connect, retrying with back-off until ``timeout`` (the broker may start later)."""
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=20)
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self._closing = True
            self._client.loop_stop()
            raise TransportError(f"no MQTT broker answered at {self.broker} within {timeout:g} s")

    def close(self) -> None:
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        self._executor.shutdown()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def _on_socket_open(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error("MQTT broker %s refused the connection: %s", self.broker, reason)
            return
        with self._lock:
            filters = [(t, s.qos) for t, s in (*self._exact.items(), *self._wildcard.items())]
        if filters:
            # "connected" only once the broker has our subscriptions back: a peer's
            # command sent before that would find nobody subscribed and be lost
            _, self._resubscribe_mid = client.subscribe(filters)
        if self._ever_connected:
            self.reconnects += 1
            log.warning(
                "reconnected to MQTT broker %s; resubscribed %d topics. Vars and commands "
                "other modules sent while we were away were not kept by the broker and are lost",
                self.broker,
                len(filters),
            )
        self._ever_connected = True
        if not filters:
            self._connected.set()

    def _on_subscribe(
        self, _client: paho.Client, _userdata: Any, mid: int, _codes: Any, _props: Any
    ) -> None:
        if mid == self._resubscribe_mid:
            self._resubscribe_mid = None
            self._connected.set()

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        self._connected.clear()
        if not self._closing:
            log.warning(
                "lost MQTT broker %s (%s); reconnecting. Messages we publish meanwhile are "
                "queued and sent after the reconnect",
                self.broker,
                reason,
            )

    # publish / subscribe

    def publish(self, topic: str, payload: bytes, qos: int = 2, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(
        self, topic: str, handler: MessageHandler, *, qos: int = 2, inline: bool = False
    ) -> None:
        """Route messages on ``topic`` (a filter when it holds + or #) to ``handler``."""
        table = self._wildcard if ("+" in topic or "#" in topic) else self._exact
        with self._lock:
            table[topic] = _Subscription(handler, qos, inline)
        if self.connected:
            self._client.subscribe(topic, qos)

    def unsubscribe(self, topic: str) -> None:
        with self._lock:
            self._exact.pop(topic, None)
            self._wildcard.pop(topic, None)
        self._client.unsubscribe(topic)

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        payload = bytes(msg.payload)
        subscription = self._exact.get(topic)
        if subscription is not None:
            self._deliver(topic, topic, payload, subscription)
        if self._wildcard:
            with self._lock:
                matches = [(p, s) for p, s in self._wildcard.items() if topic_matches(p, topic)]
            for pattern, sub in matches:
                self._deliver(pattern, topic, payload, sub)

    def _deliver(self, key: str, topic: str, payload: bytes, sub: _Subscription) -> None:
        if sub.inline:
            try:
                sub.handler(topic, payload)
            except Exception:
                log.exception("inline handler for %s failed", topic)
        else:
            self._executor.submit(key, lambda: sub.handler(topic, payload))
