"""The adapter's configuration file (YAML): who we are, our signing key, the DSOs we trade
with (an address book: their public keys and endpoints, no DNS), and per congestion point
the stations behind it. A mistake stops the adapter before it starts, naming file and key.
Secrets stay out of the file: the signing key is a file of its own that only its owner may
read, and MQTT passwords are named by environment variable."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from ..framework.errors import ConfigError
from ..framework.transport import BrokerAddress
from . import isp
from .portfolio import CongestionPoint, Station
from .station_link import StationAddress

DEFAULT_PATH = "/shapeshifter/api/v3/message"


@dataclass(frozen=True)
class Peer:
    domain: str
    public_key: str  # base64 of the 32-byte Ed25519 key
    endpoint: str  # URL of its UFTP message endpoint


@dataclass(frozen=True)
class AgrConfig:
    domain: str
    signing_key: str  # base64 of the 64-byte Ed25519 secret key
    host: str
    port: int
    path: str
    version: str
    state_dir: Path
    baseline_window: timedelta
    source: str
    peers: tuple[Peer, ...]
    congestion_points: tuple[CongestionPoint, ...]
    stations: tuple[StationAddress, ...]


class _Reader:
    def __init__(self, file: Path) -> None:
        self.file = str(file)

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, key=key)

    def mapping(
        self, value: Any, key: str, allowed: set[str], required: set[str]
    ) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be a mapping")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}" if key else unknown[0], "unknown key")
        missing = sorted(required - set(value))
        if missing:
            raise self.fail(f"{key}.{missing[0]}" if key else missing[0], "missing")
        return dict(value)

    def number(self, value: Any, key: str, *, minimum: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.fail(key, f"must be a number >= {minimum:g}")
        return float(value)

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a non-empty string")
        return value


def read_signing_key(path: Path) -> str:
    """The base64 secret key in ``path``; refused when group or others may read it."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} is readable by others (mode {stat.filemode(mode)}); chmod 600 it",
            key="signing_key_file",
        )
    key = path.read_text(encoding="ascii").strip()
    if len(base64.b64decode(key, validate=True)) != 64:
        raise ConfigError(f"{path}: not a base64 Ed25519 secret key (64 bytes)")
    return key


