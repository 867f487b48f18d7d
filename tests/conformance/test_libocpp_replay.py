"""libocpp's composite-schedule expectations, replayed through PyOCPP201 (K08).

The cases and fixtures live outside the repository (``<repo>/../shared/conformance/libocpp``,
from EVerest/libocpp, Apache-2.0); without that folder the replay test is skipped, which is
the only skip here. The remaining tests check the replay command itself on small cases
written here, so its verdicts can be trusted when it reports PASS.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from everkit.ocpp201.replay import ReplayInputError, main, replay

LIBOCPP = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "libocpp"
CASES = LIBOCPP / "cases.json"
LINE = re.compile(r"^(PASS|FAIL) (\d+) (\S.*?)(: .*)?$")


@pytest.mark.skipif(not CASES.is_file(), reason=f"libocpp replay cases not found at {CASES}")
def test_every_libocpp_case_passes() -> None:
    out = io.StringIO()
    failed = replay(CASES, LIBOCPP, out)
    lines = out.getvalue().splitlines()
    cases = json.loads(CASES.read_text(encoding="utf-8"))["cases"]
    verdicts = [LINE.match(line) for line in lines[:-1]]
    assert all(verdicts), lines
    assert [(m.group(2), m.group(3)) for m in verdicts if m] == [
        (str(number), case["case"]) for number, case in enumerate(cases, start=1)
    ]
    assert failed == 0, "\n".join(line for line in lines if line.startswith("FAIL"))
    assert lines[-1] == f"{len(cases)} cases: {len(cases)} passed, 0 failed"


# the replay command itself, on cases written here

STATION = {
    "CompositeScheduleDefaultLimitAmps": 57,
    "CompositeScheduleDefaultLimitWatts": 55612,
    "CompositeScheduleDefaultNumberPhases": 3,
    "SupplyVoltage": 230,
    "ChargingStationSupplyPhases": 3,
    "ChargingScheduleChargingRateUnit": "A,W",
    "ACPhaseSwitchingSupported": True,
    "currentType": "AC",
}
TX_DEFAULT = {
    "id": 7,
    "stackLevel": 0,
    "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Absolute",
    "chargingSchedule": [
        {
            "id": 1,
            "startSchedule": "2024-01-01T00:10:00Z",
            "duration": 600,
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}],
        }
    ],
}


def a_case(expected_periods: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    case: dict[str, Any] = {
        "case": "Written_here",
        "numberOfEvses": 1,
        "installed": {"1": ["profiles/tx_default.json"]},
        "openTransactions": {},
        "request": {
            "evseId": 1,
            "chargingRateUnit": "A",
            "scheduleStart": "2024-01-01T00:00:00Z",
            "duration": 1800,
            "simulateTransactionActive": True,
        },
        "expected": {
            "evseId": 1,
            "scheduleStart": "2024-01-01T00:00:00Z",
            "duration": 1800,
            "chargingRateUnit": "A",
            "numberPhasesAsserted": True,
            "chargingSchedulePeriod": expected_periods,
        },
    }
    case.update(changes)
    return case


RIGHT = [
    {"startPeriod": 0, "limit": 57.0},
    {"startPeriod": 600, "limit": 16.0, "numberPhases": 3},
    {"startPeriod": 1200, "limit": 57.0},
]


def write_cases(folder: Path, *cases: dict[str, Any], profile: dict[str, Any] = TX_DEFAULT) -> Path:
    (folder / "profiles").mkdir(exist_ok=True)
    (folder / "profiles" / "tx_default.json").write_text(json.dumps(profile), encoding="utf-8")
    path = folder / "cases.json"
    path.write_text(json.dumps({"stationConfig": STATION, "cases": list(cases)}), encoding="utf-8")
    return path


def run(path: Path) -> tuple[int, list[str]]:
    out = io.StringIO()
    failed = replay(path, path.parent, out)
    return failed, out.getvalue().splitlines()


def test_a_matching_case_passes(tmp_path: Path) -> None:
    failed, lines = run(write_cases(tmp_path, a_case(RIGHT)))
    assert (failed, lines) == (0, ["PASS 1 Written_here", "1 cases: 1 passed, 0 failed"])


@pytest.mark.parametrize(
    ("expected_periods", "difference"),
    [
        (
            [*RIGHT[:1], {**RIGHT[1], "limit": 15.0}, *RIGHT[2:]],
            "period 1 (600->16.0 (3ph)): limit 16.0, expected 15.0",
        ),
        (
            [*RIGHT[:1], {**RIGHT[1], "numberPhases": 1}, *RIGHT[2:]],
            "period 1 (600->16.0 (3ph)): numberPhases 3, expected 1",
        ),
        (RIGHT[:2], "3 periods, expected 2; first extra: 1200->57.0"),
        ([*RIGHT, {"startPeriod": 1700, "limit": 1.0}], "first missing: 1700->1.0"),
    ],
)
def test_a_differing_case_fails_with_its_first_difference(
    tmp_path: Path, expected_periods: list[dict[str, Any]], difference: str
) -> None:
    failed, lines = run(write_cases(tmp_path, a_case(RIGHT), a_case(expected_periods)))
    assert failed == 1
    assert lines[0] == "PASS 1 Written_here"
    assert lines[1].startswith("FAIL 2 Written_here: ")
    assert difference in lines[1]
    assert lines[2] == "2 cases: 1 passed, 1 failed"


def test_number_phases_counts_only_where_the_case_asserts_it(tmp_path: Path) -> None:
    unasserted = a_case([{**period, "numberPhases": 2} for period in RIGHT])
    unasserted["expected"]["numberPhasesAsserted"] = False
    assert run(write_cases(tmp_path, unasserted))[0] == 0


def test_header_fields_are_compared(tmp_path: Path) -> None:
    case = a_case(RIGHT)
    case["expected"]["scheduleStart"] = "2024-01-01T00:00:01Z"
    failed, lines = run(write_cases(tmp_path, case))
    assert failed == 1
    assert "scheduleStart 2024-01-01T00:00:00Z, expected 2024-01-01T00:00:01Z" in lines[0]


def test_a_profile_the_checks_reject_fails_the_case(tmp_path: Path) -> None:
    """Fixtures go through SetChargingProfile's checks: a TxProfile needs its transaction
    running on the EVSE (K01.FR.09)."""
    tx_profile = {**TX_DEFAULT, "chargingProfilePurpose": "TxProfile", "transactionId": "t-1"}
    failed, lines = run(write_cases(tmp_path, a_case(RIGHT), profile=tx_profile))
    assert failed == 1
    assert lines[0] == (
        "FAIL 1 Written_here: profiles/tx_default.json on EVSE 1 rejected:"
        " TxNotFound (TxProfileEvseHasNoActiveTransaction)"
    )


def test_the_same_fixture_twice_gets_a_second_id(tmp_path: Path) -> None:
    """Installed under one id the second would replace the first (K01.FR.05); the replay
    gives it another id, so both count in the EVSE 0 sum."""
    case = a_case(
        [
            {"startPeriod": 0, "limit": 114.0},
            {"startPeriod": 600, "limit": 32.0, "numberPhases": 3},
            {"startPeriod": 1200, "limit": 114.0},
        ],
        numberOfEvses=2,
        installed={"1": ["profiles/tx_default.json"], "2": ["profiles/tx_default.json"]},
    )
    case["request"]["evseId"] = case["expected"]["evseId"] = 0
    assert run(write_cases(tmp_path, case)) == (
        0,
        [
            "PASS 1 Written_here",
            "1 cases: 1 passed, 0 failed",
        ],
    )


@pytest.mark.skipif(not CASES.is_file(), reason=f"libocpp replay cases not found at {CASES}")
def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(LIBOCPP, folder)
    assert main([str(folder / "cases.json")]) == 0
    cases = json.loads((folder / "cases.json").read_text(encoding="utf-8"))
    cases["cases"][0]["expected"]["chargingSchedulePeriod"][0]["limit"] = 1.0
    (folder / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    assert main([str(folder / "cases.json"), "--fixtures", str(folder)]) == 1
    assert "FAIL 1 NoSchedulesPresent: period 0 (0->57.0): limit 57.0, expected 1.0" in (
        capsys.readouterr().out
    )


def test_unreadable_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    assert main([str(tmp_path / "broken.json")]) == 2
    path = write_cases(tmp_path, a_case(RIGHT, installed={"1": ["profiles/absent.json"]}))
    with pytest.raises(ReplayInputError, match=r"absent\.json"):
        replay(path, tmp_path, io.StringIO())
    no_request = a_case(RIGHT)
    del no_request["request"]
    assert main([str(write_cases(tmp_path, no_request))]) == 2
    assert "case 1 (Written_here) is malformed" in capsys.readouterr().err
