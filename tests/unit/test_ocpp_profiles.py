"""ProfileStore: SetChargingProfile validation as libocpp does it (K01), Clear (K10), Get (K09),
transaction end (K02.FR.05), persistence, and libocpp's own fixtures."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case

from everkit.framework.errors import EverkitError
from everkit.ocpp201.device_model import DeviceModel, EvseShape, StationShape
from everkit.ocpp201.profile_validation import VALID_FROM_DEFAULT, VALID_TO_DEFAULT
from everkit.ocpp201.profiles import (
    InstalledProfile,
    ProfileError,
    ProfileStore,
    Verdict,
    conformed,
    report_batches,
)
from everkit.ocpp201.store import MIGRATIONS, SCHEMA_VERSION, Store

TX = "f1522902-1170-416f-8e43-9e3bce28fde7"
LIBOCPP = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "libocpp"
V2_FIXTURES = LIBOCPP / "tests" / "lib" / "ocpp" / "v2" / "json"
NO_TRANSACTIONS: Mapping[int, str | None] = {}


def model_for(
    *, phases: int = 3, evses: int = 2, overrides: Mapping[str, str] | None = None
) -> DeviceModel:
    """A station like libocpp's test fixture: AC, RateUnit A,W, phase switching supported."""
    shape = StationShape(
        station_id="CS001",
        vendor_name="Everkit",
        model="PyAC",
        evses=[EvseShape(n) for n in range(1, evses + 1)],
        supply_phases=phases,
    )
    settings = {"SmartChargingCtrlr.ACPhaseSwitchingSupported": "true", **(overrides or {})}
    return DeviceModel.standard(shape, settings)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "ocpp201.sqlite") as opened:
        yield opened


@pytest.fixture
def model() -> DeviceModel:
    return model_for()


@pytest.fixture
def profiles(store: Store, model: DeviceModel) -> ProfileStore:
    return ProfileStore(store, model, evse_ids=[1, 2])


def make(
    profile_id: int = 1,
    purpose: str = "TxDefaultProfile",
    *,
    kind: str = "Absolute",
    stack_level: int = 0,
    unit: str = "A",
    periods: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "id": 1,
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}] if periods is None else periods,
    }
    if kind != "Relative":
        schedule["startSchedule"] = "2024-01-01T00:00:00Z"
    profile: dict[str, Any] = {
        "id": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": [schedule],
    }
    if kind == "Recurring":
        profile["recurrencyKind"] = "Daily"
    profile.update(extra)
    return profile


def tx_profile(profile_id: int = 1, transaction_id: str = TX, **extra: Any) -> dict[str, Any]:
    return make(profile_id, "TxProfile", transactionId=transaction_id, **extra)


def rejected(reason_code: str, additional_info: str) -> Verdict:
    return Verdict(False, reason_code, additional_info)


def ids(items: list[InstalledProfile]) -> list[int]:
    return [item.id for item in items]


def entries(model: DeviceModel) -> int:
    return model.get_int("SmartChargingCtrlr", "Entries", instance="ChargingProfiles")


# K01 validation, one rule at a time


def test_K01_FR_22_external_constraints_are_rejected_in_set_charging_profile(
    profiles: ProfileStore,
) -> None:
    verdict = profiles.install(0, make(purpose="ChargingStationExternalConstraints"), {})
    assert verdict == rejected(
        "InvalidValue", "ChargingStationExternalConstraintsInSetChargingProfileRequest"
    )
    assert profiles.all() == []


def test_K05_FR_02_remote_start_takes_only_a_tx_profile_and_needs_no_transaction(
    profiles: ProfileStore,
) -> None:
    assert profiles.validate(1, make(), {}, remote_start=True) == rejected(
        "InvalidValue", "RequestStartTransactionNonTxProfile"
    )
    without_id = make(1, "TxProfile")
    assert profiles.validate(1, without_id, {}, remote_start=True).accepted
    assert profiles.validate(1, without_id, {}) == rejected(
        "MissingParam", "TxProfileMissingTransactionId"
    )
    assert profiles.validate(0, without_id, {}, remote_start=True) == rejected(
        "InvalidValue", "TxProfileEvseIdNotGreaterThanZero"
    )