def load(path: Path, environ: Mapping[str, str] | None = None) -> AgrConfig:
    env = os.environ if environ is None else environ
    r = _Reader(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(str(exc), file=str(path)) from exc
    top = r.mapping(
        raw,
        "",
        {
            "domain",
            "signing_key_file",
            "listen",
            "path",
            "version",
            "state_dir",
            "baseline_window_s",
            "source",
            "dso",
            "congestion_points",
        },
        {"domain", "signing_key_file", "dso", "congestion_points"},
    )
    base = path.parent
    key_file = base / r.text(top["signing_key_file"], "signing_key_file")
    try:
        signing_key = read_signing_key(key_file)
    except (OSError, ValueError) as exc:
        raise r.fail("signing_key_file", f"{key_file}: {exc}") from exc
    except ConfigError as exc:
        raise r.fail("signing_key_file", str(exc).split(": ", 1)[-1]) from exc
    try:
        listen = BrokerAddress.parse(str(top.get("listen", "127.0.0.1:8080")))
    except ValueError as exc:
        raise r.fail("listen", str(exc)) from exc
    version = str(top.get("version", "3.1.0"))
    if version not in ("3.0.0", "3.1.0"):
        raise r.fail("version", "must be 3.0.0 or 3.1.0")
    source = str(top.get("source", "SO"))
    if source not in ("SO", "EMS", "Other"):
        raise r.fail("source", "must be SO, EMS or Other (CSO is the CSMS's own)")
    peers = []
    if not isinstance(top["dso"], list) or not top["dso"]:
        raise r.fail("dso", "must be a non-empty list")
    for index, item in enumerate(top["dso"]):
        key = f"dso[{index}]"
        entry = r.mapping(
            item, key, {"domain", "public_key", "endpoint"}, {"domain", "public_key", "endpoint"}
        )
        public_key = r.text(entry["public_key"], f"{key}.public_key")
        try:
            if len(base64.b64decode(public_key, validate=True)) != 32:
                raise ValueError("not 32 bytes")
        except ValueError as exc:
            raise r.fail(f"{key}.public_key", f"not a base64 Ed25519 public key: {exc}") from exc
        peers.append(
            Peer(
                r.text(entry["domain"], f"{key}.domain"),
                public_key,
                r.text(entry["endpoint"], f"{key}.endpoint"),
            )
        )
    points, addresses = _congestion_points(r, top["congestion_points"], env)
    return AgrConfig(
        domain=r.text(top["domain"], "domain"),
        signing_key=signing_key,
        host=listen.host,
        port=listen.port,
        path=str(top.get("path", DEFAULT_PATH)),
        version=version,
        state_dir=base / str(top.get("state_dir", "uftp-state")),
        baseline_window=timedelta(
            seconds=r.number(top.get("baseline_window_s", 900), "baseline_window_s", minimum=1)
        ),
        source=source,
        peers=tuple(peers),
        congestion_points=points,
        stations=addresses,
    )


POINT_KEYS = {
    "entity_address",
    "time_zone",
    "price_eur_per_kwh",
    "min_activation_factor",
    "offer_validity_s",
    "isp_duration_s",
    "stations",
}
STATION_KEYS = {
    "name",
    "broker",
    "prefix",
    "node",
    "meters",
    "max_W",
    "min_W",
    "margin_W",
    "username",
    "password_env",
}


def _congestion_points(
    r: _Reader, value: Any, env: Mapping[str, str]
) -> tuple[tuple[CongestionPoint, ...], tuple[StationAddress, ...]]:
    if not isinstance(value, list) or not value:
        raise r.fail("congestion_points", "must be a non-empty list")
    points: list[CongestionPoint] = []
    addresses: list[StationAddress] = []
    names: set[str] = set()
    for index, item in enumerate(value):
        key = f"congestion_points[{index}]"
        entry = r.mapping(item, key, POINT_KEYS, {"entity_address", "time_zone", "stations"})
        time_zone = r.text(entry["time_zone"], f"{key}.time_zone")
        try:
            isp.zone(time_zone)
        except isp.IspError as exc:
            raise r.fail(f"{key}.time_zone", str(exc)) from exc
        factor = r.number(entry.get("min_activation_factor", 1.0), f"{key}.min_activation_factor")
        if not 0 < factor <= 1:
            raise r.fail(f"{key}.min_activation_factor", "must be in (0, 1]")
        isp_s = r.number(entry.get("isp_duration_s", 900), f"{key}.isp_duration_s", minimum=60)
        if isp_s % 60 or 86400 % isp_s:
            raise r.fail(f"{key}.isp_duration_s", "must be whole minutes that divide a day")
        stations: list[Station] = []
        if not isinstance(entry["stations"], list) or not entry["stations"]:
            raise r.fail(f"{key}.stations", "must be a non-empty list")
        for number, station_item in enumerate(entry["stations"]):
            skey = f"{key}.stations[{number}]"
            station, address = _station(r, station_item, skey, env)
            if station.name in names:
                raise r.fail(f"{skey}.name", f"station {station.name!r} appears twice")
            names.add(station.name)
            stations.append(station)
            addresses.append(address)
        points.append(
            CongestionPoint(
                entity_address=r.text(entry["entity_address"], f"{key}.entity_address"),
                time_zone=time_zone,
                stations=tuple(stations),
                price_eur_per_kwh=r.number(
                    entry.get("price_eur_per_kwh", 0.25), f"{key}.price_eur_per_kwh"
                ),
                min_activation_factor=factor,
                isp_duration=timedelta(seconds=isp_s),
                offer_validity=timedelta(
                    seconds=r.number(
                        entry.get("offer_validity_s", 3600), f"{key}.offer_validity_s", minimum=1
                    )
                ),
            )
        )
    return tuple(points), tuple(addresses)


def _station(
    r: _Reader, item: Any, key: str, env: Mapping[str, str]
) -> tuple[Station, StationAddress]:
    entry = r.mapping(item, key, STATION_KEYS, {"name", "broker", "max_W"})
    name = r.text(entry["name"], f"{key}.name")
    try:
        broker = BrokerAddress.parse(str(entry["broker"]))
    except ValueError as exc:
        raise r.fail(f"{key}.broker", str(exc)) from exc
    meters = []
    for meter in entry.get("meters", []):
        module_id, _, implementation = str(meter).partition("/")
        if not module_id or not implementation:
            raise r.fail(f"{key}.meters", f"{meter!r}: write MODULE_ID/IMPLEMENTATION_ID")
        meters.append((module_id, implementation))
    password = None
    if "password_env" in entry:
        variable = r.text(entry["password_env"], f"{key}.password_env")
        if variable not in env:
            raise r.fail(f"{key}.password_env", f"environment variable {variable} is not set")
        password = env[variable]
    max_W = r.number(entry["max_W"], f"{key}.max_W", minimum=1)
    min_W = r.number(entry.get("min_W", 0), f"{key}.min_W")
    if min_W >= max_W:
        raise r.fail(f"{key}.min_W", "must be below max_W")
    station = Station(
        name=name,
        max_W=max_W,
        min_W=min_W,
        margin_W=r.number(entry.get("margin_W", 0), f"{key}.margin_W"),
    )
    address = StationAddress(
        name=name,
        broker=broker,
        prefix=str(entry.get("prefix", "everest/")),
        node=str(entry.get("node", "uftp_limit")),
        meters=tuple(meters),
        username=str(entry["username"]) if "username" in entry else None,
        password=password,
    )
    return station, address
