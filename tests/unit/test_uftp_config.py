"""The adapter's config: a mistake stops it before it starts, naming the file and the key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from everkit.framework.broker import free_port
from everkit.framework.errors import ConfigError
from everkit.framework.transport import BrokerAddress
from everkit.uftp.config import load
from everkit.uftp.station_config import NODE, with_flex_node
from tests.uftp_rig import new_keys, write_adapter_config

ROOT = Path(__file__).resolve().parents[2]


def config_file(tmp_path: Path, **changes: Any) -> Path:
    path, _ = write_adapter_config(
        tmp_path,
        new_keys(),
        "http://127.0.0.1:1/m",
        BrokerAddress("127.0.0.1", free_port()),
        "everest/",
    )
    raw = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        target = raw
        *parents, last = dotted.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is None:
            del target[last]
        else:
            target[last] = value
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_test_config_loads_with_its_defaults(tmp_path: Path) -> None:
    config = load(config_file(tmp_path))
    assert (config.host, config.source, config.version) == ("127.0.0.1", "SO", "3.1.0")
    (point,) = config.congestion_points
    assert point.isp_duration.total_seconds() == 900
    (station,) = config.stations
    assert station.node == NODE
    assert station.meters == (("hw", "powermeter"),)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"domain": None}, "'domain'"),
        ({"colour": "blue"}, "'colour'"),
        ({"source": "CSO"}, "'source'"),
        ({"listen": "localhost"}, "'listen'"),
        ({"dso__0__public_key": "c2hvcnQ="}, "'dso[0].public_key'"),
        ({"congestion_points__0__time_zone": "Mars/Olympus"}, "'congestion_points[0].time_zone'"),
        ({"congestion_points__0__isp_duration_s": 7 * 60}, "isp_duration_s"),
        ({"congestion_points__0__min_activation_factor": 1.5}, "min_activation_factor"),
        ({"congestion_points__0__stations__0__max_W": "lots"}, "stations[0].max_W'"),
        ({"congestion_points__0__stations__0__meters": ["hw"]}, "stations[0].meters'"),
        ({"congestion_points__0__stations__0__password_env": "NO_SUCH_VAR_X"}, "password_env"),
    ],
)
def test_a_bad_config_names_file_and_key(tmp_path: Path, change: dict[str, Any], key: str) -> None:
    path = config_file(tmp_path, **change)
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    assert str(path) in str(caught.value)
    assert key in str(caught.value)


def test_a_signing_key_others_may_read_is_refused(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    os.chmod(tmp_path / "agr.key", 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load(path)


def test_the_password_comes_from_the_named_environment_variable(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        congestion_points__0__stations__0__username="uftp",
        congestion_points__0__stations__0__password_env="SITE_PW",
    )
    (station,) = load(path, environ={"SITE_PW": "s3cret"}).stations
    assert (station.username, station.password) == ("uftp", "s3cret")
    assert "s3cret" not in repr(station)


def test_the_flex_node_goes_between_the_energy_manager_and_the_tree() -> None:
    config = yaml.safe_load((ROOT / "config" / "sil-dc.yaml").read_text())
    flex = with_flex_node(config)
    modules = flex["active_modules"]
    assert modules["energy_manager"]["connections"]["energy_trunk"] == [
        {"module_id": NODE, "implementation_id": "energy_grid"}
    ]
    assert modules[NODE]["connections"]["energy_consumer"] == [
        {"module_id": "grid_connection_point", "implementation_id": "energy_grid"}
    ]
    assert "uftp_limit" not in config["active_modules"]  # the original is untouched
    with pytest.raises(ValueError, match="already"):
        with_flex_node(flex)


def test_the_documented_example_config_loads(tmp_path: Path) -> None:
    """deploy/uftp-agr.example.yaml is the config reference of docs/uftp.md."""
    example = tmp_path / "agr.yaml"
    example.write_text((ROOT / "deploy" / "uftp-agr.example.yaml").read_text())
    key = tmp_path / "agr.key"
    key.write_text(new_keys().agr_secret + "\n")
    key.chmod(0o600)
    config = load(example, environ={"UFTP_DEPOT1_MQTT_PASSWORD": "pw"})
    assert config.domain == "agr.example.com"
    assert [station.name for station in config.stations] == ["depot-1"]