def test_K01_FR_28_the_evse_must_exist(profiles: ProfileStore) -> None:
    assert profiles.install(3, make(), {}) == rejected("InvalidValue", "EvseDoesNotExist")
    assert profiles.install(-1, make(), {}) == rejected("InvalidValue", "EvseDoesNotExist")
    assert profiles.install(2, make(), {}).accepted


def test_K01_FR_05_an_external_constraints_id_cannot_be_taken(profiles: ProfileStore) -> None:
    profiles.inject(0, make(1, "ChargingStationExternalConstraints"), source="EMS")
    assert profiles.install(1, make(1), {}) == rejected(
        "DuplicateProfile", "ExistingChargingStationExternalConstraints"
    )
    assert profiles.all()[0].purpose == "ChargingStationExternalConstraints"


def test_K01_FR_05_same_id_replaces_the_profile_on_any_evse(profiles: ProfileStore) -> None:
    assert profiles.install(0, make(7, "ChargingStationMaxProfile"), {}).accepted
    assert profiles.install(1, make(7, stack_level=2), {}).accepted
    assert profiles.install(2, make(7, stack_level=3), {}).accepted
    (only,) = profiles.all()
    assert (only.evse_id, only.purpose, only.stack_level) == (2, "TxDefaultProfile", 3)


def test_stack_level_above_ProfileStackLevel_is_rejected(profiles: ProfileStore) -> None:
    assert profiles.install(1, make(stack_level=11), {}) == rejected(
        "InvalidStackLevel", "ChargingProfileStackLevelTooHigh"
    )
    assert profiles.install(1, make(stack_level=10), {}).accepted


def test_a_profile_without_schedules_is_rejected(profiles: ProfileStore) -> None:
    assert profiles.install(1, make(chargingSchedule=[]), {}) == rejected(
        "InvalidSchedule", "ChargingProfileEmptyChargingSchedules"
    )


def test_K01_FR_26_rate_unit_must_be_in_RateUnit(store: Store) -> None:
    only_watts = ProfileStore(store, model_for(overrides={"SmartChargingCtrlr.RateUnit": "W"}), [1])
    assert only_watts.install(1, make(unit="A"), {}) == rejected(
        "UnsupportedRateUnit", "ChargingScheduleChargingRateUnitUnsupported"
    )
    assert only_watts.install(1, make(unit="W"), {}).accepted


def test_a_schedule_without_periods_is_rejected(profiles: ProfileStore) -> None:
    assert profiles.install(1, make(periods=[]), {}) == rejected(
        "InvalidSchedule", "ChargingProfileNoChargingSchedulePeriods"
    )


def test_more_periods_than_PeriodsPerSchedule_are_rejected(profiles: ProfileStore) -> None:
    periods = [{"startPeriod": 60 * n, "limit": 10} for n in range(25)]
    assert profiles.install(1, make(periods=periods), {}) == rejected(
        "InvalidSchedule", "ChargingScheduleTooManyPeriods"
    )
    assert profiles.install(1, make(periods=periods[:24]), {}).accepted


def test_K01_FR_19_phaseToUse_only_with_numberPhases_1(profiles: ProfileStore) -> None:
    expected = rejected("InvalidSchedule", "ChargingSchedulePeriodInvalidPhaseToUse")
    three = [{"startPeriod": 0, "limit": 16, "numberPhases": 3, "phaseToUse": 1}]
    assert profiles.install(1, make(periods=three), {}) == expected
    absent = [{"startPeriod": 0, "limit": 16, "phaseToUse": 1}]
    assert profiles.install(1, make(periods=absent), {}) == expected
    fourth_phase = [{"startPeriod": 0, "limit": 16, "numberPhases": 1, "phaseToUse": 4}]
    assert profiles.install(1, make(periods=fourth_phase), {}) == expected


def test_K01_FR_20_phaseToUse_needs_ACPhaseSwitchingSupported(store: Store) -> None:
    periods = [{"startPeriod": 0, "limit": 16, "numberPhases": 1, "phaseToUse": 2}]
    default_model = model_for(overrides={"SmartChargingCtrlr.ACPhaseSwitchingSupported": "false"})
    assert ProfileStore(store, default_model, [1]).install(1, make(periods=periods), {}) == (
        rejected("InvalidSchedule", "ChargingSchedulePeriodPhaseToUseACPhaseSwitchingUnsupported")
    )
    assert ProfileStore(store, model_for(), [1]).install(1, make(periods=periods), {}).accepted


