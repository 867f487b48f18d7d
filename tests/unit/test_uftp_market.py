"""The aggregator's sans-IO decisions: guard (Shapeshifter message validation), offers,
orders and the ExternalLimits they become. Fake clock throughout."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from everkit.uftp.guard import InboundGuard, SeenMessages
from everkit.uftp.isp import IspRun, isp_start
from everkit.uftp.market import Aggregator
from everkit.uftp.messages import (
    Header,
    Market,
    Offer,
    Order,
    PowerIsp,
    Request,
    RequestedIsp,
)
from everkit.uftp.portfolio import CongestionPoint, Station
from everkit.uftp.schedule import external_limits

AMS = "Europe/Amsterdam"
EAN = "ean.871685900000000001"
DSO = "dso.example.test"
AGR = "agr.example.test"
DAY = date(2026, 10, 25)  # DST ends: 100 ISPs
NOW = datetime(2026, 10, 25, 10, 0, tzinfo=UTC)


def header(kind: str, message_id: str, *, at: datetime = NOW, digest: str = "d") -> Header:
    return Header(kind, message_id, f"conv-{message_id}", DSO, AGR, at, digest + message_id)


def request(
    *isps: RequestedIsp, message_id: str = "req-1", expires: datetime | None = None
) -> Request:
    return Request(
        header("FlexRequest", message_id),
        Market(EAN, DAY, AMS),
        isps,
        expires or NOW + timedelta(hours=2),
    )


def wanted(start: int, duration: int, min_W: int, max_W: int) -> RequestedIsp:
    return RequestedIsp(IspRun(start, duration), min_W, max_W, True)


def order_for(offer: Offer, factor: float = 1.0, *, message_id: str = "ord-1") -> Order:
    option = offer.options[0]
    return Order(
        header("FlexOrder", message_id),
        offer.market,
        offer.message_id,
        option.reference,
        factor,
        f"ORDER-{message_id}",
        tuple(PowerIsp(isp.run, round(isp.power_W * factor)) for isp in option.isps),
        option.price * factor,
    )


def aggregator(**point: object) -> Aggregator:
    stations = (Station("a", max_W=50_000, min_W=2_000), Station("b", max_W=50_000))
    counter = itertools.count(1)
    agr = Aggregator(
        AGR,
        [CongestionPoint(EAN, AMS, stations, min_activation_factor=0.5, **point)],  # type: ignore[arg-type]
        lambda: f"offer-{next(counter)}",
        baseline_window=timedelta(minutes=5),
    )
    for second in range(0, 301, 10):  # a steady 30 kW at a, 10 kW at b
        agr.on_power("a", 30_000, NOW - timedelta(seconds=300 - second))
        agr.on_power("b", 10_000, NOW - timedelta(seconds=300 - second))
    return agr


def test_an_offer_is_the_flexible_power_above_the_floors_up_to_the_request() -> None:
    agr = aggregator()
    out = agr.on_flex_request(request(wanted(69, 4, -60_000, -20_000)), NOW)
    assert [r.accepted for r in out.responses] == [True]
    (offer,) = out.offers
    # a gives 30 - 2 (its floor) = 28 kW, b 10 kW: 38 kW of the 60 kW asked for
    assert offer.options[0].isps == (PowerIsp(IspRun(69, 4), -38_000),)
    assert offer.flex_request_message_id == "req-1"
    assert offer.expires == NOW + timedelta(hours=1)
    assert offer.options[0].price == pytest.approx(38 * 1.0 * 0.25)  # 38 kWh at 0.25


def test_the_same_kilowatts_are_never_offered_twice() -> None:
    agr = aggregator()
    agr.on_flex_request(request(wanted(69, 1, -20_000, -10_000)), NOW)
    out = agr.on_flex_request(request(wanted(69, 1, -60_000, -1), message_id="req-2"), NOW)
    assert out.offers[0].options[0].isps == (PowerIsp(IspRun(69, 1), -18_000),)


def test_requests_to_consume_more_and_isps_under_way_get_no_offer() -> None:
    agr = aggregator()
    now_isp = 49  # the local day began at 22:00 UTC the day before: 12 h = 48 ISPs ago
    assert isp_start(DAY, AMS, now_isp) == NOW
    out = agr.on_flex_request(
        request(wanted(now_isp, 1, -5_000, -1_000), wanted(70, 1, 1_000, 5_000)), NOW
    )
    assert [r.accepted for r in out.responses] == [True]
    assert out.offers == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"congestion_point": "ean.999999999999"}, "Invalid CongestionPoint"),
        ({"time_zone": "Europe/London"}, "TimeZone rejected"),
        ({"isp_duration": timedelta(minutes=5)}, "ISP duration rejected"),
        ({"period": date(2026, 10, 24)}, "Period out of bounds"),
    ],
)
def test_a_request_outside_our_market_is_refused_with_the_spec_reason(
    change: dict[str, object], reason: str
) -> None:
    agr = aggregator()
    base = request(wanted(69, 1, -5_000, -1_000))
    market = Market(**{**base.market.__dict__, **change})  # type: ignore[arg-type]
    out = agr.on_flex_request(Request(base.header, market, base.isps, base.expires), NOW)
    assert out.responses[0].rejection_reason == reason
    assert out.offers == []


def test_an_expired_request_is_refused() -> None:
    agr = aggregator()
    out = agr.on_flex_request(request(wanted(69, 1, -5_000, -1), expires=NOW), NOW)
    assert out.responses[0].rejection_reason == "ExpirationDateTime out of bounds"


def test_an_order_becomes_caps_per_station_in_proportion_to_their_flexibility() -> None:
    agr = aggregator()
    (offer,) = agr.on_flex_request(request(wanted(69, 4, -19_000, -19_000)), NOW).offers
    out = agr.on_flex_order(order_for(offer, 0.5), NOW)
    assert out.responses[0].accepted
    assert out.limits_changed
    caps = agr.caps(NOW)
    # 9.5 kW ordered; a has 28 of the 38 kW flexibility, b 10
    share_a, share_b = 9_500 * 28 / 38, 9_500 * 10 / 38
    assert [cap for _, cap in caps["a"]] == pytest.approx([30_000 - share_a] * 4)
    assert [cap for _, cap in caps["b"]] == pytest.approx([10_000 - share_b] * 4)
    slot, _ = caps["a"][0]
    assert slot.start == datetime(2026, 10, 25, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (
            lambda o: o.__class__(**{**o.__dict__, "flex_offer_message_id": "nope"}),
            "Unknown FlexOfferMessageID reference",
        ),
        (lambda o: o.__class__(**{**o.__dict__, "flex_offer_message_id": None}), "unsolicited"),
        (lambda o: o.__class__(**{**o.__dict__, "activation_factor": 0.25}), "ActivationFactor"),
        (
            lambda o: o.__class__(**{**o.__dict__, "isps": (PowerIsp(IspRun(69, 4), -1),)}),
            "differ from the offer",
        ),
        (
            lambda o: o.__class__(**{**o.__dict__, "market": Market(EAN, date(2026, 10, 26), AMS)}),
            "Reference Period mismatch",
        ),
    ],
)
def test_an_order_that_does_not_match_its_offer_is_refused(tamper, reason: str) -> None:  # type: ignore[no-untyped-def]
    agr = aggregator()
    (offer,) = agr.on_flex_request(request(wanted(69, 4, -10_000, -10_000)), NOW).offers
    out = agr.on_flex_order(tamper(order_for(offer)), NOW)
    assert reason in out.responses[0].rejection_reason
    assert not out.limits_changed
    assert agr.caps(NOW) == {"a": [], "b": []}


def test_an_order_after_the_offer_expired_is_refused() -> None:
    agr = aggregator()
    (offer,) = agr.on_flex_request(request(wanted(69, 4, -10_000, -10_000)), NOW).offers
    out = agr.on_flex_order(order_for(offer), offer.expires)
    assert out.responses[0].rejection_reason == "Reference message expired"


def test_an_offer_is_ordered_once() -> None:
    agr = aggregator()
    (offer,) = agr.on_flex_request(request(wanted(69, 4, -10_000, -10_000)), NOW).offers
    assert agr.on_flex_order(order_for(offer), NOW).responses[0].accepted
    agr.forget_finished(NOW)  # the adapter tidies up after every order
    second = agr.on_flex_order(order_for(offer, message_id="ord-2"), NOW)
    assert "already ordered" in second.responses[0].rejection_reason


def test_external_limits_start_uncapped_cap_the_ordered_isps_and_restore_the_default() -> None:
    """ExternalLimits (types/energy.yaml): the first entry applies at once and the last stays
    in force, so the schedule opens and ends with an entry without limits."""
    agr = aggregator()
    (offer,) = agr.on_flex_request(request(wanted(69, 8, -10_000, -10_000)), NOW).offers
    agr.on_flex_order(order_for(offer), NOW)
    limits = external_limits(agr.caps(NOW)["b"], NOW)
    entries = limits["schedule_import"]
    assert [e["timestamp"] for e in entries] == [
        "2026-10-25T10:00:00.000Z",
        "2026-10-25T15:00:00.000Z",
        "2026-10-25T17:00:00.000Z",
    ]
    assert entries[0]["limits_to_root"] == {}
    assert entries[-1]["limits_to_root"] == {}
    cap = entries[1]["limits_to_root"]["total_power_W"]
    assert cap["source"] == "SO"
    assert cap["value"] == pytest.approx(10_000 - 10_000 * 10 / 38, abs=0.1)


def test_an_isp_under_way_is_capped_from_now_without_an_uncapped_entry_first() -> None:
    agr = aggregator()
    (offer,) = agr.on_flex_request(request(wanted(69, 2, -10_000, -10_000)), NOW).offers
    agr.on_flex_order(order_for(offer), NOW)
    during = datetime(2026, 10, 25, 15, 20, tzinfo=UTC)
    entries = external_limits(agr.caps(during)["a"], during)["schedule_import"]
    assert [e["timestamp"] for e in entries] == [
        "2026-10-25T15:20:00.000Z",
        "2026-10-25T15:30:00.000Z",
    ]
    assert "total_power_W" in entries[0]["limits_to_root"]
    after = datetime(2026, 10, 25, 15, 30, tzinfo=UTC)
    agr.forget_finished(after)
    assert external_limits(agr.caps(after)["a"], after)["schedule_import"] == [
        {"timestamp": "2026-10-25T15:30:00.000Z", "limits_to_root": {}, "limits_to_leaves": {}}
    ]


@given(
    st.lists(st.integers(min_value=0, max_value=60_000), min_size=1, max_size=20),
    st.integers(min_value=1_000, max_value=100_000),
    st.sampled_from([0.5, 0.75, 1.0]),
)
def test_caps_never_go_below_the_floor_nor_above_the_baseline(
    readings: list[int], asked: int, factor: float
) -> None:
    stations = (Station("a", max_W=50_000, min_W=3_000, margin_W=500),)
    agr = Aggregator(
        AGR, [CongestionPoint(EAN, AMS, stations, min_activation_factor=0.5)], lambda: "o"
    )
    for index, watts in enumerate(readings):
        agr.on_power("a", watts, NOW - timedelta(seconds=len(readings) - index))
    offers = agr.on_flex_request(request(wanted(69, 4, -asked, -asked)), NOW).offers
    if not offers:
        return
    agr.on_flex_order(order_for(offers[0], factor), NOW)
    baseline = min(agr.power["a"].mean(NOW), 50_000)
    offered = -offers[0].options[0].isps[0].power_W
    assert offered <= baseline - 3_000 - 500 + 1  # never more than above floor and margin
    for _, cap in agr.caps(NOW)["a"]:
        assert cap == pytest.approx(max(3_000, baseline - factor * offered - 500), abs=1)
        assert 3_000 <= cap <= baseline


def test_guard_refuses_replays_reused_ids_strangers_and_stale_messages(tmp_path: Path) -> None:
    """Message validation: Already Submitted / Duplicate Identifier / Unknown RecipientDomain."""
    store = tmp_path / "seen.jsonl"
    guard = InboundGuard(AGR, [DSO], SeenMessages(store))
    first = header("FlexRequest", "m1")
    assert guard.check(first, NOW) == ""
    assert guard.check(first, NOW) == "Already Submitted"
    assert guard.check(header("FlexRequest", "m1", digest="other"), NOW) == "Duplicate Identifier"
    wrong_recipient = Header("FlexRequest", "m2", "c", DSO, "someone.else.test", NOW, "x")
    assert guard.check(wrong_recipient, NOW) == "Unknown RecipientDomain"
    stranger = Header("FlexRequest", "m3", "c", "evil.example.test", AGR, NOW, "x")
    assert guard.check(stranger, NOW) == "Unknown SenderDomain (message)"
    old = header("FlexRequest", "m4", at=NOW - timedelta(days=3))
    assert "older than" in guard.check(old, NOW)
    future = header("FlexRequest", "m5", at=NOW + timedelta(hours=1))
    assert "future" in guard.check(future, NOW)
    # a restarted adapter still knows m1
    again = InboundGuard(AGR, [DSO], SeenMessages(store))
    assert again.check(first, NOW + timedelta(hours=1)) == "Already Submitted"


def test_the_guard_forgets_ids_past_the_window_at_most_hourly_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    store = tmp_path / "seen.jsonl"
    guard = InboundGuard(AGR, [DSO], SeenMessages(store))
    assert guard.check(header("FlexRequest", "old"), NOW) == ""
    later = NOW + timedelta(minutes=30)
    assert guard.check(header("FlexRequest", "new", at=later), later) == ""
    assert len(store.read_text().splitlines()) == 2  # nothing rewritten yet...
    latest = NOW + timedelta(days=2, minutes=10)
    assert guard.check(header("FlexRequest", "newer", at=latest), latest) == ""
    kept = list(store.read_text().splitlines())
    assert len(kept) == 2  # ...then "old", past the window, is gone from the file
    assert "old" not in {json.loads(line)["id"] for line in kept}
    again = InboundGuard(AGR, [DSO], SeenMessages(store))
    assert again.check(header("FlexRequest", "new", at=later), latest) == "Already Submitted"


def test_a_limit_the_tree_has_scheduled_lowers_the_baseline_of_the_isps_it_covers() -> None:
    """Baseline "from recent consumption and schedules": a CSMS limit of 15 kW from ISP 70
    on (in the energy_flow_request beneath the UFTP node) leaves only 15 kW to give there."""
    agr = aggregator()
    isp70 = isp_start(DAY, AMS, 70)

    def entry(at: datetime, watts: float) -> dict[str, object]:
        power = {"total_power_W": {"value": watts, "source": "CSO"}}
        return {"timestamp": at.isoformat(), "limits_to_root": power}

    flow = {
        "uuid": "uftp_limit",
        "schedule_import": [entry(NOW, 1.0)],  # the node's own entries (our caps) do not count
        "children": [
            {"uuid": "grid", "schedule_import": [entry(NOW, 86_000), entry(isp70, 15_000)]}
        ],
    }
    agr.on_schedule("a", flow)
    out = agr.on_flex_request(request(wanted(69, 2, -60_000, -1)), NOW)
    (option,) = out.offers[0].options
    # ISP 69: a 30 - 2 = 28 kW, b 10 kW; ISP 70: a 15 - 2 = 13 kW, b 10 kW
    assert option.isps == (PowerIsp(IspRun(69, 1), -38_000), PowerIsp(IspRun(70, 1), -23_000))
