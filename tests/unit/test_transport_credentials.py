"""MQTT credentials from EV_MQTT_USERNAME / EV_MQTT_PASSWORD (the compose deployment's
broker refuses anonymous clients; docs/deploy.md)."""

from __future__ import annotations

import pytest

from everkit.framework.transport import BrokerAddress, MqttCredentials, Transport


def test_credentials_come_from_the_environment() -> None:
    env = {"EV_MQTT_USERNAME": "car", "EV_MQTT_PASSWORD": "secret"}
    assert MqttCredentials.from_environ(env) == MqttCredentials("car", "secret")
    assert MqttCredentials.from_environ({"EV_MQTT_USERNAME": "car"}) == MqttCredentials("car")
    assert MqttCredentials.from_environ({"EV_MQTT_PASSWORD": "secret"}) is None
    assert MqttCredentials.from_environ({}) is None


def test_password_stays_out_of_logs() -> None:
    assert "secret" not in repr(MqttCredentials("car", "secret"))


def test_transport_logs_in_with_the_given_or_the_environment_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EV_MQTT_USERNAME", "from-env")
    monkeypatch.setenv("EV_MQTT_PASSWORD", "env-pw")
    assert Transport(BrokerAddress())._client.username == "from-env"
    given = Transport(BrokerAddress(), credentials=MqttCredentials("given", "pw"))
    assert given._client.username == "given"
    assert given._client.password == "pw"
    monkeypatch.delenv("EV_MQTT_USERNAME")
    assert Transport(BrokerAddress())._client.username is None
