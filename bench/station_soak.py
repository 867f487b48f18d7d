#!/usr/bin/env python3
"""One station, 8 EVSEs charging concurrently, a schedule change every minute: the soak.

The stack is bench/ocpp_bridge.py's (its pieces are imported, not copied): one private
Mosquitto, our in-process Manager with a bench module that provides N ``evse_manager``
implementations and plays PyEvseManager's DC sessions on them, PyOCPP201 as a real process,
and the demo CSMS in a child process that stamps every frame. On top of that:

- the bench module also provides N + 1 ``external_energy_limits`` implementations (EVSE 0, the
  grid connection, and one per EVSE), which PyOCPP201 calls ``set_external_limits`` on, as it
  does on EnergyNodes; the bench stamps every call as it arrives;
- every ``--change-every`` seconds the CSMS sends SetChargingProfile on EVSE 0: the same
  station-wide TxDefaultProfile (same id, so it replaces the last one) with a new limit in W;
- the sessions run for ``--duration`` seconds of real time (the SIL runs in real time; there
  is no simulated clock to speed up): each EVSE charges 45-90 s per session, then unplugs
  and starts again; at the deadline every running session is ended at once.

Figures: message rates (MQTT from Mosquitto's $SYS counters, OCPP from the CSMS's frames);
latency p99 of session event -> TransactionEvent at the CSMS and of SetChargingProfile ->
the new limit's ``set_external_limits`` at each EVSE's sink; CPU % per process; RSS of
every process every 10 s, at warm-up (``--warmup`` s into the load) against the end;
TransactionEvents sent against received by the CSMS (nothing lost, no duplicate, seqNo
without gaps, one Started and one Ended per session).

Run from the repository root: ``.venv/bin/python bench/station_soak.py [--duration 600]``.
Exits 1 if a TransactionEvent, a session or a schedule change was lost. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (REPO, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import framework_roundtrip as rt  # noqa: E402
import ocpp_bridge as ob  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from benchstats import stats_row, write_json  # noqa: E402

from everkit.framework.broker import PrivateBroker, start_mosquitto  # noqa: E402
from everkit.framework.module import Module  # noqa: E402
from everkit.framework.transport import BrokerAddress  # noqa: E402
from everkit.framework.wire import Topics  # noqa: E402

PROFILE_ID = 9001
LIMITS_W = (40000.0, 22000.0, 33000.0, 18000.0, 27000.0, 45000.0, 25000.0, 36000.0)
CSMS_TO_STATION = "csms->station"
SAMPLE_EVERY_S = 10.0
# publish/messages/received stays 0 in Mosquitto 2.0.11, so PUBLISH is counted going out only
SYS_TOPICS = (
    "$SYS/broker/publish/messages/sent",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
)
SINK_LATE_S = 30.0  # a new limit later than this at a sink counts as lost


def sink_id(evse_id: int) -> str:
    return f"sink_{evse_id}"


# the demo CSMS in a child process, which also takes schedule changes on its stdin


def csms_child() -> int:
    """Like ocpp_bridge's child (URL, then one JSON line per frame), plus: every line on
    stdin, ``{"change": k, "limit_W": x}``, becomes a SetChargingProfile on EVSE 0."""
    from ocpp.v201 import call  # noqa: PLC0415

    from everkit.simulators.csms import DemoCsms, FrameEntry  # noqa: PLC0415

    out = sys.stdout
    lock = threading.Lock()

    def on_frame(entry: FrameEntry) -> None:
        line = {"rx": time.time(), "dir": entry["dir"], "frame": entry["frame"]}
        text = json.dumps(line, separators=(",", ":")) + "\n"
        with lock:
            out.write(text)
            out.flush()

    async def change(csms: DemoCsms, order: dict[str, Any]) -> None:
        start = time.time() - 1.0
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start)) + ".000Z"
        profile = {
            "id": PROFILE_ID,
            "stack_level": 0,
            "charging_profile_purpose": "TxDefaultProfile",
            "charging_profile_kind": "Absolute",
            "charging_schedule": [
                {
                    "id": int(order["change"]),  # the bench finds the CALL by it
                    "start_schedule": stamp,
                    "charging_rate_unit": "W",
                    "charging_schedule_period": [
                        {"start_period": 0, "limit": float(order["limit_W"])}
                    ],
                }
            ],
        }
        handle = await csms.wait_station(ob.STATION)
        await handle.call(call.SetChargingProfile(evse_id=0, charging_profile=profile))

    async def serve() -> None:
        csms = DemoCsms(on_frame=on_frame)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)

        def read_orders() -> None:
            for line in sys.stdin:
                order = json.loads(line)
                loop.call_soon_threadsafe(csms.spawn, change(csms, order))

        await csms.start("127.0.0.1", 0)
        with lock:
            print(csms.url, file=out, flush=True)
        threading.Thread(target=read_orders, daemon=True).start()
        try:
            await stop.wait()
        finally:
            await csms.stop()

    asyncio.run(serve())
    return 0


class SoakCsms(ob.CsmsProcess):
    """ocpp_bridge's CSMS process, started as this script's child, with a stdin for orders."""

    def __init__(self, log_path: Path) -> None:
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--csms-child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdin is not None
        self._stdout: IO[str] = self.process.stdout
        self._stdin: IO[str] = self.process.stdin
        self.url = self._stdout.readline().strip()
        if not self.url.startswith("ws://"):
            self.stop()
            raise RuntimeError(f"the CSMS did not start:\n{log_path.read_text()}")
        self.frames: list[ob.Frame] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="csms-reader", daemon=True)
        self._reader.start()

    def order(self, change: int, limit_W: float) -> None:
        self._stdin.write(json.dumps({"change": change, "limit_W": limit_W}) + "\n")
        self._stdin.flush()

    def stop(self) -> None:
        if not self._stdin.closed:
            self._stdin.close()
        super().stop()
        self._reader.join(ob.STOP_TIMEOUT_S)  # the child is gone: its stdout is at EOF
        self._stdout.close()


# the EVerest side: ocpp_bridge's fake EVSEs plus N + 1 energy sinks


def bench_manifest(count: int) -> dict[str, dict[str, Any]]:
    manifest = ob.bench_manifest(count)
    provides = manifest["BenchEvses"]["provides"]
    for evse_id in range(count + 1):
        provides[sink_id(evse_id)] = {
            "interface": "external_energy_limits",
            "description": f"energy sink of EVSE {evse_id}",
        }
    return manifest


def runtime_config(
    count: int, csms_url: str, db_dir: Path, interval_s: int, message_log: Path
) -> dict[str, Any]:
    config = ob.runtime_config(count, csms_url, db_dir, interval_s)
    modules = config["active_modules"]
    # the station's own log of what it sent: TransactionEvents sent against received
    modules[ob.OCPP_ID]["config_module"]["MessageLogPath"] = str(message_log)
    modules[ob.EVSES_ID]["mapping"] = {
        "implementations": {sink_id(e): {"evse": e} for e in range(count + 1)}
    }
    modules[ob.OCPP_ID]["connections"]["evse_energy_sink"] = [
        {"module_id": ob.EVSES_ID, "implementation_id": sink_id(e)} for e in range(count + 1)
    ]
    return config


@dataclass(frozen=True)
class LimitCall:
    """One set_external_limits as the bench's sink received it."""

    at: float  # time.time()
    evse: int
    first_W: float | None  # the first slot's limits_to_leaves.total_power_W


