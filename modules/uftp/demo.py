"""`everkit demo --uftp`: a DSO buys flexibility from the demo station during its session.

The demo market has one-minute ISPs (``PT1M``, agreed between this DSO and this adapter;
real markets trade quarter hours) so a whole order, its start and its end, fits in a
session of a few minutes. Everything else is as on a site: the adapter runs as its own
process (``everkit uftp run``) with its own keys, the DSO is the same library on loopback,
the cap travels as ExternalLimits (source SO) to the station's ``uftp_limit`` node.

Once the car has charged steadily for a few seconds, the DSO asks for half of the power in
the next ISP that starts at least ``LEAD_S`` later, and orders the whole offer.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from shapeshifter_uftp import FlexOffer, FlexOrderResponse

from ..framework.broker import free_port
from ..framework.listener import BusListener, Heard
from ..framework.transport import BrokerAddress
from ..simulators.dso import MESSAGE_PATH, DsoSimulator, Peer, new_keypair
from .isp import isp_at, isp_start, isps_per_day
from .station_config import NODE

log = logging.getLogger("everkit.demo.uftp")

DSO_DOMAIN = "dso.everkit-demo.test"
AGR_DOMAIN = "agr.everkit-demo.test"
EAN = "ean.000000000000000001"
TIME_ZONE = "Europe/Amsterdam"
ISP = timedelta(minutes=1)
READY_S = 8.0  # steady charging before the DSO asks: the adapter's baseline window is 5 s
LEAD_S = 12.0  # request, offer and order well before the ordered ISP starts
CHARGING_W = 1000.0
WAIT_S = 30.0

Note = Callable[[str], None]


class FlexDemo:
    def __init__(
        self, scratch: Path, broker: BrokerAddress, prefix: str, meter: tuple[str, str], logs: Path
    ) -> None:
        self.broker, self.prefix, self.meter = broker, prefix, meter
        dso_secret, dso_public = new_keypair()
        agr_secret, agr_public = new_keypair()
        port = free_port()
        self.dso = DsoSimulator(
            DSO_DOMAIN,
            dso_secret,
            Peer(AGR_DOMAIN, agr_public, f"http://127.0.0.1:{port}{MESSAGE_PATH}"),
        )
        key_file = scratch / "agr.key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(agr_secret + "\n")
        self.config = scratch / "uftp-agr.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "domain": AGR_DOMAIN,
                    "signing_key_file": key_file.name,
                    "listen": f"127.0.0.1:{port}",
                    "state_dir": "uftp-state",
                    "baseline_window_s": 5,
                    "dso": [
                        {
                            "domain": DSO_DOMAIN,
                            "public_key": dso_public,
                            "endpoint": self.dso.endpoint,
                        }
                    ],
                    "congestion_points": [
                        {
                            "entity_address": EAN,
                            "time_zone": TIME_ZONE,
                            "isp_duration_s": int(ISP.total_seconds()),
                            "stations": [
                                {
                                    "name": "demo-station",
                                    "broker": str(broker),
                                    "prefix": prefix,
                                    "node": NODE,
                                    "meters": [f"{meter[0]}/{meter[1]}"],
                                    "max_W": 50000,
                                }
                            ],
                        }
                    ],
                }
            )
        )
        self.log_file = (logs / "uftp.log").open("ab")
        self.adapter: subprocess.Popen[bytes] | None = None
        self.caps: list[tuple[datetime, datetime, float]] = []
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, note: Note) -> None:
        self.dso.start()
        self.adapter = subprocess.Popen(
            [sys.executable, "-m", "everkit", "uftp", "run", str(self.config)],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        self.thread = threading.Thread(target=self._drive, args=(note,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.adapter is not None:
            self.adapter.terminate()
            self.adapter.wait(timeout=10)
        self.dso.stop()
        self.log_file.close()

    def _drive(self, note: Note) -> None:
        listener = BusListener(self.broker, self.prefix, qos=0)
        try:
            listener.connect()
            watts = self._wait_for_steady_charging(listener)
            if watts is not None:
                self._trade(watts, note)
                self._collect_caps(listener)
        except Exception as exc:  # a demo extra: say what went wrong, the session goes on
            note(f"uftp | the DSO's order did not go through: {exc}")
            log.exception("UFTP demo")
        finally:
            listener.close()

    def _heard(self, listener: BusListener) -> Iterator[Heard]:
        while not self.stopping.is_set():
            try:
                yield listener.inbox.get(timeout=0.5)
            except queue.Empty:
                continue

    def _wait_for_steady_charging(self, listener: BusListener) -> float | None:
        topic = f"{self.prefix}modules/{self.meter[0]}/impl/{self.meter[1]}/var/powermeter"
        since: float | None = None
        for heard in self._heard(listener):
            if heard.topic != topic:
                continue
            try:
                watts = float(json.loads(heard.payload)["data"]["data"]["power_W"]["total"])
            except (ValueError, KeyError, TypeError):
                continue
            if watts < CHARGING_W:
                since = None
            elif since is None:
                since = heard.at
            elif heard.at - since >= READY_S:
                return watts
        return None

    def _trade(self, watts: float, note: Note) -> None:
        now = datetime.now(UTC)
        period, number = isp_at(now + timedelta(seconds=LEAD_S), TIME_ZONE, ISP)
        number += 1
        if number > isps_per_day(period, TIME_ZONE, ISP):
            period, number = period + timedelta(days=1), 1
        start = isp_start(period, TIME_ZONE, number, ISP)
        asked = int(watts // 2)
        request = self.dso.send_flex_request(
            congestion_point=EAN,
            period=period,
            time_zone=TIME_ZONE,
            isps=[(number, 1, -asked, -asked // 2, "Requested")],
            expires=start,
            isp_duration="PT1M",
        )
        note(
            f"uftp | DSO: FlexRequest, {asked / 1000:.1f} kW less in ISP {number} "
            f"({start:%H:%M:%S}-{start + ISP:%H:%M:%S} UTC)"
        )
        offer = self.dso.received(
            FlexOffer, lambda m: m.flex_request_message_id == request.message_id, WAIT_S
        )
        power = offer.offer_options[0].isps[0].power
        note(f"uftp | AGR: FlexOffer {power / 1000:.1f} kW")
        order = self.dso.send_flex_order(offer, order_reference="DEMO-ORDER-1")
        answer = self.dso.received(
            FlexOrderResponse, lambda m: m.flex_order_message_id == order.message_id, WAIT_S
        )
        note(f"uftp | AGR: FlexOrder DEMO-ORDER-1 {answer.result}")

    def _collect_caps(self, listener: BusListener) -> None:
        """The caps of the order as the adapter sent them to the node (the report draws
        them)."""
        topic = f"{self.prefix}modules/{NODE}/impl/external_limits/cmd/set_external_limits"
        for heard in self._heard(listener):
            if heard.topic != topic:
                continue
            try:
                entries = json.loads(heard.payload)["data"]["args"]["value"]["schedule_import"]
            except (ValueError, KeyError, TypeError):
                continue
            caps = []
            for entry, following in itertools.pairwise(entries):
                power = entry["limits_to_root"].get("total_power_W")
                if power:
                    caps.append(
                        (
                            datetime.fromisoformat(entry["timestamp"]),
                            datetime.fromisoformat(following["timestamp"]),
                            float(power["value"]),
                        )
                    )
            if caps:
                # the first push after the order holds it whole; later re-pushes start "now"
                self.caps = caps
                return
