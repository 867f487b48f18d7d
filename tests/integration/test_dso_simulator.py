"""The loopback DSO simulator against a minimal AGR on the same library, over real HTTP.

The AGR here is the library's ShapeshifterAgrService with the least behaviour a trade needs:
FlexRequest → FlexRequestResponse(Accepted) + a FlexOffer of -10 kW per requested ISP;
FlexOrder → FlexOrderResponse(Accepted). It checks nothing, which is the point of the replay
test: the library takes a replay, the everkit adapter must not.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from shapeshifter_uftp import ShapeshifterAgrService, transport
from shapeshifter_uftp.uftp import (
    AcceptedRejected,
    AvailableRequested,
    FlexOffer,
    FlexOfferOption,
    FlexOfferOptionISP,
    FlexOfferResponse,
    FlexOrder,
    FlexOrderResponse,
    FlexRequest,
    FlexRequestResponse,
    SignedMessage,
    TestMessageResponse,
)

from everkit.framework.broker import free_port
from everkit.simulators.dso import MESSAGE_PATH, DsoSimulator, Peer, new_keypair

AGR_DOMAIN = "agr.everkit.test"
DSO_DOMAIN = "dso.everkit.test"
CONGESTION_POINT = "ean.871685900000000001"
PERIOD = date(2026, 11, 23)
TZ = "Europe/Amsterdam"
WAIT_S = 15.0
OFFER_W = -10_000
REQUEST_ISPS = [
    (1, 68, 0, 40_000, "Available"),
    (69, 8, -60_000, -20_000, "Requested"),
    (77, 20, 0, 40_000, "Available"),
]


class MiniAgr(ShapeshifterAgrService):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cond = threading.Condition()
        self.inbox: list[Any] = []

    def wait_for(self, match: Callable[[Any], bool], count: int = 1) -> list[Any]:
        def found() -> list[Any] | None:
            hits = [m for m in self.inbox if match(m)]
            return hits if len(hits) >= count else None

        with self.cond:
            hits = self.cond.wait_for(found, timeout=WAIT_S)
        assert hits is not None, f"AGR inbox: {self.inbox}"
        return hits

    def _record(self, message: Any) -> None:
        with self.cond:
            self.inbox.append(message)
            self.cond.notify_all()

    def process_flex_request(self, message: Any) -> None:
        client = self.dso_client(message.sender_domain)
        client.send_flex_request_response(
            FlexRequestResponse(
                flex_request_message_id=message.message_id,
                conversation_id=message.conversation_id,
                result=AcceptedRejected.ACCEPTED,
            )
        )
        requested = [i for i in message.isps if i.disposition == AvailableRequested.REQUESTED]
        option = FlexOfferOption(
            option_reference="curtail-10kW",
            price=Decimal("12.50"),
            min_activation_factor=Decimal("0.50"),
            isps=[
                FlexOfferOptionISP(start=i.start, duration=i.duration, power=OFFER_W)
                for i in requested
            ],
        )
        client.send_flex_offer(
            FlexOffer(
                offer_options=[option],
                flex_request_message_id=message.message_id,
                conversation_id=message.conversation_id,
                expiration_date_time=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
                period=message.period,
                congestion_point=message.congestion_point,
                isp_duration=message.isp_duration,
                time_zone=message.time_zone,
            )
        )
        self._record(message)

    def process_flex_order(self, message: Any) -> None:
        self.dso_client(message.sender_domain).send_flex_order_response(
            FlexOrderResponse(
                flex_order_message_id=message.message_id,
                conversation_id=message.conversation_id,
                result=AcceptedRejected.ACCEPTED,
            )
        )
        self._record(message)

    process_flex_offer_response = _record
    process_flex_offer_revocation_response = _record
    process_flex_reservation_update = _record
    process_flex_settlement = _record
    process_d_prognosis_response = _record
    process_metering_response = _record
    process_agr_portfolio_query_response = _record
    process_agr_portfolio_update_response = _record


def _start(agr: MiniAgr) -> threading.Thread:
    thread = threading.Thread(target=agr.run, daemon=True)
    agr.server_thread = thread
    thread.start()
    while not agr.server.started:
        assert thread.is_alive(), "the test AGR could not listen"
        thread.join(0.02)
    return thread


@contextmanager
def library_pair(
    agr_domain: str = AGR_DOMAIN, dso_domain: str = DSO_DOMAIN
) -> Iterator[tuple[DsoSimulator, MiniAgr]]:
    """A bare library AGR (MiniAgr) on a free loopback port and a DSO simulator that knows
    it, both running (also the baseline of bench/uftp_adapter.py)."""
    agr_key, agr_public = new_keypair()
    dso_key, _ = new_keypair()
    agr_port = free_port()
    dso_peer: dict[str, str] = {}
    agr = MiniAgr(
        sender_domain=agr_domain,
        signing_key=agr_key,
        key_lookup_function=lambda domain, role: (
            dso_peer.get("key") if domain == dso_domain else None
        ),
        endpoint_lookup_function=lambda domain, role: dso_peer.get("endpoint"),
        host="127.0.0.1",
        port=agr_port,
    )
    agr_endpoint = f"http://127.0.0.1:{agr_port}{MESSAGE_PATH}"
    dso = DsoSimulator(dso_domain, dso_key, Peer(agr_domain, agr_public, agr_endpoint))
    dso_peer.update(key=dso.public_key, endpoint=dso.endpoint)
    _start(agr)
    try:
        with dso:
            yield dso, agr
    finally:
        agr.stop()


@pytest.fixture
def pair() -> Iterator[tuple[DsoSimulator, MiniAgr]]:
    with library_pair() as both:
        yield both


def _request(dso: DsoSimulator) -> Any:
    return dso.send_flex_request(
        congestion_point=CONGESTION_POINT,
        period=PERIOD,
        time_zone=TZ,
        isps=REQUEST_ISPS,
        expires=datetime.now(UTC) + timedelta(hours=2),
    )


def _offer_for(dso: DsoSimulator, request: Any) -> Any:
    return dso.received(
        FlexOffer, lambda m: m.flex_request_message_id == request.message_id, timeout_s=WAIT_S
    )


def test_flex_request_brings_response_and_offer(pair: tuple[DsoSimulator, MiniAgr]) -> None:
    dso, agr = pair
    request = _request(dso)

    (seen,) = agr.wait_for(lambda m: isinstance(m, FlexRequest))
    assert seen.message_id == request.message_id
    assert seen.sender_domain == DSO_DOMAIN
    assert seen.recipient_domain == AGR_DOMAIN
    assert seen.congestion_point == CONGESTION_POINT
    assert seen.period.to_date() == PERIOD
    assert str(seen.isp_duration) == "PT15M"
    assert [(i.start, i.duration, i.min_power, i.max_power, i.disposition) for i in seen.isps] == [
        (s, d, lo, hi, AvailableRequested(disp)) for s, d, lo, hi, disp in REQUEST_ISPS
    ]

    response = dso.received(
        FlexRequestResponse,
        lambda m: m.flex_request_message_id == request.message_id,
        timeout_s=WAIT_S,
    )
    assert response.result == AcceptedRejected.ACCEPTED
    offer = _offer_for(dso, request)
    assert offer.conversation_id == request.conversation_id
    assert [(i.start, i.duration, i.power) for i in offer.offer_options[0].isps] == [
        (69, 8, OFFER_W)
    ]

    # The simulator answers every FlexOffer by itself.
    (answer,) = agr.wait_for(lambda m: isinstance(m, FlexOfferResponse))
    assert answer.flex_offer_message_id == offer.message_id
    assert answer.result == AcceptedRejected.ACCEPTED

    kinds = [type(m) for m in dso.all_received()]
    assert FlexRequestResponse in kinds
    assert FlexOffer in kinds


def test_flex_order_is_the_offer_times_the_activation_factor(
    pair: tuple[DsoSimulator, MiniAgr],
) -> None:
    """Shapeshifter FlexOrder: the ISP list is the chosen option's ISPs x ActivationFactor,
    and the order names its FlexOffer (FlexOfferMessageID) and OptionReference."""
    dso, agr = pair
    offer = _offer_for(dso, _request(dso))

    order = dso.send_flex_order(offer, activation_factor=0.5, order_reference="DSO-ORDER-0001")

    (seen,) = agr.wait_for(lambda m: isinstance(m, FlexOrder))
    assert seen.message_id == order.message_id
    assert seen.flex_offer_message_id == offer.message_id
    assert seen.conversation_id == offer.conversation_id
    assert seen.option_reference == "curtail-10kW"
    assert seen.order_reference == "DSO-ORDER-0001"
    assert [(i.start, i.duration, i.power) for i in seen.isps] == [(69, 8, OFFER_W // 2)]
    assert seen.activation_factor == Decimal("0.50")
    assert seen.price == Decimal("6.2500")
    assert seen.currency == "EUR"
    assert (seen.period, seen.congestion_point, seen.time_zone) == (
        offer.period,
        offer.congestion_point,
        offer.time_zone,
    )
    answer = dso.received(
        FlexOrderResponse, lambda m: m.flex_order_message_id == order.message_id, WAIT_S
    )
    assert answer.result == AcceptedRejected.ACCEPTED


def test_last_sent_signed_is_byte_for_byte_what_was_posted(
    pair: tuple[DsoSimulator, MiniAgr], monkeypatch: pytest.MonkeyPatch
) -> None:
    dso, agr = pair
    posted: list[bytes] = []
    real_post = requests.post

    def spy(url: str, data: Any = None, **kwargs: Any) -> Any:
        if url == dso.agr.endpoint:
            posted.append(data.encode("utf-8") if isinstance(data, str) else data)
        return real_post(url, data=data, **kwargs)

    monkeypatch.setattr(requests, "post", spy)
    request = _request(dso)
    assert posted[-1] == dso.last_sent_signed() == dso.last_sent_signed(FlexRequest)

    offer = _offer_for(dso, request)
    agr.wait_for(lambda m: isinstance(m, FlexOfferResponse))
    # The automatic FlexOfferResponse went out after the request, so it is now the last.
    assert posted[-1] == dso.last_sent_signed()
    assert dso.last_sent_signed(FlexOfferResponse) != dso.last_sent_signed(FlexRequest)
    envelope = transport.from_xml(dso.last_sent_signed(FlexOfferResponse))
    assert isinstance(envelope, SignedMessage)
    inner = transport.unseal_message(envelope.body, dso.public_key)
    assert inner.flex_offer_message_id == offer.message_id


def test_replay_and_garbage(pair: tuple[DsoSimulator, MiniAgr]) -> None:
    dso, agr = pair
    request = _request(dso)
    agr.wait_for(lambda m: isinstance(m, FlexRequest))

    # The library takes an exact replay and processes it again: the gap the adapter closes.
    assert dso.post_signed(dso.last_sent_signed(FlexRequest)) == 200
    twice = agr.wait_for(lambda m: isinstance(m, FlexRequest), count=2)
    assert {m.message_id for m in twice} == {request.message_id}

    assert dso.post_signed(b"not xml at all") == 400
    assert dso.post_signed(b"<FlexRequest/>") == 400
    envelope = transport.from_xml(dso.last_sent_signed(FlexRequest))
    body = bytearray(envelope.body)
    body[-3] ^= 0x01  # the XML after signing, so the signature no longer matches
    envelope.body = bytes(body)
    assert dso.post_signed(transport.to_xml(envelope).encode()) == 401


def test_test_message_round_trip(pair: tuple[DsoSimulator, MiniAgr]) -> None:
    dso, _ = pair
    sent = dso.send_test_message()
    reply = dso.received(
        TestMessageResponse, lambda m: m.conversation_id == sent.conversation_id, WAIT_S
    )
    assert reply.result == AcceptedRejected.ACCEPTED


def test_timeout_names_what_did_arrive(pair: tuple[DsoSimulator, MiniAgr]) -> None:
    dso, _ = pair
    request = _request(dso)
    _offer_for(dso, request)
    with pytest.raises(TimeoutError, match=r"no matching FlexOrderResponse.*FlexOffer\(id"):
        dso.received(FlexOrderResponse, timeout_s=0.2)


def test_listens_on_loopback_127_0_0_1_only(pair: tuple[DsoSimulator, MiniAgr]) -> None:
    dso, _ = pair
    assert dso.endpoint.startswith(f"http://127.0.0.1:{dso.port}/")
    with socket.create_connection(("127.0.0.1", dso.port), timeout=WAIT_S):
        pass
    # A wildcard bind would take this too: the whole of 127/8 reaches the loopback device.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", dso.port), timeout=WAIT_S).close()
    with pytest.raises(ValueError, match="IPv4 loopback only"):
        DsoSimulator(DSO_DOMAIN, new_keypair()[0], dso.agr, host="0.0.0.0")


def test_a_taken_port_is_an_error_not_a_hang() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agr = Peer(AGR_DOMAIN, new_keypair()[1], "http://127.0.0.1:9/unused")
        sim = DsoSimulator(DSO_DOMAIN, new_keypair()[0], agr, port=port)
        with pytest.raises(RuntimeError, match=f"could not listen on 127.0.0.1:{port}"):
            sim.start()


def test_unsolicited_flex_order_and_rejected_offers(pair: tuple[DsoSimulator, MiniAgr]) -> None:
    """UFTP 3.1.0: a FlexOrder with Unsolicited=true names no FlexOffer."""
    dso, agr = pair
    order = dso.send_unsolicited_flex_order(
        congestion_point=CONGESTION_POINT,
        period=PERIOD,
        time_zone=TZ,
        isps=[(69, 4, -7_000)],
        price=Decimal("3.5"),
        order_reference="DSO-DIRECT-1",
    )
    (seen,) = agr.wait_for(lambda m: isinstance(m, FlexOrder))
    assert seen.message_id == order.message_id
    assert seen.unsolicited is True
    assert seen.flex_offer_message_id is None
    assert [(i.start, i.duration, i.power) for i in seen.isps] == [(69, 4, -7_000)]

    dso.reject_offers_with = "Not needed"
    _offer_for(dso, _request(dso))
    (answer,) = agr.wait_for(lambda m: isinstance(m, FlexOfferResponse))
    assert answer.result == AcceptedRejected.REJECTED
    assert answer.rejection_reason == "Not needed"
