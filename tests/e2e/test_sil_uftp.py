"""Grid flexibility end to end, in simulated time: a DSO (the same UFTP library) on
loopback asks the adapter (`everkit uftp run`, its own process) for flexibility on the day
DST ends, orders the offer, and the SIL station's power modules stay within the ordered cap
for the ordered ISPs. The stack's clock is stepped (everkit.wallclock's test hook) to just
before the ordered quarter hours and to just before their end, so an hour of orders takes
seconds. The CSMS hears NotifyChargingLimit (SO) and ClearedChargingLimit (OCPP 2.0.1
K11/K13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from shapeshifter_uftp import FlexOffer, FlexOrderResponse

from everkit.framework.transport import BrokerAddress
from everkit.power_supply_infy.bus_log import read_bus_states
from everkit.simulators.dso import DsoSimulator
from everkit.uftp.isp import isp_start
from everkit.uftp.station_config import NODE, with_flex_node
from everkit.wallclock import OFFSET_FILE_ENV
from tests.conftest import Captured
from tests.e2e.conftest import start_csms
from tests.e2e.faults import ROOT, Recorder, Stack, envelope
from tests.e2e.sil import SCRIPT, sil_config
from tests.e2e.test_faults import setpoint_power, step_clock
from tests.uftp_rig import DSO_DOMAIN, EAN, TIME_ZONE, agr_peer, new_keys, write_adapter_config

pytestmark = pytest.mark.integration
DAY = date(2026, 10, 25)  # 100 ISPs: the order's ISPs 69-72 are 15:00-16:00 UTC
FIRST_ISP, ISPS = 69, 4
ORDER_START = isp_start(DAY, TIME_ZONE, FIRST_ISP)
ORDER_END = ORDER_START + timedelta(minutes=15 * ISPS)
LEAD_S = 4.0  # the clock is stepped to this long before the order starts and ends
SETTLE_S = 3.0  # energy manager round + ramp before the cap must hold
WAIT = 40.0


def offset_to(moment: datetime) -> float:
    """The clock offset that makes the stack's time ``moment`` now."""
    return (moment - datetime.now(UTC)).total_seconds()


def enforced_source(m: Captured) -> str | None:
    if not m.topic.endswith("evse_manager/impl/evse/var/enforced_limits"):
        return None
    power = envelope(m)["data"]["data"]["limits_root_side"].get("total_power_W")
    return str(power["source"]) if power else None


