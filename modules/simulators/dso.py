"""A loopback UFTP (Shapeshifter) DSO for tests and ``everkit demo``.

It is the grid operator the UFTP adapter sells flexibility to, built on the same library
(``shapeshifter_uftp.ShapeshifterDsoService``) but driven step by step: a test or the demo
sends a FlexRequest or FlexOrder and awaits what the aggregator sends back. It answers every
FlexOffer with FlexOfferResponse (Accepted unless told otherwise) and records every inbound
message. It knows one peer, the AGR, from a static address book entry (no DNS), and listens
on a loopback address only: its keys are throwaway test keys and it speaks plain HTTP.

Byte-exact capture of what it sent (``last_sent_signed``) does not patch the library: the
library's client fills the message's header fields in place and then posts
``to_xml(SignedMessage(body=seal_message(message)))``. Ed25519 signatures are deterministic
(RFC 8032) and xsdata's rendering is a pure function of the dataclass, so rendering the same
envelope again from the sent message gives exactly the bytes that went over the wire (a test
checks this against the real POST). Patching ``requests.post`` or ``transport`` instead would
be process-wide and would also catch the AGR's sends when both run in one process.

Needs the ``uftp`` extra (shapeshifter-uftp with FastAPI < 0.140).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time
import uuid
from base64 import b64decode, b64encode
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

import requests
import uvicorn
from nacl.bindings import crypto_sign_keypair
from shapeshifter_uftp import (
    ShapeshifterDsoService,
    transport,
)
from shapeshifter_uftp.uftp import (
    AcceptedRejected,
    AvailableRequested,
    FlexOfferResponse,
    FlexOrder,
    FlexOrderISP,
    FlexRequest,
    FlexRequestISP,
    SignedMessage,
    TestMessage,
    UsefRole,
)
from xsdata.models.datatype import XmlDate, XmlDuration

from ..framework.broker import free_port

# The library forces its logger to DEBUG on import and logs every message in full.
logging.getLogger("shapeshifter-uftp").setLevel(logging.WARNING)

log = logging.getLogger("everkit.simulators.dso")

MESSAGE_PATH = "/shapeshifter/api/v3/message"
ISP_DURATION = "PT15M"
START_TIMEOUT_S = 10.0

Message = Any  # the library's dataclasses are untyped
M = TypeVar("M")


@dataclass(frozen=True)
class Peer:
    """One address book entry: who a participant is, its key, and where to POST to it."""

    domain: str
    public_key: str  # base64 of the 32-byte Ed25519 public key
    endpoint: str  # full URL, e.g. http://127.0.0.1:18080/shapeshifter/api/v3/message


def new_keypair() -> tuple[str, str]:
    """A fresh (base64 64-byte secret signing key, base64 32-byte public key)."""
    public, secret = crypto_sign_keypair()
    return b64encode(secret).decode("ascii"), b64encode(public).decode("ascii")


def describe(message: Message) -> str:
    """A message in a few words, for logs and timeout errors."""
    text = f"{type(message).__name__}(id {message.message_id}, conv {message.conversation_id}"
    result = getattr(message, "result", None)
    if result is not None:
        text += f", {result}"
        if getattr(message, "rejection_reason", None):
            text += f": {message.rejection_reason}"
    return text + ")"


class _Service(ShapeshifterDsoService):  # type: ignore[misc]
    """The library's DSO service; every inbound message goes to the simulator."""

    def __init__(self, owner: DsoSimulator, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._owner = owner

    def process_flex_offer(self, message: Message) -> None:
        # Answer before recording, so whoever awaits the offer finds its response delivered.
        try:
            self._owner._answer_offer(message)
        finally:
            self._owner._record(message)

    def process_test_message(self, message: Message, sender_role: Any) -> None:
        try:
            super().process_test_message(message, sender_role)
        finally:
            self._owner._record(message)

    def _record(self, message: Message) -> None:
        self._owner._record(message)

    process_d_prognosis = _record
    process_flex_request_response = _record
    process_flex_order_response = _record
    process_flex_offer_revocation = _record
    process_flex_reservation_update_response = _record
    process_flex_settlement_response = _record
    process_dso_portfolio_query_response = _record
    process_dso_portfolio_update_response = _record
    process_metering = _record
    process_test_message_response = _record


class DsoSimulator:
    """A DSO on ``host:port`` (0 = a free port) that trades with one AGR, ``agr``.

    ``now`` and ``new_id`` set the TimeStamp and the MessageIDs of what it sends (injected
    so tests can send stale or duplicate messages). ``reject_offers_with``: a reason to
    reject every FlexOffer with instead of accepting it.
    """

    def __init__(
        self,
        domain: str,
        signing_key: str,
        agr: Peer,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        version: str = "3.1.0",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        reject_offers_with: str | None = None,
    ) -> None:
        address = ipaddress.ip_address(host)
        if address.version != 4 or not address.is_loopback:
            raise ValueError(f"the DSO simulator listens on IPv4 loopback only, not on {host!r}")
        self.domain = domain
        self.agr = agr
        self.version = version
        self.now = now
        self.new_id = new_id
        self.reject_offers_with = reject_offers_with
        self.host = host
        self.port = port or free_port(host)
        self.endpoint = f"http://{host}:{self.port}{MESSAGE_PATH}"
        self._signing_key = signing_key
        self.public_key = _public_key_of(signing_key)
        self._service = _Service(
            self,
            sender_domain=domain,
            signing_key=signing_key,
            key_lookup_function=self._key_of,
            endpoint_lookup_function=self._endpoint_of,
            host=host,
            port=self.port,
            path=MESSAGE_PATH,
            version=version,
        )
        # The library's server logs every request; access_log=False is uvicorn's own switch
        # (it empties the process-wide "uvicorn.access" logger, as uvicorn.run would).
        self._service.server = uvicorn.Server(
            uvicorn.Config(
                app=self._service.app,
                host=host,
                port=self.port,
                access_log=False,
                log_level="warning",
            )
        )
        self._lock = threading.Condition()
        self._received: list[Message] = []
        self._sent: list[tuple[Message, bytes]] = []
        self._thread: threading.Thread | None = None
        self._stopped = False

    # --------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Listen; return once the server accepts connections (or raise why it cannot)."""
        if self._thread is not None:
            return
        if self._stopped:
            raise RuntimeError("a stopped DSO simulator cannot start again; make a new one")
        server = self._service.server
        # Not the library's run_in_thread: it waits forever when the port is taken.
        thread = threading.Thread(
            target=_serve, args=(server,), name=f"dso-{self.port}", daemon=True
        )
        self._service.server_thread = thread
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"DSO simulator could not listen on {self.host}:{self.port}")
            thread.join(0.02)
        log.info("DSO %s listening on %s", self.domain, self.endpoint)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._service.stop()
        self._service.inbound_executor.shutdown(wait=True)
        self._service.outbound_executor.shutdown(wait=True)
        self._thread = None
        self._stopped = True

    def __enter__(self) -> DsoSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- inbound

    def received(
        self,
        kind: type[M],
        predicate: Callable[[M], bool] = lambda _m: True,
        timeout_s: float = 10.0,
    ) -> M:
        """The first inbound ``kind`` (in arrival order) matching ``predicate``; waits for it."""

        def find() -> M | None:
            for message in self._received:
                if isinstance(message, kind) and predicate(message):
                    return message
            return None

        with self._lock:
            found = self._lock.wait_for(find, timeout=timeout_s)
            if found is not None:
                return found
            arrived = ", ".join(describe(m) for m in self._received) or "nothing"
        raise TimeoutError(
            f"DSO {self.domain}: no matching {kind.__name__} within {timeout_s} s; "
            f"received: {arrived}"
        )

    def all_received(self) -> list[Message]:
        with self._lock:
            return list(self._received)

    def _record(self, message: Message) -> None:
        log.info("DSO %s received %s", self.domain, describe(message))
        with self._lock:
            self._received.append(message)
            self._lock.notify_all()

    def _answer_offer(self, offer: Message) -> None:
        reason = self.reject_offers_with
        response = FlexOfferResponse(
            flex_offer_message_id=offer.message_id,
            conversation_id=offer.conversation_id,
            result=AcceptedRejected.REJECTED if reason else AcceptedRejected.ACCEPTED,
            rejection_reason=reason,
        )
        self._send(response, "send_flex_offer_response")

    # --------------------------------------------------------------- outbound

    def send_flex_request(
        self,
        *,
        congestion_point: str,
        period: date,
        time_zone: str,
        isps: list[tuple[int, int, int, int, str]],
        expires: datetime,
        revision: int = 1,
        conversation_id: str | None = None,
        isp_duration: str = ISP_DURATION,
    ) -> Message:
        """Send a FlexRequest; ``isps`` are (start, duration, min W, max W, disposition)
        with disposition "Requested" or "Available". Returns the sent message."""
        request = FlexRequest(
            isps=[
                FlexRequestISP(
                    start=start,
                    duration=duration,
                    min_power=min_w,
                    max_power=max_w,
                    disposition=AvailableRequested(disposition),
                )
                for start, duration, min_w, max_w, disposition in isps
            ],
            revision=revision,
            expiration_date_time=_xml_datetime(expires),
            period=XmlDate.from_date(period),
            congestion_point=congestion_point,
            isp_duration=XmlDuration(isp_duration),
            time_zone=time_zone,
            conversation_id=conversation_id,
        )
        return self._send(request, "send_flex_request")

    def send_flex_order(
        self,
        offer: Message,
        *,
        order_reference: str,
        option_reference: str | None = None,
        activation_factor: float | Decimal = 1.0,
        price: Decimal | None = None,
        isps: list[tuple[int, int, int]] | None = None,
    ) -> Message:
        """Order one option of ``offer`` (the first unless ``option_reference``): its ISPs
        times ``activation_factor`` (rounded half up to whole W), at its price times the
        factor. ``price`` and ``isps`` ((start, duration, W)) override, to send wrong orders.
        The factor is not checked against MinActivationFactor, for the same reason."""
        option = _option(offer, option_reference)
        factor = Decimal(str(activation_factor)).quantize(Decimal("0.01"))
        if isps is None:
            isps = [(i.start, i.duration, _scaled(i.power, factor)) for i in option.isps]
        if price is None:
            price = (Decimal(str(option.price)) * factor).quantize(Decimal("0.0001"))
        order = FlexOrder(
            isps=[FlexOrderISP(start=s, duration=d, power=p) for s, d, p in isps],
            flex_offer_message_id=offer.message_id,
            conversation_id=offer.conversation_id,
            period=offer.period,
            congestion_point=offer.congestion_point,
            time_zone=offer.time_zone,
            isp_duration=offer.isp_duration,
            d_prognosis_message_id=offer.d_prognosis_message_id,
            baseline_reference=offer.baseline_reference,
            price=price,
            currency=offer.currency,
            order_reference=order_reference,
            option_reference=option.option_reference,
            activation_factor=factor,
        )
        return self._send(order, "send_flex_order")

    def send_unsolicited_flex_order(
        self,
        *,
        congestion_point: str,
        period: date,
        time_zone: str,
        isps: list[tuple[int, int, int]],
        price: Decimal,
        order_reference: str,
        currency: str = "EUR",
    ) -> Message:
        """A FlexOrder without a FlexOffer (UFTP 3.1.0); ``isps`` are (start, duration, W)."""
        order = FlexOrder(
            isps=[FlexOrderISP(start=s, duration=d, power=p) for s, d, p in isps],
            unsolicited=True,
            period=XmlDate.from_date(period),
            congestion_point=congestion_point,
            time_zone=time_zone,
            isp_duration=XmlDuration(ISP_DURATION),
            price=price,
            currency=currency,
            order_reference=order_reference,
        )
        return self._send(order, "send_flex_order")

    def send_test_message(self) -> Message:
        return self._send(TestMessage(), "send_test_message")

    def post_signed(self, body: bytes) -> int:
        """POST raw bytes (a SignedMessage, or anything) to the AGR; the HTTP status."""
        response = requests.post(
            self.agr.endpoint,
            data=body,
            headers={"Content-Type": "text/xml; charset=utf-8"},
            timeout=10,
        )
        return response.status_code

    def last_sent_signed(self, kind: type | None = None) -> bytes:
        """The exact SignedMessage bytes of the last message sent (of ``kind``, if given);
        the automatic FlexOfferResponses count, hence ``kind``."""
        with self._lock:
            for message, signed in reversed(self._sent):
                if kind is None or isinstance(message, kind):
                    return signed
        raise LookupError(f"DSO {self.domain} has sent no {kind.__name__ if kind else 'message'}")

    def _send(self, message: Message, method: str) -> Message:
        message.message_id = message.message_id or self.new_id()
        message.conversation_id = message.conversation_id or self.new_id()
        message.time_stamp = _xml_datetime(self.now())
        client = self._service.agr_client(self.agr.domain, version=self.version)
        try:
            getattr(client, method)(message)
        finally:
            # The client has filled the remaining header fields by now, sent or not.
            signed = SignedMessage(
                sender_domain=self.domain,
                sender_role=UsefRole.DSO,
                body=transport.seal_message(message, self._signing_key),
            )
            with self._lock:
                self._sent.append((message, transport.to_xml(signed).encode("utf-8")))
        log.info("DSO %s sent %s", self.domain, describe(message))
        return message

    def _key_of(self, domain: str, role: str) -> str | None:
        # Unknown senders get None, which the library turns into a refusal of the message.
        if domain == self.agr.domain and role == UsefRole.AGR:
            return self.agr.public_key
        return None

    def _endpoint_of(self, domain: str, role: str) -> str | None:
        if domain == self.agr.domain and role == UsefRole.AGR:
            return self.agr.endpoint
        return None


def _serve(server: uvicorn.Server) -> None:
    # uvicorn exits with SystemExit when it cannot bind; start() reports that as an error.
    with contextlib.suppress(SystemExit):
        server.run()


def _public_key_of(signing_key: str) -> str:
    secret = b64decode(signing_key)
    if len(secret) != 64:
        raise ValueError("signing_key must be base64 of a 64-byte Ed25519 secret key")
    # A NaCl secret key is the 32-byte seed followed by the 32-byte public key.
    return b64encode(secret[32:]).decode("ascii")


def _xml_datetime(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"{moment} has no time zone; UFTP date-times carry an offset")
    return moment.isoformat()


def _option(offer: Message, reference: str | None) -> Message:
    for option in offer.offer_options:
        if reference is None or option.option_reference == reference:
            return option
    raise ValueError(f"FlexOffer {offer.message_id} has no option {reference!r}")


def _scaled(power: int, factor: Decimal) -> int:
    return int((Decimal(power) * factor).quantize(Decimal(1), rounding=ROUND_HALF_UP))
