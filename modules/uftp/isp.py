"""Imbalance settlement periods (ISPs): UFTP numbers them from 1 within a local calendar day
(``Period`` in the message's ``TimeZone``), so a day has 92, 96 or 100 quarter hours.

An ISP's start is local midnight converted to UTC plus (n - 1) ISP durations, counted in UTC:
adding minutes to an aware local datetime would do wall-clock arithmetic and be an hour off
after a DST change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..framework.errors import EverkitError

QUARTER_HOUR = timedelta(minutes=15)


class IspError(EverkitError):
    """An ISP that does not exist on its day, or a day that cannot be placed in time."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise IspError(f"unknown time zone {name!r}") from exc


def day_bounds(period: date, time_zone: str) -> tuple[datetime, datetime]:
    """[start, end) of the local day ``period`` in UTC."""
    tz = zone(time_zone)
    start = datetime.combine(period, time(0), tz).astimezone(UTC)
    end = datetime.combine(period + timedelta(days=1), time(0), tz).astimezone(UTC)
    return start, end


def isps_per_day(period: date, time_zone: str, duration: timedelta = QUARTER_HOUR) -> int:
    start, end = day_bounds(period, time_zone)
    return int((end - start) / duration)


def isp_start(
    period: date, time_zone: str, number: int, duration: timedelta = QUARTER_HOUR
) -> datetime:
    """UTC start of ISP ``number`` (1-based) of the local day ``period``."""
    count = isps_per_day(period, time_zone, duration)
    if not 1 <= number <= count:
        raise IspError(f"ISP {number} does not exist on {period} in {time_zone} (1..{count})")
    return day_bounds(period, time_zone)[0] + (number - 1) * duration


def isp_at(
    moment: datetime, time_zone: str, duration: timedelta = QUARTER_HOUR
) -> tuple[date, int]:
    """(Period, ISP number) of the ISP that contains ``moment``."""
    period = moment.astimezone(zone(time_zone)).date()
    start, _ = day_bounds(period, time_zone)
    return period, int((moment.astimezone(UTC) - start) / duration) + 1


@dataclass(frozen=True)
class IspRun:
    """``Start``/``Duration`` of an ISP element: ISPs start .. start + duration - 1."""

    start: int
    duration: int = 1

    @property
    def numbers(self) -> range:
        return range(self.start, self.start + self.duration)


def expand(runs: Iterable[IspRun]) -> Iterator[int]:
    for run in runs:
        yield from run.numbers


def conflicts(runs: Iterable[IspRun], period: date, time_zone: str, duration: timedelta) -> str:
    """The spec's rejection reason for ISP elements that overlap or leave the day, or ''."""
    count = isps_per_day(period, time_zone, duration)
    seen: set[int] = set()
    numbers = list(expand(runs))
    if not numbers or any(not 1 <= number <= count for number in numbers):
        return "ISPs out of bounds"
    for number in numbers:
        if number in seen:
            return "ISP conflict"
        seen.add(number)
    return ""