def test_the_standard_model_has_no_phase_switching() -> None:
    shape = StationShape(station_id="CS001", vendor_name="V", model="M")
    standard = DeviceModel.standard(shape)
    assert standard.get_bool("SmartChargingCtrlr", "ACPhaseSwitchingSupported") is False


def test_K01_FR_31_first_period_must_start_at_0(profiles: ProfileStore) -> None:
    periods = [{"startPeriod": 1, "limit": 16}]
    assert profiles.install(1, make(periods=periods), {}) == rejected(
        "InvalidSchedule", "ChargingProfileFirstStartScheduleIsNotZero"
    )


@pytest.mark.parametrize("starts", [[0, 2, 1], [0, 5, 5]])
def test_K01_FR_35_start_periods_must_increase(profiles: ProfileStore, starts: list[int]) -> None:
    periods = [{"startPeriod": start, "limit": 16} for start in starts]
    assert profiles.install(1, make(periods=periods), {}) == rejected(
        "InvalidSchedule", "ChargingSchedulePeriodsOutOfOrder"
    )


@pytest.mark.parametrize("field", [{"numberPhases": 1}, {"numberPhases": 1, "phaseToUse": 1}])
def test_K01_FR_44_dc_rejects_phase_values(store: Store, field: dict[str, int]) -> None:
    dc = ProfileStore(store, model_for(phases=0), [1])
    periods = [{"startPeriod": 0, "limit": 16, **field}]
    for evse_id in (0, 1):
        assert dc.install(evse_id, make(periods=periods), {}) == rejected(
            "InvalidSchedule", "ChargingSchedulePeriodExtraneousPhaseValues"
        )
    assert dc.install(1, make(), {}).accepted
    assert (
        "numberPhases"
        not in dc.all()[0].profile["chargingSchedule"][0]["chargingSchedulePeriod"][0]
    )


def test_K01_FR_45_numberPhases_above_SupplyPhases_is_rejected(store: Store) -> None:
    single_phase = ProfileStore(store, model_for(phases=1), [1])
    expected = rejected("InvalidSchedule", "ChargingSchedulePeriodUnsupportedNumberPhases")
    for number_phases in (3, 0):
        periods = [{"startPeriod": 0, "limit": 16, "numberPhases": number_phases}]
        assert single_phase.install(1, make(periods=periods), {}) == expected
    periods = [{"startPeriod": 0, "limit": 16, "numberPhases": 1}]
    assert single_phase.install(1, make(periods=periods), {}).accepted


def test_K01_FR_49_ac_periods_without_numberPhases_are_stored_with_3(
    profiles: ProfileStore,
) -> None:
    sent = make(periods=[{"startPeriod": 0, "limit": 16}, {"startPeriod": 60, "limit": 8}])
    assert profiles.install(1, sent, {}).accepted
    stored = profiles.all()[0].profile["chargingSchedule"][0]["chargingSchedulePeriod"]
    assert [period["numberPhases"] for period in stored] == [3, 3]
    assert "numberPhases" not in sent["chargingSchedule"][0]["chargingSchedulePeriod"][0]


@pytest.mark.parametrize("kind", ["Absolute", "Recurring"])
def test_K01_FR_40_absolute_and_recurring_need_startSchedule(
    profiles: ProfileStore, kind: str
) -> None:
    profile = make(kind=kind)
    del profile["chargingSchedule"][0]["startSchedule"]
    assert profiles.install(1, profile, {}) == rejected(
        "InvalidSchedule", "ChargingProfileMissingRequiredStartSchedule"
    )


def test_K01_FR_41_relative_must_not_have_startSchedule(profiles: ProfileStore) -> None:
    profile = make(kind="Relative")
    assert profiles.install(1, profile, {}).accepted
    profile["chargingSchedule"][0]["startSchedule"] = "2024-01-01T00:00:00Z"
    assert profiles.install(1, profile, {}) == rejected(
        "InvalidSchedule", "ChargingProfileExtraneousStartSchedule"
    )