@dataclass
class Sinks:
    calls: list[LimitCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, module: Module, count: int) -> None:
        for evse_id in range(count + 1):
            module.implement_command(
                sink_id(evse_id), "set_external_limits", self._handler(evse_id)
            )

    def _handler(self, evse_id: int) -> Any:
        def handle(value: dict[str, Any]) -> None:
            at = time.time()
            slots = value.get("schedule_import") or []
            power = (slots[0].get("limits_to_leaves") or {}).get("total_power_W") if slots else None
            first = float(power["value"]) if power else None
            with self.lock:
                self.calls.append(LimitCall(at, evse_id, first))

        return handle

    def snapshot(self) -> list[LimitCall]:
        with self.lock:
            return list(self.calls)


class SoakWatcher(ob.SessionEventWatcher):
    """ocpp_bridge's session_event watcher, on any prefix."""

    def __init__(self, broker: BrokerAddress, prefix: str) -> None:
        self.arrived: dict[tuple[str, str], float] = {}
        self.client: paho.Client = rt.raw_client(broker, "bench-soak-watcher")
        self.client.on_message = self._on_message
        rt.raw_subscribe(self.client, Topics(prefix).var(ob.EVSES_ID, "+", "session_event"))


def ocpp_process(broker: BrokerAddress, prefix: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "everkit", "module", "PyOCPP201", "--id", ob.OCPP_ID]
    command += ["--broker", f"{broker.host}:{broker.port}", "--prefix", prefix]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)


