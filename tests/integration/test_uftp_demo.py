"""`everkit demo --uftp`'s DSO part against a station node on a real Mosquitto: once the
meter shows steady charging, the DSO orders half of it for the next one-minute ISP, the
adapter (its own process) caps the node, and the demo keeps the cap for the session plot."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from everkit.framework.transport import BrokerAddress
from everkit.framework.wire import var_payload
from everkit.uftp.demo import LEAD_S, FlexDemo
from tests.conftest import RawClient
from tests.integration.test_uftp_station_link import GOOD_READING, station

pytestmark = pytest.mark.integration
METER_W = 20000.0


def test_the_demo_dso_orders_half_the_power_for_the_next_isp_and_keeps_the_cap(
    broker: BrokerAddress, prefix: str, tmp_path: Path, recorder: RawClient
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    notes: list[str] = []
    with station(broker, prefix, tmp_path, recorder):
        flex = FlexDemo(tmp_path, broker, prefix, ("hw", "powermeter"), logs)
        flex.start(notes.append)
        topic = f"{prefix}modules/hw/impl/powermeter/var/powermeter"
        reading = var_payload({**GOOD_READING, "power_W": {"total": METER_W}})
        tick = threading.Event()
        started = datetime.now(UTC)
        try:
            # the meter of a car charging at 20 kW, twice a second, until the cap is known
            for _ in range(120):
                recorder.publish(topic, reading)
                if flex.caps:
                    break
                tick.wait(0.5)
        finally:
            flex.stop()
    assert flex.caps, notes
    ((begin, end, watts),) = flex.caps
    assert end - begin == timedelta(minutes=1)
    assert begin.second == 0  # a one-minute ISP starts on the minute
    assert begin >= started + timedelta(seconds=LEAD_S)
    assert watts == pytest.approx(METER_W / 2, abs=1)
    assert any("FlexOrder DEMO-ORDER-1 Accepted" in note for note in notes), notes
    assert "UFTP AGR" in (logs / "uftp.log").read_text()
