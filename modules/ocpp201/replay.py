"""``everkit composite-replay``: libocpp's composite-schedule cases, replayed through our path.

Each case of a ``cases.json`` (format: shared/conformance/libocpp/README.md) runs on a fresh
station configured like libocpp's test station: a new store in a temporary folder, the
standard device model with the case's EVSEs and the ``stationConfig`` values, the case's open
transactions. Every fixture profile goes through ``ProfileStore.install`` (the checks a
SetChargingProfileRequest gets) except the ones the README says cannot be sent that way,
which are injected as a local source would; a profile the checks reject fails the case.
Then the composite schedule is computed with the clock frozen at the request's start and
compared with the expectation: evseId, duration, chargingRateUnit, scheduleStart, and every
period's startPeriod, limit and (where the case asserts it) numberPhases.

Prints ``PASS <n> <name>`` or ``FAIL <n> <name>: <first difference>`` per case (n counts the
cases in file order from 1) and a total line; returns the number of failed cases.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ..framework.errors import EverkitError
from .composite import CompositeError, CompositeSettings, TransactionInfo, composite_schedule
from .device_model import DeviceModel, EvseShape, StationShape
from .profiles import ProfileStore
from .store import Store
from .timestamps import parse_wire_timestamp

# Fixtures SetChargingProfile cannot carry (README "Installing through OCPP"), by path or
# folder prefix, with the chargingLimitSource they are injected under.
INJECTED: tuple[tuple[str, str, str], ...] = (
    (
        "tests/lib/ocpp/v2/json/external/0/ChargingStationExternalConstraintProfile_grid_hourly.json",
        "EMS",
        "ChargingStationExternalConstraints is refused in SetChargingProfile (K01.FR.22)",
    ),
    (
        "tests/lib/ocpp/v2/json/no_gap/",
        "CSO",
        "two TxDefaultProfiles, same stackLevel, unbounded validity (K01.FR.06 would refuse)",
    ),
)

# What stationConfig's names are in our device model.
_SMART_CHARGING_KEYS = {
    "CompositeScheduleDefaultLimitAmps": "SmartChargingCtrlr.CompositeScheduleDefaultLimitAmps",
    "CompositeScheduleDefaultLimitWatts": "SmartChargingCtrlr.CompositeScheduleDefaultLimitWatts",
    "CompositeScheduleDefaultNumberPhases": (
        "SmartChargingCtrlr.CompositeScheduleDefaultNumberPhases"
    ),
    "SupplyVoltage": "SmartChargingCtrlr.SupplyVoltage",
    "ChargingScheduleChargingRateUnit": "SmartChargingCtrlr.RateUnit",
    "ACPhaseSwitchingSupported": "SmartChargingCtrlr.ACPhaseSwitchingSupported",
}


class ReplayInputError(EverkitError):
    """The cases file or a fixture cannot be read."""


class _CaseFailed(Exception):
    """The first difference (or refusal) found in one case."""


@dataclass(frozen=True)
class _Fixture:
    path: str  # as written in cases.json, relative to the fixtures folder
    profile: dict[str, Any]


def replay(cases_path: Path, fixtures_dir: Path, out: TextIO) -> int:
    """Run every case of ``cases_path``; returns how many failed."""
    document = _read_json(cases_path)
    cases = document.get("cases") if isinstance(document, dict) else None
    if not isinstance(cases, list):
        raise ReplayInputError(f"{cases_path}: no 'cases' list")
    station = document.get("stationConfig", {})
    failed = 0
    for number, case in enumerate(cases, start=1):
        name = case.get("case", "?")
        try:
            _run_case(case, station, fixtures_dir)
        except ReplayInputError:
            raise
        except (KeyError, TypeError, ValueError, EverkitError) as error:
            raise ReplayInputError(f"case {number} ({name}) is malformed: {error!r}") from error
        except _CaseFailed as failure:
            failed += 1
            print(f"FAIL {number} {name}: {failure}", file=out)
        else:
            print(f"PASS {number} {name}", file=out)
    print(f"{len(cases)} cases: {len(cases) - failed} passed, {failed} failed", file=out)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="everkit composite-replay",
        description="Replay libocpp's composite-schedule cases against PyOCPP201.",
    )
    parser.add_argument("cases", type=Path, metavar="CASES.json")
    parser.add_argument(
        "--fixtures",
        type=Path,
        metavar="DIR",
        help="folder the cases' fixture paths are relative to (default: the cases file's)",
    )
    args = parser.parse_args(argv)
    fixtures = args.fixtures if args.fixtures is not None else args.cases.parent
    try:
        failed = replay(args.cases, fixtures, sys.stdout)
    except ReplayInputError as error:
        print(f"everkit composite-replay: {error}", file=sys.stderr)
        return 2
    return 1 if failed else 0


def _run_case(case: Mapping[str, Any], station: Mapping[str, Any], fixtures_dir: Path) -> None:
    request = case["request"]
    start = parse_wire_timestamp(request["scheduleStart"])
    evse_ids = list(range(1, int(case.get("numberOfEvses", 1)) + 1))
    transactions = {
        int(evse): TransactionInfo(open_tx["transactionId"], _started(open_tx, start))
        for evse, open_tx in case.get("openTransactions", {}).items()
    }
    with tempfile.TemporaryDirectory(prefix="everkit-replay-") as folder:
        store = Store.open(Path(folder) / "ocpp201.sqlite")
        try:
            model = _device_model(station, evse_ids, store)
            profiles = ProfileStore(store, model, evse_ids)
            running = {evse: tx.id for evse, tx in transactions.items()}
            used_ids: set[int] = set()
            for evse_text, paths in case.get("installed", {}).items():
                evse_id = int(evse_text)
                for fixture in _fixtures(fixtures_dir, paths):
                    profile = _distinct_id(fixture.profile, used_ids)
                    injected = _injection(fixture.path)
                    if injected is not None:
                        profiles.inject(evse_id, profile, injected)
                        continue
                    verdict = profiles.install(evse_id, profile, running)
                    if not verdict.accepted:
                        raise _CaseFailed(
                            f"{fixture.path} on EVSE {evse_id} rejected: {verdict.reason_code}"
                            f" ({verdict.additional_info})"
                        )
            try:
                schedule = composite_schedule(
                    profiles.all(),
                    evse_id=int(request["evseId"]),
                    evse_ids=evse_ids,
                    start=start,
                    duration_s=int(request["duration"]),
                    unit=request["chargingRateUnit"],
                    settings=CompositeSettings.from_device_model(model),
                    transactions=transactions,
                    assume_transaction=bool(request.get("simulateTransactionActive", True)),
                )
            except CompositeError as error:  # ours to answer: a failure, not bad input
                raise _CaseFailed(f"no composite schedule: {error}") from error
        finally:
            store.close()
    _compare(schedule, case["expected"])


def _started(open_tx: Mapping[str, Any], window_start: datetime) -> datetime:
    # The README: where a case leaves the start open it does not matter; take the window's.
    started = open_tx.get("startTime")
    return window_start if started is None else parse_wire_timestamp(started)


def _device_model(station: Mapping[str, Any], evse_ids: Sequence[int], store: Store) -> DeviceModel:
    overrides = {
        key: _ocpp_string(station[name])
        for name, key in _SMART_CHARGING_KEYS.items()
        if name in station
    }
    ac = station.get("currentType", "AC") == "AC"
    shape = StationShape(
        station_id="libocpp-replay",
        vendor_name="everkit",
        model="composite-replay",
        evses=tuple(EvseShape(evse) for evse in evse_ids),
        supply_phases=int(station.get("ChargingStationSupplyPhases", 3)) if ac else 0,
    )
    return DeviceModel.standard(
        shape, overrides, stored=store.load_variables(), persist=store.save_variable
    )


def _ocpp_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fixtures(fixtures_dir: Path, paths: Sequence[str]) -> list[_Fixture]:
    found: list[_Fixture] = []
    for path in paths:
        if path.endswith("/"):
            files = sorted((fixtures_dir / path).glob("*.json"))
            if not files:
                raise ReplayInputError(f"{fixtures_dir / path}: no *.json fixtures")
            names = [f"{path}{file.name}" for file in files]
        else:
            files, names = [fixtures_dir / path], [path]
        for file, name in zip(files, names, strict=True):
            profile = _read_json(file)
            if not isinstance(profile, dict):
                raise ReplayInputError(f"{file}: not a ChargingProfile object")
            found.append(_Fixture(name, profile))
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReplayInputError(f"{path}: cannot read ({error})") from error


def _injection(path: str) -> str | None:
    """The chargingLimitSource to inject a fixture under, or None to install it."""
    for prefix, source, _why in INJECTED:
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return source
    return None


def _distinct_id(profile: dict[str, Any], used: set[int]) -> dict[str, Any]:
    """The profile, under a new id if an earlier fixture of the case has its id: installed
    with the same id it would replace that one (K01.FR.05), and ids play no part in the
    calculation (README)."""
    profile_id = int(profile["id"])
    if profile_id in used:
        profile = {**profile, "id": max(used) + 1}
        profile_id = profile["id"]
    used.add(profile_id)
    return profile


def _compare(schedule: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    for key in ("evseId", "duration", "chargingRateUnit"):
        if schedule[key] != expected[key]:
            raise _CaseFailed(f"{key} {schedule[key]!r}, expected {expected[key]!r}")
    got_start = parse_wire_timestamp(schedule["scheduleStart"])
    want_start = parse_wire_timestamp(expected["scheduleStart"])
    if got_start != want_start:
        raise _CaseFailed(f"scheduleStart {_iso(got_start)}, expected {_iso(want_start)}")
    got = schedule["chargingSchedulePeriod"]
    want = expected["chargingSchedulePeriod"]
    phases_checked = bool(expected.get("numberPhasesAsserted", False))
    for index, (mine, theirs) in enumerate(zip(got, want, strict=False)):
        fields = ["startPeriod", "limit"] + (["numberPhases"] if phases_checked else [])
        for field in fields:
            if mine.get(field) != theirs.get(field):
                raise _CaseFailed(
                    f"period {index} ({_period_text(mine)}): {field} {mine.get(field)!r},"
                    f" expected {theirs.get(field)!r}"
                )
    if len(got) != len(want):
        longer, which = (got, "extra") if len(got) > len(want) else (want, "missing")
        raise _CaseFailed(
            f"{len(got)} periods, expected {len(want)};"
            f" first {which}: {_period_text(longer[min(len(got), len(want))])}"
        )


def _period_text(period: Mapping[str, Any]) -> str:
    phases = period.get("numberPhases")
    suffix = "" if phases is None else f" ({phases}ph)"
    return f"{period.get('startPeriod')}->{period.get('limit')}{suffix}"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