class SoakDriver(ob.EvseDriver):
    """ocpp_bridge's driver, except that at the deadline the running session ends at once
    (its remaining events go out back to back) instead of playing its charge to the end."""

    def _wait_until(self, until: float) -> None:
        super()._wait_until(min(until, self.deadline))


# Mosquitto's own counters


class SysWatcher:
    """Mosquitto's $SYS message counters (updated every sys_interval, 10 s by default)."""

    def __init__(self, broker: BrokerAddress) -> None:
        self.samples: dict[str, list[tuple[float, int]]] = {t: [] for t in SYS_TOPICS}
        self.lock = threading.Lock()
        self.client: paho.Client = rt.raw_client(broker, "bench-soak-sys")
        self.client.on_message = self._on_message
        for topic in SYS_TOPICS:
            rt.raw_subscribe(self.client, topic)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            value = int(bytes(msg.payload))
        except ValueError:
            return
        with self.lock:
            self.samples[msg.topic].append((time.monotonic(), value))

    def rates(self, begin: float, end: float) -> dict[str, float | None]:
        """Messages per second between the first counter update at or after ``begin`` and
        the last one at or before ``end``."""
        out: dict[str, float | None] = {}
        with self.lock:
            for topic, series in self.samples.items():
                inside = [(t, v) for t, v in series if begin <= t <= end]
                name = topic.removeprefix("$SYS/broker/")
                if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
                    out[name] = None
                    continue
                (t0, v0), (t1, v1) = inside[0], inside[-1]
                out[name] = (v1 - v0) / (t1 - t0)
        return out

    def close(self) -> None:
        rt.raw_close(self.client)


# resources over time


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    cpu: dict[str, float]
    rss_mb: dict[str, float]
    kinds_mb: dict[str, dict[str, float]]  # RssAnon / RssFile / RssShmem: what grows


RSS_KINDS = ("RssAnon", "RssFile", "RssShmem")


def rss_kinds_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in RSS_KINDS:
            out[key] = int(rest.split()[0]) / 1024
    return out


def sample(pids: dict[str, int]) -> Sample:
    cpu, rss, kinds = {}, {}, {}
    for name, pid in pids.items():
        try:
            cpu[name] = ob.cpu_seconds(pid)
            rss[name] = ob.memory_kb(pid)["VmRSS"] / 1024
            kinds[name] = rss_kinds_mb(pid)
        except (OSError, ValueError, IndexError, KeyError):
            continue
    return Sample(time.monotonic(), cpu, rss, kinds)


