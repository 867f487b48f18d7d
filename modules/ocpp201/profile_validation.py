"""The checks one ChargingProfile must pass on its own, and libocpp's "conform" step (OCPP K01).

Pure: no store, no clock. Profiles are camelCase dicts exactly as on the wire. The checks
that compare a profile with the installed ones (K01.FR.05/06/39/52/53) and with running
transactions (K01.FR.09/33) live in ``profiles``; this module answers what the profile and
the station's capabilities alone decide, in EVerest libocpp's order (``validate_profile_schedules``
in lib/ocpp/v2/functional_blocks/smart_charging.cpp):

    chargingSchedule empty                                        EmptyChargingSchedules
    per schedule:
      chargingRateUnit not in SmartChargingCtrlr.RateUnit         K01.FR.26
      no periods                                                  NoChargingSchedulePeriods
      more periods than SmartChargingCtrlr.PeriodsPerSchedule     (ours, see below)
      per period:
        phaseToUse without numberPhases = 1                       K01.FR.19
        phaseToUse and not ACPhaseSwitchingSupported              K01.FR.20
        first startPeriod not 0                                   K01.FR.31
        startPeriod not strictly increasing                       K01.FR.35
        DC and numberPhases/phaseToUse present                    K01.FR.44 (rejected, as libocpp)
        AC and numberPhases > ChargingStation.SupplyPhases        K01.FR.45
      not Relative and no startSchedule                           K01.FR.40
      Relative with startSchedule                                 K01.FR.41

``Verdict.additional_info`` is libocpp's ProfileValidationResultEnum name and ``reason_code``
its reasonCode (``REASON_CODES``). Where libocpp has no check we add one under our own name:
``ChargingScheduleTooManyPeriods`` (PeriodsPerSchedule), ``ChargingProfileStackLevelTooHigh``
(ProfileStackLevel), ``ChargingProfileInvalidDateTime`` (a validFrom/validTo/startSchedule that
does not parse; libocpp fails earlier, while decoding the JSON); numberPhases below 1 and
phaseToUse outside 1..3 count as the libocpp problems of that field.

Date-times without a UTC offset are read as UTC, as libocpp reads them (some of its fixtures
have none).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from .device_model import DeviceModel

CurrentType = Literal["AC", "DC"]

# libocpp's names of the problems it reports, with the reasonCode each is answered with.
REASON_CODES: dict[str, str] = {
    "EvseDoesNotExist": "InvalidValue",
    "ExistingChargingStationExternalConstraints": "DuplicateProfile",
    "ChargingStationExternalConstraintsInSetChargingProfileRequest": "InvalidValue",
    "RequestStartTransactionNonTxProfile": "InvalidValue",
    "ChargingProfileEmptyChargingSchedules": "InvalidSchedule",
    "ChargingScheduleChargingRateUnitUnsupported": "UnsupportedRateUnit",
    "ChargingProfileNoChargingSchedulePeriods": "InvalidSchedule",
    "ChargingSchedulePeriodInvalidPhaseToUse": "InvalidSchedule",
    "ChargingSchedulePeriodPhaseToUseACPhaseSwitchingUnsupported": "InvalidSchedule",
    "ChargingProfileFirstStartScheduleIsNotZero": "InvalidSchedule",
    "ChargingSchedulePeriodsOutOfOrder": "InvalidSchedule",
    "ChargingSchedulePeriodExtraneousPhaseValues": "InvalidSchedule",
    "ChargingSchedulePeriodUnsupportedNumberPhases": "InvalidSchedule",
    "ChargingProfileMissingRequiredStartSchedule": "InvalidSchedule",
    "ChargingProfileExtraneousStartSchedule": "InvalidSchedule",
    "DuplicateProfileValidityPeriod": "DuplicateProfile",
    "DuplicateTxDefaultProfileFound": "DuplicateProfile",
    "ChargingStationMaxProfileEvseIdGreaterThanZero": "InvalidValue",
    "ChargingStationMaxProfileCannotBeRelative": "InvalidValue",
    "TxProfileEvseIdNotGreaterThanZero": "InvalidValue",
    "TxProfileMissingTransactionId": "MissingParam",
    "TxProfileEvseHasNoActiveTransaction": "TxNotFound",
    "TxProfileTransactionNotOnEvse": "TxNotFound",
    "TxProfileConflictingStackLevel": "InvalidStackLevel",
    "InvalidProfileType": "InternalError",
    # ours: libocpp does not check these
    "ChargingScheduleTooManyPeriods": "InvalidSchedule",
    "ChargingProfileStackLevelTooHigh": "InvalidStackLevel",
    "ChargingProfileInvalidDateTime": "InvalidValue",
}

# What libocpp puts in place of an absent validFrom/validTo before it calculates.
VALID_FROM_DEFAULT = "1970-01-01T00:00:00Z"
VALID_TO_DEFAULT = "9999-12-31T23:59:59Z"
# K01.FR.49: an AC period without numberPhases means 3 phases.
DEFAULT_NUMBER_PHASES = 3

EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Verdict:
    """The answer to a SetChargingProfile: Accepted, or Rejected with statusInfo."""

    accepted: bool
    reason_code: str | None = None
    additional_info: str | None = None

    @classmethod
    def rejected(cls, problem: str) -> Verdict:
        return cls(False, REASON_CODES[problem], problem)


ACCEPTED = Verdict(True)


@dataclass(frozen=True)
class Capabilities:
    """The SmartChargingCtrlr and ChargingStation values the checks depend on."""

    rate_units: tuple[str, ...]
    phase_switching: bool
    periods_per_schedule: int
    max_stack_level: int
    station_phases: int

    @classmethod
    def of(cls, model: DeviceModel) -> Capabilities:
        smart = "SmartChargingCtrlr"
        return cls(
            rate_units=tuple(model.get_list(smart, "RateUnit")),
            phase_switching=model.get_bool(smart, "ACPhaseSwitchingSupported"),
            periods_per_schedule=model.get_int(smart, "PeriodsPerSchedule"),
            max_stack_level=model.get_int(smart, "ProfileStackLevel"),
            station_phases=model.get_int("ChargingStation", "SupplyPhases"),
        )


def current_type(supply_phases: int) -> CurrentType | None:
    """AC for 1 or 3 supply phases, DC for 0; None for anything else (libocpp's Unknown,
    which skips the phase checks)."""
    if supply_phases in (1, 3):
        return "AC"
    if supply_phases == 0:
        return "DC"
    return None


def parse_time(text: str) -> datetime:
    """An OCPP date-time as an aware UTC datetime; no offset means UTC. ValueError if bad."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def validity(profile: Mapping[str, Any]) -> tuple[datetime, datetime]:
    """[validFrom, validTo]; an absent bound is unbounded."""
    valid_from = profile.get("validFrom")
    valid_to = profile.get("validTo")
    return (
        EARLIEST if valid_from is None else parse_time(valid_from),
        LATEST if valid_to is None else parse_time(valid_to),
    )


