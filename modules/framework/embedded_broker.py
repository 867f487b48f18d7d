"""A small embedded MQTT 3.1.1 broker (stdlib asyncio only).

``everkit run`` falls back to this broker when Mosquitto is not installed. It is
meant for loopback clients of our own framework, not for production use.

Supported:
  * MQTT 3.1.1 (and the 3.1 "MQIsdp" variant that paho downgrades to);
  * CONNECT/CONNACK, generated client ids for empty ids, client takeover;
  * PUBLISH with QoS 0, 1 and 2 in both directions (delivered at
    min(publish QoS, granted QoS)), one delivery per client for overlapping
    subscriptions at the highest granted QoS;
  * SUBSCRIBE/UNSUBSCRIBE with ``+``/``#`` wildcards and filter validation;
    ``$``-topics are not matched by wildcards at the first level;
  * retained messages (an empty retained payload deletes), will messages (LWT);
  * PINGREQ, DISCONNECT, keepalive enforcement (1.5 x keepalive);
  * TCP_NODELAY on every accepted socket.

Not supported: MQTT 5 (a v5 CONNECT gets CONNACK 0x01 "unacceptable protocol
level" and the connection is closed), persistent sessions (clean session is
always assumed; CONNACK session-present is 0), persistence of retained
messages, authentication/authorization (username/password are ignored), TLS,
websockets and retransmission of unacknowledged messages.

Run standalone with ``python -m everkit.framework.embedded_broker --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import struct
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

MAX_PACKET_SIZE = 64 * 1024 * 1024
CONNECT_TIMEOUT = 10.0
HIGH_WATER = 1024 * 1024
ROUTE_CACHE_LIMIT = 10_000
# Fixed-header flags that MQTT 3.1.1 requires per packet type (PUBLISH has its own).
_REQUIRED_FLAGS = {PUBREL: 2, SUBSCRIBE: 2, UNSUBSCRIBE: 2}


class ProtocolError(Exception):
    """The peer sent a malformed packet or violated the protocol."""


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


def _packet(header: int, body: bytes = b"") -> bytes:
    """Encode a packet: fixed-header byte, remaining length, body."""
    out = bytearray([header])
    n = len(body)
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out + body)


def _encode_str(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


class _Reader:
    """Bounds-checked decoder over a packet body."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("packet too short")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        try:
            text = self.binary().decode()
        except UnicodeDecodeError:
            raise ProtocolError("invalid UTF-8 string") from None
        if "\0" in text:
            raise ProtocolError("NUL character in string")
        return text

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def packet_id(self) -> int:
        pid = self.u16()
        if pid == 0:
            raise ProtocolError("packet identifier 0")
        return pid


