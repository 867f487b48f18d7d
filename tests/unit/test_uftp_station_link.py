"""StationLink's pure parts: reading power_W.total from a powermeter Var, the address."""

from __future__ import annotations

import pytest

from everkit.framework.errors import ConfigError
from everkit.framework.transport import BrokerAddress, MqttCredentials
from everkit.framework.wire import MsgType, encode, var_payload
from everkit.uftp.station_link import MalformedReading, StationAddress, power_of

READING = {"timestamp": "2026-11-22T12:00:00.000Z", "energy_Wh_import": {"total": 1.0}}


@pytest.mark.parametrize(("total", "watts"), [(7400, 7400.0), (-3680.5, -3680.5), (0, 0.0)])
def test_power_w_total_is_the_reading(total: float, watts: float) -> None:
    """types/powermeter.yaml Powermeter.power_W (units Power.total): W, negative = export."""
    assert power_of(var_payload({**READING, "power_W": {"total": total}})) == watts


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"{not json", "payload"),
        (b'{"msg_type":"Nonsense","data":{}}', "payload"),
        (encode(MsgType.CMD, {"id": "x"}), "msg_type"),
        (encode(MsgType.VAR, 7), "data"),
        (var_payload([1, 2]), "data.data"),
        (var_payload(READING), "power_W.total"),
        (var_payload({**READING, "power_W": 7}), "power_W.total"),
        (var_payload({**READING, "power_W": {"total": "lots"}}), "power_W.total"),
        (var_payload({**READING, "power_W": {"total": True}}), "power_W.total"),
        (b'{"msg_type":"Var","data":{"data":{"power_W":{"total":NaN}}}}', "power_W.total"),
        (b'{"msg_type":"Var","data":{"data":{"power_W":{"total":-Infinity}}}}', "power_W.total"),
    ],
)
def test_a_malformed_reading_names_its_field(payload: bytes, field: str) -> None:
    with pytest.raises(MalformedReading) as malformed:
        power_of(payload)
    assert malformed.value.field == field


def test_the_password_stays_out_of_the_repr() -> None:
    address = StationAddress("s1", BrokerAddress(), username="agr", password="s3cret")
    assert "s3cret" not in repr(address)
    assert address.credentials == MqttCredentials("agr", "s3cret")
    assert StationAddress("s1", BrokerAddress()).credentials is None


def test_a_password_without_a_username_is_refused() -> None:
    with pytest.raises(ConfigError, match="password needs a username") as refused:
        StationAddress("s1", BrokerAddress(), password="s3cret")
    assert "s3cret" not in str(refused.value)