def validities_overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """libocpp's K01.FR.06 reading: the validity ranges meet, touching bounds included."""
    a_from, a_to = validity(a)
    b_from, b_to = validity(b)
    return a_from <= b_to and a_to >= b_from


def date_time_problem(profile: Mapping[str, Any]) -> str | None:
    texts = [profile.get("validFrom"), profile.get("validTo")]
    texts += [schedule.get("startSchedule") for schedule in profile.get("chargingSchedule", [])]
    for text in texts:
        if text is None:
            continue
        try:
            parse_time(text)
        except (TypeError, ValueError):
            return "ChargingProfileInvalidDateTime"
    return None


def schedule_problem(
    profile: Mapping[str, Any], *, current: CurrentType | None, capabilities: Capabilities
) -> str | None:
    """The first problem of the profile's schedules (order in the module docstring)."""
    schedules = profile.get("chargingSchedule") or []
    if not schedules:
        return "ChargingProfileEmptyChargingSchedules"
    relative = profile.get("chargingProfileKind") == "Relative"
    for schedule in schedules:
        if schedule.get("chargingRateUnit") not in capabilities.rate_units:
            return "ChargingScheduleChargingRateUnitUnsupported"
        periods = schedule.get("chargingSchedulePeriod") or []
        if not periods:
            return "ChargingProfileNoChargingSchedulePeriods"
        if len(periods) > capabilities.periods_per_schedule:
            return "ChargingScheduleTooManyPeriods"
        for index in range(len(periods)):
            problem = _period_problem(index, periods, current, capabilities)
            if problem is not None:
                return problem
        if not relative and "startSchedule" not in schedule:
            return "ChargingProfileMissingRequiredStartSchedule"
        if relative and "startSchedule" in schedule:
            return "ChargingProfileExtraneousStartSchedule"
    return None