class Sampler(threading.Thread):
    def __init__(self, pids: dict[str, int], every_s: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pids = pids
        self.every_s = every_s
        self.samples: list[Sample] = [sample(pids)]
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            self.samples.append(sample(self.pids))

    def stop(self) -> list[Sample]:
        self.stopped.set()
        self.join()
        self.samples.append(sample(self.pids))
        return self.samples


def at_or_after(samples: list[Sample], moment: float) -> Sample:
    for s in samples:
        if s.at >= moment:
            return s
    return samples[-1]


# the run


@dataclass
class Options:
    evses: int = 8
    duration: float = 600.0
    change_every: float = 60.0
    warmup: float = 60.0
    updated_interval: int = 1
    charge_s: tuple[float, float] = (45.0, 90.0)
    seed: int = 1


def scheduler(
    csms: SoakCsms, begin: float, options: Options, stop: threading.Event
) -> list[dict[str, Any]]:
    """Order a change every change_every s from begin on while the load runs."""
    orders: list[dict[str, Any]] = []
    k = 1
    while True:
        due = begin + k * options.change_every
        if due >= begin + options.duration:
            return orders
        if stop.wait(max(0.0, due - time.monotonic())):
            return orders
        limit = LIMITS_W[(k - 1) % len(LIMITS_W)]
        orders.append({"change": k, "limit_W": limit, "ordered": time.time()})
        csms.order(k, limit)
        k += 1


def run(
    options: Options, *, broker: PrivateBroker | None = None, prefix: str = ob.PREFIX
) -> dict[str, Any]:
    """The soak on ``broker`` (default: a private Mosquitto) under ``prefix``."""
    from tests.integration.harness import in_process_stack, start_module  # noqa: PLC0415

    results: dict[str, Any] = {
        "machine": rt.machine_facts(),
        "options": vars(options),
        "load_before": os.getloadavg(),
    }
    rng = random.Random(options.seed)
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="everkit-soak-")))
        if broker is None:
            broker = stack.enter_context(start_mosquitto())  # a free loopback port, never 1883
        results["broker"] = str(broker.address)
        csms = SoakCsms(folder / "csms.log")
        stack.callback(csms.stop)
        message_log = folder / "ocpp-messages"
        config = runtime_config(
            options.evses, csms.url, folder / "ocpp-db", options.updated_interval, message_log
        )
        manager, started = stack.enter_context(
            in_process_stack(broker.address, prefix, folder, config, bench_manifest(options.evses))
        )
        module = start_module(broker.address, prefix, ob.EVSES_ID, default_timeout=ob.WAIT_S)
        started[ob.EVSES_ID] = module
        evses = ob.BenchEvses(module, options.evses)
        sinks = Sinks()
        sinks.serve(module, options.evses)
        watcher = SoakWatcher(broker.address, prefix)
        stack.callback(watcher.close)
        sys_watcher = SysWatcher(broker.address)
        stack.callback(sys_watcher.close)
        ocpp_log_path = folder / "ocpp.log"
        ocpp_log = stack.enter_context(ocpp_log_path.open("wb"))
        ocpp = ocpp_process(broker.address, prefix, ocpp_log)
        stack.callback(ob.stop_process, ocpp)
        module.init_done()
        if not manager.global_ready.wait(ob.READY_TIMEOUT_S):
            raise RuntimeError(f"no GlobalReady; PyOCPP201 log:\n{ocpp_log_path.read_text()}")
        for index in range(options.evses):
            evses.publish(index, "ready", True)
        if not csms.wait(ob.statuses_available(options.evses), ob.READY_TIMEOUT_S):
            raise RuntimeError(
                f"not every EVSE became Available at the CSMS; log:\n{ocpp_log_path.read_text()}"
            )

        pids = {
            "PyOCPP201": ocpp.pid,
            "demo CSMS": csms.process.pid,
            "mosquitto": broker.process.pid,
            "bench (manager, EVSEs, sinks)": os.getpid(),
        }
        ledger = ob.Ledger()
        sampler = Sampler(pids, SAMPLE_EVERY_S)
        begin = sampler.samples[0].at
        wall_begin = time.time()
        sampler.start()
        deadline = begin + options.duration
        drivers = [
            SoakDriver(
                evses,
                index,
                ledger=ledger,
                start_at=begin + index * ob.STAGGER_S,
                deadline=deadline,
                charge_s=options.charge_s,
                rng=random.Random(rng.random()),
            )
            for index in range(options.evses)
        ]
        for driver in drivers:
            driver.start()
        stop_orders = threading.Event()
        orders = scheduler(csms, begin, options, stop_orders)
        for driver in drivers:
            driver.join()
        load_end = time.monotonic()
        drained = csms.wait(ob.all_expected_arrived(ledger), ob.DRAIN_TIMEOUT_S)
        samples = sampler.stop()
        results["load"] = {
            "wall_s": load_end - begin,
            "sessions_driven": sum(d.sessions for d in drivers),
            "powermeters": ledger.powermeters,
            "drained": drained,
            "driver_errors": ledger.errors,
        }
        results["ocpp_alive_at_end"] = ocpp.poll() is None
        frames = csms.snapshot()
        results["analysis"] = ob.analyse(
            ledger.events, watcher.arrived, frames, wall_begin, options.updated_interval
        )
        results["changes"] = analyse_changes(orders, frames, sinks.snapshot(), options.evses)
        results["rates"] = rates(frames, sys_watcher, begin, load_end, wall_begin)
        results["resources"] = resources(samples, begin + options.warmup, load_end, pids)
        results["ocpp_exit_status"] = ob.stop_process(ocpp)
        results["ocpp_log"] = ob.log_summary(ocpp_log_path.read_text(errors="replace"))
        results["sent_vs_received"] = sent_vs_received(
            message_log / f"ocpp-{ob.STATION}.jsonl", frames
        )
    results["load_after"] = os.getloadavg()
    results["lost"] = (
        ob.losses(results)
        + change_losses(results["changes"])
        + delivery_losses(results["sent_vs_received"])
    )
    return results


