"""Smart charging end to end: the demo CSMS limits a running SIL session with a TxProfile
(30 kW, then 15 kW, then 30 kW again); the limit travels PyOCPP201 → PyEnergyNode →
PyEnergyManager → PyEvseManager → PyInfyPowerDC, and the setpoint frames on the CAN bus
(recorded by the driver's `can_log_file`, a second handle on the bus) follow it."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from everkit.framework.transport import BrokerAddress
from everkit.ocpp201.timestamps import parse_wire_timestamp
from everkit.power_supply_infy.bus_log import read_bus_states
from tests.e2e.conftest import CsmsProcess, start_csms
from tests.e2e.sil import SCRIPT as SESSION_SCRIPT
from tests.runner import run_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
STEP_S = 12  # the profile lowers 12 s after the transaction starts and raises after 24 s
SCRIPT = SESSION_SCRIPT.format(charge_s=28)
SETTLE_S = 3.0  # energy manager round + ramp (25 A/s) before a new limit must hold


def setpoint_power(log_file: Path) -> list[tuple[float, float]]:
    """(time, W) after every setpoint frame on the bus: the commanded current of the
    modules that are on, at the voltage each last reported (the power at the battery)."""
    return [(state.at, state.battery_W) for state in read_bus_states(str(log_file))]


def profile_steps(csms: CsmsProcess) -> list[tuple[datetime, float]]:
    (request,) = csms.sent("SetChargingProfile")
    schedule = request["chargingProfile"]["chargingSchedule"][0]
    start = parse_wire_timestamp(schedule["startSchedule"])
    return [
        (start + timedelta(seconds=p["startPeriod"]), float(p["limit"]))
        for p in schedule["chargingSchedulePeriod"]
    ]


def limit_at(steps: list[tuple[datetime, float]], moment: float) -> tuple[float, float]:
    """(limit, seconds since it began) at a Unix time."""
    current, since = steps[0][1], steps[0][0].timestamp()
    for begins, limit in steps:
        if begins.timestamp() <= moment:
            current, since = limit, begins.timestamp()
    return current, moment - since


def test_a_csms_limit_reaches_the_power_modules(
    tmp_path: Path, broker: BrokerAddress, prefix: str
) -> None:
    can_log = tmp_path / "can.log"
    with start_csms(tmp_path, "--demo-limit-W", "30000", "--demo-step-s", str(STEP_S)) as csms:
        config = yaml.safe_load((ROOT / "config" / "sil-dc.yaml").read_text())
        modules: dict[str, Any] = config["active_modules"]
        modules["car"]["config_module"]["auto_exec_commands"] = SCRIPT
        modules["psu"]["config_implementation"]["main"].update(
            {"can_channel": f"sil-{prefix.strip('/')}", "can_log_file": str(can_log)}
        )
        modules["ocpp"]["config_module"].update(
            {"csms_url": csms.url, "CoreDatabasePath": str(tmp_path / "ocpp")}
        )
        status, output = run_config(config, tmp_path, broker, prefix, timeout=150)
        assert status == 0, output[-3000:]

        steps = profile_steps(csms)
        assert [limit for _, limit in steps] == [30000.0, 15000.0, 30000.0]

        # the CSMS's GetCompositeSchedule saw what it had set
        (answer,) = csms.results_of("GetCompositeSchedule")
        assert answer["status"] == "Accepted"
        composite = [p["limit"] for p in answer["schedule"]["chargingSchedulePeriod"]]
        assert composite == [30000.0, 15000.0, 30000.0]

        # the setpoints on the CAN bus stay within the limit in force (after settling)...
        powers = setpoint_power(can_log)
        starts = [begins.timestamp() for begins, _ in steps]
        settled: dict[int, list[float]] = {}
        for moment, watts in powers:
            limit, since = limit_at(steps, moment)
            # composite times are whole seconds (as libocpp's): a step may apply up to 1 s
            # before the profile's own sub-second boundary
            next_step_in = min((b - moment for b in starts if b > moment), default=99.0)
            if since >= SETTLE_S and next_step_in > 1.0 and moment >= starts[0]:
                assert watts <= limit * 1.02, (moment, watts, limit)
                step = sum(1 for b in starts if b <= moment) - 1
                settled.setdefault(step, []).append(watts)
        assert sum(len(v) for v in settled.values()) > 20  # setpoints are repeated each second
        # ...and use what they are given (the car asks for more than 30 kW): the lowered
        # limit while it lasts, the raised one once the ramp (25 A/s) got there
        assert statistics.median(settled[1]) == pytest.approx(15000, rel=0.03)
        assert max(settled[2]) == pytest.approx(30000, rel=0.03)

        # the transaction reports the rate changes (K11)
        reasons = [e["triggerReason"] for e in csms.calls("TransactionEvent")]
        assert reasons.count("ChargingRateChanged") >= 2, reasons
