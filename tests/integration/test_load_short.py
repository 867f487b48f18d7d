"""Short versions of the load and soak benches (issue 8, item 4): nothing lost under load.

The long runs with their figures are bench/framework_load.py (1,000 commands/s for 60 s)
and bench/station_soak.py (8 EVSEs for 10 minutes); these run the same code for a few
seconds on the test session's Mosquitto and assert only what must hold on any machine,
however loaded: every command answered, every TransactionEvent delivered once and in
sequence, every schedule change at every EVSE. Latencies are not asserted (they are
figures of the benches, measured next to their baselines).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

from everkit.framework.broker import PrivateBroker

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return __import__(name)


def test_framework_load_300_commands_per_s_none_lost_issue8(
    mosquitto: PrivateBroker, prefix: str
) -> None:
    load = _bench("framework_load")
    results = load.run(
        load.Pacing(rate=300.0, duration=3.0, warmup=0.5),
        ["framework"],
        broker=mosquitto,
        prefix=prefix,
    )
    side = results["framework"]
    assert side["sent"] == 900
    assert side["error_examples"] == []
    assert (side["answered"], side["lost"], side["errors"]) == (900, 0, 0)


def test_station_soak_8_evses_two_schedule_changes_no_transaction_event_lost_issue8(
    mosquitto: PrivateBroker, prefix: str
) -> None:
    soak = _bench("station_soak")
    options = soak.Options(
        evses=8, duration=20.0, change_every=7.0, warmup=5.0, charge_s=(4.0, 8.0)
    )
    results = soak.run(options, broker=mosquitto, prefix=prefix)
    analysis, changes = results["analysis"], results["changes"]
    assert results["lost"] == []
    delivery = results["sent_vs_received"]
    assert delivery["sent"] == delivery["received"] > 0
    assert (delivery["sent_not_received"], delivery["same_seq_twice"]) == (0, 0)
    assert analysis["sessions_started"] >= 8
    assert analysis["missing"] == []
    assert (analysis["seq_gaps"], analysis["seq_duplicates"]) == (0, 0)
    assert analysis["sessions_completed"] == analysis["sessions_started"]
    assert analysis["unknown_transactions"] == []
    assert changes["orders"] == 2
    assert [c["status"] for c in changes["per_change"]] == ["Accepted", "Accepted"]
    assert [c["sinks_reached"] for c in changes["per_change"]] == [8, 8]
    assert results["ocpp_exit_status"] == 0
