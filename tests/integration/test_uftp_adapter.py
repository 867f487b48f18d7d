"""The UFTP adapter between a loopback DSO (same library) and a station's PyEnergyNode on a
real Mosquitto: FlexRequest -> FlexOffer -> FlexOrder -> caps on the node, and the spec's
message validation that the library leaves out (Shapeshifter "Message validation" and
"Message transport mechanism")."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from shapeshifter_uftp import (
    FlexOffer,
    FlexOrderResponse,
    FlexRequestResponse,
    SignedMessage,
    transport,
)
from shapeshifter_uftp.uftp import UsefRole

from everkit.framework.transport import BrokerAddress
from everkit.framework.wire import var_payload
from everkit.simulators.dso import DsoSimulator, new_keypair
from everkit.uftp import config as agr_config
from everkit.uftp.isp import isp_start
from everkit.uftp.service import Adapter
from tests.conftest import RawClient
from tests.integration.test_uftp_station_link import GOOD_READING, NODE, station
from tests.uftp_rig import (
    DSO_DOMAIN,
    EAN,
    TIME_ZONE,
    Keys,
    agr_peer,
    new_keys,
    write_adapter_config,
)

WAIT = 15.0


@dataclass
class Rig:
    dso: DsoSimulator
    adapter: Adapter
    keys: Keys
    port: int
    recorder: RawClient
    prefix: str

    def meter(self, watts: float) -> None:
        topic = f"{self.prefix}modules/hw/impl/powermeter/var/powermeter"
        self.recorder.publish(topic, var_payload({**GOOD_READING, "power_W": {"total": watts}}))

    def request(self, *isps: tuple[int, int, int, int, str], **kwargs: Any) -> Any:
        return self.dso.send_flex_request(
            congestion_point=EAN,
            period=tomorrow(),
            time_zone=TIME_ZONE,
            isps=list(isps),
            expires=datetime.now(UTC) + timedelta(hours=1),
            **kwargs,
        )

    def response_to(self, kind: type, message: Any) -> Any:
        field = (
            "flex_request_message_id" if kind is FlexRequestResponse else "flex_order_message_id"
        )
        return self.dso.received(kind, lambda m: getattr(m, field) == message.message_id, WAIT)


def tomorrow() -> date:
    return (datetime.now(ZoneInfo(TIME_ZONE)) + timedelta(days=1)).date()


def awaited(condition: Callable[[], bool], what: str) -> None:
    """Wait for a state the adapter reaches on another thread (no event to hook)."""
    done = threading.Event()
    for _ in range(int(WAIT / 0.02)):
        if condition():
            return
        done.wait(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def rig(broker: BrokerAddress, prefix: str, tmp_path: Path, recorder: RawClient) -> Iterator[Rig]:
    keys = new_keys()
    with station(broker, prefix, tmp_path, recorder):
        path, port = write_adapter_config(tmp_path, keys, "", broker, prefix)
        dso = DsoSimulator(DSO_DOMAIN, keys.dso_secret, agr_peer(keys, port))
        text = path.read_text().replace("endpoint: ''", f"endpoint: {dso.endpoint}")
        path.write_text(text)
        adapter = Adapter(agr_config.load(path))
        with dso:
            adapter.start()
            try:
                rig = Rig(dso, adapter, keys, port, recorder, prefix)
                rig.meter(30000)
                awaited(lambda: adapter.market.power["site-1"].samples, "a meter reading")
                yield rig
            finally:
                adapter.stop()


def node_caps(recorder: RawClient, prefix: str, watts: float) -> list[dict[str, Any]]:
    """The node's schedule_import once an entry carries a ``watts`` cap from SO."""
    topic = f"{prefix}modules/{NODE}/impl/energy_grid/var/energy_flow_request"

    def capped(message: Any) -> bool:
        if message.topic != topic:
            return False
        entries = json.loads(message.payload)["data"]["data"]["schedule_import"]
        return any(
            e["limits_to_root"]["total_power_W"] == {"value": watts, "source": "SO"}
            for e in entries
        )

    (*_, message) = recorder.wait_for(capped, timeout=WAIT)
    return list(json.loads(message.payload)["data"]["data"]["schedule_import"])


def test_a_flex_request_gets_an_offer_and_its_order_caps_the_station(rig: Rig) -> None:
    request = rig.request((69, 4, -20000, -10000, "Requested"), (73, 4, 0, 5000, "Available"))
    assert rig.response_to(FlexRequestResponse, request).result == "Accepted"
    offer = rig.dso.received(FlexOffer, lambda m: m.flex_request_message_id == request.message_id)
    (option,) = offer.offer_options
    assert [(i.start, i.duration, i.power) for i in option.isps] == [(69, 4, -20000)]
    order = rig.dso.send_flex_order(offer, order_reference="ORDER-1", activation_factor=0.5)
    assert rig.response_to(FlexOrderResponse, order).result == "Accepted"
    # 30 kW baseline - 10 kW ordered, from the UTC start of ISP 69 to the end of ISP 72
    entries = node_caps(rig.recorder, rig.prefix, 20000.0)
    start = isp_start(tomorrow(), TIME_ZONE, 69)
    capped = [e for e in entries if e["limits_to_root"]["total_power_W"]["source"] == "SO"]
    assert capped[0]["timestamp"].startswith(start.strftime("%Y-%m-%dT%H:%M:%S"))
    restore = entries[entries.index(capped[-1]) + 1]
    end = start + timedelta(hours=1)
    assert restore["timestamp"].startswith(end.strftime("%Y-%m-%dT%H:%M:%S"))
    assert restore["limits_to_root"]["total_power_W"]["source"] != "SO"  # the fuse again