def _period_problem(
    index: int,
    periods: list[Mapping[str, Any]],
    current: CurrentType | None,
    capabilities: Capabilities,
) -> str | None:
    period = periods[index]
    number_phases = period.get("numberPhases")
    phase_to_use = period.get("phaseToUse")
    if phase_to_use is not None and (number_phases != 1 or phase_to_use not in (1, 2, 3)):
        return "ChargingSchedulePeriodInvalidPhaseToUse"
    if phase_to_use is not None and not capabilities.phase_switching:
        return "ChargingSchedulePeriodPhaseToUseACPhaseSwitchingUnsupported"
    if index == 0 and period["startPeriod"] != 0:
        return "ChargingProfileFirstStartScheduleIsNotZero"
    if index + 1 < len(periods) and periods[index + 1]["startPeriod"] <= period["startPeriod"]:
        return "ChargingSchedulePeriodsOutOfOrder"
    if current == "DC" and (number_phases is not None or phase_to_use is not None):
        return "ChargingSchedulePeriodExtraneousPhaseValues"
    if (
        current == "AC"
        and number_phases is not None
        and not 1 <= number_phases <= capabilities.station_phases
    ):
        return "ChargingSchedulePeriodUnsupportedNumberPhases"
    return None


def conformed(profile: Mapping[str, Any], *, ac_phases: int | None) -> dict[str, Any]:
    """A copy of ``profile`` the way libocpp calculates with it.

    - absent validFrom/validTo become VALID_FROM_DEFAULT/VALID_TO_DEFAULT;
    - date-times without a UTC offset get ``Z`` (libocpp reads them as UTC);
    - on AC (``ac_phases`` = the supply phases, 1 or 3) every period without numberPhases gets
      3 (K01.FR.49 says "assume 3" whatever the supply; libocpp does the same); on DC
      (``ac_phases`` None) periods are left as they are.
    """
    result = copy.deepcopy(dict(profile))
    result["validFrom"] = _with_offset(result.get("validFrom", VALID_FROM_DEFAULT))
    result["validTo"] = _with_offset(result.get("validTo", VALID_TO_DEFAULT))
    for schedule in result.get("chargingSchedule", []):
        if "startSchedule" in schedule:
            schedule["startSchedule"] = _with_offset(schedule["startSchedule"])
        if ac_phases is not None:
            for period in schedule.get("chargingSchedulePeriod", []):
                period.setdefault("numberPhases", DEFAULT_NUMBER_PHASES)
    return result


def with_number_phases(profile: Mapping[str, Any], current: CurrentType | None) -> dict[str, Any]:
    """A copy with K01.FR.49 applied on AC; what an install stores."""
    result = copy.deepcopy(dict(profile))
    if current == "AC":
        for schedule in result.get("chargingSchedule", []):
            for period in schedule.get("chargingSchedulePeriod", []):
                period.setdefault("numberPhases", DEFAULT_NUMBER_PHASES)
    return result


def _with_offset(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        naive = datetime.fromisoformat(text).tzinfo is None
    except ValueError:
        return text
    return text + "Z" if naive else text
