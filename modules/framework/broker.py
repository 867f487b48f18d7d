"""A private MQTT broker for one ``everkit run`` (or one test session).

Mosquitto when it is installed, started from the shipped ``config/mosquitto/everkit.conf``
on a free loopback port; otherwise everkit's embedded Python broker, with a warning, so
that a demo still runs on a machine without Mosquitto.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .definitions import contract_root
from .errors import TransportError
from .transport import BrokerAddress

log = logging.getLogger(__name__)

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_listening(
    address: BrokerAddress, process: subprocess.Popen[bytes], timeout: float
) -> None:
    """Wait until the broker accepts TCP connections, or fail with its own words."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise TransportError(f"broker exited with code {process.returncode}: {output.strip()}")
        try:
            with socket.create_connection((address.host, address.port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)  # start-up poll of an external process, not a test wait
    raise TransportError(f"broker did not listen on {address} within {timeout:g} s")


@dataclass
class PrivateBroker:
    """A broker process owned by us; ``stop()`` ends it."""

    address: BrokerAddress
    kind: str
    process: subprocess.Popen[bytes]
    workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        if self.workdir is not None:
            self.workdir.cleanup()

    def __enter__(self) -> PrivateBroker:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def mosquitto_config(port: int, host: str = "127.0.0.1", base: Path | None = None) -> str:
    """The shipped settings plus a loopback listener on ``port``."""
    base = base or contract_root() / "config" / "mosquitto" / "everkit.conf"
    return f"listener {port} {host}\n" + base.read_text(encoding="utf-8")


def _spawn(
    command: list[str],
    kind: str,
    address: BrokerAddress,
    timeout: float,
    workdir: tempfile.TemporaryDirectory[str] | None = None,
) -> PrivateBroker:
    # its own session: a terminal's Ctrl-C reaches the manager, which stops modules first
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    broker = PrivateBroker(address, kind, process, workdir)
    try:
        wait_listening(address, process, timeout)
    except BaseException:
        broker.stop()
        raise
    return broker


def start_mosquitto(
    port: int | None = None, host: str = "127.0.0.1", timeout: float = 10.0
) -> PrivateBroker:
    binary = find_mosquitto()
    if binary is None:
        raise TransportError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    port = port or free_port(host)
    workdir = tempfile.TemporaryDirectory(prefix="everkit-mosquitto-")
    conf = Path(workdir.name) / "mosquitto.conf"
    conf.write_text(mosquitto_config(port, host), encoding="utf-8")
    address = BrokerAddress(host, port)
    return _spawn([binary, "-c", str(conf)], "mosquitto", address, timeout, workdir)


def start_embedded(
    port: int | None = None, host: str = "127.0.0.1", timeout: float = 10.0
) -> PrivateBroker:
    port = port or free_port(host)
    module = "everkit.framework.embedded_broker"
    command = [sys.executable, "-m", module, "--host", host, "--port", str(port)]
    return _spawn(command, "embedded", BrokerAddress(host, port), timeout)


def start_private_broker(prefer_embedded: bool = False) -> PrivateBroker:
    """Mosquitto if installed, else the embedded broker (and say so)."""
    if not prefer_embedded and find_mosquitto() is not None:
        return start_mosquitto()
    if not prefer_embedded:
        log.warning(
            "mosquitto is not installed: using everkit's embedded Python broker. It is fine "
            "for demos and tests; install mosquitto (apt-get install mosquitto) for real use"
        )
    return start_embedded()