# analysis


def analyse_changes(
    orders: list[dict[str, Any]], frames: list[ob.Frame], calls: list[LimitCall], evses: int
) -> dict[str, Any]:
    """For every change: the CALL's send time, the station's answer, and when each EVSE's
    sink first received the new limit after the CALL."""
    sent: dict[int, float] = {}
    message_ids: dict[str, int] = {}
    for f in frames:
        frame = f.frame
        if (
            f.direction == CSMS_TO_STATION
            and isinstance(frame, list)
            and len(frame) == 4
            and frame[0] == ob.CALL
            and frame[2] == "SetChargingProfile"
        ):
            schedule = frame[3]["chargingProfile"]["chargingSchedule"][0]
            sent[int(schedule["id"])] = f.rx
            message_ids[str(frame[1])] = int(schedule["id"])
    answered: dict[int, tuple[float, str]] = {}
    for f in frames:
        frame = f.frame
        if f.direction == ob.STATION_TO_CSMS and isinstance(frame, list) and len(frame) >= 3:
            change = message_ids.get(str(frame[1]))
            if change is not None and frame[0] in (3, 4):
                status = frame[2].get("status") if frame[0] == 3 else f"CALLERROR {frame[2]}"
                answered[change] = (f.rx, str(status))
    per_change = []
    first_sink: list[float] = []
    every_sink: list[float] = []
    last_sink: list[float] = []
    call_result: list[float] = []
    missing: list[str] = []
    for order in orders:
        k, limit = order["change"], order["limit_W"]
        t0 = sent.get(k)
        if t0 is None:
            missing.append(f"change {k}: the CSMS never sent it")
            continue
        answer = answered.get(k)
        if answer is not None:
            call_result.append(answer[0] - t0)
        arrivals = {}
        for evse_id in range(1, evses + 1):
            hit = next(
                (c.at for c in calls if c.evse == evse_id and c.at >= t0 and c.first_W == limit),
                None,
            )
            if hit is None or hit - t0 > SINK_LATE_S:
                missing.append(f"change {k}: EVSE {evse_id}'s sink never got {limit:g} W")
                continue
            arrivals[evse_id] = hit - t0
        if arrivals:
            first_sink.append(min(arrivals.values()))
            last_sink.append(max(arrivals.values()))
            every_sink.extend(arrivals.values())
        per_change.append(
            {
                "change": k,
                "limit_W": limit,
                "status": answer[1] if answer else None,
                "sinks_reached": len(arrivals),
            }
        )
    by_evse = Counter(c.evse for c in calls)
    return {
        "orders": len(orders),
        "per_change": per_change,
        "rejected": [c for c in per_change if c["status"] != "Accepted"],
        "call_result": ob.latency_stats(call_result),
        "first_sink": ob.latency_stats(first_sink),
        "every_sink": ob.latency_stats(every_sink),
        "last_sink": ob.latency_stats(last_sink),
        "missing": missing,
        "set_external_limits_calls": len(calls),
        "calls_per_sink": dict(sorted(by_evse.items())),
    }


