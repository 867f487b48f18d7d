"""Keys and config files for the UFTP adapter's tests: a DSO and an AGR that know each other
from an address book (no DNS), on loopback."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from everkit.framework.broker import free_port
from everkit.framework.transport import BrokerAddress
from everkit.simulators.dso import MESSAGE_PATH, Peer, new_keypair

DSO_DOMAIN = "dso.example.test"
AGR_DOMAIN = "agr.example.test"
EAN = "ean.871685900000000001"
TIME_ZONE = "Europe/Amsterdam"


@dataclass(frozen=True)
class Keys:
    dso_secret: str
    dso_public: str
    agr_secret: str
    agr_public: str


def new_keys() -> Keys:
    return Keys(*new_keypair(), *new_keypair())


def agr_peer(keys: Keys, port: int, domain: str = AGR_DOMAIN) -> Peer:
    return Peer(domain, keys.agr_public, f"http://127.0.0.1:{port}{MESSAGE_PATH}")


def write_adapter_config(
    folder: Path,
    keys: Keys,
    dso_endpoint: str,
    broker: BrokerAddress,
    prefix: str,
    *,
    node: str = "uftp_limit",
    meters: tuple[str, ...] = ("hw/powermeter",),
    port: int | None = None,
    station: dict[str, Any] | None = None,
    point: dict[str, Any] | None = None,
    **top: Any,
) -> tuple[Path, int]:
    """agr.yaml and its 0600 key file in ``folder``; (config path, the adapter's port)."""
    key_file = folder / "agr.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(keys.agr_secret + "\n")
    port = port or free_port()
    config = {
        "domain": AGR_DOMAIN,
        "signing_key_file": "agr.key",
        "listen": f"127.0.0.1:{port}",
        "state_dir": "state",
        "baseline_window_s": 30,
        "dso": [{"domain": DSO_DOMAIN, "public_key": keys.dso_public, "endpoint": dso_endpoint}],
        "congestion_points": [
            {
                "entity_address": EAN,
                "time_zone": TIME_ZONE,
                "min_activation_factor": 0.5,
                "stations": [
                    {
                        "name": "site-1",
                        "broker": str(broker),
                        "prefix": prefix,
                        "node": node,
                        "meters": list(meters),
                        "max_W": 50000,
                        **(station or {}),
                    }
                ],
                **(point or {}),
            }
        ],
        **top,
    }
    path = folder / "agr.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port