def test_every_schedule_of_a_profile_is_checked(profiles: ProfileStore) -> None:
    profile = make()
    second = json.loads(json.dumps(profile["chargingSchedule"][0]))
    second["chargingSchedulePeriod"] = [{"startPeriod": 5, "limit": 1}]
    profile["chargingSchedule"].append(second)
    assert profiles.install(1, profile, {}) == rejected(
        "InvalidSchedule", "ChargingProfileFirstStartScheduleIsNotZero"
    )


def test_a_date_time_that_does_not_parse_is_rejected(profiles: ProfileStore) -> None:
    assert profiles.install(1, make(validTo="next tuesday"), {}) == rejected(
        "InvalidValue", "ChargingProfileInvalidDateTime"
    )


JANUARY = {"validFrom": "2024-01-01T13:00:00Z", "validTo": "2024-02-01T13:00:00Z"}


@pytest.mark.parametrize(
    "validity",
    [
        {"validFrom": "2024-01-15T00:00:00Z", "validTo": "2024-03-01T00:00:00Z"},
        {"validFrom": "2024-02-01T13:00:00Z"},  # touching counts
        {"validTo": "2024-01-01T13:00:00Z"},  # touching, unbounded start
        {},  # unbounded both ways
    ],
)
def test_K01_FR_06_overlapping_validity_on_same_evse_purpose_and_stack_is_rejected(
    profiles: ProfileStore, validity: dict[str, str]
) -> None:
    """libocpp's reading of K01.FR.06 (TxDefaultProfile and ChargingStationMaxProfile)."""
    assert profiles.install(1, make(1, stack_level=1, **JANUARY), {}).accepted
    assert profiles.install(1, make(2, stack_level=1, **validity), {}) == rejected(
        "DuplicateProfile", "DuplicateProfileValidityPeriod"
    )
    assert profiles.install(0, make(3, "ChargingStationMaxProfile", **JANUARY), {}).accepted
    assert profiles.install(0, make(4, "ChargingStationMaxProfile", **validity), {}) == rejected(
        "DuplicateProfile", "DuplicateProfileValidityPeriod"
    )


def test_K01_FR_06_disjoint_validity_other_stack_or_evse_or_same_id_is_accepted(
    profiles: ProfileStore,
) -> None:
    assert profiles.install(1, make(1, stack_level=1, **JANUARY), {}).accepted
    february = make(2, stack_level=1, validFrom="2024-02-01T13:00:01Z")
    assert profiles.install(1, february, {}).accepted
    assert profiles.install(1, make(3, stack_level=2), {}).accepted
    assert profiles.install(2, make(4, stack_level=1), {}).accepted
    assert profiles.install(1, make(1, stack_level=1, **JANUARY), {}).accepted  # itself
    assert ids(profiles.all()) == [1, 2, 3, 4]
    assert profiles.validate(1, make(5, stack_level=1, validTo="2024-02-01T13:00:00Z"), {}) == (
        rejected("DuplicateProfile", "DuplicateProfileValidityPeriod")
    )


def test_K01_FR_06_tx_profiles_may_overlap(profiles: ProfileStore) -> None:
    running = {1: TX}
    assert profiles.install(1, tx_profile(1, stack_level=1), running).accepted
    assert profiles.install(1, tx_profile(2, stack_level=2), running).accepted


def test_K01_FR_38_station_max_profile_only_on_evse_0_and_not_relative(
    profiles: ProfileStore,
) -> None:
    assert profiles.install(1, make(1, "ChargingStationMaxProfile"), {}) == rejected(
        "InvalidValue", "ChargingStationMaxProfileEvseIdGreaterThanZero"
    )
    relative = make(1, "ChargingStationMaxProfile", kind="Relative")
    assert profiles.install(0, relative, {}) == rejected(
        "InvalidValue", "ChargingStationMaxProfileCannotBeRelative"
    )
    assert profiles.install(0, make(1, "ChargingStationMaxProfile"), {}).accepted
    recurring = make(2, "ChargingStationMaxProfile", kind="Recurring", stack_level=1)
    assert profiles.install(0, recurring, {}).accepted


def test_K01_FR_52_tx_default_on_evse_0_clashes_with_one_on_an_evse(
    profiles: ProfileStore,
) -> None:
    assert profiles.install(1, make(1, stack_level=1), {}).accepted
    assert profiles.install(0, make(2, stack_level=1), {}) == rejected(
        "DuplicateProfile", "DuplicateTxDefaultProfileFound"
    )
    assert profiles.install(0, make(2, stack_level=2), {}).accepted
    assert profiles.install(0, make(1, stack_level=1), {}).accepted  # same id: moves it


