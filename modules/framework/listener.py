"""A read-only MQTT client for the tools that watch a bus (`everkit check`, `everkit watch`).

It subscribes to ``<prefix>#`` and queues every message for one consumer thread, so the
tool's bookkeeping never runs on paho's network thread. It logs in with the modules'
``EV_MQTT_USERNAME`` / ``EV_MQTT_PASSWORD`` when set: on a site with ACLs, give it a user
that may read ``<prefix>#`` and publish nothing.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from .errors import TransportError
from .transport import BrokerAddress, MqttCredentials
from .wire import normalise_prefix

CONNECT_TIMEOUT_S = 10.0


class Heard(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    retain: bool
    at: float  # time.monotonic() on arrival


class BusListener:
    def __init__(self, broker: BrokerAddress, prefix: str, qos: int = 2) -> None:
        self.broker, self.prefix = broker, normalise_prefix(prefix)
        self.inbox: queue.Queue[Heard] = queue.Queue()
        self._subscribed = threading.Event()
        self._client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        credentials = MqttCredentials.from_environ()
        if credentials is not None:
            self._client.username_pw_set(credentials.username, credentials.password)
        self._client.on_connect = lambda client, *_: client.subscribe(f"{self.prefix}#", qos=qos)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self.inbox.put(Heard(msg.topic, bytes(msg.payload), msg.qos, msg.retain, time.monotonic()))

    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Connect and wait for the broker to acknowledge the subscription."""
        try:
            self._client.connect(self.broker.host, self.broker.port)
        except OSError as exc:
            raise TransportError(f"cannot connect to {self.broker}: {exc}") from None
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise TransportError(f"no SUBACK from {self.broker} within {timeout:g} s")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
