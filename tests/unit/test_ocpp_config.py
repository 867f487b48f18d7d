"""PyOCPP201's own config checks: settings the manifest schema cannot relate."""

from __future__ import annotations

from typing import Any

import pytest

from everkit.framework.errors import ConfigError
from everkit.ocpp201.module import check_config, parse_device_model

BASE: dict[str, Any] = {
    "csms_url": "ws://127.0.0.1:9000/ocpp",
    "station_id": "CS1",
    "security_profile": 0,
    "basic_auth_password": "",
    "ca_file": "",
    "device_model": "",
}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"csms_url": "wss://csms/ocpp"}, "csms_url"),
        ({"security_profile": 2}, "csms_url"),
        ({"security_profile": 1}, "basic_auth_password"),
        ({"station_id": "a:b"}, "station_id"),
        ({"device_model": "OCPPCommCtrlr.HeartbeatInterval"}, "device_model"),
    ],
)
def test_a_config_that_cannot_work_names_module_and_key(change: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_config({**BASE, **change}, "ocpp")
    assert caught.value.module == "ocpp"
    assert caught.value.key == f"config_module.{key}"


def test_working_configs_pass() -> None:
    check_config(BASE, "ocpp")
    check_config(
        {**BASE, "security_profile": 1, "basic_auth_password": "sixteen-characters"}, "ocpp"
    )
    check_config(
        {
            **BASE,
            "csms_url": "wss://csms/ocpp",
            "security_profile": 2,
            "basic_auth_password": "sixteen-characters",
        },
        "ocpp",
    )


def test_device_model_items_are_split_and_trimmed() -> None:
    text = " OCPPCommCtrlr.HeartbeatInterval=60,\n EVSE[1].Power = 50000 ,"
    assert parse_device_model(text) == {
        "OCPPCommCtrlr.HeartbeatInterval": "60",
        "EVSE[1].Power": "50000",
    }