def test_K01_FR_53_tx_default_on_an_evse_clashes_with_one_on_evse_0(
    profiles: ProfileStore,
) -> None:
    assert profiles.install(0, make(1, stack_level=1), {}).accepted
    assert profiles.install(1, make(2, stack_level=1), {}) == rejected(
        "DuplicateProfile", "DuplicateTxDefaultProfileFound"
    )
    assert profiles.install(1, make(2, stack_level=2), {}).accepted
    # EVSE 1 against EVSE 2 is not this rule's business (only the overlap check is per EVSE).
    assert profiles.install(2, make(3, stack_level=2), {}).accepted


def test_K01_FR_16_tx_profile_not_on_evse_0(profiles: ProfileStore) -> None:
    assert profiles.install(0, tx_profile(), {0: TX}) == rejected(
        "InvalidValue", "TxProfileEvseIdNotGreaterThanZero"
    )


def test_K01_FR_03_tx_profile_needs_transactionId(profiles: ProfileStore) -> None:
    assert profiles.install(1, make(1, "TxProfile"), {1: TX}) == rejected(
        "MissingParam", "TxProfileMissingTransactionId"
    )


def test_K01_FR_09_tx_profile_needs_a_transaction_on_the_evse(profiles: ProfileStore) -> None:
    expected = rejected("TxNotFound", "TxProfileEvseHasNoActiveTransaction")
    assert profiles.install(1, tx_profile(), {}) == expected
    assert profiles.install(1, tx_profile(), {1: None, 2: TX}) == expected


def test_K01_FR_33_tx_profile_must_name_the_running_transaction(profiles: ProfileStore) -> None:
    assert profiles.install(1, tx_profile(), {1: "wrong transaction id"}) == rejected(
        "TxNotFound", "TxProfileTransactionNotOnEvse"
    )
    assert profiles.install(1, tx_profile(), {1: TX}).accepted


def test_K01_FR_39_one_tx_profile_per_transaction_and_stack_level(profiles: ProfileStore) -> None:
    running = {1: TX, 2: "other"}
    assert profiles.install(1, tx_profile(2, stack_level=4), running).accepted
    assert profiles.install(1, tx_profile(1, stack_level=4), running) == rejected(
        "InvalidStackLevel", "TxProfileConflictingStackLevel"
    )
    assert profiles.install(1, tx_profile(1, stack_level=5), running).accepted
    assert profiles.install(2, tx_profile(3, "other", stack_level=4), running).accepted
    assert profiles.install(1, tx_profile(2, stack_level=4), running).accepted  # same id


def test_a_purpose_outside_ocpp_2_0_1_is_an_internal_error(profiles: ProfileStore) -> None:
    """libocpp answers purposes it cannot handle (2.1's LocalGeneration) with InternalError."""
    assert profiles.install(1, make(purpose="LocalGeneration"), {}) == rejected(
        "InternalError", "InvalidProfileType"
    )


def test_a_rejected_profile_changes_nothing(profiles: ProfileStore, model: DeviceModel) -> None:
    assert profiles.install(1, make(1, stack_level=1), {}).accepted
    assert not profiles.install(1, make(1, stack_level=1, periods=[]), {}).accepted
    assert profiles.all()[0].profile["chargingSchedule"][0]["chargingSchedulePeriod"]
    assert entries(model) == 1


def test_the_bridge_path_from_snake_case_gives_the_same_verdict(profiles: ProfileStore) -> None:
    """The ocpp package hands snake_case; snake_to_camel_case restores the wire names."""
    periods = [{"startPeriod": 0, "limit": 16, "numberPhases": 1, "phaseToUse": 3}]
    wire = tx_profile(periods=periods, validFrom="2024-01-01T00:00:00Z")
    restored = snake_to_camel_case(camel_to_snake_case(wire))
    assert restored == wire
    assert profiles.install(1, restored, {1: TX}).accepted


# K10, K02.FR.05, K09


def test_K10_clear_by_id(profiles: ProfileStore, model: DeviceModel) -> None:
    profiles.install(1, make(1), {})
    profiles.install(2, make(2), {})
    assert profiles.clear(profile_id=178) is False
    assert profiles.clear(profile_id=1, evse_id=2) is True  # the id alone decides
    assert ids(profiles.all()) == [2]
    assert profiles.clear(profile_id=1) is False
    assert entries(model) == 1


