"""Opening the OCPP-J websocket for security profiles 0, 1 and 2, and the reconnect back-off.

Profile 0: plain ws, no authentication. Profile 1: ws with HTTP Basic auth (user = station
identity, password = SecurityCtrlr.BasicAuthPassword). Profile 2: wss, the CSMS certificate
checked against ``ca_file`` (or the system trust store), plus Basic auth. Profile 3 (client
certificates) needs evse_security and is not offered.
"""

from __future__ import annotations

import base64
import random
import ssl
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from ..framework.errors import EverkitError

SUBPROTOCOL = Subprotocol("ocpp2.0.1")


class ConnectionRefused(EverkitError):
    """The CSMS answered, but not as an OCPP 2.0.1 CSMS that accepts us."""


@dataclass(frozen=True)
class Endpoint:
    csms_url: str
    station_id: str
    security_profile: int
    password: str = ""
    ca_file: str = ""

    def problems(self) -> list[tuple[str, str]]:
        """(config key, reason) for every setting that cannot work; empty when all can."""
        scheme = urlsplit(self.csms_url).scheme
        found: list[tuple[str, str]] = []
        if self.security_profile in (0, 1) and scheme != "ws":
            found.append(("csms_url", f"security profile {self.security_profile} needs ws://"))
        if self.security_profile == 2 and scheme != "wss":
            found.append(("csms_url", "security profile 2 needs wss://"))
        if self.security_profile >= 1 and not self.password:
            found.append(("basic_auth_password", "profiles 1 and 2 need a password"))
        if ":" in self.station_id:
            found.append(("station_id", "a ':' cannot be used in HTTP Basic auth"))
        return found

    @property
    def url(self) -> str:
        return f"{self.csms_url.rstrip('/')}/{quote(self.station_id, safe='')}"

    def headers(self) -> dict[str, str]:
        if self.security_profile == 0:
            return {}
        secret = f"{self.station_id}:{self.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(secret).decode()}

    def tls(self) -> ssl.SSLContext | None:
        if self.security_profile < 2:
            return None
        return ssl.create_default_context(cafile=self.ca_file or None)


async def open_connection(
    endpoint: Endpoint, open_timeout: float, ping_interval: float | None
) -> ClientConnection:
    """Connect and check the subprotocol; raises OSError or a websockets exception on failure."""
    ws = await connect(
        endpoint.url,
        subprotocols=[SUBPROTOCOL],
        additional_headers=endpoint.headers(),
        ssl=endpoint.tls(),
        proxy=None,  # a charger talks to its CSMS directly; env proxies are for people
        open_timeout=open_timeout,
        ping_interval=ping_interval,
        max_size=4 * 1024 * 1024,
    )
    if ws.subprotocol != SUBPROTOCOL:
        await ws.close()
        raise ConnectionRefused(f"CSMS did not accept subprotocol {SUBPROTOCOL}")
    return ws


@dataclass
class BackOff:
    """OCPP 2.0.1 reconnect back-off (OCPPCommCtrlr.RetryBackOff*): the first wait is the
    minimum plus a random part, each further failure doubles the base, up to repeat_times
    doublings; a successful connection starts over."""

    wait_minimum_s: float
    random_range_s: float
    repeat_times: int
    rng: random.Random
    failures: int = 0

    def next_delay(self) -> float:
        doublings = min(self.failures, self.repeat_times)
        self.failures += 1
        jitter: float = self.rng.uniform(0, self.random_range_s)
        return float(self.wait_minimum_s * 2**doublings) + jitter

    def reset(self) -> None:
        self.failures = 0
