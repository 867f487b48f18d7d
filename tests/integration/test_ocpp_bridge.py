"""PyOCPP201's bridge against the demo CSMS (an independent peer on the `ocpp` package) over
real websockets: provisioning (block B) and transactions (block E)."""

from __future__ import annotations

from pathlib import Path

from everkit.simulators.csms import DemoCsms, payload_of
from tests.integration.ocpp_harness import (
    SESSION,
    WAIT_S,
    dc_session_end,
    dc_session_start,
    run,
    until,
    running_bridge,
)


def test_boot_then_status_of_every_connector_B01(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms):
            boot = await csms.wait_for("BootNotification", timeout=WAIT_S)
            status = await csms.wait_for("StatusNotification", timeout=WAIT_S)
            assert payload_of(boot["frame"])["reason"] == "PowerUp"
            assert payload_of(boot["frame"])["chargingStation"] == {"vendorName": "everkit", "model": "test-dc"}
            assert payload_of(status["frame"])["evseId"] == 1
            assert payload_of(status["frame"])["connectorId"] == 1

    run(scenario())


def test_full_transaction_with_meter_values_E01_E06(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with DemoCsms() as csms, running_bridge(tmp_path, csms) as rig:
            await csms.wait_for("StatusNotification", timeout=WAIT_S)
            rig.feed(dc_session_start())
            rig.feed(dc_session_end())
            ended = await csms.wait_for(
                "TransactionEvent", lambda p: p["eventType"] == "Ended", timeout=WAIT_S
            )
            events = csms.messages("TransactionEvent")
            assert [e["seqNo"] for e in events] == list(range(len(events)))
            assert events[0]["eventType"] == "Started"
            assert events[0]["transactionInfo"]["transactionId"] == SESSION
            assert events[0]["idToken"] == {"idToken": "CAFE0001", "type": "ISO14443"}
            assert payload_of(ended["frame"])["transactionInfo"]["stoppedReason"] == "EVDisconnected"
            energy = [
                sv
                for mv in payload_of(ended["frame"])["meterValue"]
                for sv in mv["sampledValue"]
                if sv.get("measurand", "Energy.Active.Import.Register")
                == "Energy.Active.Import.Register"
            ]
            assert energy and energy[0]["value"] == 6000
            await until(lambda: not rig.store.pending())  # removed once the CSMS answered

    run(scenario())