def test_K10_clear_by_criteria_needs_every_given_criterion(profiles: ProfileStore) -> None:
    profiles.install(0, make(1, "ChargingStationMaxProfile", stack_level=1), {})
    profiles.install(1, make(2, stack_level=1), {})
    profiles.install(2, make(3, stack_level=1), {})
    profiles.install(2, make(4, stack_level=2), {})
    assert profiles.clear(evse_id=2, purpose="TxDefaultProfile", stack_level=3) is False
    assert profiles.clear(evse_id=2, stack_level=1) is True
    assert ids(profiles.all()) == [1, 2, 4]
    assert profiles.clear(purpose="TxDefaultProfile") is True
    assert ids(profiles.all()) == [1]
    assert profiles.clear(evse_id=0) is True
    assert profiles.all() == []


def test_K10_clear_without_criteria_clears_all_but_external_constraints(
    profiles: ProfileStore, model: DeviceModel
) -> None:
    profiles.install(1, make(1), {})
    profiles.inject(0, make(2, "ChargingStationExternalConstraints"), source="EMS")
    assert profiles.clear() is True
    assert ids(profiles.all()) == [2]
    assert profiles.clear() is False
    assert entries(model) == 1


def test_K10_external_constraints_are_never_cleared(profiles: ProfileStore) -> None:
    profiles.inject(0, make(5, "ChargingStationExternalConstraints"), source="SO")
    assert profiles.clear(profile_id=5) is False
    assert profiles.clear(evse_id=0) is False
    assert profiles.clear(purpose="ChargingStationExternalConstraints") is False
    assert ids(profiles.all()) == [5]


def test_K02_FR_05_tx_profiles_of_an_ended_transaction_are_removed(
    profiles: ProfileStore, model: DeviceModel
) -> None:
    running = {1: TX, 2: "other"}
    profiles.install(1, tx_profile(1, stack_level=1), running)
    profiles.install(1, tx_profile(2, stack_level=2), running)
    profiles.install(2, tx_profile(3, "other"), running)
    profiles.install(1, make(4), running)
    assert profiles.remove_transaction_profiles(TX) == [1, 2]
    assert ids(profiles.all()) == [3, 4]
    assert profiles.remove_transaction_profiles(TX) == []
    assert entries(model) == 2


def test_K09_matching_profiles_for_get_charging_profiles(profiles: ProfileStore) -> None:
    """libocpp's GetChargingProfiles cases: Max id 1 on EVSE 0, TxDefault id 2 on EVSE 1."""
    profiles.install(0, make(1, "ChargingStationMaxProfile"), {})
    profiles.install(1, make(2, stack_level=1), {})
    assert ids(profiles.matching()) == [1, 2]
    assert ids(profiles.matching(evse_id=0)) == [1]
    assert ids(profiles.matching(evse_id=1)) == [2]
    assert ids(profiles.matching(evse_id=2)) == []
    assert ids(profiles.matching(ids=[1])) == [1]
    assert ids(profiles.matching(ids=[1], evse_id=1)) == []
    assert ids(profiles.matching(ids=[2], purpose="ChargingStationMaxProfile")) == [2]
    assert ids(profiles.matching(stack_level=1)) == [2]
    assert ids(profiles.matching(purpose="ChargingStationMaxProfile")) == [1]
    assert ids(profiles.matching(sources=["CSO"])) == [1, 2]
    assert ids(profiles.matching(sources=["EMS"])) == []


def test_K09_reports_are_one_per_evse_and_source(profiles: ProfileStore) -> None:
    profiles.install(1, make(3), {})
    profiles.install(0, make(1, "ChargingStationMaxProfile"), {})
    profiles.inject(0, make(2, "ChargingStationExternalConstraints"), source="EMS")
    profiles.install(1, make(4, stack_level=1), {})
    batches = report_batches(profiles.matching())
    assert [(evse, source, [p["id"] for p in items]) for evse, source, items in batches] == [
        (0, "CSO", [1]),
        (0, "EMS", [2]),
        (1, "CSO", [3, 4]),
    ]
    assert report_batches([]) == []


