"""The demo's session report, from a CSMS frame record written here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from everkit.report import read_session, summary, write_report


def event(seq: int, at: str, watts: float, energy: float, soc: float) -> list[Any]:
    sampled = [
        {"value": energy, "measurand": "Energy.Active.Import.Register"},
        {"value": watts, "measurand": "Power.Active.Import"},
        {"value": soc, "measurand": "SoC"},
    ]
    payload = {
        "eventType": "Started" if seq == 0 else "Updated",
        "timestamp": at,
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq,
        "transactionInfo": {"transactionId": "t1"},
        "meterValue": [{"timestamp": at, "sampledValue": sampled}],
    }
    return [2, f"m{seq}", "TransactionEvent", payload]


def write_record(path: Path) -> None:
    profile = {
        "id": 1,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [
            {
                "id": 1,
                "startSchedule": "2024-05-01T12:00:00.000Z",
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": 30000},
                    {"startPeriod": 10, "limit": 15000},
                ],
            }
        ],
    }
    frames = [
        event(0, "2024-05-01T12:00:00.000Z", 0, 1000, 30),
        [2, "p", "SetChargingProfile", {"evseId": 1, "chargingProfile": profile}],
        event(1, "2024-05-01T12:00:05.000Z", 29000, 1040, 31),
        event(2, "2024-05-01T12:00:15.000Z", 14900, 1100, 32),
    ]
    lines = [json.dumps({"t": "x", "station": "s", "dir": "d", "frame": f}) for f in frames]
    path.write_text("\n".join(lines) + "\n")


def test_the_summary_counts_energy_time_and_messages(tmp_path: Path) -> None:
    record = tmp_path / "ocpp.jsonl"
    write_record(record)
    facts = summary(read_session(record))
    assert facts["energy_Wh"] == 100
    assert facts["duration_s"] == 15
    assert facts["max_power_W"] == 29000
    assert facts["soc_percent"] == {"start": 30, "end": 32}
    assert facts["limits_W"] == [30000, 15000]
    assert facts["ocpp_messages"] == {"SetChargingProfile": 1, "TransactionEvent": 3}


def test_the_report_writes_a_png_and_a_json(tmp_path: Path) -> None:
    record = tmp_path / "ocpp.jsonl"
    write_record(record)
    written = write_report(record, tmp_path)
    assert {p.name for p in written} == {"session.json", "session.png"}
    assert (tmp_path / "session.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_grid_operators_order_cap_is_drawn_and_listed(tmp_path: Path) -> None:
    """`everkit demo --uftp`: the cap a DSO ordered appears on the plot and in session.json."""
    from datetime import UTC, datetime  # noqa: PLC0415

    record = tmp_path / "ocpp.jsonl"
    write_record(record)
    plain = tmp_path / "plain"
    plain.mkdir()
    write_report(record, plain)
    start = datetime(2024, 5, 1, 12, 0, 4, tzinfo=UTC)
    end = datetime(2024, 5, 1, 12, 0, 12, tzinfo=UTC)
    write_report(record, tmp_path, caps=[(start, end, 12000.0)])
    facts = json.loads((tmp_path / "session.json").read_text())
    assert facts["order_caps"] == [
        {"start": "2024-05-01T12:00:04+00:00", "end": "2024-05-01T12:00:12+00:00", "W": 12000.0}
    ]
    assert "order_caps" not in json.loads((plain / "session.json").read_text())
    assert (tmp_path / "session.png").read_bytes() != (plain / "session.png").read_bytes()