def sent_vs_received(station_log: Path, frames: list[ob.Frame]) -> dict[str, Any]:
    """TransactionEvent CALLs in the station's MessageLogPath log ("out") against those the
    CSMS received, by message id; and (transactionId, seqNo) pairs received twice."""
    sent: set[str] = set()
    for line in station_log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        frame = json.loads(entry["frame"])
        if entry["dir"] == "out" and frame[0] == ob.CALL and frame[2] == "TransactionEvent":
            sent.add(str(frame[1]))
    received: Counter[str] = Counter()
    seqs: Counter[tuple[str, int]] = Counter()
    for f in frames:
        payload = f.transaction_event
        if payload is not None:
            received[str(f.frame[1])] += 1
            seqs[(str(payload["transactionInfo"]["transactionId"]), int(payload["seqNo"]))] += 1
    return {
        "sent": len(sent),
        "received": sum(received.values()),
        "sent_not_received": len(sent - received.keys()),
        "received_not_sent": len(received.keys() - sent),
        "same_message_twice": sum(n - 1 for n in received.values()),
        "same_seq_twice": sum(n - 1 for n in seqs.values()),
    }


def delivery_losses(counts: dict[str, Any]) -> list[str]:
    problems = {
        k: counts[k]
        for k in ("sent_not_received", "received_not_sent", "same_message_twice", "same_seq_twice")
        if counts[k]
    }
    return [f"TransactionEvents sent vs received: {problems}"] if problems else []


def change_losses(changes: dict[str, Any]) -> list[str]:
    lost = []
    if changes["orders"] == 0:
        lost.append("no schedule change was ordered")
    if changes["rejected"]:
        lost.append(f"changes not Accepted: {changes['rejected'][:3]}")
    if changes["missing"]:
        lost.append(f"{len(changes['missing'])} limits lost, e.g. {changes['missing'][:3]}")
    return lost


def rates(
    frames: list[ob.Frame], sys_watcher: SysWatcher, begin: float, end: float, wall_begin: float
) -> dict[str, Any]:
    wall_end = wall_begin + (end - begin)
    inside = [f for f in frames if wall_begin <= f.rx <= wall_end]
    seconds = max(end - begin, 1e-9)
    by_dir = Counter(f.direction for f in inside)
    return {
        "window_s": end - begin,
        "ocpp_frames_per_s": len(inside) / seconds,
        "ocpp_station_to_csms_per_s": by_dir[ob.STATION_TO_CSMS] / seconds,
        "ocpp_csms_to_station_per_s": by_dir[CSMS_TO_STATION] / seconds,
        "mqtt": sys_watcher.rates(begin, end),
    }


def resources(
    samples: list[Sample], warm_at: float, end: float, pids: dict[str, int]
) -> dict[str, Any]:
    first = samples[0]
    warm = at_or_after(samples, warm_at)
    last = at_or_after(samples, end)
    middle = at_or_after(samples, (warm.at + last.at) / 2)  # a leak grows in both halves
    out: dict[str, Any] = {"window_s": last.at - first.at, "after_warmup_s": last.at - warm.at}
    for name in pids:
        if name not in first.cpu or name not in last.cpu:
            continue
        cpu_s = last.cpu[name] - first.cpu[name]
        series = [s.rss_mb[name] for s in samples if name in s.rss_mb and s.at <= last.at]
        growth = last.rss_mb[name] - warm.rss_mb[name]
        out[name] = {
            "cpu_s": cpu_s,
            "core_pct": 100.0 * cpu_s / max(last.at - first.at, 1e-9),
            "rss_start_mb": first.rss_mb[name],
            "rss_warm_mb": warm.rss_mb[name],
            "rss_end_mb": last.rss_mb[name],
            "rss_max_mb": max(series),
            "growth_mb": growth,
            "growth_pct": 100.0 * growth / warm.rss_mb[name],
            "growth_second_half_mb": last.rss_mb[name] - middle.rss_mb[name],
            "growth_by_kind_mb": {
                kind: last.kinds_mb[name].get(kind, 0.0) - warm.kinds_mb[name].get(kind, 0.0)
                for kind in RSS_KINDS
            },
            "rss_series_mb": [round(x, 1) for x in series],
        }
    return out


