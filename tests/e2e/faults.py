"""Helpers for fault injection on a running SIL stack: `everkit run` as a process the test
drives while it runs, and a bus recorder that survives a broker restart."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from everkit.framework.transport import BrokerAddress
from tests.conftest import Captured, wait_for_captured

ROOT = Path(__file__).resolve().parents[2]
EVERKIT_RUN = (sys.executable, "-m", "everkit", "run")
WAIT_S = 40.0  # generous: two cores shared with other test runs


class Stack:
    """`everkit run CONFIG` as a child process; its output goes to a file."""

    def __init__(
        self,
        config: dict[str, Any],
        folder: Path,
        broker: BrokerAddress,
        prefix: str,
        env: dict[str, str] | None = None,
    ) -> None:
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = folder / "everkit-run.log"
        self._out = self.log.open("w")
        self.process = subprocess.Popen(
            [*EVERKIT_RUN, str(path), "--broker", str(broker), "--prefix", prefix],
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait(self, timeout: float) -> int:
        """The exit status; the stack is stopped (SIGINT, as Ctrl-C) if it runs longer."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class Recorder:
    """Every message under ``prefix``; unlike the conftest recorder it resubscribes after a
    broker restart, and it notes when it was disconnected. ``Captured.at`` is wall-clock
    time here, the clock of the CAN log's timestamps, so the two can be put in order."""

    def __init__(self, broker: BrokerAddress, prefix: str) -> None:
        self.prefix = prefix
        self.messages: list[Captured] = []
        self.outages: list[tuple[float, float | None]] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self._disconnected = threading.Event()
        client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._record
        client.on_socket_open = lambda _c, _u, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        client.reconnect_delay_set(1, 1)
        self.client = client
        client.connect(broker.host, broker.port)
        client.loop_start()
        assert self._subscribed.wait(WAIT_S), "the recorder did not subscribe"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _on_connect(self, client: paho.Client, *_args: Any) -> None:
        with self._changed:
            if self.outages and self.outages[-1][1] is None:
                self.outages[-1] = (self.outages[-1][0], time.time())
            self._disconnected.clear()
        client.subscribe(f"{self.prefix}#", qos=2)

    def _on_disconnect(self, *_args: Any) -> None:
        with self._changed:
            self.outages.append((time.time(), None))
            self._subscribed.clear()
            self._disconnected.set()

    def _record(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(
                Captured(msg.topic, bytes(msg.payload), msg.retain, msg.qos, time.time())
            )
            self._changed.notify_all()

    def wait_disconnected(self, timeout: float = WAIT_S) -> bool:
        return self._disconnected.wait(timeout)

    def wait_subscribed(self, timeout: float = WAIT_S) -> bool:
        return self._subscribed.wait(timeout)

    def wait_for(
        self, predicate: Callable[[Captured], bool], timeout: float = WAIT_S, count: int = 1
    ) -> list[Captured]:
        return wait_for_captured(self._changed, self.messages, predicate, timeout, count)

    def snapshot(self) -> list[Captured]:
        with self._changed:
            return list(self.messages)


def envelope(message: Captured) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(message.payload)
    return data


def is_session_event(event: str) -> Callable[[Captured], bool]:
    def check(message: Captured) -> bool:
        return (
            message.topic.endswith("evse/var/session_event")
            and bool(message.payload)
            and envelope(message)["data"]["data"]["event"] == event
        )

    return check


def is_error(kind: str, error_type: str) -> Callable[[Captured], bool]:
    """``kind``: RaiseError or ClearError."""

    def check(message: Captured) -> bool:
        if "/error/" not in message.topic or not message.payload:
            return False
        body = envelope(message)
        return bool(body["msg_type"] == kind and body["data"]["type"] == error_type)

    return check
