"""The one place that imports shapeshifter-uftp: tames its logging and converts between its
generated message classes and the adapter's models (messages.py).

The library attaches a DEBUG handler to its logger on import and logs every message in full;
the adapter keeps it at WARNING and lets records reach the process's own handlers.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from shapeshifter_uftp import (
    transport,
    uftp,
)
from shapeshifter_uftp.logging import handler as _library_handler
from xsdata.models.datatype import XmlDate, XmlDuration

from .isp import IspRun
from .messages import (
    Header,
    Market,
    Offer,
    Order,
    PowerIsp,
    Request,
    RequestedIsp,
    Response,
)

_logger = logging.getLogger("shapeshifter-uftp")
_logger.removeHandler(_library_handler)
_logger.setLevel(logging.WARNING)


def parse_time(text: str | None) -> datetime:
    if not text:
        raise ValueError("missing time")
    moment = datetime.fromisoformat(str(text))
    if moment.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {text}")
    return moment


def header(message: Any) -> Header:
    digest = hashlib.sha256(transport.to_xml(message).encode("utf-8")).hexdigest()
    return Header(
        kind=type(message).__name__,
        message_id=str(message.message_id),
        conversation_id=str(message.conversation_id),
        sender_domain=str(message.sender_domain),
        recipient_domain=str(message.recipient_domain),
        timestamp=parse_time(message.time_stamp),
        digest=digest,
    )


def _duration(value: Any) -> timedelta:
    duration = value if isinstance(value, XmlDuration) else XmlDuration(str(value))
    return timedelta(
        days=duration.days or 0,
        hours=duration.hours or 0,
        minutes=duration.minutes or 0,
        seconds=float(duration.seconds or 0),
    )


def _period(value: Any) -> date:
    return value.to_date() if isinstance(value, XmlDate) else date.fromisoformat(str(value))


def market(message: Any) -> Market:
    return Market(
        congestion_point=str(message.congestion_point),
        period=_period(message.period),
        time_zone=str(message.time_zone),
        isp_duration=_duration(message.isp_duration),
    )


def flex_request(message: Any) -> Request:
    return Request(
        header=header(message),
        market=market(message),
        isps=tuple(
            RequestedIsp(
                IspRun(int(isp.start), int(isp.duration or 1)),
                int(isp.min_power),
                int(isp.max_power),
                isp.disposition == uftp.AvailableRequested.REQUESTED,
            )
            for isp in message.isps
        ),
        expires=parse_time(message.expiration_date_time),
        revision=int(message.revision),
    )


def flex_order(message: Any) -> Order:
    return Order(
        header=header(message),
        market=market(message),
        flex_offer_message_id=message.flex_offer_message_id,
        option_reference=message.option_reference,
        activation_factor=float(message.activation_factor or 1),
        order_reference=str(message.order_reference),
        isps=tuple(
            PowerIsp(IspRun(int(isp.start), int(isp.duration or 1)), int(isp.power))
            for isp in message.isps
        ),
        price=float(message.price),
        currency=str(message.currency),
    )


def _xml_datetime(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def to_flex_offer(offer: Offer) -> Any:
    market = offer.market
    return uftp.FlexOffer(
        message_id=offer.message_id,
        conversation_id=offer.conversation_id,
        isp_duration=XmlDuration(f"PT{int(market.isp_duration.total_seconds() // 60)}M"),
        time_zone=market.time_zone,
        period=XmlDate.from_date(market.period),
        congestion_point=market.congestion_point,
        expiration_date_time=_xml_datetime(offer.expires),
        flex_request_message_id=offer.flex_request_message_id,
        currency=offer.currency,
        offer_options=[
            uftp.FlexOfferOption(
                isps=[
                    uftp.FlexOfferOptionISP(
                        power=isp.power_W, start=isp.run.start, duration=isp.run.duration
                    )
                    for isp in option.isps
                ],
                option_reference=option.reference,
                price=Decimal(f"{option.price:.4f}"),
                min_activation_factor=Decimal(f"{option.min_activation_factor:.2f}"),
            )
            for option in offer.options
        ],
    )


_RESPONSES = {
    "FlexRequestResponse": (uftp.FlexRequestResponse, "flex_request_message_id"),
    "FlexOrderResponse": (uftp.FlexOrderResponse, "flex_order_message_id"),
}


def to_response(response: Response) -> Any:
    cls, reference_field = _RESPONSES[response.kind]
    fields: dict[str, Any] = {
        "conversation_id": response.conversation_id,
        reference_field: response.reference_message_id,
        "result": uftp.AcceptedRejected.ACCEPTED
        if response.accepted
        else uftp.AcceptedRejected.REJECTED,
    }
    if not response.accepted:
        fields["rejection_reason"] = response.rejection_reason
    return cls(**fields)