def test_for_evse_adds_the_station_wide_profiles(profiles: ProfileStore) -> None:
    profiles.install(2, make(1), {})
    profiles.install(0, make(2, "ChargingStationMaxProfile"), {})
    profiles.install(1, make(3), {})
    assert ids(profiles.for_evse(1)) == [3, 2]
    assert ids(profiles.for_evse(2)) == [1, 2]
    assert ids(profiles.for_evse(0)) == [2]


def test_applicable_is_conformed_and_keeps_only_the_running_transactions_tx_profiles(
    profiles: ProfileStore,
) -> None:
    profiles.install(1, tx_profile(1), {1: TX})
    profiles.inject(1, tx_profile(2, "older"), source="CSO")
    profiles.install(0, make(3, kind="Relative"), {})
    assert ids(profiles.applicable(1, {1: TX})) == [1, 3]
    assert ids(profiles.applicable(1, {})) == [3]
    (station_default,) = profiles.applicable(2, {2: TX})
    assert station_default.profile["validFrom"] == VALID_FROM_DEFAULT
    assert station_default.profile["validTo"] == VALID_TO_DEFAULT
    assert "validFrom" not in profiles.all()[2].profile


def test_conformed_fills_defaults_the_way_libocpp_calculates() -> None:
    sent = make(
        kind="Recurring",
        periods=[
            {"startPeriod": 0, "limit": 6},
            {"startPeriod": 60, "limit": 8, "numberPhases": 1},
        ],
        validFrom="2020-01-01T00:00:00",
    )
    sent["chargingSchedule"][0]["startSchedule"] = "2020-01-09T17:00:00"
    before = json.dumps(sent)
    ac = conformed(sent, ac_phases=3)
    assert json.dumps(sent) == before  # a copy
    assert ac["validFrom"] == "2020-01-01T00:00:00Z"  # no offset means UTC
    assert ac["validTo"] == VALID_TO_DEFAULT
    assert ac["chargingSchedule"][0]["startSchedule"] == "2020-01-09T17:00:00Z"
    periods = ac["chargingSchedule"][0]["chargingSchedulePeriod"]
    assert [p["numberPhases"] for p in periods] == [3, 1]
    assert (
        conformed(sent, ac_phases=1)["chargingSchedule"][0]["chargingSchedulePeriod"][0][
            "numberPhases"
        ]
        == 3
    )
    dc = conformed(sent, ac_phases=None)
    assert "numberPhases" not in dc["chargingSchedule"][0]["chargingSchedulePeriod"][0]
    assert dc["validFrom"] == "2020-01-01T00:00:00Z"


# injection, counting, persistence


def test_inject_stores_without_validation_but_refuses_what_cannot_be_stored(
    profiles: ProfileStore,
) -> None:
    profiles.inject(1, make(1, periods=[{"startPeriod": 7, "limit": 1}]), source="CSO")
    assert ids(profiles.all()) == [1]
    with pytest.raises(ProfileError, match="chargingLimitSource"):
        profiles.inject(0, make(2), source="Grid")
    with pytest.raises(ProfileError, match="integer id"):
        profiles.inject(0, make(2) | {"id": "2"}, source="EMS")
    with pytest.raises(ProfileError, match="purpose"):
        profiles.inject(0, make(2, "LocalGeneration"), source="EMS")
    with pytest.raises(ProfileError, match="date-time") as raised:
        profiles.inject(0, make(2, validFrom="soon"), source="EMS")
    assert isinstance(raised.value, EverkitError)


def test_entries_counts_installed_profiles(profiles: ProfileStore, model: DeviceModel) -> None:
    assert entries(model) == 0
    profiles.install(1, make(1), {})
    profiles.inject(0, make(2, "ChargingStationExternalConstraints"), source="EMS")
    profiles.install(2, make(1), {})  # a replacement, not a new entry
    assert entries(model) == 2


def test_profiles_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ocpp201.sqlite"
    with Store.open(path) as store:
        before = ProfileStore(store, model_for(), [1, 2])
        before.install(1, tx_profile(1), {1: TX})
        before.inject(0, make(2, "ChargingStationExternalConstraints"), source="EMS")
        before.install(2, make(3), {})
        before.clear(profile_id=3)
        installed = before.all()
    with Store.open(path) as store:
        model = model_for()
        after = ProfileStore(store, model, [1, 2])
        assert after.all() == installed
        assert [(i.evse_id, i.source) for i in after.all()] == [(1, "CSO"), (0, "EMS")]
        assert entries(model) == 2
        # The restored state takes part in validation: K01.FR.05 and K01.FR.39 still hold.
        assert not after.install(1, make(2), {}).accepted
        assert not after.install(1, tx_profile(9), {1: TX}).accepted