# report


def _row(label: str, stats: dict[str, float] | None) -> str:
    return stats_row(label, stats, width=46)


def report(results: dict[str, Any]) -> str:
    facts, options = results["machine"], results["options"]
    a, load, res = results["analysis"], results["load"], results["resources"]
    changes, rate = results["changes"], results["rates"]
    header = f"  {'':<46}{'n':>6}{'median':>9}{'p99':>9}{'max':>9}   (ms)"
    mqtt = rate["mqtt"]
    lines = [
        "Station soak: PyOCPP201 with 8 EVSEs charging, a schedule change every minute",
        "=" * 80,
        f"python {facts['python']}, paho-mqtt {facts['paho-mqtt']}, {facts['mosquitto']}, "
        f"{facts['cpus']} CPUs ({facts['cpu']})",
        f"load average before {_loads(results['load_before'])}, after "
        f"{_loads(results['load_after'])}",
        f"{options['evses']} EVSEs, {options['duration']:g} s of real time (the SIL has no "
        f"faster clock), charging {options['charge_s'][0]:g}-{options['charge_s'][1]:g} s per "
        f"session, TxUpdatedInterval {options['updated_interval']} s, powermeter 1 Hz per EVSE",
        f"SetChargingProfile (TxDefaultProfile, EVSE 0) every {options['change_every']:g} s: "
        f"{changes['orders']} changes",
        f"load {load['wall_s']:.1f} s: {a['sessions_started']} sessions, "
        f"{a['session_events']} session events, {load['powermeters']} powermeter vars; "
        f"{a['transaction_events']} TransactionEvents at the CSMS",
        "",
        "1. message rates over the load",
        f"  OCPP frames {rate['ocpp_frames_per_s']:.1f}/s (station -> CSMS "
        f"{rate['ocpp_station_to_csms_per_s']:.1f}/s, CSMS -> station "
        f"{rate['ocpp_csms_to_station_per_s']:.1f}/s)",
        f"  MQTT PUBLISH out of Mosquitto {_rate(mqtt.get('publish/messages/sent'))}/s; "
        "all MQTT packets (QoS 2: 4 per PUBLISH) "
        f"in {_rate(mqtt.get('messages/received'))}/s, out {_rate(mqtt.get('messages/sent'))}/s",
        "",
        "2. latency",
        header,
        _row("session_event -> TransactionEvent at the CSMS", a["latency_all"]),
    ]
    for kind, (event_type, state) in ob.EXPECTED.items():
        lines.append(_row(f"  {kind} -> {event_type} {state}", a["latency"][kind]))
    lines += [
        _row("  baseline: session_event -> raw MQTT subscriber", a["mqtt_all"]),
        _row("SetChargingProfile -> first EVSE sink has it", changes["first_sink"]),
        _row("  -> every EVSE sink (each sink a sample)", changes["every_sink"]),
        _row("  -> the last of the EVSE sinks", changes["last_sink"]),
        _row("  baseline: SetChargingProfile -> CALLRESULT", changes["call_result"]),
        f"  set_external_limits calls in all: {changes['set_external_limits_calls']}, per "
        f"sink (EVSE id: n) {changes['calls_per_sink']}",
        "",
        f"3. processes (CPU over {res['window_s']:.0f} s; RSS at the start, after "
        f"{options['warmup']:g} s of warm-up and at the end; growth from warm-up to the end, "
        "and over the second half of that)",
        f"  {'process':<32}{'% core':>8}{'start':>8}{'warm':>8}{'end':>8}{'max':>8}"
        f"{'growth':>9}{'%':>7}{'2nd half':>10}  (MB)",
    ]
    for name, r in res.items():
        if not isinstance(r, dict):
            continue
        lines.append(
            f"  {name:<32}{r['core_pct']:>8.1f}{r['rss_start_mb']:>8.1f}{r['rss_warm_mb']:>8.1f}"
            f"{r['rss_end_mb']:>8.1f}{r['rss_max_mb']:>8.1f}{r['growth_mb']:>+9.2f}"
            f"{r['growth_pct']:>+7.1f}{r['growth_second_half_mb']:>+10.2f}"
        )
    ocpp = res.get("PyOCPP201", {})
    kinds = ", ".join(f"{k} {v:+.2f}" for k, v in ocpp.get("growth_by_kind_mb", {}).items())
    lines += [
        f"  PyOCPP201 RSS every {SAMPLE_EVERY_S:g} s: {ocpp.get('rss_series_mb', [])}",
        f"  PyOCPP201 growth after warm-up by kind (MB): {kinds}",
        f"  PyOCPP201 log: {results['ocpp_log']['lines']} lines, "
        f"{results['ocpp_log']['flagged']} warnings/errors; exit status on SIGTERM "
        f"{results['ocpp_exit_status']}",
    ]
    lines += [f"    {line}" for line in results["ocpp_log"]["warnings_errors"]]
    sent = sum(s["n"] for s in a["latency"].values() if s) + len(a["missing"])
    delivery = results["sent_vs_received"]
    lines += [
        "",
        "4. nothing lost",
        f"  {_ok(not delivery_losses(delivery))}  TransactionEvents sent by the station (its "
        f"message log) {delivery['sent']}, received by the CSMS {delivery['received']}: "
        f"{delivery['sent_not_received']} lost, {delivery['same_message_twice']} received "
        f"twice, {delivery['same_seq_twice']} (transactionId, seqNo) twice",
        f"  {_ok(not a['missing'])}  TransactionEvents expected from session events, received: "
        f"{sent - len(a['missing'])}/{sent}",
        f"  {_ok(a['sessions_completed'] == a['sessions_started'])}  sessions with exactly one "
        f"Started and one Ended: {a['sessions_completed']}/{a['sessions_started']}",
        f"  {_ok(not (a['seq_gaps'] or a['seq_duplicates']))}  seqNo gaps {a['seq_gaps']}, "
        f"duplicates {a['seq_duplicates']} over {a['transactions']} transactions",
        f"  {_ok(not changes['missing'] and not changes['rejected'])}  schedule changes "
        f"Accepted and at every EVSE sink: "
        f"{sum(1 for c in changes['per_change'] if c['sinks_reached'] == options['evses'])}"
        f"/{changes['orders']}",
    ]
    lines += [f"  LOST  {item}" for item in results["lost"]]
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _loads(values: Any) -> str:
    return ", ".join(f"{x:.2f}" for x in values)


def _ok(ok: bool) -> str:
    return "ok  " if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evses", type=int, default=8)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--change-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=60.0, help="RSS growth counts from here")
    parser.add_argument("--updated-interval", type=int, default=1, help="TxUpdatedInterval, s")
    parser.add_argument(
        "--charge", type=float, nargs=2, default=(45.0, 90.0), metavar=("MIN", "MAX")
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--csms-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.csms_child:
        return csms_child()
    options = Options(
        evses=args.evses,
        duration=args.duration,
        change_every=args.change_every,
        warmup=args.warmup,
        updated_interval=args.updated_interval,
        charge_s=(args.charge[0], args.charge[1]),
        seed=args.seed,
    )
    results = run(options)
    print(report(results))
    if args.json is not None:
        write_json(args.json, results)
    return 1 if results["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
