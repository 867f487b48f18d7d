"""The composite charging schedule of one EVSE or of the whole station (OCPP 2.0.1 K08).

Pure: profiles, transactions and the window start go in, a ``CompositeScheduleType`` dict
comes out (camelCase, exactly as a CSMS receives it in GetCompositeScheduleResponse.schedule).
Nothing here reads a clock; the caller passes ``start`` (``now`` for a live request).

The algorithm is libocpp's (EVerest), so a CSMS sees the same numbers from us as from an
EVerest station:

1. Occurrences of a profile (only its first chargingSchedule counts): Absolute at
   ``startSchedule`` (else ``validFrom``, else the window start); Relative at the start of the
   transaction on the EVSE being evaluated, else at the window start; Recurring Daily/Weekly at
   the last repetition at or before the window start, counted in whole days/weeks from
   ``startSchedule`` (also backwards, before ``startSchedule``), plus every later one.
2. Period i of an occurrence runs from occurrence + startPeriod(i) to the earliest of the next
   period's start, occurrence + ``duration``, the next occurrence (Recurring) and ``validTo``;
   a ``validFrom`` inside it moves its start. Everything is clipped to the window.
3. Within one purpose the covering period of the highest ``stackLevel`` wins at every instant
   (ties: the profile listed first); instants nothing covers have no limit.
4. Per EVSE: ExternalConstraints (the EVSE's and station-wide ones in one stack) and, when a
   transaction runs or ``assume_transaction`` (GetCompositeSchedule semantics), the TxProfile
   stack of that transaction where it has a limit, else the TxDefaultProfile stack (the EVSE's
   and station-wide ones compete by stackLevel). The lowest of these.
5. evseId > 0: the lowest of the EVSE's value and the ChargingStationMaxProfile stack (evse 0).
   evseId = 0: the SUM over all EVSEs, an EVSE without a limit in a unit counting as that
   unit's default limit, then the lowest of that and the ChargingStationMaxProfile stack.
6. "Lowest" keeps amps and watts apart (the minimum of each) and takes the lowest numberPhases;
   the sum takes the highest numberPhases. Only the final step converts to the requested unit:
   amps = min(A, W / (SupplyVoltage x phases)), watts = min(W, A x SupplyVoltage x phases), with
   the period's numberPhases or else CompositeScheduleDefaultNumberPhases. A period with no
   limit at all gets the requested unit's default limit and no numberPhases.
7. Equal neighbours (limit and numberPhases) are merged.

Choices of ours, where libocpp or the spec leave room:

- Times are whole seconds: ``start`` and profile times are truncated (startPeriod is in whole
  seconds anyway). A profile time without UTC offset is read as UTC, as libocpp does.
- Limits go out rounded DOWN to one decimal: the schema allows "at most one digit fraction",
  and rounding down never lets the composite exceed a limit (converted values such as
  55612 W / 690 V would otherwise carry many digits).
- numberPhases: on AC a period without it counts as 3 phases (K01.FR.49); on DC
  (``ac_phases=None``) numberPhases is absent everywhere, in and out.
- DC conversion: A <-> W uses SupplyVoltage x CompositeScheduleDefaultNumberPhases, as libocpp
  does. The true DC voltage is the EV's and unknown here; keeping libocpp's rule gives a CSMS
  the numbers an EVerest station would give, and the operator can make the factor the DC
  voltage of their choice (e.g. SupplyVoltage 400, DefaultNumberPhases 1). A W limit stays W.
- minChargingRate plays no part; offline filtering (IgnoredProfilePurposesOffline) is the
  caller's, by passing fewer profiles.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..framework.errors import EverkitError
from .timestamps import parse_wire_timestamp, require_aware, wire_timestamp

if TYPE_CHECKING:
    from .device_model import DeviceModel

STATION_MAX = "ChargingStationMaxProfile"
EXTERNAL = "ChargingStationExternalConstraints"
TX_DEFAULT = "TxDefaultProfile"
TX = "TxProfile"
UNITS = ("A", "W")
# K01.FR.49: "If a number of phases is needed, numberPhases=3 will be assumed".
ASSUMED_PHASES = 3

_RECURRENCE_S = {"Daily": 86_400, "Weekly": 604_800}
_FOREVER = 2**62  # an end time later than any real one, in epoch seconds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_Number = TypeVar("_Number", int, float)


class CompositeError(EverkitError):
    """A composite schedule was asked for in a way that cannot be answered."""


class PlacedProfile(Protocol):
    """A charging profile (camelCase, as on the wire) and the EVSE it is installed on."""

    @property
    def evse_id(self) -> int: ...

    @property
    def profile(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class TransactionInfo:
    """The transaction running on an EVSE: its id (TxProfiles must name it) and its start
    (where Relative profiles begin)."""

    id: str
    started_at: datetime


@dataclass(frozen=True)
class CompositeSettings:
    """What the calculation needs from the device model (``from_device_model``)."""

    default_limit_A: float  # SmartChargingCtrlr.CompositeScheduleDefaultLimitAmps
    default_limit_W: float  # SmartChargingCtrlr.CompositeScheduleDefaultLimitWatts
    default_phases: int  # SmartChargingCtrlr.CompositeScheduleDefaultNumberPhases
    supply_voltage: float  # SmartChargingCtrlr.SupplyVoltage
    ac_phases: int | None  # ChargingStation.SupplyPhases; None for a DC station

    def __post_init__(self) -> None:
        if not 1 <= self.default_phases <= 3:
            raise CompositeError(f"default_phases must be 1..3, got {self.default_phases}")
        if self.supply_voltage <= 0:
            raise CompositeError(f"supply_voltage must be positive, got {self.supply_voltage}")
        if self.ac_phases is not None and not 1 <= self.ac_phases <= 3:
            raise CompositeError(f"ac_phases must be 1..3 or None (DC), got {self.ac_phases}")

    @classmethod
    def from_device_model(cls, model: DeviceModel) -> CompositeSettings:
        smart = "SmartChargingCtrlr"
        supply_phases = model.get_int("ChargingStation", "SupplyPhases")
        return cls(
            default_limit_A=model.get_float(smart, "CompositeScheduleDefaultLimitAmps"),
            default_limit_W=model.get_float(smart, "CompositeScheduleDefaultLimitWatts"),
            default_phases=model.get_int(smart, "CompositeScheduleDefaultNumberPhases"),
            supply_voltage=model.get_float(smart, "SupplyVoltage"),
            ac_phases=supply_phases or None,  # 0 means DC
        )

    def default_limit(self, unit: str) -> float:
        return self.default_limit_A if unit == "A" else self.default_limit_W


@dataclass(frozen=True)
class _Limits:
    """What applies during one stretch of time; amps and watts stay apart until the end."""

    amps: float | None = None
    watts: float | None = None
    phases: int | None = None

    @property
    def limited(self) -> bool:
        return self.amps is not None or self.watts is not None


_NO_LIMIT = _Limits()


@dataclass(frozen=True)
class _Span:
    """One period of one occurrence, in seconds from the window start, end exclusive."""

    start: int
    end: int
    stack_level: int
    limits: _Limits


@dataclass(frozen=True)
class _Steps:
    """A piecewise-constant function over the window: ``values[i]`` from ``starts[i]`` on."""

    starts: list[int]
    values: list[_Limits]

    def at(self, offset: int) -> _Limits:
        return self.values[bisect_right(self.starts, offset) - 1]


@dataclass(frozen=True)
class _Window:
    start: int  # epoch seconds
    duration: int  # seconds, at least 1


def composite_schedule(
    profiles: Sequence[PlacedProfile],
    *,
    evse_id: int,
    evse_ids: Sequence[int],
    start: datetime,
    duration_s: int,
    unit: str,
    settings: CompositeSettings,
    transactions: Mapping[int, TransactionInfo],
    assume_transaction: bool = True,
) -> dict[str, Any]:
    """The composite schedule for ``evse_id`` (0 = the station's grid connection) over
    [start, start + duration_s), in ``unit`` ("A" or "W").

    ``profiles`` are the installed ones (all EVSEs; ProfileStore.all()), ``evse_ids`` the
    station's EVSEs, ``transactions`` the running transaction per EVSE. With
    ``assume_transaction`` (what GetCompositeSchedule asks for) TxDefaultProfiles count on
    EVSEs without a transaction too; without it only where a transaction runs.
    """
    if unit not in UNITS:
        raise CompositeError(f"chargingRateUnit must be A or W, got {unit!r}")
    if duration_s < 0:
        raise CompositeError(f"duration must not be negative, got {duration_s}")
    if not evse_ids:
        raise CompositeError("the station has no EVSEs")
    if evse_id != 0 and evse_id not in evse_ids:
        raise CompositeError(f"no EVSE {evse_id} (EVSEs: {sorted(evse_ids)})")
    start = require_aware(start).astimezone(UTC).replace(microsecond=0)
    # A zero duration still answers with the limit in force at `start`.
    window = _Window(_epoch(start), max(duration_s, 1))
    ac = settings.ac_phases is not None

    def stack(purpose: str, on: Callable[[PlacedProfile], bool], anchor: int) -> _Steps:
        spans = [
            span
            for placed in profiles
            if placed.profile.get("chargingProfilePurpose") == purpose and on(placed)
            for span in _spans(placed.profile, window, anchor, ac=ac)
        ]
        return _stack(spans, window.duration)

    def evse_layer(evse: int) -> _Steps:
        transaction = transactions.get(evse)
        anchor = window.start if transaction is None else _epoch(transaction.started_at)

        def here(placed: PlacedProfile) -> bool:
            return placed.evse_id in (0, evse)

        layers = [stack(EXTERNAL, here, anchor)]
        if transaction is not None or assume_transaction:

            def of_transaction(placed: PlacedProfile) -> bool:
                return (
                    transaction is not None
                    and placed.evse_id == evse
                    and placed.profile.get("transactionId") == transaction.id
                )

            tx = stack(TX, of_transaction, anchor)
            tx_default = stack(TX_DEFAULT, here, anchor)
            layers.append(_combine([tx, tx_default], _first_limited))
        return _combine(layers, _lowest)

    station_max = stack(STATION_MAX, lambda placed: placed.evse_id == 0, window.start)
    if evse_id == 0:

        def total(limits: Sequence[_Limits]) -> _Limits:
            return _sum(limits, settings)

        own = _combine([evse_layer(evse) for evse in sorted(set(evse_ids))], total)
    else:
        own = evse_layer(evse_id)
    final = _combine([own, station_max], _lowest)

    periods: list[dict[str, Any]] = []
    for offset, limits in zip(final.starts, final.values, strict=True):
        period: dict[str, Any] = {"startPeriod": offset, "limit": _in_unit(limits, unit, settings)}
        if limits.limited and limits.phases is not None:
            period["numberPhases"] = limits.phases
        previous = periods[-1] if periods else None
        if previous is not None and _same_rate(previous, period):
            continue
        periods.append(period)
    return {
        "evseId": evse_id,
        "duration": duration_s,
        "scheduleStart": wire_timestamp(start),
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": periods,
    }


def period_at(schedule: Mapping[str, Any], moment: datetime) -> Mapping[str, Any]:
    """The chargingSchedulePeriod of a composite schedule in force at ``moment``."""
    start = parse_wire_timestamp(schedule["scheduleStart"])
    offset = (require_aware(moment) - start) // _SECOND
    if not 0 <= offset < max(int(schedule["duration"]), 1):
        raise CompositeError(
            f"{moment.isoformat()} is outside the schedule starting {schedule['scheduleStart']}"
            f" for {schedule['duration']} s"
        )
    periods: Sequence[Mapping[str, Any]] = schedule["chargingSchedulePeriod"]
    starts = [int(period["startPeriod"]) for period in periods]
    return periods[bisect_right(starts, offset) - 1]


def limit_at(schedule: Mapping[str, Any], moment: datetime) -> float:
    """The limit (in the schedule's unit) in force at ``moment``."""
    return float(period_at(schedule, moment)["limit"])


# occurrences and periods


def _epoch(moment: datetime) -> int:
    return (moment - _EPOCH) // _SECOND


def _profile_time(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise CompositeError(f"not a date-time: {text!r}") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # libocpp reads an offset-less time as UTC
    return _epoch(moment)


def _optional_time(profile: Mapping[str, Any], key: str) -> int | None:
    text = profile.get(key)
    return None if text is None else _profile_time(text)


def _occurrences(
    profile: Mapping[str, Any], schedule: Mapping[str, Any], window: _Window, anchor: int
) -> tuple[list[int], int | None]:
    """Where the schedule starts within reach of the window, and its recurrence in seconds."""
    kind = profile.get("chargingProfileKind")
    if kind == "Relative":
        return [anchor], None
    valid_from = _optional_time(profile, "validFrom")
    first = _optional_time(schedule, "startSchedule")
    if first is None:
        first = valid_from if valid_from is not None else window.start
    every = _RECURRENCE_S.get(profile.get("recurrencyKind", "")) if kind == "Recurring" else None
    if every is None:  # Absolute, or a Recurring profile without a known recurrencyKind
        return [first], None
    end = window.start + window.duration
    latest = first + (window.start - first) // every * every
    return list(range(latest, end + 1, every)), every


def _spans(profile: Mapping[str, Any], window: _Window, anchor: int, *, ac: bool) -> list[_Span]:
    schedules = profile.get("chargingSchedule") or []
    if not schedules:
        return []
    schedule = schedules[0]  # further schedules are ISO 15118 offers (K01.FR.34)
    stack_level = int(profile.get("stackLevel", 0))
    valid_from = _optional_time(profile, "validFrom")
    valid_to = _optional_time(profile, "validTo")
    duration = schedule.get("duration")
    is_amps = schedule.get("chargingRateUnit") == "A"
    periods = sorted(schedule["chargingSchedulePeriod"], key=lambda p: int(p["startPeriod"]))
    occurrences, every = _occurrences(profile, schedule, window, anchor)
    window_end = window.start + window.duration

    spans: list[_Span] = []
    for occurrence in occurrences:
        ends = [_FOREVER if valid_to is None else valid_to]
        if duration is not None:
            ends.append(occurrence + int(duration))
        if every is not None:
            ends.append(occurrence + every)
        schedule_end = min(ends)
        for index, period in enumerate(periods):
            begin = occurrence + int(period["startPeriod"])
            end = schedule_end
            if index + 1 < len(periods):
                end = min(end, occurrence + int(periods[index + 1]["startPeriod"]))
            if valid_from is not None:
                begin = max(begin, valid_from)
            begin, end = max(begin, window.start), min(end, window_end)
            if begin >= end:
                continue
            limit = float(period["limit"])
            phases = int(period.get("numberPhases", ASSUMED_PHASES)) if ac else None
            limits = (
                _Limits(amps=limit, phases=phases)
                if is_amps
                else _Limits(watts=limit, phases=phases)
            )
            spans.append(_Span(begin - window.start, end - window.start, stack_level, limits))
    return spans


# combining


def _stack(spans: Sequence[_Span], duration: int) -> _Steps:
    """At every instant the covering span of the highest stack level (first one on a tie)."""
    cuts = sorted({0, *(s.start for s in spans), *(s.end for s in spans if s.end < duration)})
    values: list[_Limits] = []
    for cut in cuts:
        best: _Span | None = None
        for span in spans:
            if span.start <= cut < span.end and (
                best is None or span.stack_level > best.stack_level
            ):
                best = span
        values.append(_NO_LIMIT if best is None else best.limits)
    return _Steps(cuts, values)


def _combine(layers: Sequence[_Steps], merge: Callable[[Sequence[_Limits]], _Limits]) -> _Steps:
    cuts = sorted({cut for layer in layers for cut in layer.starts})
    return _Steps(cuts, [merge([layer.at(cut) for layer in layers]) for cut in cuts])


def _defined_min(values: Iterable[_Number | None]) -> _Number | None:
    present = [value for value in values if value is not None]
    return min(present) if present else None


def _lowest(limits: Sequence[_Limits]) -> _Limits:
    return _Limits(
        amps=_defined_min([item.amps for item in limits]),
        watts=_defined_min([item.watts for item in limits]),
        phases=_defined_min([item.phases for item in limits]),
    )


def _first_limited(limits: Sequence[_Limits]) -> _Limits:
    """The first layer that has a limit (TxProfile over TxDefaultProfile)."""
    return next((item for item in limits if item.limited), _NO_LIMIT)


def _sum(limits: Sequence[_Limits], settings: CompositeSettings) -> _Limits:
    phases = [item.phases for item in limits if item.phases is not None]
    return _Limits(
        amps=sum(settings.default_limit_A if i.amps is None else i.amps for i in limits),
        watts=sum(settings.default_limit_W if i.watts is None else i.watts for i in limits),
        phases=max(phases) if phases else None,
    )


# output


def _in_unit(limits: _Limits, unit: str, settings: CompositeSettings) -> float:
    if not limits.limited:
        return _tenths_down(settings.default_limit(unit))
    phases = settings.default_phases if limits.phases is None else limits.phases
    volts = settings.supply_voltage * phases
    if unit == "A":
        candidates = [limits.amps, None if limits.watts is None else limits.watts / volts]
    else:
        candidates = [limits.watts, None if limits.amps is None else limits.amps * volts]
    lowest = _defined_min(candidates)
    assert lowest is not None  # `limited` means amps or watts is there
    return _tenths_down(lowest)


def _tenths_down(value: float) -> float:
    # The tolerance keeps 2.3 (binary 2.2999...) at 2.3 instead of flooring it to 2.2.
    return math.floor(value * 10 + 1e-6) / 10


def _same_rate(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return bool(a["limit"] == b["limit"] and a.get("numberPhases") == b.get("numberPhases"))
