#!/usr/bin/env python3
"""The UFTP adapter as the DSO sees it, on loopback, next to a bare library AGR.

One run: a private Mosquitto (started here), a real station (`everkit run` of a PyEnergyNode
``uftp_limit`` with a standalone leaf, as in tests/integration/test_uftp_station_link.py),
the everkit Adapter (guard, market, persistence, StationLink) and two loopback DSO
simulators, one trading with the adapter and one with the baseline: the library's
ShapeshifterAgrService answering FlexRequestResponse + a fixed FlexOffer and
FlexOrderResponse, checking nothing (``MiniAgr`` of tests/integration/test_dso_simulator.py).
Figures:

1. FlexRequest -> FlexOffer: ``send_flex_request`` until the offer is recorded by the DSO
   (which answers the offer with FlexOfferResponse first, on both sides), every request for
   one ISP of tomorrow with a fresh MessageID; adapter and baseline in ABBA blocks;
2. FlexOrder -> FlexOrderResponse (adapter and baseline, ABBA) and FlexOrder -> the SO cap in
   the node's ``energy_flow_request`` var (a raw paho subscriber stamps its arrival); every
   order is for its own ISP with its own power, so its cap is a new schedule entry;
3. InboundGuard.check (in-process, a tmp file) with 10k and 100k remembered MessageIDs: with
   nothing to forget, and in a steady stream where each check ages one ID out of the window
   (forget_before then rewrites the file); plus the file size per 10k IDs.

Informational: the script always exits 0. Run from the repository root:
``.venv/bin/python bench/uftp_adapter.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `tests.*`
    sys.path.insert(0, str(REPO))

from benchstats import load_average, summary  # noqa: E402
from shapeshifter_uftp import FlexOffer, FlexOrderResponse  # noqa: E402

from everkit.framework.broker import start_mosquitto  # noqa: E402
from everkit.framework.transport import BrokerAddress  # noqa: E402
from everkit.framework.wire import var_payload  # noqa: E402
from everkit.simulators.dso import DsoSimulator  # noqa: E402
from everkit.uftp import config as agr_config  # noqa: E402
from everkit.uftp.guard import CLOCK_SKEW, DEFAULT_WINDOW, InboundGuard, SeenMessages  # noqa: E402
from everkit.uftp.isp import isp_start  # noqa: E402
from everkit.uftp.messages import Header  # noqa: E402
from everkit.uftp.service import Adapter  # noqa: E402
from tests.conftest import _raw_client  # noqa: E402
from tests.integration.test_dso_simulator import library_pair  # noqa: E402
from tests.integration.test_uftp_station_link import GOOD_READING, NODE, station  # noqa: E402
from tests.uftp_rig import (  # noqa: E402
    DSO_DOMAIN,
    EAN,
    TIME_ZONE,
    agr_peer,
    new_keys,
    write_adapter_config,
)

logging.getLogger("shapeshifter-uftp").setLevel(logging.WARNING)
logging.getLogger("everkit").setLevel(logging.ERROR)  # refusals are not expected; noise

PREFIX = "benchuftpagr/"
WAIT_S = 30.0
ISPS_PER_DAY = 96  # tomorrow has no DST change in the bench's season; isp_start would refuse
BASELINE_W = 20000.0  # caps below the node's fuse (27.6 kW), or the fuse wins
BASE_AGR = "agr.baseline.test"
BASE_DSO = "dso.baseline.test"

Send = Callable[[int], int]  # ISP number -> elapsed ns


def quiet_uvicorn() -> None:
    """The library's servers log their start at INFO (uvicorn configures that when the
    service is made)."""
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


def tomorrow() -> date:
    return (datetime.now(ZoneInfo(TIME_ZONE)) + timedelta(days=1)).date()


def request(dso: DsoSimulator, isp: int, watts: int) -> Any:
    return dso.send_flex_request(
        congestion_point=EAN,
        period=tomorrow(),
        time_zone=TIME_ZONE,
        isps=[(isp, 1, -watts, -watts, "Requested")],
        expires=datetime.now(UTC) + timedelta(hours=1),
    )


def offer_for(dso: DsoSimulator, sent: Any) -> Any:
    return dso.received(FlexOffer, lambda m: m.flex_request_message_id == sent.message_id, WAIT_S)


def order_answered(dso: DsoSimulator, order: Any) -> None:
    response = dso.received(
        FlexOrderResponse, lambda m: m.flex_order_message_id == order.message_id, WAIT_S
    )
    assert str(response.result) == "Accepted", response.rejection_reason


class CapWatcher:
    """A raw paho subscriber to the node's energy_flow_request: when each SO-capped entry
    (by its timestamp to the second) first arrived, in perf_counter_ns."""

    def __init__(self, broker: BrokerAddress) -> None:
        self.topic = f"{PREFIX}modules/{NODE}/impl/energy_grid/var/energy_flow_request"
        self.arrived: dict[str, int] = {}
        self.changed = threading.Condition()
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(self.topic, qos=2)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(WAIT_S), "cap watcher: no SUBACK"

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        now = time.perf_counter_ns()
        entries = json.loads(message.payload)["data"]["data"]["schedule_import"]
        with self.changed:
            for entry in entries:
                power = entry["limits_to_root"].get("total_power_W")
                if power and power["source"] == "SO":
                    self.arrived.setdefault(entry["timestamp"][:19], now)
            self.changed.notify_all()

    def wait(self, moment: datetime) -> int:
        key = moment.strftime("%Y-%m-%dT%H:%M:%S")
        with self.changed:
            seen = sorted(self.arrived)
            assert self.changed.wait_for(lambda: key in self.arrived, WAIT_S), (key, seen)
            return self.arrived[key]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def adapter_side(broker: BrokerAddress, folder: Path) -> Iterator[tuple[DsoSimulator, Adapter]]:
    """The everkit adapter and its DSO, wired like the rig of test_uftp_adapter.py; the
    station's meter reads BASELINE_W once (the baseline holds it)."""
    keys = new_keys()
    path, port = write_adapter_config(folder, keys, "", broker, PREFIX)
    dso = DsoSimulator(DSO_DOMAIN, keys.dso_secret, agr_peer(keys, port))
    path.write_text(path.read_text().replace("endpoint: ''", f"endpoint: {dso.endpoint}"))
    adapter = Adapter(agr_config.load(path))
    quiet_uvicorn()
    with dso:
        adapter.start()
        try:
            meter = _raw_client(broker)
            topic = f"{PREFIX}modules/hw/impl/powermeter/var/powermeter"
            reading = {**GOOD_READING, "power_W": {"total": BASELINE_W}}
            meter.publish(topic, var_payload(reading))
            meter.client.disconnect()
            meter.client.loop_stop()
            pause = threading.Event()
            deadline = time.monotonic() + WAIT_S
            while not adapter.market.power["site-1"].samples:  # no event to hook
                assert time.monotonic() < deadline, "the adapter got no meter reading"
                pause.wait(0.02)
            yield dso, adapter
        finally:
            adapter.stop()


