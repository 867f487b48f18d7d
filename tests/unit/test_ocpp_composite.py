"""The composite schedule (K08): examples for each rule of the algorithm, and hypothesis
properties checked against a per-instant oracle written independently of the implementation
(it asks "which period of which profile is in force at this second?" instead of building
spans and merging breakpoints).

Every schedule produced here is validated against the ``schedule`` definition of the ocpp
package's GetCompositeScheduleResponse schema.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import ocpp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator

from everkit.framework.errors import EverkitError
from everkit.ocpp201.composite import (
    CompositeError,
    CompositeSettings,
    TransactionInfo,
    composite_schedule,
    limit_at,
    period_at,
)
from everkit.ocpp201.device_model import DeviceModel, EvseShape, StationShape
from everkit.ocpp201.timestamps import TimestampError, wire_timestamp

SCHEMAS = Path(ocpp.__file__).parent / "v201" / "schemas"
T0 = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)  # a Monday, midnight
AC = CompositeSettings(
    default_limit_A=48, default_limit_W=33120, default_phases=3, supply_voltage=230, ac_phases=3
)
DC = CompositeSettings(
    default_limit_A=48, default_limit_W=33120, default_phases=3, supply_voltage=230, ac_phases=None
)
TX_ID = "tx-1"


@dataclass(frozen=True)
class Placed:
    evse_id: int
    profile: Mapping[str, Any]


@cache
def schedule_validator() -> Draft4Validator:
    with (SCHEMAS / "GetCompositeScheduleResponse.json").open(encoding="utf-8-sig") as f:
        response = json.load(f)
    return Draft4Validator(
        {"$ref": "#/definitions/CompositeScheduleType", "definitions": response["definitions"]}
    )


def assert_valid(schedule: dict[str, Any]) -> None:
    errors = [error.message for error in schedule_validator().iter_errors(schedule)]
    assert not errors, f"{schedule} is invalid: {errors}"
    json.dumps(schedule, allow_nan=False)


def at(minutes: float) -> str:
    return wire_timestamp(T0 + timedelta(minutes=minutes))


def profile(
    purpose: str,
    periods: Sequence[tuple[int, float] | tuple[int, float, int]],
    *,
    id: int = 1,
    stack: int = 0,
    unit: str = "A",
    kind: str = "Absolute",
    start: str | None = None,
    duration: int | None = None,
    recurrency: str | None = None,
    valid_from: str | None = None,
    valid_to: str | None = None,
    transaction_id: str | None = None,
) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "id": 1,
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [
            {"startPeriod": p[0], "limit": p[1], **({"numberPhases": p[2]} if len(p) > 2 else {})}
            for p in periods
        ],
    }
    if kind != "Relative":
        schedule["startSchedule"] = start if start is not None else at(0)
    if duration is not None:
        schedule["duration"] = duration
    built: dict[str, Any] = {
        "id": id,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": [schedule],
    }
    optional = {
        "recurrencyKind": recurrency,
        "validFrom": valid_from,
        "validTo": valid_to,
        "transactionId": transaction_id,
    }
    built.update({key: value for key, value in optional.items() if value is not None})
    return built


def compute(
    placed: Sequence[Placed],
    *,
    evse_id: int = 1,
    evse_ids: Sequence[int] = (1,),
    start: datetime = T0,
    duration_s: int = 3600,
    unit: str = "A",
    station: CompositeSettings = AC,
    transactions: Mapping[int, TransactionInfo] | None = None,
    assume_transaction: bool = True,
) -> dict[str, Any]:
    schedule = composite_schedule(
        placed,
        evse_id=evse_id,
        evse_ids=evse_ids,
        start=start,
        duration_s=duration_s,
        unit=unit,
        settings=station,
        transactions=transactions or {},
        assume_transaction=assume_transaction,
    )
    assert_valid(schedule)
    return schedule


def periods(schedule: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (p["startPeriod"], p["limit"], p.get("numberPhases"))
        for p in schedule["chargingSchedulePeriod"]
    ]


# the shape of the answer


def test_nothing_installed_gives_the_default_limit_without_phases() -> None:
    """K08: with no profile the whole window is one period at the configured default."""
    schedule = compute([], start=T0 + timedelta(microseconds=600_000), duration_s=900)
    assert schedule == {
        "evseId": 1,
        "duration": 900,
        "scheduleStart": "2024-03-04T00:00:00.000Z",  # truncated to whole seconds
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 48.0}],
    }
    assert periods(compute([], unit="W")) == [(0, 33120.0, None)]


def test_start_in_another_offset_is_reported_in_utc() -> None:
    start = datetime(2024, 3, 4, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    assert compute([], start=start)["scheduleStart"] == "2024-03-04T00:00:00.000Z"


def test_a_zero_duration_still_answers_with_the_limit_in_force() -> None:
    placed = [Placed(1, profile("TxDefaultProfile", [(0, 16)]))]
    schedule = compute(placed, duration_s=0)
    assert schedule["duration"] == 0
    assert periods(schedule) == [(0, 16.0, 3)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unit": "kW"}, "chargingRateUnit"),
        ({"evse_id": 3}, "no EVSE 3"),
        ({"duration_s": -1}, "negative"),
        ({"evse_ids": ()}, "no EVSEs"),
    ],
)
def test_unanswerable_requests_raise(kwargs: dict[str, Any], message: str) -> None:
    """K08.FR.05 / K08.FR.07 are answered by the bridge before it asks; the core still refuses
    an unknown EVSE or unit instead of guessing."""
    with pytest.raises(CompositeError, match=message) as caught:
        compute([], **kwargs)
    assert isinstance(caught.value, EverkitError)


def test_a_naive_start_is_refused() -> None:
    with pytest.raises(TimestampError):
        compute([], start=datetime(2024, 3, 4))


# occurrences


def test_absolute_profile_starts_at_start_schedule_and_ends_after_its_duration() -> None:
    placed = [
        Placed(1, profile("TxDefaultProfile", [(0, 32), (600, 16)], start=at(10), duration=1200))
    ]
    assert periods(compute(placed)) == [
        (0, 48.0, None),
        (600, 32.0, 3),
        (1200, 16.0, 3),
        (1800, 48.0, None),
    ]


def test_recurring_daily_repeats_backwards_before_start_schedule() -> None:
    """libocpp steps from startSchedule in whole days, also back in time: a daily profile that
    starts next week already applies today."""
    placed = [
        Placed(
            1,
            profile(
                "TxDefaultProfile",
                [(0, 10)],
                kind="Recurring",
                recurrency="Daily",
                start=at(7 * 24 * 60 + 30),
                duration=600,
            ),
        )
    ]
    assert periods(compute(placed)) == [(0, 48.0, None), (1800, 10.0, 3), (2400, 48.0, None)]


def test_recurring_weekly_applies_on_its_weekday_only() -> None:
    sunday = profile(
        "TxDefaultProfile",
        [(0, 6)],
        kind="Recurring",
        recurrency="Weekly",
        start=wire_timestamp(datetime(2024, 1, 7, tzinfo=UTC)),  # a Sunday
        duration=86400,
    )
    monday = compute([Placed(1, sunday)], duration_s=600)
    sunday_before = compute([Placed(1, sunday)], start=T0 - timedelta(hours=1), duration_s=7200)
    assert periods(monday) == [(0, 48.0, None)]
    assert periods(sunday_before) == [(0, 6.0, 3), (3600, 48.0, None)]


def test_last_period_of_a_recurring_profile_runs_until_the_next_occurrence() -> None:
    placed = [
        Placed(
            1,
            profile(
                "TxDefaultProfile",
                [(0, 10), (3600, 20)],
                kind="Recurring",
                recurrency="Daily",
                start=at(-60),
            ),
        )
    ]
    schedule = compute(placed, start=T0 - timedelta(hours=2), duration_s=4 * 3600)
    assert periods(schedule) == [(0, 20.0, 3), (3600, 10.0, 3), (7200, 20.0, 3)]


def test_relative_profile_starts_with_the_transaction() -> None:
    placed = [Placed(1, profile("TxDefaultProfile", [(0, 10), (600, 20)], kind="Relative"))]
    started = TransactionInfo(TX_ID, T0 - timedelta(seconds=300))
    assert periods(compute(placed, transactions={1: started})) == [(0, 10.0, 3), (300, 20.0, 3)]


def test_relative_profile_without_transaction_starts_with_the_window() -> None:
    placed = [Placed(1, profile("TxDefaultProfile", [(0, 10), (600, 20)], kind="Relative"))]
    assert periods(compute(placed)) == [(0, 10.0, 3), (600, 20.0, 3)]


def test_valid_from_and_valid_to_clip_the_periods() -> None:
    placed = [
        Placed(
            1,
            profile(
                "TxDefaultProfile", [(0, 10)], start=at(-60), valid_from=at(10), valid_to=at(20)
            ),
        )
    ]
    assert periods(compute(placed)) == [(0, 48.0, None), (600, 10.0, 3), (1200, 48.0, None)]


def test_only_the_first_charging_schedule_counts() -> None:
    """K01.FR.34: further schedules are offers for an ISO 15118 EV, not limits."""
    offer = profile("TxDefaultProfile", [(0, 10)])
    offer["chargingSchedule"].append({**offer["chargingSchedule"][0], "id": 2})
    offer["chargingSchedule"][1]["chargingSchedulePeriod"] = [{"startPeriod": 0, "limit": 1}]
    assert periods(compute([Placed(1, offer)])) == [(0, 10.0, 3)]


def test_offset_less_profile_times_are_utc() -> None:
    placed = [
        Placed(1, profile("TxDefaultProfile", [(0, 7)], start="2024-03-04T00:10:00", duration=60))
    ]
    assert periods(compute(placed, duration_s=1200)) == [
        (0, 48.0, None),
        (600, 7.0, 3),
        (660, 48.0, None),
    ]


# precedence


def test_higher_stack_level_wins_within_a_purpose() -> None:
    low = profile("TxDefaultProfile", [(0, 10)], id=1, stack=1)
    high = profile("TxDefaultProfile", [(0, 30)], id=2, stack=2, start=at(10), duration=600)
    schedule = compute([Placed(1, low), Placed(0, high)])
    assert periods(schedule) == [(0, 10.0, 3), (600, 30.0, 3), (1200, 10.0, 3)]


def test_tx_profile_overrides_tx_default_profile_where_it_has_a_limit() -> None:
    """K01: a TxProfile replaces the TxDefaultProfile for its transaction, even with a higher
    limit; outside its periods the TxDefaultProfile applies again."""
    default = profile("TxDefaultProfile", [(0, 10)], id=1, stack=9)
    tx = profile("TxProfile", [(0, 20)], id=2, duration=600, transaction_id=TX_ID)
    running = {1: TransactionInfo(TX_ID, T0)}
    assert periods(compute([Placed(1, default), Placed(1, tx)], transactions=running)) == [
        (0, 20.0, 3),
        (600, 10.0, 3),
    ]


def test_tx_profile_of_another_transaction_is_ignored() -> None:
    """K01.FR.33: a TxProfile belongs to one transaction."""
    tx = profile("TxProfile", [(0, 20)], transaction_id="tx-old")
    running = {1: TransactionInfo(TX_ID, T0)}
    assert periods(compute([Placed(1, tx)], transactions=running)) == [(0, 48.0, None)]
    assert periods(compute([Placed(1, tx)])) == [(0, 48.0, None)]


def test_tx_default_counts_without_transaction_only_when_assumed() -> None:
    placed = [Placed(0, profile("TxDefaultProfile", [(0, 10)]))]
    assert periods(compute(placed)) == [(0, 10.0, 3)]
    assert periods(compute(placed, assume_transaction=False)) == [(0, 48.0, None)]
    running = {1: TransactionInfo(TX_ID, T0)}
    assert periods(compute(placed, assume_transaction=False, transactions=running)) == [
        (0, 10.0, 3)
    ]


def test_external_constraints_and_station_max_cap_but_never_raise() -> None:
    default = profile("TxDefaultProfile", [(0, 20)], id=1)
    external = profile("ChargingStationExternalConstraints", [(0, 16), (1200, 40)], id=2)
    station_max = profile("ChargingStationMaxProfile", [(0, 32), (2400, 8)], id=3)
    placed = [Placed(1, default), Placed(0, external), Placed(0, station_max)]
    assert periods(compute(placed)) == [(0, 16.0, 3), (1200, 20.0, 3), (2400, 8.0, 3)]


def test_a_zero_limit_is_a_limit() -> None:
    placed = [Placed(1, profile("TxDefaultProfile", [(0, 0), (60, 5)]))]
    assert periods(compute(placed, duration_s=120)) == [(0, 0.0, 3), (60, 5.0, 3)]


def test_equal_neighbours_are_merged() -> None:
    placed = [
        Placed(1, profile("TxDefaultProfile", [(0, 10), (600, 10), (1200, 12)])),
        Placed(0, profile("ChargingStationMaxProfile", [(0, 12), (300, 11)], id=2)),
    ]
    assert periods(compute(placed)) == [(0, 10.0, 3), (1200, 11.0, 3)]


# the whole station


def test_evse_0_sums_the_evses_and_counts_a_gap_as_the_default() -> None:
    placed = [Placed(1, profile("TxDefaultProfile", [(0, 10)], duration=600))]
    schedule = compute(placed, evse_id=0, evse_ids=(1, 2), duration_s=1200)
    assert schedule["evseId"] == 0
    assert periods(schedule) == [(0, 58.0, 3), (600, 96.0, None)]


def test_station_wide_tx_default_counts_once_per_evse() -> None:
    placed = [Placed(0, profile("TxDefaultProfile", [(0, 10)]))]
    assert periods(compute(placed, evse_id=0, evse_ids=(1, 2, 3))) == [(0, 30.0, 3)]


def test_evse_0_is_capped_by_the_station_max_profile() -> None:
    placed = [Placed(0, profile("ChargingStationMaxProfile", [(0, 63, 1)]))]
    assert periods(compute(placed, evse_id=0, evse_ids=(1, 2))) == [(0, 63.0, 1)]


def test_summing_reports_the_most_phases() -> None:
    placed = [
        Placed(1, profile("TxDefaultProfile", [(0, 10, 1)], id=1)),
        Placed(2, profile("TxDefaultProfile", [(0, 10, 2)], id=2)),
    ]
    assert periods(compute(placed, evse_id=0, evse_ids=(1, 2))) == [(0, 20.0, 2)]


# units and phases


def test_amps_and_watts_meet_only_at_the_end_with_the_lowest_phase_count() -> None:
    """A 6900 W cap on 3 phases is 10 A; under a 1-phase station max it is 30 A."""
    watts = Placed(1, profile("TxDefaultProfile", [(0, 6900)], unit="W"))
    assert periods(compute([watts])) == [(0, 10.0, 3)]
    one_phase = Placed(0, profile("ChargingStationMaxProfile", [(0, 32, 1)], id=2))
    assert periods(compute([watts, one_phase])) == [(0, 30.0, 1)]
    assert periods(compute([watts, one_phase], unit="W")) == [(0, 6900.0, 1)]


def test_missing_number_phases_means_three_on_ac() -> None:
    """K01.FR.49: numberPhases absent = 3."""
    placed = [Placed(1, profile("TxDefaultProfile", [(0, 10)]))]
    assert periods(compute(placed, unit="W")) == [(0, 6900.0, 3)]


def test_dc_has_no_phases_and_converts_with_the_default_phase_count() -> None:
    """DC (our choice, as libocpp): numberPhases never appears; A <-> W uses SupplyVoltage x
    CompositeScheduleDefaultNumberPhases; a W limit stays W."""
    amps = Placed(1, profile("TxDefaultProfile", [(0, 10), (600, 20)], id=1))
    watts = Placed(1, profile("TxDefaultProfile", [(0, 50000)], id=1, unit="W"))
    assert periods(compute([amps], station=DC, unit="W")) == [
        (0, 6900.0, None),
        (600, 13800.0, None),
    ]
    assert periods(compute([watts], station=DC, unit="W")) == [(0, 50000.0, None)]
    single = CompositeSettings(48, 33120, default_phases=1, supply_voltage=400, ac_phases=None)
    assert periods(compute([amps], station=single, unit="W")) == [
        (0, 4000.0, None),
        (600, 8000.0, None),
    ]


def test_limits_are_rounded_down_to_one_decimal() -> None:
    """The schema's limit "accepts at most one digit fraction"; rounding down keeps the
    composite under the limit it was converted from (1000 W / 690 V = 1.449 A)."""
    placed = [Placed(1, profile("TxDefaultProfile", [(0, 1000), (60, 2.3 * 690)], unit="W"))]
    assert periods(compute(placed, duration_s=120)) == [(0, 1.4, 3), (60, 2.3, 3)]


# helpers for the bridge


def test_limit_at_reads_the_period_in_force() -> None:
    placed = [Placed(1, profile("TxDefaultProfile", [(0, 10), (600, 20, 1)]))]
    schedule = compute(placed)
    assert limit_at(schedule, T0) == 10.0
    assert limit_at(schedule, T0 + timedelta(seconds=599.9)) == 10.0
    assert limit_at(schedule, T0 + timedelta(seconds=600)) == 20.0
    assert period_at(schedule, T0 + timedelta(seconds=3599))["numberPhases"] == 1
    with pytest.raises(CompositeError, match="outside"):
        limit_at(schedule, T0 + timedelta(seconds=3600))
    with pytest.raises(CompositeError, match="outside"):
        limit_at(schedule, T0 - timedelta(seconds=1))


def test_settings_come_from_the_device_model() -> None:
    overrides = {
        "SmartChargingCtrlr.CompositeScheduleDefaultLimitAmps": "57",
        "SmartChargingCtrlr.CompositeScheduleDefaultLimitWatts": "55612",
        "SmartChargingCtrlr.CompositeScheduleDefaultNumberPhases": "2",
        "SmartChargingCtrlr.SupplyVoltage": "240",
    }
    shape = StationShape("CS1", "v", "m", evses=(EvseShape(1),), supply_phases=3)
    ac = CompositeSettings.from_device_model(DeviceModel.standard(shape, overrides))
    assert ac == CompositeSettings(57, 55612, 2, 240, ac_phases=3)
    dc_shape = StationShape("CS1", "v", "m", evses=(EvseShape(1),), supply_phases=0)
    assert CompositeSettings.from_device_model(DeviceModel.standard(dc_shape)).ac_phases is None


@pytest.mark.parametrize(
    "kwargs",
    [{"default_phases": 0}, {"supply_voltage": 0}, {"ac_phases": 4}],
)
def test_impossible_settings_are_refused(kwargs: dict[str, Any]) -> None:
    values: dict[str, Any] = {
        "default_limit_A": 48,
        "default_limit_W": 33120,
        "default_phases": 3,
        "supply_voltage": 230,
        "ac_phases": 3,
        **kwargs,
    }
    with pytest.raises(CompositeError):
        CompositeSettings(**values)


# properties, against a per-instant oracle
#
# All generated times lie on a one-minute grid, so the composite can only change at whole
# minutes of the window: checking every minute checks every instant.

MINUTE = 60
RECURRENCE = {"Daily": 86_400, "Weekly": 604_800}
PURPOSES = (
    "TxDefaultProfile",
    "TxProfile",
    "ChargingStationExternalConstraints",
    "ChargingStationMaxProfile",
)
# Watts large enough never to bind, so the oracle of the pure-amps properties stays simple.
WIDE = CompositeSettings(48, 10**7, default_phases=3, supply_voltage=230, ac_phases=3)


def _seconds(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return int((moment - T0).total_seconds())


def in_force(placed: Placed, t: int, anchor: int) -> dict[str, Any] | None:
    """The period of ``placed`` in force at second ``t`` (seconds after T0), if any."""
    p = placed.profile
    if "validFrom" in p and t < _seconds(p["validFrom"]):
        return None
    if "validTo" in p and t >= _seconds(p["validTo"]):
        return None
    schedule = p["chargingSchedule"][0]
    if p["chargingProfileKind"] == "Relative":
        begin = anchor
    else:
        begin = _seconds(schedule["startSchedule"])
        if p["chargingProfileKind"] == "Recurring":
            every = RECURRENCE[p["recurrencyKind"]]
            begin += (t - begin) // every * every
    offset = t - begin
    if offset < 0 or ("duration" in schedule and offset >= schedule["duration"]):
        return None
    started = [q for q in schedule["chargingSchedulePeriod"] if q["startPeriod"] <= offset]
    return started[-1] if started else None


def winner(
    placed: Sequence[Placed],
    purpose: str,
    evses: Sequence[int],
    t: int,
    anchor: int,
    tx: str | None,
) -> tuple[Placed, dict[str, Any]] | None:
    best: tuple[Placed, dict[str, Any]] | None = None
    for item in placed:
        p = item.profile
        if p["chargingProfilePurpose"] != purpose or item.evse_id not in evses:
            continue
        if purpose == "TxProfile" and (tx is None or p.get("transactionId") != tx):
            continue
        period = in_force(item, t, anchor)
        if period is not None and (best is None or p["stackLevel"] > best[0].profile["stackLevel"]):
            best = (item, period)
    return best


def applicable(
    placed: Sequence[Placed],
    evse: int,
    t: int,
    window_start: int,
    transactions: Mapping[int, TransactionInfo],
    assume: bool,
    with_max: bool = True,
) -> list[tuple[Placed, dict[str, Any]]]:
    """The periods that limit ``evse`` at ``t``: ExternalConstraints, Tx or else TxDefault,
    and (``with_max``) the station max; each the highest stackLevel of its purpose."""
    transaction = transactions.get(evse)
    anchor = (
        window_start if transaction is None else int((transaction.started_at - T0).total_seconds())
    )
    found = [winner(placed, "ChargingStationExternalConstraints", (0, evse), t, anchor, None)]
    if transaction is not None or assume:
        tx = winner(placed, "TxProfile", (evse,), t, anchor, transaction and transaction.id)
        found.append(tx or winner(placed, "TxDefaultProfile", (0, evse), t, anchor, None))
    if with_max:
        found.append(winner(placed, "ChargingStationMaxProfile", (0,), t, window_start, None))
    return [item for item in found if item is not None]


def phases_of(period: Mapping[str, Any]) -> int:
    return int(period.get("numberPhases", 3))


@dataclass(frozen=True)
class Scenario:
    placed: list[Placed]
    evse_ids: tuple[int, ...]
    window_start_min: int
    duration_min: int
    transactions: dict[int, TransactionInfo]
    assume: bool


@st.composite
def scenarios(draw: st.DrawFn, *, evses: int = 1, units: Sequence[str] = ("A",)) -> Scenario:
    evse_ids = tuple(range(1, evses + 1))
    count = draw(st.integers(0, 6))
    stack_levels = {purpose: draw(st.permutations(range(10))) for purpose in PURPOSES}
    placed: list[Placed] = []
    for number in range(count):
        purpose = draw(st.sampled_from(PURPOSES))
        if purpose == "ChargingStationMaxProfile":
            evse, kinds = 0, ("Absolute", "Recurring")
        elif purpose == "TxProfile":
            evse, kinds = draw(st.sampled_from(evse_ids)), ("Absolute", "Recurring", "Relative")
        else:
            evse, kinds = (
                draw(st.sampled_from((0, *evse_ids))),
                ("Absolute", "Recurring", "Relative"),
            )
        kind = draw(st.sampled_from(kinds))
        gaps = draw(st.lists(st.integers(1, 120), max_size=3))
        starts = [0]
        for gap in gaps:
            starts.append(starts[-1] + gap * MINUTE)
        rows = [
            (start, draw(st.integers(0, 1000)) / 10, *draw(st.sampled_from([(), (1,), (2,), (3,)])))
            for start in starts
        ]
        valid = sorted(draw(st.lists(st.integers(-600, 2000), min_size=2, max_size=2, unique=True)))
        built = profile(
            purpose,
            rows,
            id=number + 1,
            stack=stack_levels[purpose][number],
            unit=draw(st.sampled_from(units)),
            kind=kind,
            start=at(draw(st.integers(-3 * 24 * 60, 24 * 60))),
            duration=draw(st.none() | st.integers(1, 600).map(lambda m: m * MINUTE)),
            recurrency=draw(st.sampled_from(("Daily", "Weekly"))) if kind == "Recurring" else None,
            valid_from=at(valid[0]) if draw(st.booleans()) else None,
            valid_to=at(valid[1]) if draw(st.booleans()) else None,
            transaction_id=draw(st.sampled_from(("tx-1", "tx-1", "tx-2", "tx-other")))
            if purpose == "TxProfile"
            else None,
        )
        placed.append(Placed(evse, built))
    transactions = {
        evse: TransactionInfo(
            f"tx-{evse}",
            T0 + timedelta(minutes=draw(st.integers(-300, 900))),
        )
        for evse in evse_ids
        if draw(st.integers(0, 3))  # mostly a transaction runs: TxProfiles then count
    }
    return Scenario(
        placed,
        evse_ids,
        window_start_min=draw(st.integers(-24 * 60, 24 * 60)),
        duration_min=draw(st.integers(1, 360)),
        transactions=transactions,
        assume=draw(st.booleans()),
    )


def run(
    scenario: Scenario, *, evse_id: int, unit: str, station: CompositeSettings
) -> dict[str, Any]:
    return compute(
        scenario.placed,
        evse_id=evse_id,
        evse_ids=scenario.evse_ids,
        start=T0 + timedelta(minutes=scenario.window_start_min),
        duration_s=scenario.duration_min * MINUTE,
        unit=unit,
        station=station,
        transactions=scenario.transactions,
        assume_transaction=scenario.assume,
    )


def assert_well_formed(schedule: Mapping[str, Any]) -> None:
    """Piecewise constant: starts at 0, strictly increasing, inside the window (so the
    periods cover all of it), no two neighbours alike."""
    rows = schedule["chargingSchedulePeriod"]
    starts = [row["startPeriod"] for row in rows]
    assert starts[0] == 0
    assert all(a < b for a, b in itertools.pairwise(starts))
    assert starts[-1] < max(schedule["duration"], 1)
    for a, b in itertools.pairwise(rows):
        assert (a["limit"], a.get("numberPhases")) != (b["limit"], b.get("numberPhases"))


PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(scenarios())
def test_property_one_evse_in_amps_is_the_lowest_applicable_limit(scenario: Scenario) -> None:
    """At every minute the composite equals the lowest limit of the periods in force (never
    more than any of them), or the default where none is; numberPhases is the lowest."""
    schedule = run(scenario, evse_id=1, unit="A", station=WIDE)
    assert_well_formed(schedule)
    base = scenario.window_start_min * MINUTE
    for minute in range(scenario.duration_min):
        t = base + minute * MINUTE
        period = period_at(schedule, T0 + timedelta(seconds=t))
        limiting = applicable(scenario.placed, 1, t, base, scenario.transactions, scenario.assume)
        if not limiting:
            assert (period["limit"], period.get("numberPhases")) == (48.0, None), minute
            continue
        for _placed, in_force_period in limiting:
            assert period["limit"] <= in_force_period["limit"] + 1e-9, minute
        assert period["limit"] == pytest.approx(min(p["limit"] for _, p in limiting), abs=1e-9)
        assert period["numberPhases"] == min(phases_of(p) for _, p in limiting), minute


@PROPERTY
@given(scenarios(units=("A", "W")), st.sampled_from(("A", "W")))
def test_property_mixed_units_never_exceed_a_limit_in_force(scenario: Scenario, unit: str) -> None:
    """Limits in both units: the composite never exceeds one in force, converted at the
    period's numberPhases (A x 230 V x phases = W)."""
    schedule = run(scenario, evse_id=1, unit=unit, station=AC)
    assert_well_formed(schedule)
    base = scenario.window_start_min * MINUTE
    for minute in range(scenario.duration_min):
        t = base + minute * MINUTE
        period = period_at(schedule, T0 + timedelta(seconds=t))
        volts = 230 * period.get("numberPhases", 3)
        for placed, in_force_period in applicable(
            scenario.placed, 1, t, base, scenario.transactions, scenario.assume
        ):
            own = placed.profile["chargingSchedule"][0]["chargingRateUnit"]
            limit = float(in_force_period["limit"])
            if own != unit:
                limit = limit / volts if unit == "A" else limit * volts
            assert period["limit"] <= limit + 1e-6, (minute, placed.profile["id"])


@PROPERTY
@given(scenarios(evses=2))
def test_property_evse_0_is_the_capped_sum_of_its_evses(scenario: Scenario) -> None:
    """evseId 0: the sum over EVSEs (a free EVSE counts as the default), never above the
    ChargingStationMaxProfile in force."""
    schedule = run(scenario, evse_id=0, unit="A", station=WIDE)
    assert_well_formed(schedule)
    base = scenario.window_start_min * MINUTE
    for minute in range(scenario.duration_min):
        t = base + minute * MINUTE
        period = period_at(schedule, T0 + timedelta(seconds=t))
        total = 0.0
        for evse in scenario.evse_ids:
            own = applicable(
                scenario.placed,
                evse,
                t,
                base,
                scenario.transactions,
                scenario.assume,
                with_max=False,
            )
            total += min((float(p["limit"]) for _, p in own), default=48.0)
        station_max = winner(scenario.placed, "ChargingStationMaxProfile", (0,), t, base, None)
        if station_max is not None:
            assert period["limit"] <= station_max[1]["limit"] + 1e-9, minute
            total = min(total, station_max[1]["limit"])
        assert period["limit"] == pytest.approx(total, abs=1e-6), minute
