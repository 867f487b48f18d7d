"""The adapter's own small models of the UFTP messages it handles, so the market logic does
not depend on the library's generated classes (``service`` converts both ways).

The names differ from UFTP's element names on purpose: xsdata, under the library, finds the
class for an XML root element by name among all loaded dataclasses, so a dataclass called
``FlexRequest`` here would capture the parsing of every inbound FlexRequest.

Power is in W, averaged over an ISP, positive = consumption (UFTP's sign); a FlexOffer's or
FlexOrder's power is a deviation from the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from .isp import QUARTER_HOUR, IspRun


@dataclass(frozen=True)
class Header:
    """What every inbound message carries, for the guard's checks."""

    kind: str  # the library's class name: FlexRequest, FlexOrder, ...
    message_id: str
    conversation_id: str
    sender_domain: str
    recipient_domain: str
    timestamp: datetime
    digest: str  # of the whole message's content: tells a replay from a reused MessageID


@dataclass(frozen=True)
class Market:
    """Where a trade happens: a congestion point on one local day."""

    congestion_point: str
    period: date
    time_zone: str
    isp_duration: timedelta = QUARTER_HOUR


@dataclass(frozen=True)
class RequestedIsp:
    run: IspRun
    min_W: int
    max_W: int
    requested: bool  # Disposition Requested (congestion) or Available (headroom)


@dataclass(frozen=True)
class Request:
    header: Header
    market: Market
    isps: tuple[RequestedIsp, ...]
    expires: datetime
    revision: int = 1


@dataclass(frozen=True)
class PowerIsp:
    run: IspRun
    power_W: int


@dataclass(frozen=True)
class Option:
    reference: str
    isps: tuple[PowerIsp, ...]
    price: float  # EUR for the whole option at activation factor 1
    min_activation_factor: float


@dataclass(frozen=True)
class Offer:
    message_id: str
    conversation_id: str
    recipient_domain: str
    market: Market
    flex_request_message_id: str
    expires: datetime
    options: tuple[Option, ...]
    currency: str = "EUR"


@dataclass(frozen=True)
class Order:
    header: Header
    market: Market
    flex_offer_message_id: str | None  # None: an unsolicited order
    option_reference: str | None
    activation_factor: float
    order_reference: str
    isps: tuple[PowerIsp, ...]
    price: float
    currency: str = "EUR"


@dataclass(frozen=True)
class Response:
    """A ``<Kind>Response`` to an inbound message: Accepted, or Rejected with the reason."""

    kind: str  # e.g. FlexRequestResponse
    recipient_domain: str
    conversation_id: str
    reference_message_id: str
    rejection_reason: str = ""

    @property
    def accepted(self) -> bool:
        return not self.rejection_reason


@dataclass
class Outbox:
    """What handling one inbound message asks the service to send, in order."""

    responses: list[Response] = field(default_factory=list)
    offers: list[Offer] = field(default_factory=list)
    limits_changed: bool = False
