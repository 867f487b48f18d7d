"""ISPs in UTC on ordinary and DST days (Shapeshifter: ISPs numbered from 1 within the local
day of ``Period``; 92 or 100 of them on DST-change days, message-validation "ISPs out of
bounds")."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from everkit.uftp.isp import IspError, IspRun, conflicts, isp_at, isp_start, isps_per_day

AMS = "Europe/Amsterdam"


@pytest.mark.parametrize(
    ("day", "count"),
    [(date(2026, 3, 29), 92), (date(2026, 10, 25), 100), (date(2026, 11, 23), 96)],
)
def test_a_day_has_92_96_or_100_quarter_hours(day: date, count: int) -> None:
    assert isps_per_day(day, AMS) == count


@pytest.mark.parametrize(
    ("day", "utc"),
    [
        # 17:00 local would be wrong on both DST days: it is wall-clock arithmetic
        (date(2026, 3, 29), datetime(2026, 3, 29, 16, 0, tzinfo=UTC)),  # 18:00+02:00
        (date(2026, 10, 25), datetime(2026, 10, 25, 15, 0, tzinfo=UTC)),  # 16:00+01:00
        (date(2026, 11, 23), datetime(2026, 11, 23, 16, 0, tzinfo=UTC)),  # 17:00+01:00
    ],
)
def test_isp_69_starts_at_the_right_utc_time_on_dst_days(day: date, utc: datetime) -> None:
    assert isp_start(day, AMS, 69) == utc


def test_the_repeated_hour_of_the_autumn_change_has_eight_isps() -> None:
    day = date(2026, 10, 25)
    # local 02:00-03:00 happens twice: ISPs 9-12 (CEST) and 13-16 (CET)
    assert isp_start(day, AMS, 9) == datetime(2026, 10, 25, 0, 0, tzinfo=UTC)
    assert isp_start(day, AMS, 13) == datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
    assert isp_start(day, AMS, 100) == datetime(2026, 10, 25, 22, 45, tzinfo=UTC)


def test_an_isp_beyond_the_day_is_refused() -> None:
    with pytest.raises(IspError, match=r"1\.\.92"):
        isp_start(date(2026, 3, 29), AMS, 93)


@given(
    st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)),
    st.integers(min_value=1, max_value=92),
)
def test_isp_at_inverts_isp_start(day: date, number: int) -> None:
    start = isp_start(day, AMS, number)
    assert isp_at(start, AMS) == (day, number)
    assert isp_at(start + timedelta(minutes=14, seconds=59), AMS) == (day, number)


def test_overlapping_or_out_of_day_isp_elements_get_the_spec_reasons() -> None:
    day = date(2026, 3, 29)
    quarter = timedelta(minutes=15)
    assert conflicts([IspRun(1, 4), IspRun(2, 1)], day, AMS, quarter) == "ISP conflict"
    assert conflicts([IspRun(90, 4)], day, AMS, quarter) == "ISPs out of bounds"
    assert conflicts([], day, AMS, quarter) == "ISPs out of bounds"
    assert conflicts([IspRun(1, 4), IspRun(5, 88)], day, AMS, quarter) == ""
