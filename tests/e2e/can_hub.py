"""A CAN bus shared between processes without kernel CAN: a tiny socketcand look-alike.

python-can's ``virtual`` bus lives inside one process, so with ``simulate_modules`` the
simulated Infy modules die with the driver. To see what the modules do when the driver
process is killed, they must live elsewhere: here, in the test process. The driver opens
python-can's stock ``socketcand`` client (``can_interface: socketcand``; host and port come
from the ``CAN_CONFIG`` environment variable, which python-can reads), and this hub speaks
the part of socketcand's protocol that client uses (``< hi >``, ``< open >``,
``< rawmode >``, ``< send ... >`` in, ``< frame ... >`` out). In-process endpoints
(``port()``) are plain python-can buses, so ``CanSimulator`` runs on one unchanged.

Every frame crossing the hub is recorded with its monotonic arrival time, which survives
the driver's death (its own ``can_log_file`` would lose its buffer on SIGKILL).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import can


@dataclass(frozen=True)
class Recorded:
    at: float  # time.monotonic() when the hub had it
    source: str  # "tcp" (a driver) or "port" (the in-process simulator)
    message: can.Message


class _Port(can.BusABC):
    """An in-process endpoint of the hub."""

    def __init__(self, hub: CanHub) -> None:
        self._hub = hub
        self._inbox: queue.Queue[can.Message] = queue.Queue()
        super().__init__(channel="hub")

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        self._hub.deliver(msg, self)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        try:
            return self._inbox.get(timeout=timeout), False
        except queue.Empty:
            return None, False

    def shutdown(self) -> None:
        self._hub.detach(self)
        super().shutdown()


class _Client:
    """One socketcand TCP connection; frames reach it only once it has sent one, so that
    no frame can share a TCP segment with the handshake's last ``< ok >`` (python-can's
    client compares that answer byte for byte)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.talking = False
        self.lock = threading.Lock()

    def send(self, text: str) -> None:
        with self.lock:
            self.sock.sendall(text.encode("ascii"))


class CanHub:
    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port_number: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._ports: list[_Port] = []
        self._clients: list[_Client] = []
        self.frames: list[Recorded] = []
        self.connections = 0  # TCP clients that completed the handshake
        self._closed = False
        threading.Thread(target=self._accept, name="can-hub", daemon=True).start()

    @property
    def can_config(self) -> str:
        """The CAN_CONFIG environment value that points python-can's socketcand here."""
        return f'{{"host": "127.0.0.1", "port": {self.port_number}, "tcp_tune": true}}'

    def port(self) -> can.BusABC:
        endpoint = _Port(self)
        with self._lock:
            self._ports.append(endpoint)
        return endpoint

    def detach(self, endpoint: Any) -> None:
        with self._lock:
            if endpoint in self._ports:
                self._ports.remove(endpoint)
            if endpoint in self._clients:
                self._clients.remove(endpoint)

    def deliver(self, message: can.Message, source: Any) -> None:
        with self._lock:
            self.frames.append(
                Recorded(time.monotonic(), "port" if isinstance(source, _Port) else "tcp", message)
            )
            ports = [p for p in self._ports if p is not source]
            clients = [c for c in self._clients if c is not source and c.talking]
        for endpoint in ports:
            endpoint._inbox.put(message)
        text = _frame_text(message)
        for client in clients:
            try:
                client.send(text)
            except OSError:
                self.detach(client)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(OSError):
                client.sock.close()

    # the TCP side

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        client = _Client(sock)
        buffer = ""
        try:
            client.send("< hi >")
            for expected in ("< open ", "< rawmode"):
                while ">" not in buffer:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    buffer += chunk.decode("ascii")
                request, _, buffer = buffer.partition(">")
                if not request.strip().startswith(expected.strip()):
                    client.send("< error unexpected request >")
                    return
                client.send("< ok >")
            with self._lock:
                self._clients.append(client)
                self.connections += 1
            while True:
                while ">" in buffer:
                    request, _, buffer = buffer.partition(">")
                    message = _parse_send(request)
                    if message is not None:
                        client.talking = True
                        self.deliver(message, client)
                chunk = sock.recv(4096)
                if not chunk:
                    return
                buffer += chunk.decode("ascii")
        except OSError:
            return
        finally:
            self.detach(client)
            with contextlib.suppress(OSError):
                sock.close()


def _parse_send(request: str) -> can.Message | None:
    words = request.replace("<", " ").split()
    if len(words) < 3 or words[0] != "send":
        return None
    identifier, length = words[1], int(words[2], 16)
    data = bytes(int(b, 16) for b in words[3 : 3 + length])
    return can.Message(
        arbitration_id=int(identifier, 16),
        data=data,
        is_extended_id=len(identifier) != 3,
        timestamp=time.monotonic(),
    )


def _frame_text(message: can.Message) -> str:
    identifier = (
        f"{message.arbitration_id:08X}"
        if message.is_extended_id
        else f"{message.arbitration_id:03X}"
    )
    return f"< frame {identifier} {time.time():.6f} {bytes(message.data).hex()} >"
