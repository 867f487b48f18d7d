"""The charging profiles installed on this station (OCPP 2.0.1 K01, K02, K08-K10), sans-IO.

Profiles are camelCase dicts exactly as on the wire (the bridge converts the ``ocpp``
package's snake_case with ``ocpp.charge_point.snake_to_camel_case`` first). Every change is
written to the SQLite ``Store`` before it shows in memory, and a new ``ProfileStore`` loads
what an earlier one left. ``SmartChargingCtrlr.Entries(ChargingProfiles)`` always holds the
number of installed profiles.

API
---
``ProfileStore(store, model, evse_ids)``
    ``validate(evse_id, profile, transactions, *, remote_start=False) -> Verdict``
        SetChargingProfile's checks, in libocpp's order (below). ``transactions`` maps an
        EVSE id to the id of the transaction running there (None/absent: none).
        ``remote_start=True`` checks a RequestStartTransaction profile instead (K05.FR.02:
        TxProfile only; no transactionId needed, so no transaction checks).
    ``install(evse_id, profile, transactions, source="CSO") -> Verdict``
        validate, then store (replacing the profile with the same id on any EVSE, K01.FR.05),
        with numberPhases = 3 filled in on AC (K01.FR.49). Nothing is stored on rejection.
    ``inject(evse_id, profile, source)``
        store without validation: locally set limits (ChargingStationExternalConstraints from
        an EMS, SO or Other) and test set-ups that libocpp itself injects.
    ``clear(profile_id=None, evse_id=None, purpose=None, stack_level=None) -> bool``
        ClearChargingProfile (K10): by id (other criteria ignored), else every profile
        matching all given criteria (none given: all). ChargingStationExternalConstraints are
        never cleared; the bridge answers criteria naming that purpose with Rejected itself
        (K10.FR.06). True if anything was removed (Accepted, else Unknown).
    ``remove_transaction_profiles(transaction_id) -> list[int]``
        K02.FR.05: the TxProfiles of an ended transaction go; returns their ids.
    ``matching(evse_id=None, purpose=None, stack_level=None, ids=None, sources=None)``
        GetChargingProfiles (K09), as libocpp: given ids select by id (and evseId) alone;
        otherwise purpose, stackLevel and sources narrow; evseId 0 means the station-wide
        profiles only. ``report_batches`` groups the result per ReportChargingProfiles.
    ``for_evse(evse_id)`` the EVSE's profiles plus the station-wide (EVSE 0) ones;
    ``applicable(evse_id, transactions)`` those, ``conformed``, without TxProfiles whose
    transaction is not the one running on the EVSE (what libocpp calculates with);
    ``all()`` everything.
``conformed(profile, *, ac_phases)`` libocpp's conform step before calculations (from
``profile_validation``; it is used by ``applicable``).

Validation order (libocpp ``handle_set_charging_profile_req``/``conform_and_validate_profile``):
ChargingStationExternalConstraints purpose (K01.FR.22); date-times parse (ours); EVSE exists
(K01.FR.28); id not used by a ChargingStationExternalConstraints profile (K01.FR.05);
stackLevel <= ProfileStackLevel (ours); schedules (``profile_validation``); then by purpose:
ChargingStationMaxProfile: no same-stackLevel profile on EVSE 0 with overlapping validity
(libocpp's K01.FR.06), EVSE 0 only, not Relative (K01.FR.38); TxDefaultProfile: the same
overlap check on its EVSE, and no TxDefaultProfile with its stackLevel and another id on the
other scope, EVSE 0 vs EVSE > 0 (K01.FR.52/53); TxProfile: EVSE > 0 (K01.FR.16), transactionId
present (K01.FR.03), a transaction runs on the EVSE (K01.FR.09) and it is that one
(K01.FR.33), no other TxProfile of that transaction with the same stackLevel (K01.FR.39).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..framework.errors import EverkitError
from .device_model import DeviceModel, UnknownVariable
from .profile_validation import (
    ACCEPTED,
    Capabilities,
    CurrentType,
    Verdict,
    conformed,
    current_type,
    date_time_problem,
    schedule_problem,
    validities_overlap,
    with_number_phases,
)
from .store import Store

__all__ = [
    "PURPOSES",
    "SOURCES",
    "InstalledProfile",
    "ProfileError",
    "ProfileStore",
    "Verdict",
    "conformed",
    "report_batches",
]

SOURCES = ("EMS", "Other", "SO", "CSO")  # ChargingLimitSourceEnumType
PURPOSES = (
    "ChargingStationExternalConstraints",
    "ChargingStationMaxProfile",
    "TxDefaultProfile",
    "TxProfile",
)
EXTERNAL = "ChargingStationExternalConstraints"
STATION_WIDE = 0


class ProfileError(EverkitError):
    """A profile handed to ``inject`` cannot be stored (no integer id, unknown source...)."""


@dataclass(frozen=True)
class InstalledProfile:
    """One installed profile; treat ``profile`` as read-only."""

    evse_id: int
    profile: dict[str, Any]
    source: str

    @property
    def id(self) -> int:
        return int(self.profile["id"])

    @property
    def purpose(self) -> str:
        return str(self.profile["chargingProfilePurpose"])

    @property
    def stack_level(self) -> int:
        return int(self.profile["stackLevel"])

    @property
    def transaction_id(self) -> str | None:
        transaction_id = self.profile.get("transactionId")
        return None if transaction_id is None else str(transaction_id)


def report_batches(
    installed: Iterable[InstalledProfile],
) -> list[tuple[int, str, list[dict[str, Any]]]]:
    """(evseId, chargingLimitSource, profiles) per ReportChargingProfilesRequest, ordered by
    EVSE then source; the bridge sends tbc=true on all but the last (K09)."""
    batches: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for item in sorted(installed, key=lambda i: (i.evse_id, i.source, i.id)):
        batches.setdefault((item.evse_id, item.source), []).append(item.profile)
    return [(evse_id, source, profiles) for (evse_id, source), profiles in batches.items()]


class ProfileStore:
    """The installed profiles, persisted in ``store``; see the module docstring."""

    def __init__(self, store: Store, model: DeviceModel, evse_ids: Collection[int]) -> None:
        self._store = store
        self._model = model
        self._evse_ids = frozenset(evse_ids)
        self._profiles: dict[int, InstalledProfile] = {}
        for evse_id, profile, source in store.load_profile_rows():
            item = InstalledProfile(evse_id, profile, source)
            self._profiles[item.id] = item
        self._count_entries()

    # SetChargingProfile

    def validate(
        self,
        evse_id: int,
        profile: Mapping[str, Any],
        transactions: Mapping[int, str | None],
        *,
        remote_start: bool = False,
    ) -> Verdict:
        problem = self._problem(evse_id, profile, transactions, remote_start)
        return ACCEPTED if problem is None else Verdict.rejected(problem)

    def install(
        self,
        evse_id: int,
        profile: Mapping[str, Any],
        transactions: Mapping[int, str | None],
        source: str = "CSO",
    ) -> Verdict:
        verdict = self.validate(evse_id, profile, transactions)
        if verdict.accepted:
            self._put(evse_id, with_number_phases(profile, self._current(evse_id)), source)
        return verdict

    def inject(self, evse_id: int, profile: Mapping[str, Any], source: str) -> None:
        if source not in SOURCES:
            raise ProfileError(f"chargingLimitSource must be one of {SOURCES}, got {source!r}")
        if not isinstance(profile.get("id"), int):
            raise ProfileError(f"a profile needs an integer id, got {profile.get('id')!r}")
        if profile.get("chargingProfilePurpose") not in PURPOSES:
            raise ProfileError(f"unknown purpose {profile.get('chargingProfilePurpose')!r}")
        if date_time_problem(profile) is not None:
            raise ProfileError(f"profile {profile['id']}: a date-time does not parse")
        self._put(evse_id, copy.deepcopy(dict(profile)), source)

    # ClearChargingProfile, transaction end

    def clear(
        self,
        profile_id: int | None = None,
        evse_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> bool:
        if profile_id is not None:
            chosen = [i for i in self._profiles.values() if i.id == profile_id]
        else:
            chosen = [
                i
                for i in self._profiles.values()
                if (evse_id is None or i.evse_id == evse_id)
                and (purpose is None or i.purpose == purpose)
                and (stack_level is None or i.stack_level == stack_level)
            ]
        return bool(self._remove([i.id for i in chosen if i.purpose != EXTERNAL]))

    def remove_transaction_profiles(self, transaction_id: str) -> list[int]:
        return self._remove(
            [
                i.id
                for i in self._profiles.values()
                if i.purpose == "TxProfile" and i.transaction_id == transaction_id
            ]
        )

    # reading

    def matching(
        self,
        evse_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
        ids: Collection[int] | None = None,
        sources: Collection[str] | None = None,
    ) -> list[InstalledProfile]:
        chosen = [i for i in self._sorted() if evse_id is None or i.evse_id == evse_id]
        if ids:
            return [i for i in chosen if i.id in ids]
        return [
            i
            for i in chosen
            if (purpose is None or i.purpose == purpose)
            and (stack_level is None or i.stack_level == stack_level)
            and (not sources or i.source in sources)
        ]

    def for_evse(self, evse_id: int) -> list[InstalledProfile]:
        own = [i for i in self._sorted() if i.evse_id == evse_id]
        if evse_id == STATION_WIDE:
            return own
        return own + [i for i in self._sorted() if i.evse_id == STATION_WIDE]

    def applicable(
        self, evse_id: int, transactions: Mapping[int, str | None]
    ) -> list[InstalledProfile]:
        running = transactions.get(evse_id)
        result = []
        for item in self.for_evse(evse_id):
            if item.purpose == "TxProfile" and (running is None or item.transaction_id != running):
                continue
            phases = self._phases(item.evse_id)
            ac_phases = phases if current_type(phases) == "AC" else None
            result.append(
                InstalledProfile(
                    item.evse_id, conformed(item.profile, ac_phases=ac_phases), item.source
                )
            )
        return result

    def all(self) -> list[InstalledProfile]:
        return self._sorted()

    # internals

    def _problem(
        self,
        evse_id: int,
        profile: Mapping[str, Any],
        transactions: Mapping[int, str | None],
        remote_start: bool,
    ) -> str | None:
        purpose = profile.get("chargingProfilePurpose")
        if remote_start and purpose != "TxProfile":
            return "RequestStartTransactionNonTxProfile"
        if purpose == EXTERNAL:
            return "ChargingStationExternalConstraintsInSetChargingProfileRequest"
        problem = date_time_problem(profile)
        if problem is not None:
            return problem
        if evse_id != STATION_WIDE and evse_id not in self._evse_ids:
            return "EvseDoesNotExist"
        clash = self._profiles.get(profile["id"])
        if clash is not None and clash.purpose == EXTERNAL:
            return "ExistingChargingStationExternalConstraints"
        capabilities = Capabilities.of(self._model)
        if profile["stackLevel"] > capabilities.max_stack_level:
            return "ChargingProfileStackLevelTooHigh"
        problem = schedule_problem(
            profile, current=self._current(evse_id), capabilities=capabilities
        )
        if problem is not None:
            return problem
        if purpose == "ChargingStationMaxProfile":
            return self._max_profile_problem(evse_id, profile)
        if purpose == "TxDefaultProfile":
            return self._tx_default_problem(evse_id, profile)
        if purpose == "TxProfile":
            return self._tx_problem(evse_id, profile, transactions, remote_start)
        return "InvalidProfileType"

    def _max_profile_problem(self, evse_id: int, profile: Mapping[str, Any]) -> str | None:
        if self._overlaps(evse_id, profile):
            return "DuplicateProfileValidityPeriod"
        if evse_id > STATION_WIDE:
            return "ChargingStationMaxProfileEvseIdGreaterThanZero"
        if profile["chargingProfileKind"] == "Relative":
            return "ChargingStationMaxProfileCannotBeRelative"
        return None

    def _tx_default_problem(self, evse_id: int, profile: Mapping[str, Any]) -> str | None:
        if self._overlaps(evse_id, profile):
            return "DuplicateProfileValidityPeriod"
        station_wide = evse_id == STATION_WIDE
        for item in self._profiles.values():
            if (
                item.purpose == "TxDefaultProfile"
                and (item.evse_id == STATION_WIDE) != station_wide
                and item.stack_level == profile["stackLevel"]
                and item.id != profile["id"]
            ):
                return "DuplicateTxDefaultProfileFound"
        return None

    def _tx_problem(
        self,
        evse_id: int,
        profile: Mapping[str, Any],
        transactions: Mapping[int, str | None],
        remote_start: bool,
    ) -> str | None:
        if evse_id <= STATION_WIDE:
            return "TxProfileEvseIdNotGreaterThanZero"
        if remote_start:
            return None
        transaction_id = profile.get("transactionId")
        if transaction_id is None:
            return "TxProfileMissingTransactionId"
        running = transactions.get(evse_id)
        if running is None:
            return "TxProfileEvseHasNoActiveTransaction"
        if running != transaction_id:
            return "TxProfileTransactionNotOnEvse"
        for item in self._profiles.values():
            if (
                item.purpose == "TxProfile"
                and item.transaction_id == transaction_id
                and item.stack_level == profile["stackLevel"]
                and item.id != profile["id"]
            ):
                return "TxProfileConflictingStackLevel"
        return None

    def _overlaps(self, evse_id: int, profile: Mapping[str, Any]) -> bool:
        return any(
            item.evse_id == evse_id
            and item.purpose == profile["chargingProfilePurpose"]
            and item.stack_level == profile["stackLevel"]
            and item.id != profile["id"]
            and validities_overlap(profile, item.profile)
            for item in self._profiles.values()
        )

    def _phases(self, evse_id: int) -> int:
        """EVSE[n].SupplyPhases, or the station's for EVSE 0 (libocpp's phase-type source)."""
        if evse_id != STATION_WIDE:
            try:
                return self._model.get_int("EVSE", "SupplyPhases", evse=evse_id)
            except UnknownVariable:
                pass
        return self._model.get_int("ChargingStation", "SupplyPhases")

    def _current(self, evse_id: int) -> CurrentType | None:
        return current_type(self._phases(evse_id))

    def _put(self, evse_id: int, profile: dict[str, Any], source: str) -> None:
        item = InstalledProfile(evse_id, profile, source)
        # The store first: if it fails, memory still agrees with the file.
        self._store.save_profile(item.id, evse_id, profile, source)
        self._profiles[item.id] = item
        self._count_entries()

    def _remove(self, profile_ids: list[int]) -> list[int]:
        if profile_ids:
            self._store.delete_profiles(profile_ids)
            for profile_id in profile_ids:
                del self._profiles[profile_id]
            self._count_entries()
        return sorted(profile_ids)

    def _sorted(self) -> list[InstalledProfile]:
        return [self._profiles[profile_id] for profile_id in sorted(self._profiles)]

    def _count_entries(self) -> None:
        self._model.set_internal(
            "SmartChargingCtrlr", "Entries", str(len(self._profiles)), instance="ChargingProfiles"
        )