def valid_topic_filter(topic_filter: str) -> bool:
    """Whether ``topic_filter`` is a valid MQTT topic filter."""
    if not topic_filter or "\0" in topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (including the ``$`` rule)."""
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels) or (f != "+" and f != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


class _Connection:
    """One client connection: reads packets, keeps per-session state."""

    def __init__(
        self, broker: EmbeddedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.broker, self.reader, self.writer = broker, reader, writer
        self.peer = str(writer.get_extra_info("peername"))
        self.client_id = ""
        self.loop = asyncio.get_running_loop()
        self.timeout: float | None = CONNECT_TIMEOUT  # CONNECT deadline, then 1.5 x keepalive
        self.last_seen = self.loop.time()
        self._watchdog: asyncio.TimerHandle | None = None
        self.subscriptions: dict[str, int] = {}
        self.outbound: dict[int, int] = {}  # packet id -> awaited ack type
        self.awaiting_pubrel: set[int] = set()
        self.will: Message | None = None
        self.closed = False
        self.close_reason = ""
        self._next_pid = 0
        self._handlers: dict[int, Callable[[int, _Reader], None]] = {
            PUBACK: lambda _flags, r: self._on_final_ack(PUBACK, r),
            PUBREC: self._on_pubrec,
            PUBREL: self._on_pubrel,
            PUBCOMP: lambda _flags, r: self._on_final_ack(PUBCOMP, r),
            SUBSCRIBE: self._on_subscribe,
            UNSUBSCRIBE: self._on_unsubscribe,
            PINGREQ: lambda _flags, _r: self.send(_packet(PINGRESP << 4)),
        }

    @property
    def name(self) -> str:
        return self.client_id or self.peer

    async def run(self) -> None:
        reason, level = "connection closed", logging.DEBUG
        self._arm_watchdog()
        try:
            if await self._handshake():
                reason = await self._serve()
            else:
                reason = "connection refused"
        except ProtocolError as exc:
            reason, level = f"protocol error: {exc}", logging.WARNING
        except (asyncio.IncompleteReadError, ConnectionError):
            if self.close_reason:
                reason, level = self.close_reason, logging.INFO
        log.log(level, "closing MQTT connection %s: %s", self.name, reason)
        await self.broker.disconnected(self)

    async def _handshake(self) -> bool:
        _header, body = await self._read_packet(expect_connect=True)
        return self._on_connect(_Reader(body))

    async def _serve(self) -> str:
        while not self.closed:
            header, body = await self._read_packet()
            ptype, flags = header >> 4, header & 0x0F
            if ptype == DISCONNECT:
                self.will = None
                return "client disconnected"
            if ptype == PUBLISH:
                await self._on_publish(flags, _Reader(body))
                continue
            handler = self._handlers.get(ptype)
            if handler is None:
                raise ProtocolError(f"unexpected packet type {ptype}")
            if flags != _REQUIRED_FLAGS.get(ptype, 0):
                raise ProtocolError(f"bad flags {flags:#x} for packet type {ptype}")
            handler(flags, _Reader(body))
            if self.congested():
                await self.drain()
        return self.close_reason

    async def _read_packet(self, expect_connect: bool = False) -> tuple[int, bytes]:
        header, byte = await self.reader.readexactly(2)
        if expect_connect and header != CONNECT << 4:
            raise ProtocolError(f"expected CONNECT, got first byte {header:#04x}")
        length, shift = byte & 0x7F, 7
        while byte & 0x80:
            if shift > 21:
                raise ProtocolError("malformed remaining length")
            byte = (await self.reader.readexactly(1))[0]
            length += (byte & 0x7F) << shift
            shift += 7
        if length > MAX_PACKET_SIZE:
            raise ProtocolError(f"packet of {length} bytes is too large")
        body = await self.reader.readexactly(length) if length else b""
        self.last_seen = self.loop.time()
        return header, body

    def _arm_watchdog(self) -> None:
        """(Re)schedule the keepalive check; no per-packet timer churn."""
        if self.timeout is not None and not self.closed:
            deadline = self.last_seen + self.timeout
            self._watchdog = self.loop.call_at(deadline, self._check_watchdog)

    def _check_watchdog(self) -> None:
        if self.timeout is None or self.closed:
            return
        if self.loop.time() < self.last_seen + self.timeout - 0.001:
            self._arm_watchdog()  # a packet arrived meanwhile
        else:
            reason = "keepalive timeout" if self.client_id else "no CONNECT in time"
            self.close(reason, abort=True)

    def _on_connect(self, r: _Reader) -> bool:
        name, level = r.string(), r.u8()
        if (name, level) not in (("MQTT", 4), ("MQIsdp", 3)):
            if name != "MQTT":
                raise ProtocolError(f"unknown protocol name {name!r}")
            log.warning("rejecting MQTT protocol level %d from %s (only 3.1.1)", level, self.peer)
            self.send(_packet(CONNACK << 4, b"\x00\x01"))
            return False
        flags, keepalive = r.u8(), r.u16()
        self.client_id = r.string()
        self._parse_will_and_credentials(flags, r)
        if not self.client_id:
            if not flags & 0x02:
                self.send(_packet(CONNACK << 4, b"\x00\x02"))
                return False
            self.client_id = f"everkit-{uuid.uuid4().hex}"
        self.timeout = 1.5 * keepalive if keepalive else None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._arm_watchdog()
        self.broker.connected(self)
        self.send(_packet(CONNACK << 4, b"\x00\x00"))
        log.debug("MQTT client %s connected from %s", self.client_id, self.peer)
        return True

    def _parse_will_and_credentials(self, flags: int, r: _Reader) -> None:
        if flags & 0x01:
            raise ProtocolError("reserved CONNECT flag set")
        will_qos = (flags >> 3) & 0x03
        if flags & 0x04:
            if will_qos > 2:
                raise ProtocolError("will QoS 3")
            topic, payload = r.string(), r.binary()
            if not topic or "+" in topic or "#" in topic:
                raise ProtocolError("invalid will topic")
            self.will = Message(topic, payload, will_qos, bool(flags & 0x20))
        elif flags & 0x38:
            raise ProtocolError("will QoS/retain set without will flag")
        if flags & 0x80:
            r.string()  # user name: no authentication
        elif flags & 0x40:
            raise ProtocolError("password without user name")
        if flags & 0x40:
            r.binary()

    async def _on_publish(self, flags: int, r: _Reader) -> None:
        qos, retain = (flags >> 1) & 0x03, bool(flags & 0x01)
        if qos > 2:
            raise ProtocolError("PUBLISH with QoS 3")
        topic = r.string()
        if not topic or "+" in topic or "#" in topic:
            raise ProtocolError(f"invalid topic name {topic!r}")
        pid = r.packet_id() if qos else 0
        message = Message(topic, r.rest(), qos, retain)
        if qos == 1:
            self.send(_packet(PUBACK << 4, struct.pack("!H", pid)))
        elif qos == 2:
            self.send(_packet(PUBREC << 4, struct.pack("!H", pid)))
            if pid in self.awaiting_pubrel:
                return  # duplicate of a message we already routed
            self.awaiting_pubrel.add(pid)
        await self.broker.publish(message)

    def _on_pubrel(self, _flags: int, r: _Reader) -> None:
        pid = self._ack_id(r)
        self.awaiting_pubrel.discard(pid)
        self.send(_packet(PUBCOMP << 4, struct.pack("!H", pid)))

    def _on_final_ack(self, ack_type: int, r: _Reader) -> None:
        """PUBACK (QoS 1) or PUBCOMP (QoS 2) ends an outbound flow."""
        pid = self._ack_id(r)
        if self.outbound.get(pid) == ack_type:
            del self.outbound[pid]

    def _on_pubrec(self, _flags: int, r: _Reader) -> None:
        pid = self._ack_id(r)
        if self.outbound.get(pid) in (PUBREC, PUBCOMP):
            self.outbound[pid] = PUBCOMP
            self.send(_packet(PUBREL << 4 | 2, struct.pack("!H", pid)))

    @staticmethod
    def _ack_id(r: _Reader) -> int:
        if len(r.data) != 2:
            raise ProtocolError("acknowledgement with wrong length")
        return r.packet_id()

    def _on_subscribe(self, _flags: int, r: _Reader) -> None:
        pid, granted, accepted = r.packet_id(), bytearray(), []
        while not r.at_end() or not granted:
            topic_filter, qos = r.string(), r.u8()
            if qos > 2:
                raise ProtocolError(f"requested QoS byte {qos:#x}")
            if valid_topic_filter(topic_filter):
                self.subscriptions[topic_filter] = qos
                accepted.append((topic_filter, qos))
                granted.append(qos)
            else:
                log.warning("client %s: invalid topic filter %r", self.name, topic_filter)
                granted.append(0x80)
        self.broker.subscriptions_changed()
        self.send(_packet(SUBACK << 4, struct.pack("!H", pid) + bytes(granted)))
        for topic_filter, qos in accepted:
            for message in self.broker.retained_for(topic_filter):
                self.deliver(message, min(qos, message.qos), retain=True)

    def _on_unsubscribe(self, _flags: int, r: _Reader) -> None:
        pid, count = r.packet_id(), 0
        while not r.at_end() or not count:
            self.subscriptions.pop(r.string(), None)
            count += 1
        self.broker.subscriptions_changed()
        self.send(_packet(UNSUBACK << 4, struct.pack("!H", pid)))

    def deliver(self, message: Message, qos: int, retain: bool = False) -> None:
        """Send ``message`` to this client at ``qos``."""
        if self.closed:
            return
        header = PUBLISH << 4 | qos << 1 | int(retain)
        body = _encode_str(message.topic)
        if qos:
            pid = self._allocate_pid()
            if pid is None:
                log.warning("client %s: no free packet id, dropping message", self.name)
                return
            self.outbound[pid] = PUBACK if qos == 1 else PUBREC
            body += struct.pack("!H", pid)
        self.send(_packet(header, body + message.payload))

    def _allocate_pid(self) -> int | None:
        for _ in range(65535):
            self._next_pid = self._next_pid % 65535 + 1
            if self._next_pid not in self.outbound:
                return self._next_pid
        return None

    def send(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)

    def congested(self) -> bool:
        return self.writer.transport.get_write_buffer_size() > HIGH_WATER

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def close(self, reason: str = "", abort: bool = False) -> None:
        self.closed = True
        self.close_reason = self.close_reason or reason
        if self._watchdog is not None:
            self._watchdog.cancel()
        if abort:
            self.writer.transport.abort()
        else:
            self.writer.close()


class EmbeddedBroker:
    """An in-process MQTT 3.1.1 broker; see the module docstring for its limits."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._sessions: dict[str, _Connection] = {}
        self._retained: dict[str, Message] = {}
        self._route_cache: dict[str, list[tuple[_Connection, int]]] = {}
        self._connections: dict[_Connection, asyncio.Task[None]] = {}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start listening; returns the bound port."""
        self._server = await asyncio.start_server(self._accept, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        log.info("embedded MQTT broker listening on %s:%d", host, bound)
        return bound

    async def stop(self) -> None:
        """Stop listening and close every client connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for conn in list(self._connections):
            conn.close("broker stopped", abort=True)
        if self._connections:
            await asyncio.wait(self._connections.values(), timeout=5.0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.current_task()
        assert task is not None
        conn = _Connection(self, reader, writer)
        self._connections[conn] = task
        try:
            await conn.run()
        finally:
            conn.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            del self._connections[conn]

    def connected(self, conn: _Connection) -> None:
        old = self._sessions.get(conn.client_id)
        if old is not None:
            old.close("taken over by a new connection")
        self._sessions[conn.client_id] = conn
        self._route_cache.clear()

    async def disconnected(self, conn: _Connection) -> None:
        conn.close()
        if self._sessions.get(conn.client_id) is conn:
            del self._sessions[conn.client_id]
            self._route_cache.clear()
        if conn.will is not None:
            will, conn.will = conn.will, None
            await self.publish(will)

    def subscriptions_changed(self) -> None:
        self._route_cache.clear()

    def retained_for(self, topic_filter: str) -> list[Message]:
        return [m for t, m in self._retained.items() if topic_matches(topic_filter, t)]

    async def publish(self, message: Message) -> None:
        """Route ``message`` to all matching subscribers (and store it if retained)."""
        if message.retain:
            if message.payload:
                self._retained[message.topic] = message
            else:
                self._retained.pop(message.topic, None)
        targets = self._route(message.topic)
        for conn, granted in targets:
            conn.deliver(message, min(message.qos, granted))
        for conn, _ in targets:
            if conn.congested():
                await conn.drain()

    def _route(self, topic: str) -> list[tuple[_Connection, int]]:
        cached = self._route_cache.get(topic)
        if cached is not None:
            return cached
        targets = []
        for conn in self._sessions.values():
            qos = max(
                (q for f, q in conn.subscriptions.items() if topic_matches(f, topic)), default=-1
            )
            if qos >= 0:
                targets.append((conn, qos))
        if len(self._route_cache) >= ROUTE_CACHE_LIMIT:
            self._route_cache.clear()
        self._route_cache[topic] = targets
        return targets


def run_in_thread(host: str = "127.0.0.1", port: int = 0) -> tuple[int, Callable[[], None]]:
    """Run a broker on its own event-loop thread; returns ``(port, stop)``.

    ``stop`` closes all connections, stops the thread and may be called repeatedly.
    """
    loop = asyncio.new_event_loop()
    broker = EmbeddedBroker()
    thread = threading.Thread(target=loop.run_forever, name="embedded-mqtt-broker", daemon=True)
    thread.start()
    lock = threading.Lock()

    def stop() -> None:
        with lock:
            if loop.is_closed():
                return
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(broker.stop(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    try:
        bound = asyncio.run_coroutine_threadsafe(broker.start(host, port), loop).result()
    except BaseException:
        stop()
        raise
    return bound, stop


async def _serve_forever(host: str, port: int) -> None:
    broker = EmbeddedBroker()
    bound = await broker.start(host, port)
    print(f"embedded MQTT broker listening on {host}:{bound}", flush=True)
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)
    await stop_event.wait()
    await broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Embedded MQTT 3.1.1 broker for everkit.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883, help="0 picks a free port")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve_forever(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