def test_a_version_1_store_gets_the_source_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as raw:
        for statement in MIGRATIONS[0]:
            raw.execute(statement)
        raw.execute(
            "INSERT INTO profiles (profile_id, evse_id, profile) VALUES (?, ?, ?)",
            (4, 1, json.dumps(make(4))),
        )
        raw.execute("PRAGMA user_version = 1")
    raw.close()
    assert SCHEMA_VERSION == 2
    with Store.open(path) as store:
        assert store.load_profile_rows() == [(1, make(4), "CSO")]
        assert store.load_profiles() == [(1, make(4))]
        store.save_profile(4, 2, make(4), "EMS")
        store.delete_profiles([])
        assert store.load_profile_rows() == [(2, make(4), "EMS")]
        store.delete_profiles([4, 5])
        assert store.load_profile_rows() == []


# libocpp's fixtures

TX_ON_EVSE_1 = {1: TX}


def v2_fixtures() -> list[Path]:
    return sorted(V2_FIXTURES.rglob("*.json")) if V2_FIXTURES.is_dir() else []


def evse_for(path: Path, profile: Mapping[str, Any]) -> int:
    """The EVSE libocpp's tests put the fixture on: the folder says so where it is 0 or 1."""
    if path.parent.name in ("0", "1"):
        return int(path.parent.name)
    return 0 if profile["chargingProfilePurpose"] == "ChargingStationMaxProfile" else 1


@pytest.mark.skipif(not V2_FIXTURES.is_dir(), reason=f"libocpp fixtures absent: {V2_FIXTURES}")
def test_every_libocpp_v2_fixture_is_accepted_on_libocpps_test_station(tmp_path: Path) -> None:
    """An AC 3-phase, 2-EVSE station with RateUnit A,W and phase switching, a transaction
    with the fixtures' id on EVSE 1; each fixture installed alone as SetChargingProfile.
    The only refusal is the documented one: ChargingStationExternalConstraints (K01.FR.22),
    which libocpp's tests inject instead."""
    fixtures = v2_fixtures()
    assert len(fixtures) == 41
    outcomes: dict[str, Verdict] = {}
    for number, path in enumerate(fixtures):
        profile = json.loads(path.read_text())
        with Store.open(tmp_path / f"{number}.sqlite") as store:
            fresh = ProfileStore(store, model_for(), [1, 2])
            outcomes[str(path.relative_to(V2_FIXTURES))] = fresh.install(
                evse_for(path, profile), profile, TX_ON_EVSE_1
            )
            if path.parent.parent.name == "external" and path.parent.name == "0":
                fresh.inject(0, profile, source="EMS")
    refused = {name: verdict for name, verdict in outcomes.items() if not verdict.accepted}
    assert refused == {
        "external/0/ChargingStationExternalConstraintProfile_grid_hourly.json": rejected(
            "InvalidValue", "ChargingStationExternalConstraintsInSetChargingProfileRequest"
        )
    }


@pytest.mark.skipif(not V2_FIXTURES.is_dir(), reason=f"libocpp fixtures absent: {V2_FIXTURES}")
def test_libocpp_no_gap_pair_is_the_overlap_libocpp_rejects(profiles: ProfileStore) -> None:
    """The README's no_gap case: two TxDefaultProfiles on EVSE 0, same stackLevel, unbounded
    validity; the second is refused by the K01.FR.06 check, so the replay injects it."""
    first, second = (
        json.loads((V2_FIXTURES / "no_gap" / name).read_text())
        for name in ("TxDefaultProfile_401.json", "TxDefaultProfile_402.json")
    )
    assert profiles.install(0, first, {}).accepted
    assert profiles.install(0, second, {}) == rejected(
        "DuplicateProfile", "DuplicateProfileValidityPeriod"
    )
    profiles.inject(0, second, source="CSO")
    assert ids(profiles.for_evse(1)) == [401, 402]
