"""The aggregator's decisions, sans-IO: which FlexRequests to answer with which Offer,
which FlexOrders to accept, and what an accepted order asks of each station.

Flexibility is what a station draws above its floor: baseline - min_W - margin_W, minus what
open offers and accepted orders already promised for the same quarter hour, so the same
kilowatt is never sold twice. An offer is shared out over the stations in proportion to
their flexibility; an order at activation factor f asks each station for f times its share.
Only reductions are offered (negative power): an OCPP or EVerest limit is a maximum and
cannot make a car draw more, so requests to raise consumption get no offer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import isp as isps
from .baseline import PowerHistory, scheduled_cap
from .messages import (
    Market,
    Offer,
    Option,
    Order,
    Outbox,
    PowerIsp,
    Request,
    Response,
)
from .portfolio import CongestionPoint, Station

log = logging.getLogger("everkit.uftp")

POWER_TOLERANCE_W = 1.0  # rounding between offer x factor and the order's integer watts


@dataclass(frozen=True)
class Slot:
    """One ISP in UTC."""

    start: datetime
    end: datetime


@dataclass
class Commitment:
    """Per station and ISP start: the baseline promised against and the deviation (W < 0)."""

    congestion_point: str
    baseline: dict[str, dict[datetime, float]] = field(default_factory=dict)
    deviation: dict[str, dict[datetime, float]] = field(default_factory=dict)
    slots: dict[datetime, Slot] = field(default_factory=dict)

    def end(self) -> datetime:
        return max(slot.end for slot in self.slots.values())


@dataclass
class OpenOffer:
    offer: Offer
    commitment: Commitment  # at activation factor 1
    per_isp_W: dict[int, float]
    ordered: bool = False


@dataclass(frozen=True)
class AcceptedOrder:
    order_reference: str
    commitment: Commitment


def runs_of(power_by_isp: Mapping[int, int]) -> tuple[PowerIsp, ...]:
    """Consecutive ISPs with the same power as one ISP element each."""
    out: list[PowerIsp] = []
    for number in sorted(power_by_isp):
        watts = power_by_isp[number]
        last = out[-1] if out else None
        if last and last.power_W == watts and last.run.start + last.run.duration == number:
            out[-1] = PowerIsp(isps.IspRun(last.run.start, last.run.duration + 1), watts)
        else:
            out.append(PowerIsp(isps.IspRun(number, 1), watts))
    return tuple(out)


def per_isp(elements: Iterable[PowerIsp]) -> dict[int, int]:
    return {number: element.power_W for element in elements for number in element.run.numbers}


class Aggregator:
    def __init__(
        self,
        domain: str,
        congestion_points: Iterable[CongestionPoint],
        new_id: Callable[[], str],
        baseline_window: timedelta = timedelta(minutes=15),
    ) -> None:
        self.domain = domain
        self.points = {point.entity_address: point for point in congestion_points}
        self.new_id = new_id
        self.power = {
            station.name: PowerHistory(baseline_window)
            for point in self.points.values()
            for station in point.stations
        }
        self.schedules: dict[str, Mapping[str, Any]] = {}  # the stations' energy_flow_request
        self.offers: dict[str, OpenOffer] = {}
        self.orders: list[AcceptedOrder] = []

    # -- inputs ------------------------------------------------------------------------

    def on_power(self, station: str, watts: float, now: datetime) -> None:
        if station in self.power:
            self.power[station].add(watts, now)

    def on_schedule(self, station: str, request: Mapping[str, Any]) -> None:
        if station in self.power:
            self.schedules[station] = request

    def baseline(self, station: Station, start: datetime, now: datetime) -> float:
        """What ``station`` would draw in the ISP from ``start`` without an order."""
        base = min(self.power[station.name].mean(now), station.max_W)
        schedule = self.schedules.get(station.name)
        scheduled = scheduled_cap(schedule, start) if schedule is not None else None
        return base if scheduled is None else min(base, scheduled)

    def on_flex_request(self, request: Request, now: datetime) -> Outbox:
        out = Outbox()
        market = request.market
        reason = self._market_reason(market, now) or isps.conflicts(
            (element.run for element in request.isps),
            market.period,
            market.time_zone,
            market.isp_duration,
        )
        if not reason and request.expires <= now:
            reason = "ExpirationDateTime out of bounds"
        out.responses.append(self._response("FlexRequestResponse", request, reason))
        if reason:
            log.warning("FlexRequest %s refused: %s", request.header.message_id, reason)
            return out
        offer = self._offer_for(request, now)
        if offer is not None:
            out.offers.append(offer)
        return out

    def on_flex_offer_rejected(self, offer_message_id: str) -> None:
        """The DSO refused the offer: its flexibility is free again."""
        self.offers.pop(offer_message_id, None)

    def on_flex_order(self, order: Order, now: datetime) -> Outbox:
        out = Outbox()
        reason = self._market_reason(order.market, now) or self._order_reason(order, now)
        out.responses.append(self._response("FlexOrderResponse", order, reason))
        if reason:
            log.warning("FlexOrder %s refused: %s", order.order_reference, reason)
            return out
        assert order.flex_offer_message_id is not None  # _order_reason refused it otherwise
        open_offer = self.offers[order.flex_offer_message_id]
        open_offer.ordered = True
        self.orders.append(
            AcceptedOrder(
                order.order_reference,
                _scaled(open_offer.commitment, order.activation_factor),
            )
        )
        out.limits_changed = True
        log.info(
            "FlexOrder %s accepted: activation %.2f on offer %s",
            order.order_reference,
            order.activation_factor,
            order.flex_offer_message_id,
        )
        return out

    # -- what stations must do ----------------------------------------------------------

    def caps(self, now: datetime) -> dict[str, list[tuple[Slot, float]]]:
        """Per station, the (ISP, cap W) pairs of every accepted order not yet over, in
        time order. Orders on the same ISP add their deviations to the first one's baseline."""
        stations: dict[str, dict[datetime, tuple[Slot, float, float]]] = {
            station: {} for station in self.power
        }
        for order in self.orders:
            commitment = order.commitment
            for station, deviations in commitment.deviation.items():
                for start, deviation in deviations.items():
                    slot = commitment.slots[start]
                    if slot.end <= now:
                        continue
                    baseline = commitment.baseline[station][start]
                    _, base, total = stations[station].get(start, (slot, baseline, 0.0))
                    stations[station][start] = (slot, base, total + deviation)
        station_by_name = {s.name: s for p in self.points.values() for s in p.stations}
        out: dict[str, list[tuple[Slot, float]]] = {}
        for station, slots in stations.items():
            config = station_by_name[station]
            out[station] = [
                (slot, max(config.min_W, base + total - config.margin_W))
                for _, (slot, base, total) in sorted(slots.items())
            ]
        return out

    def forget_finished(self, now: datetime) -> None:
        self.orders = [order for order in self.orders if order.commitment.end() > now]
        # an ordered offer stays until it expires, so a second order on it is told so
        self.offers = {
            key: open_offer
            for key, open_offer in self.offers.items()
            if open_offer.offer.expires > now
        }

    # -- internals ----------------------------------------------------------------------

    def _response(self, kind: str, message: Request | Order, reason: str) -> Response:
        header = message.header
        return Response(
            kind, header.sender_domain, header.conversation_id, header.message_id, reason
        )

    def _market_reason(self, market: Market, now: datetime) -> str:
        point = self.points.get(market.congestion_point)
        if point is None:
            return "Invalid CongestionPoint"
        if market.isp_duration != point.isp_duration:
            return "ISP duration rejected"
        if market.time_zone != point.time_zone:
            return "TimeZone rejected"
        try:
            _, day_end = isps.day_bounds(market.period, market.time_zone)
        except isps.IspError:
            return "TimeZone rejected"
        if day_end <= now:
            return "Period out of bounds"
        return ""

    def _order_reason(self, order: Order, now: datetime) -> str:
        if order.flex_offer_message_id is None:
            return "Invalid Message: unsolicited FlexOrders are not accepted"
        open_offer = self.offers.get(order.flex_offer_message_id)
        if open_offer is None:
            return "Unknown FlexOfferMessageID reference"
        offer = open_offer.offer
        if open_offer.ordered:
            return "Invalid Message: this FlexOffer was already ordered"
        if offer.expires <= now:
            return "Reference message expired"
        if offer.market != order.market:
            return "Reference Period mismatch"
        options = {option.reference: option for option in offer.options}
        option = options.get(order.option_reference or offer.options[0].reference)
        if option is None:
            return "Invalid Message: unknown OptionReference"
        factor = order.activation_factor
        if not option.min_activation_factor <= factor <= 1.0:
            lowest = option.min_activation_factor
            return f"Invalid Message: ActivationFactor {factor} outside {lowest}..1"
        reason = isps.conflicts(
            (element.run for element in order.isps),
            order.market.period,
            order.market.time_zone,
            order.market.isp_duration,
        )
        if reason:
            return reason
        expected = {number: watts * factor for number, watts in per_isp(option.isps).items()}
        ordered = per_isp(order.isps)
        if set(ordered) != set(expected) or any(
            abs(ordered[number] - expected[number]) > POWER_TOLERANCE_W for number in expected
        ):
            return "Invalid Message: ISPs differ from the offer option x ActivationFactor"
        return ""

    def _offer_for(self, request: Request, now: datetime) -> Offer | None:
        market = request.market
        point = self.points[market.congestion_point]
        promised = self._promised()
        commitment = Commitment(market.congestion_point)
        power_by_isp: dict[int, int] = {}
        for element in request.isps:
            if not element.requested or min(element.min_W, element.max_W) >= 0:
                continue  # headroom, or a request to consume more: not offered
            wanted = -min(element.min_W, element.max_W)
            for number in element.run.numbers:
                start = isps.isp_start(market.period, market.time_zone, number, market.isp_duration)
                if start <= now:
                    continue  # an ISP under way cannot be promised as an average any more
                slot = Slot(start, start + market.isp_duration)
                flexible = {}
                baselines = {}
                for station in point.stations:
                    base = self.baseline(station, start, now)
                    already = promised.get(station.name, {}).get(start, 0.0)
                    baselines[station.name] = base
                    flexible[station.name] = max(
                        0.0, base + already - station.min_W - station.margin_W
                    )
                total = sum(flexible.values())
                offered = int(min(total, wanted))
                if offered <= 0:
                    continue
                power_by_isp[number] = -offered
                commitment.slots[start] = slot
                for name, share in flexible.items():
                    commitment.baseline.setdefault(name, {})[start] = baselines[name]
                    commitment.deviation.setdefault(name, {})[start] = -offered * share / total
        if not power_by_isp:
            log.info("FlexRequest %s: no flexibility to offer", request.header.message_id)
            return None
        hours = market.isp_duration / timedelta(hours=1)
        energy_kwh = sum(-watts for watts in power_by_isp.values()) * hours / 1000.0
        first_start = min(commitment.slots)
        offer = Offer(
            message_id=self.new_id(),
            conversation_id=request.header.conversation_id,
            recipient_domain=request.header.sender_domain,
            market=market,
            flex_request_message_id=request.header.message_id,
            expires=min(now + point.offer_validity, first_start, request.expires),
            options=(
                Option(
                    reference=f"{self.domain}-{request.header.message_id[:8]}",
                    isps=runs_of(power_by_isp),
                    price=round(energy_kwh * point.price_eur_per_kwh, 4),
                    min_activation_factor=point.min_activation_factor,
                ),
            ),
        )
        self.offers[offer.message_id] = OpenOffer(offer, commitment, dict(power_by_isp))
        return offer

    def _promised(self) -> dict[str, dict[datetime, float]]:
        """Per station and ISP start, the deviations (W < 0) of open offers and orders."""
        promised: dict[str, dict[datetime, float]] = {}
        commitments = [o.commitment for o in self.offers.values() if not o.ordered]
        commitments += [order.commitment for order in self.orders]
        for commitment in commitments:
            for station, deviations in commitment.deviation.items():
                mine = promised.setdefault(station, {})
                for start, deviation in deviations.items():
                    mine[start] = mine.get(start, 0.0) + deviation
        return promised


def _scaled(commitment: Commitment, factor: float) -> Commitment:
    return Commitment(
        commitment.congestion_point,
        baseline={name: dict(values) for name, values in commitment.baseline.items()},
        deviation={
            name: {start: value * factor for start, value in values.items()}
            for name, values in commitment.deviation.items()
        },
        slots=dict(commitment.slots),
    )