@contextmanager
def baseline_side() -> Iterator[DsoSimulator]:
    """The library AGR (MiniAgr) and its own DSO, as test_dso_simulator.py wires them."""
    with library_pair(BASE_AGR, BASE_DSO) as (dso, _agr):
        quiet_uvicorn()  # after the servers' configs, which reset uvicorn's loggers
        yield dso


def abba(sides: dict[str, Send], count: int, warmup: int, first_isp: int) -> dict[str, list[int]]:
    """``count`` timed calls per side in 4 alternating blocks, after ``warmup`` untimed ones;
    the n-th call of a side gets ISP first_isp + n (wrapping within the day)."""
    calls = dict.fromkeys(sides, 0)

    def call(name: str) -> int:
        isp = (first_isp - 1 + calls[name]) % ISPS_PER_DAY + 1
        calls[name] += 1
        return sides[name](isp)

    for name in sides:
        for _ in range(warmup):
            call(name)
    samples: dict[str, list[int]] = {name: [] for name in sides}
    names = list(sides)
    for block, order in enumerate((names, names[::-1]) * 2):
        for name in order:
            gc.collect()
            samples[name].extend(call(name) for _ in range(count // 4 + (block < count % 4)))
    return samples


def round_trips(adapter_dso: DsoSimulator, base_dso: DsoSimulator, args: Any) -> Any:
    def flex_request(dso: DsoSimulator) -> Send:
        def send(isp: int) -> int:
            started = time.perf_counter_ns()
            offer_for(dso, request(dso, isp, 1000))
            return time.perf_counter_ns() - started

        return send

    return abba(
        {"adapter": flex_request(adapter_dso), "baseline": flex_request(base_dso)},
        args.requests,
        args.warmup,
        1,
    )


def orders(
    adapter_dso: DsoSimulator, base_dso: DsoSimulator, watcher: CapWatcher, args: Any
) -> tuple[dict[str, list[int]], list[int]]:
    caps: list[int] = []
    period = tomorrow()

    def order(dso: DsoSimulator, with_cap: bool) -> Send:
        def send(isp: int) -> int:
            # its own power per ISP, so neighbouring caps differ and each gets an entry
            offer = offer_for(dso, request(dso, isp, 500 + 10 * isp))
            started = time.perf_counter_ns()
            sent = dso.send_flex_order(offer, order_reference=f"BENCH-{uuid.uuid4()}")
            order_answered(dso, sent)
            elapsed = time.perf_counter_ns() - started
            if with_cap:
                caps.append(watcher.wait(isp_start(period, TIME_ZONE, isp)) - started)
            return elapsed

        return send

    # ISPs from 41 on: the warm-up and the timed orders each get an ISP of their own
    warmup = min(args.warmup, 4)
    samples = abba(
        {"adapter": order(adapter_dso, True), "baseline": order(base_dso, False)},
        args.orders,
        warmup,
        41,
    )
    return samples, caps[warmup:]


def header(number: int, moment: datetime) -> Header:
    return Header(
        "FlexRequest",
        str(uuid.UUID(int=number)),
        str(uuid.uuid4()),
        "dso",
        "agr",
        moment,
        f"{number:064x}",  # a sha256 hex digest's length
    )


def guard_figures(size: int, checks: int, steady: int, folder: Path) -> dict[str, float]:
    """µs per check with ``size`` remembered IDs spread over the window: nothing to forget,
    then one ID aged out per check (the steady state of a constant message stream)."""
    path = folder / f"seen-{size}.jsonl"
    origin = datetime(2026, 1, 1, tzinfo=UTC)
    step = DEFAULT_WINDOW / size
    with path.open("w", encoding="utf-8") as file:  # the lines SeenMessages.add writes
        for number in range(size):
            item = header(number, origin + number * step)
            line = {"id": item.message_id, "digest": item.digest}
            file.write(json.dumps({**line, "timestamp": item.timestamp.isoformat()}) + "\n")
    bytes_per_10k = path.stat().st_size / size * 10000
    started = time.perf_counter_ns()
    guard = InboundGuard("agr", ["dso"], SeenMessages(path))
    load_ms = (time.perf_counter_ns() - started) / 1e6

    def timed(moments: list[datetime], first: int) -> float:
        gc.collect()
        started = time.perf_counter_ns()
        for offset, now in enumerate(moments):
            assert guard.check(header(first + offset, now), now) == ""
        return (time.perf_counter_ns() - started) / len(moments) / 1000

    # nothing older than now - window - skew: forget_before scans and keeps everything
    quiet_now = origin + DEFAULT_WINDOW
    quiet = timed([quiet_now] * checks, size)
    started = time.perf_counter_ns()
    for _ in range(checks):
        guard.seen.forget_before(quiet_now - DEFAULT_WINDOW - CLOCK_SKEW)
    scan = (time.perf_counter_ns() - started) / checks / 1000
    # each check's now lies one step later: the oldest remembered ID ages out every time
    ahead = origin + DEFAULT_WINDOW + CLOCK_SKEW + step / 2
    stream = timed([ahead + n * step for n in range(steady)], size + checks)
    return {
        "quiet": quiet,
        "scan": scan,
        "stream": stream,
        "bytes_per_10k": bytes_per_10k,
        "load_ms": load_ms,
    }


def row(name: str, samples: list[int]) -> str:
    f = summary(samples)
    return (
        f"  {name:<22} {f['median']:8.2f} {f['p95']:8.2f} {f['p99']:8.2f} {f['max']:8.2f}"
        f"   n={len(samples)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per side")
    parser.add_argument("--orders", type=int, default=50, help="timed orders per side")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests per side")
    parser.add_argument("--guard-checks", type=int, default=200, help="checks per size")
    parser.add_argument("--guard-steady", type=int, default=20, help="aging checks per size")
    args = parser.parse_args()
    if args.orders > ISPS_PER_DAY - 40 - 4:
        parser.error("--orders: at most 52, one ISP of tomorrow each (from ISP 41 on)")
    print("everkit UFTP adapter benchmark")
    print(f"load average at start: {load_average()}")

    broker = start_mosquitto()
    folder = tempfile.TemporaryDirectory(prefix="everkit-bench-uftp-agr-")
    base = Path(folder.name)
    try:
        bus = _raw_client(broker.address)
        bus.subscribe(PREFIX + "#")
        (base / "station").mkdir()
        (base / "agr").mkdir()
        with station(broker.address, PREFIX, base / "station", bus):
            bus.client.unsubscribe(PREFIX + "#")  # it records everything: not during timing
            watcher = CapWatcher(broker.address)
            try:
                with (
                    adapter_side(broker.address, base / "agr") as (adapter_dso, _),
                    baseline_side() as base_dso,
                ):
                    trips = round_trips(adapter_dso, base_dso, args)
                    answered, caps = orders(adapter_dso, base_dso, watcher, args)
            finally:
                watcher.close()
        bus.client.disconnect()
        bus.client.loop_stop()
        guard = {
            size: guard_figures(size, args.guard_checks, args.guard_steady, base)
            for size in (10_000, 100_000)
        }
    finally:
        broker.stop()
        folder.cleanup()

    header_line = f"  {'':<22} {'median':>8} {'p95':>8} {'p99':>8} {'max':>8}   (ms)"
    print(f"\n1. FlexRequest -> FlexOffer at the DSO (ABBA, {args.warmup} warm-up per side)")
    print(header_line)
    print(row("everkit adapter", trips["adapter"]))
    print(row("library AGR (baseline)", trips["baseline"]))
    extra = summary(trips["adapter"])["median"] - summary(trips["baseline"])["median"]
    print(f"  adapter - baseline (medians): {extra:+.2f} ms")
    for name, samples in trips.items():  # drift: the adapter keeps every open offer (1 h)
        quarter = -(-len(samples) // 4)
        blocks = [samples[i : i + quarter] for i in range(0, len(samples), quarter)]
        medians = " ".join(f"{summary(b)['median']:.2f}" for b in blocks)
        print(f"  {name} medians per block: {medians}")
    print("\n2. FlexOrder (ABBA for the response)")
    print(header_line)
    print(row("-> FlexOrderResponse", answered["adapter"]))
    print(row("   baseline", answered["baseline"]))
    print(row("-> SO cap on the node", caps))
    print("\n3. InboundGuard.check, seen-messages file on tmp (µs per check)")
    print(f"  {'IDs':>8} {'quiet':>9} {'scan':>9} {'stream':>10} {'file/10k':>10} {'load':>8}")
    for size, g in guard.items():
        print(
            f"  {size:>8} {g['quiet']:9.0f} {g['scan']:9.0f} {g['stream']:10.0f} "
            f"{g['bytes_per_10k'] / 1e6:8.2f}MB {g['load_ms']:6.0f}ms"
        )
    print(
        "  quiet: nothing ages out (scan + append + fsync); scan: forget_before alone;\n"
        "  stream: one ID ages out per check (the file is tidied at most once an hour)"
    )
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