def test_a_dso_order_caps_the_stations_can_setpoints_for_the_ordered_isps(
    tmp_path: Path, broker: BrokerAddress, prefix: str
) -> None:
    offset_file = tmp_path / "clock-offset"
    step_clock(offset_file, offset_to(ORDER_START - timedelta(minutes=20)))
    env = {**os.environ, OFFSET_FILE_ENV: str(offset_file)}
    can_log = tmp_path / "can.log"
    keys = new_keys()
    steps: list[tuple[float, float]] = []  # (real time, offset) of every clock step

    def station_now() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=float(offset_file.read_text()))

    def step(to: datetime) -> float:
        offset = offset_to(to)
        at = step_clock(offset_file, offset)
        steps.append((at, offset))
        return at

    steps.append((time.time(), float(offset_file.read_text())))
    with (
        start_csms(tmp_path) as csms,
        Recorder(broker, prefix) as bus,
    ):
        config = sil_config(
            tmp_path,
            prefix,
            csms.url,
            script=SCRIPT.format(charge_s=45),
            car={"dc_target_current": 60},
            psu={"can_log_file": str(can_log)},
        )
        config = with_flex_node(config)
        agr_yaml, port = write_adapter_config(
            tmp_path,
            keys,
            "",
            broker,
            prefix,
            node=NODE,
            meters=("hardware/powermeter",),
            baseline_window_s=4,
        )
        dso = DsoSimulator(DSO_DOMAIN, keys.dso_secret, agr_peer(keys, port), now=station_now)
        agr_yaml.write_text(
            agr_yaml.read_text().replace("endpoint: ''", f"endpoint: {dso.endpoint}")
        )
        adapter_log = (tmp_path / "uftp.log").open("w")
        adapter = subprocess.Popen(
            [sys.executable, "-m", "everkit", "uftp", "run", str(agr_yaml)],
            cwd=ROOT,
            env=env,
            stdout=adapter_log,
            stderr=subprocess.STDOUT,
        )
        try:
            with dso, Stack(config, tmp_path, broker, prefix, env=env) as stack:
                # charging, with a few seconds of readings for the adapter's 4 s baseline
                (first, *_) = bus.wait_for(lambda m: (setpoint_power(m) or 0) > 5000, timeout=WAIT)
                bus.wait_for(
                    lambda m: m.at > first.at + 6 and "powermeter" in m.topic, timeout=WAIT
                )
                charging_W = max(p for m in bus.snapshot() if (p := setpoint_power(m)))

                step(ORDER_START - timedelta(minutes=1))
                request = dso.send_flex_request(
                    congestion_point=EAN,
                    period=DAY,
                    time_zone=TIME_ZONE,
                    isps=[
                        (FIRST_ISP, ISPS, -int(charging_W // 2), -int(charging_W // 4), "Requested")
                    ],
                    expires=station_now() + timedelta(minutes=30),
                )
                offer = dso.received(
                    FlexOffer, lambda m: m.flex_request_message_id == request.message_id, WAIT
                )
                order = dso.send_flex_order(offer, order_reference="DSO-ORDER-0001")
                answer = dso.received(
                    FlexOrderResponse, lambda m: m.flex_order_message_id == order.message_id, WAIT
                )
                assert answer.result == "Accepted", answer.rejection_reason
                (power,) = {isp.power for isp in offer.offer_options[0].isps}
                # the adapter's cap reaches the node (the schedule's first entry is "now")
                capped = bus.wait_for(
                    lambda m: (
                        m.topic.endswith(f"{NODE}/impl/energy_grid/var/energy_flow_request")
                        and '"SO"' in m.payload.decode()
                    ),
                    timeout=WAIT,
                )
                assert capped

                begin = step(ORDER_START - timedelta(seconds=LEAD_S))
                (bound, *_) = bus.wait_for(
                    lambda m: m.at > begin and enforced_source(m) == "SO", timeout=WAIT
                )
                # some capped setpoints: the car keeps charging under the cap
                bus.wait_for(
                    lambda m: m.at > bound.at + 6 and setpoint_power(m) is not None, timeout=WAIT
                )
                end = step(ORDER_END - timedelta(seconds=LEAD_S))
                bus.wait_for(
                    lambda m: (
                        m.at > end
                        and setpoint_power(m) is not None
                        and (setpoint_power(m) or 0) > charging_W * 0.9
                    ),
                    timeout=WAIT,
                )
                assert stack.wait(120) == 0, stack.output()[-3000:]
        finally:
            adapter.terminate()
            adapter.wait(20)
            adapter_log.close()

    # the cap from the adapter's schedule, as the node received it
    cap_W = cap_from(bus.snapshot())
    assert cap_W < charging_W * 0.9  # the order binds: the car wanted more
    # baseline (the meter's recent power, about what the car drew) + the ordered deviation
    assert cap_W == pytest.approx(charging_W + power, rel=0.15)

    def station_time(at: float) -> datetime:
        offset = [o for t, o in steps if t <= at][-1]
        return datetime.fromtimestamp(at, UTC) + timedelta(seconds=offset)

    inside = []
    after = []
    for state in read_bus_states(str(can_log)):
        moment = station_time(state.at)
        if ORDER_START + timedelta(seconds=SETTLE_S) <= moment < ORDER_END:
            assert state.battery_W <= cap_W * 1.02, (moment, state.battery_W, cap_W)
            inside.append(state.battery_W)
        elif moment >= ORDER_END + timedelta(seconds=SETTLE_S):
            after.append(state.battery_W)
    assert len(inside) >= 5, inside  # the power modules got setpoints during the order
    assert max(inside) == pytest.approx(cap_W, rel=0.05)  # and used what they were given
    assert max(after) > cap_W * 1.2  # the default is back after the last ISP

    notified = csms.calls("NotifyChargingLimit")
    assert [n["chargingLimit"]["chargingLimitSource"] for n in notified] == ["SO"]
    cleared = csms.calls("ClearedChargingLimit")
    assert [c["chargingLimitSource"] for c in cleared] == ["SO"]
    print(
        json.dumps(
            {
                "charging_W": round(charging_W),
                "cap_W": cap_W,
                "cap_binding_after_isp_start_s": round(bound.at - begin - LEAD_S, 2),
                "capped_setpoints": len(inside),
                "max_capped_setpoint_W": round(max(inside)),
            }
        )
    )


def cap_from(messages: list[Captured]) -> float:
    for m in messages:
        if m.topic.endswith("/cmd/set_external_limits") and NODE in m.topic:
            data = envelope(m)["data"]
            for entry in data["args"]["value"]["schedule_import"]:
                power = entry["limits_to_root"].get("total_power_W")
                if power:
                    return float(power["value"])
    raise AssertionError("no cap was sent to the node")