def test_an_exact_replay_is_already_submitted_and_not_processed_again(rig: Rig) -> None:
    """Message validation, "Already Submitted": a copy of an accepted message counts as
    delivered; it is answered but not processed again (the library would process it twice)."""
    request = rig.request((69, 4, -20000, -10000, "Requested"))
    rig.response_to(FlexRequestResponse, request)
    rig.dso.received(FlexOffer, lambda m: m.flex_request_message_id == request.message_id)
    assert rig.dso.post_signed(rig.dso.last_sent_signed(type(request))) == 200
    refused = rig.dso.received(
        FlexRequestResponse,
        lambda m: m.flex_request_message_id == request.message_id and m.result == "Rejected",
        WAIT,
    )
    assert refused.rejection_reason == "Already Submitted"
    rig.adapter.outbound.join()  # anything the replay caused has been sent by now
    offers = [m for m in rig.dso.all_received() if isinstance(m, FlexOffer)]
    assert len(offers) == 1


def test_an_order_replayed_after_its_acceptance_does_not_order_twice(rig: Rig) -> None:
    request = rig.request((69, 2, -10000, -10000, "Requested"))
    offer = rig.dso.received(FlexOffer, lambda m: m.flex_request_message_id == request.message_id)
    order = rig.dso.send_flex_order(offer, order_reference="ORDER-2")
    rig.response_to(FlexOrderResponse, order)
    assert rig.dso.post_signed(rig.dso.last_sent_signed(type(order))) == 200
    refused = rig.dso.received(
        FlexOrderResponse,
        lambda m: m.flex_order_message_id == order.message_id and m.result == "Rejected",
        WAIT,
    )
    assert refused.rejection_reason == "Already Submitted"
    assert len(rig.adapter.market.orders) == 1


def test_unsigned_forged_and_unknown_sender_messages_are_refused_at_the_door(rig: Rig) -> None:
    """Message transport: 400 for what is not a SignedMessage, 401 for a bad signature,
    419 when the sender's key cannot be found; nothing is processed."""
    request = rig.request((69, 1, -10000, -10000, "Requested"))
    rig.dso.received(FlexOffer, lambda m: m.flex_request_message_id == request.message_id)
    before = len(rig.dso.all_received())
    inner = transport.to_xml(request).encode()
    assert rig.dso.post_signed(inner) == 400  # plain XML, no SignedMessage
    unsigned = SignedMessage(sender_domain=DSO_DOMAIN, sender_role=UsefRole.DSO, body=inner)
    assert rig.dso.post_signed(transport.to_xml(unsigned).encode()) == 401
    stranger_secret, _ = new_keypair()
    forged = transport.seal_message(request, stranger_secret)
    signed = SignedMessage(sender_domain=DSO_DOMAIN, sender_role=UsefRole.DSO, body=forged)
    assert rig.dso.post_signed(transport.to_xml(signed).encode()) == 401
    unknown = SignedMessage(
        sender_domain="evil.example.test", sender_role=UsefRole.DSO, body=forged
    )
    assert rig.dso.post_signed(transport.to_xml(unknown).encode()) == 419
    rig.adapter.outbound.join()
    assert len(rig.dso.all_received()) == before
    assert len(rig.adapter.market.offers) == 1


def request_from(dso: DsoSimulator) -> Any:
    """One FlexRequest from a second DSO simulator that signs with the rig's DSO key (the
    adapter answers to the configured endpoint: the rig's simulator)."""
    with dso:
        return dso.send_flex_request(
            congestion_point=EAN,
            period=tomorrow(),
            time_zone=TIME_ZONE,
            isps=[(69, 1, -10000, -10000, "Requested")],
            expires=datetime.now(UTC) + timedelta(hours=1),
        )


def test_a_message_for_another_recipient_or_too_old_is_rejected(rig: Rig) -> None:
    """Message validation: "Unknown RecipientDomain"; and a TimeStamp older than the
    MessageID memory, so a replay can never outlive it."""
    elsewhere = agr_peer(rig.keys, rig.port, domain="other-agr.example.test")
    request = request_from(DsoSimulator(DSO_DOMAIN, rig.keys.dso_secret, elsewhere))
    refused = rig.response_to(FlexRequestResponse, request)
    assert refused.result == "Rejected"
    assert refused.rejection_reason == "Unknown RecipientDomain"
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    stale = DsoSimulator(
        DSO_DOMAIN, rig.keys.dso_secret, agr_peer(rig.keys, rig.port), now=lambda: three_days_ago
    )
    refused = rig.response_to(FlexRequestResponse, request_from(stale))
    assert "TimeStamp older than" in refused.rejection_reason
    assert rig.adapter.market.offers == {}


def test_a_config_key_file_others_may_read_stops_the_adapter(tmp_path: Path) -> None:
    keys = new_keys()
    path, _ = write_adapter_config(
        tmp_path, keys, "http://127.0.0.1:1/x", BrokerAddress("127.0.0.1", 1), "everest/"
    )
    (tmp_path / "agr.key").chmod(0o644)
    with pytest.raises(agr_config.ConfigError, match="signing_key_file"):
        agr_config.load(path)
    assert base64.b64decode(keys.agr_secret)  # the fixture's key itself is fine
