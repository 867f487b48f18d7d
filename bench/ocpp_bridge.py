#!/usr/bin/env python3
"""PyOCPP201 serving several EVSEs: session event to TransactionEvent latency, CPU, RSS, losses.

One run, one private Mosquitto and one demo CSMS (both started here):

- our in-process Manager with a bench module (``BenchEvses``) that provides N ``evse_manager``
  implementations, and PyOCPP201 as a real process (``python -m everkit module PyOCPP201``)
  connected to all N and to the demo CSMS, which runs in a child process of this script and
  stamps every frame with ``time.time()`` as it receives it;
- N driver threads play PyEvseManager's DC sessions on their EVSE for ``--duration`` seconds
  (staggered, a new session uuid each time, powermeter at 1 Hz with rising energy);
- for every session event that makes a TransactionEvent (PrepareCharging -> Started,
  ChargingStarted -> Updated Charging, StoppingCharging -> Updated EVConnected,
  TransactionFinished -> Ended), the time from just before the MQTT publish to the CSMS
  receiving the matching TransactionEvent; next to it, the MQTT-only time of the same
  events to a raw paho subscriber in this process, so the bridge's own share shows;
- PyOCPP201's CPU (/proc/<pid>/stat) and RSS (VmRSS at the start and end of the load);
- every transaction checked at the CSMS: one Started, one Ended, seqNo 0..n without gaps
  or duplicates, every expected TransactionEvent present.

The latency target is informational. The script exits 1 only if something was lost.
See bench/README.md. Run from the repository root: ``.venv/bin/python bench/ocpp_bridge.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import benchstats
import paho.mqtt.client as paho
from benchstats import stats_row, write_json

from everkit.framework.broker import start_mosquitto
from everkit.framework.errors import MessageParsingError
from everkit.framework.module import Module
from everkit.framework.transport import BrokerAddress
from everkit.framework.wire import Topics, decode

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (REPO, BENCH):  # `tests.integration.harness`; `framework_roundtrip` (raw paho)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

PREFIX = "benchocpp/"
STATION = "bench-cs-001"
EVSES_ID = "evses"  # the bench module's id
OCPP_ID = "ocpp"  # PyOCPP201's id
WAIT_S = 10.0
READY_TIMEOUT_S = 60.0  # process start, GlobalReady, get_evse x N, websocket, boot, status
DRAIN_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
META = {"license": "https://www.apache.org/licenses/LICENSE-2.0", "authors": ["everkit bench"]}
CARD = {"id_token": {"value": "BENCH0001", "type": "ISO14443"}, "authorization_type": "RFID"}
CHARGE_POWER_W = 50000.0
VOLTAGE_V = 400.0
STAGGER_S = 0.75  # EVSE i starts its first session at i x this
CALL = 2
STATION_TO_CSMS = "station->csms"

# What each session event turns into with the default TxStartPoint (PowerPathClosed) and
# TxStopPoint (EVConnected, Authorized): (eventType, transactionInfo.chargingState). A
# session's transactionId is its uuid, so (uuid, eventType, chargingState) names exactly one
# TransactionEvent; periodic samples carry no chargingState.
EXPECTED: dict[str, tuple[str, str]] = {
    "PrepareCharging": ("Started", "EVConnected"),
    "ChargingStarted": ("Updated", "Charging"),
    "StoppingCharging": ("Updated", "EVConnected"),
    "TransactionFinished": ("Ended", "Idle"),
}
# What a fake EvseManager answers to each evse_manager command (get_evse is per EVSE).
ANSWERS: dict[str, Any] = {
    "enable_disable": True,
    "authorize_response": None,
    "withdraw_authorization": None,
    "reserve": False,
    "cancel_reservation": None,
    "pause_charging": False,
    "resume_charging": False,
    "stop_transaction": True,
    "force_unlock": True,
    "external_ready_to_start_charging": False,
    "set_plug_and_charge_configuration": None,
    "update_allowed_energy_transfer_modes": "NoHlc",
}

TARGET_P99_MS = 20.0


def _roundtrip() -> ModuleType:
    """bench/framework_roundtrip.py: raw paho clients, /proc readers and the machine facts."""
    import framework_roundtrip  # noqa: PLC0415 - importable once BENCH is on sys.path

    return framework_roundtrip


def impl_id(index: int) -> str:
    return f"evse_{index + 1}"


def wire_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# the demo CSMS, in a child process of this script


def csms_child() -> int:
    """``--csms-child``: serve the demo CSMS on a free port; print its URL, then one JSON line
    per frame, ``{"rx", "dir", "frame"}``, ``rx`` = ``time.time()`` when the frame was read
    from the websocket (or, for the CSMS's own frames, just before it was sent)."""
    from everkit.simulators.csms import DemoCsms, FrameEntry  # noqa: PLC0415

    out = sys.stdout

    def on_frame(entry: FrameEntry) -> None:
        # FrameLog calls this right after the websocket read returned
        received = time.time()
        line = {"rx": received, "dir": entry["dir"], "frame": entry["frame"]}
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
        out.flush()

    async def serve() -> None:
        csms = DemoCsms(on_frame=on_frame)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await csms.start("127.0.0.1", 0)
        print(csms.url, file=out, flush=True)
        try:
            await stop.wait()
        finally:
            await csms.stop()

    asyncio.run(serve())
    return 0


@dataclass(frozen=True)
class Frame:
    rx: float
    direction: str
    frame: Any

    @property
    def transaction_event(self) -> dict[str, Any] | None:
        """The payload when this is a TransactionEvent CALL from the station."""
        f = self.frame
        if (
            self.direction == STATION_TO_CSMS
            and isinstance(f, list)
            and len(f) == 4
            and f[0] == CALL
            and f[2] == "TransactionEvent"
            and isinstance(f[3], dict)
        ):
            return f[3]
        return None

    def is_call(self, action: str) -> bool:
        f = self.frame
        return (
            self.direction == STATION_TO_CSMS
            and isinstance(f, list)
            and len(f) == 4
            and f[0] == CALL
            and f[2] == action
        )


class CsmsProcess:
    """The child process and a thread that collects its frames."""

    def __init__(self, log_path: Path) -> None:
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--csms-child"],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.process.stdout is not None
        self._stdout: IO[str] = self.process.stdout
        self.url = self._stdout.readline().strip()
        if not self.url.startswith("ws://"):
            self.stop()
            raise RuntimeError(f"the CSMS did not start:\n{log_path.read_text()}")
        self.frames: list[Frame] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="csms-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stdout:
            entry = json.loads(line)
            with self._changed:
                self.frames.append(Frame(entry["rx"], entry["dir"], entry["frame"]))
                self._changed.notify_all()

    def wait(self, predicate: Callable[[list[Frame]], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.frames), timeout)

    def snapshot(self) -> list[Frame]:
        with self._changed:
            return list(self.frames)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# the EVerest side: N evse_manager implementations in this process


def bench_manifest(count: int) -> dict[str, dict[str, Any]]:
    provides = {
        impl_id(i): {"interface": "evse_manager", "description": f"EVSE {i + 1}"}
        for i in range(count)
    }
    return {
        "BenchEvses": {
            "description": "N fake EvseManagers whose session events the bench plays",
            "provides": provides,
            "metadata": META,
        }
    }


def runtime_config(count: int, csms_url: str, db_dir: Path, interval_s: int) -> dict[str, Any]:
    evses = [{"module_id": EVSES_ID, "implementation_id": impl_id(i)} for i in range(count)]
    ocpp = {
        "csms_url": csms_url,
        "station_id": STATION,
        "CoreDatabasePath": str(db_dir),
        "device_model": f"SampledDataCtrlr.TxUpdatedInterval={interval_s}",
    }
    return {
        "active_modules": {
            EVSES_ID: {"module": "BenchEvses"},
            OCPP_ID: {
                "module": "PyOCPP201",
                "config_module": ocpp,
                "connections": {"evse_manager": evses},
            },
        }
    }


class BenchEvses:
    """Answers every evse_manager command of every implementation; get_evse says EVSE i+1."""

    def __init__(self, module: Module, count: int) -> None:
        self.module = module
        self.count = count
        for index in range(count):
            impl = impl_id(index)
            evse = {"id": index + 1, "connectors": [{"id": 1}]}
            module.implement_command(impl, "get_evse", _constant(evse))
            for cmd, answer in ANSWERS.items():
                module.implement_command(impl, cmd, _constant(answer))

    def publish(self, index: int, var: str, value: Any) -> None:
        self.module.publish_variable(impl_id(index), var, value)


def _constant(answer: Any) -> Callable[..., Any]:
    return lambda **_args: answer


@dataclass(frozen=True)
class Published:
    """One session event, stamped with ``time.time()`` just before its MQTT publish."""

    evse: int
    session: str
    event: str
    t0: float


@dataclass
class Ledger:
    events: list[Published] = field(default_factory=list)
    powermeters: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, item: Published) -> None:
        with self.lock:
            self.events.append(item)


def meter(energy_Wh: float, power_W: float) -> dict[str, Any]:
    return {
        "timestamp": wire_now(),
        "energy_Wh_import": {"total": round(energy_Wh, 3)},
        "power_W": {"total": power_W},
        "voltage_V": {"DC": VOLTAGE_V},
        "current_A": {"DC": power_W / VOLTAGE_V},
    }


class EvseDriver(threading.Thread):
    """Plays PyEvseManager's DC sessions on one EVSE, back to back, until ``deadline``
    (time.monotonic()); the session running then is played to its end. Powermeter goes out
    at 1 Hz throughout, its energy rising while charging."""

    def __init__(
        self,
        evses: BenchEvses,
        index: int,
        *,
        ledger: Ledger,
        start_at: float,
        deadline: float,
        charge_s: tuple[float, float],
        rng: random.Random,
    ) -> None:
        super().__init__(name=f"driver-{impl_id(index)}", daemon=True)
        self.evses = evses
        self.index = index
        self.ledger = ledger
        self.start_at = start_at
        self.deadline = deadline
        self.charge_s = charge_s
        self.rng = rng
        self.sessions = 0
        self._energy_Wh = 1000.0 * (index + 1)
        self._power_W = 0.0
        self._since = time.monotonic()  # energy is integrated from here at _power_W
        self._next_meter = start_at + rng.uniform(0.0, 1.0)

    def run(self) -> None:
        try:
            self._wait_until(self.start_at)
            while time.monotonic() < self.deadline:
                self._session()
                self.sessions += 1
                self._wait(self.rng.uniform(1.0, 2.0))
        except Exception as exc:  # reported as a loss: the bench cannot vouch for the run
            self.ledger.errors.append(f"{self.name}: {type(exc).__name__}: {exc}")

    # one session, as PyEvseManager publishes it (modules/evse_manager/core.py)

    def _session(self) -> None:
        sid = str(uuid.uuid4())
        self._event(sid, "SessionStarted", session_started={"reason": "EVConnected"})
        self._wait(0.1)
        self._event(sid, "AuthRequired")
        self._wait(self.rng.uniform(0.3, 0.8))  # the card is tapped
        self._event(sid, "Authorized")
        self._event(sid, "TransactionStarted", transaction_started={"id_tag": CARD})
        self._wait(self.rng.uniform(0.8, 1.5))  # cable check
        self._event(sid, "PrepareCharging")
        self._wait(self.rng.uniform(0.3, 0.8))  # pre-charge
        self._set_power(CHARGE_POWER_W)
        self._event(sid, "ChargingStarted", charging_state_changed_event={})
        self._wait(self.rng.uniform(*self.charge_s))
        self._set_power(0.0)
        self._event(sid, "StoppingCharging")
        self._wait(self.rng.uniform(0.3, 0.8))
        self._event(sid, "ChargingFinished")
        self._event(sid, "TransactionFinished", transaction_finished={"reason": "EVDisconnected"})
        self._wait(0.3)
        self._event(sid, "SessionFinished", session_finished={})

    def _event(self, session: str, kind: str, **details: dict[str, Any]) -> None:
        for detail in details.values():  # every detail object carries the meter reading
            detail["meter_value"] = meter(self._energy(), self._power_W)
        event = {
            "uuid": session,
            "timestamp": wire_now(),
            "connector_id": 1,
            "event": kind,
            **details,
        }
        t0 = time.time()
        self.evses.publish(self.index, "session_event", event)
        self.ledger.add(Published(self.index + 1, session, kind, t0))

    # time and energy

    def _energy(self) -> float:
        now = time.monotonic()
        self._energy_Wh += self._power_W * (now - self._since) / 3600.0
        self._since = now
        return self._energy_Wh

    def _set_power(self, power_W: float) -> None:
        self._energy()
        self._power_W = power_W

    def _wait(self, seconds: float) -> None:
        self._wait_until(time.monotonic() + seconds)

    def _wait_until(self, until: float) -> None:
        """Sleep until ``until``, publishing powermeter on its 1 s grid meanwhile."""
        while True:
            now = time.monotonic()
            if self._next_meter <= now:
                self.evses.publish(self.index, "powermeter", meter(self._energy(), self._power_W))
                with self.ledger.lock:
                    self.ledger.powermeters += 1
                self._next_meter += 1.0
                continue
            if now >= until:
                return
            time.sleep(min(until, self._next_meter) - now)


# the MQTT-only baseline


class SessionEventWatcher:
    """A raw paho client that stamps (``time.time()``) every session_event of the bench's
    EVSEs as it arrives: the MQTT share of the path, measured on the same events."""

    def __init__(self, broker: BrokerAddress) -> None:
        rt = _roundtrip()
        self.arrived: dict[tuple[str, str], float] = {}
        self.client: paho.Client = rt.raw_client(broker, "bench-ocpp-watcher")
        self.client.on_message = self._on_message
        topic = Topics(PREFIX).var(EVSES_ID, "+", "session_event")
        rt.raw_subscribe(self.client, topic)

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        received = time.time()
        try:
            event = decode(bytes(msg.payload)).data["data"]
        except (MessageParsingError, KeyError, TypeError):
            return
        self.arrived.setdefault((str(event["uuid"]), str(event["event"])), received)

    def close(self) -> None:
        _roundtrip().raw_close(self.client)


# /proc


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    rest = text[text.rindex(")") + 2 :].split()  # fields 3.. (comm may hold spaces)
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    return _roundtrip().proc_status_kb(pid)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Sample:
    """CPU seconds of the processes we watch, and PyOCPP201's memory, at one moment."""

    at: float
    cpu: dict[str, float]
    memory_kb: dict[str, int]


def sample(pids: dict[str, int], ocpp_pid: int) -> Sample:
    cpu = {}
    for name, pid in pids.items():
        try:
            cpu[name] = cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            continue
    return Sample(time.monotonic(), cpu, memory_kb(ocpp_pid))


# the run


@dataclass
class Options:
    evses: int = 8
    duration: float = 60.0
    updated_interval: int = 1
    charge_s: tuple[float, float] = (5.0, 10.0)
    seed: int = 1


def ocpp_process(broker: BrokerAddress, log: IO[bytes]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "everkit", "module", "PyOCPP201", "--id", OCPP_ID]
    command += ["--broker", f"{broker.host}:{broker.port}", "--prefix", PREFIX]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)


def stop_process(process: subprocess.Popen[bytes]) -> int:
    return benchstats.stop_process(process, STOP_TIMEOUT_S)


def statuses_available(count: int) -> Callable[[list[Frame]], bool]:
    """Every EVSE reported Available (after the bench published its ``ready``)."""

    def check(frames: list[Frame]) -> bool:
        available = {
            f.frame[3].get("evseId")
            for f in frames
            if f.is_call("StatusNotification") and f.frame[3].get("connectorStatus") == "Available"
        }
        return available >= set(range(1, count + 1))

    return check


def all_expected_arrived(ledger: Ledger) -> Callable[[list[Frame]], bool]:
    with ledger.lock:
        wanted = {(p.session, *EXPECTED[p.event]) for p in ledger.events if p.event in EXPECTED}

    def check(frames: list[Frame]) -> bool:
        seen = set()
        for f in frames:
            payload = f.transaction_event
            if payload is not None:
                seen.add(_key(payload))
        return wanted <= seen

    return check


def _key(payload: dict[str, Any]) -> tuple[str, str, str | None]:
    info = payload.get("transactionInfo", {})
    return (
        str(info.get("transactionId")),
        str(payload.get("eventType")),
        info.get("chargingState"),
    )


def run(options: Options) -> dict[str, Any]:
    from tests.integration.harness import in_process_stack, start_module  # noqa: PLC0415

    results: dict[str, Any] = {"machine": _roundtrip().machine_facts(), "options": vars(options)}
    rng = random.Random(options.seed)
    with ExitStack() as stack:
        folder = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="everkit-bench-ocpp-"))
        )
        broker = stack.enter_context(start_mosquitto())  # a free loopback port, never 1883
        results["broker"] = str(broker.address)
        csms = CsmsProcess(folder / "csms.log")
        stack.callback(csms.stop)
        config = runtime_config(
            options.evses, csms.url, folder / "ocpp-db", options.updated_interval
        )
        manager, started = stack.enter_context(
            in_process_stack(broker.address, PREFIX, folder, config, bench_manifest(options.evses))
        )
        module = start_module(broker.address, PREFIX, EVSES_ID, default_timeout=WAIT_S)
        started[EVSES_ID] = module
        evses = BenchEvses(module, options.evses)
        watcher = SessionEventWatcher(broker.address)
        stack.callback(watcher.close)
        ocpp_log_path = folder / "ocpp.log"
        ocpp_log = stack.enter_context(ocpp_log_path.open("wb"))
        ocpp = ocpp_process(broker.address, ocpp_log)
        stack.callback(stop_process, ocpp)
        module.init_done()
        if not manager.global_ready.wait(READY_TIMEOUT_S):
            raise RuntimeError(f"no GlobalReady; PyOCPP201 log:\n{ocpp_log_path.read_text()}")
        for index in range(options.evses):
            evses.publish(index, "ready", True)
        if not csms.wait(statuses_available(options.evses), READY_TIMEOUT_S):
            raise RuntimeError(
                f"not every EVSE became Available at the CSMS; log:\n{ocpp_log_path.read_text()}"
            )

        pids = {
            "PyOCPP201": ocpp.pid,
            "demo CSMS": csms.process.pid,
            "mosquitto": broker.process.pid,
            "bench (manager, EVSEs, drivers, watchers)": os.getpid(),
        }
        ledger = Ledger()
        begin = sample(pids, ocpp.pid)
        wall_begin = time.time()
        deadline = begin.at + options.duration
        drivers = [
            EvseDriver(
                evses,
                index,
                ledger=ledger,
                start_at=begin.at + index * STAGGER_S,
                deadline=deadline,
                charge_s=options.charge_s,
                rng=random.Random(rng.random()),
            )
            for index in range(options.evses)
        ]
        for driver in drivers:
            driver.start()
        for driver in drivers:
            driver.join()
        drained = csms.wait(all_expected_arrived(ledger), DRAIN_TIMEOUT_S)
        end = sample(pids, ocpp.pid)
        results["load"] = {
            "wall_s": end.at - begin.at,
            "sessions_driven": sum(d.sessions for d in drivers),
            "powermeters": ledger.powermeters,
            "drained": drained,
            "driver_errors": ledger.errors,
        }
        results["resources"] = resources(begin, end, pids)
        results["ocpp_alive_at_end"] = ocpp.poll() is None
        frames = csms.snapshot()
        results["analysis"] = analyse(
            ledger.events, watcher.arrived, frames, wall_begin, options.updated_interval
        )
        results["ocpp_exit_status"] = stop_process(ocpp)  # SIGTERM: a clean stop
        results["ocpp_log"] = log_summary(ocpp_log_path.read_text(errors="replace"))
    results["lost"] = losses(results)
    results["targets"] = targets(results)
    return results


def resources(begin: Sample, end: Sample, pids: dict[str, int]) -> dict[str, Any]:
    wall = end.at - begin.at
    cpu = {
        name: {
            "cpu_s": end.cpu[name] - begin.cpu[name],
            "core_pct": 100.0 * (end.cpu[name] - begin.cpu[name]) / wall,
        }
        for name in pids
        if name in begin.cpu and name in end.cpu
    }
    rss_begin = begin.memory_kb["VmRSS"] / 1024
    rss_end = end.memory_kb["VmRSS"] / 1024
    return {
        "window_s": wall,
        "cpu": cpu,
        "ocpp_rss_begin_mb": rss_begin,
        "ocpp_rss_end_mb": rss_end,
        "ocpp_rss_growth_mb": rss_end - rss_begin,
        "ocpp_peak_rss_mb": end.memory_kb["VmHWM"] / 1024,
    }


def log_summary(text: str) -> dict[str, Any]:
    lines = text.splitlines()
    flagged = [line for line in lines if " WARNING " in line or " ERROR " in line]
    flagged += [line for line in lines if "Traceback" in line]
    return {"lines": len(lines), "warnings_errors": flagged[:20], "flagged": len(flagged)}


# analysis


def latency_stats(samples_s: list[float]) -> dict[str, float] | None:
    if not samples_s:
        return None
    ms = [s * 1e3 for s in samples_s]
    return {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p99_ms": quantile(ms, 0.99),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
    }


def analyse(
    events: list[Published],
    mqtt: dict[tuple[str, str], float],
    frames: list[Frame],
    t_begin: float,
    interval_s: int,
) -> dict[str, Any]:
    tx_frames = [(f, te) for f in frames if (te := f.transaction_event) is not None]
    first_at: dict[tuple[str, str, str | None], float] = {}
    per_tx: dict[str, list[dict[str, Any]]] = {}
    triggers: Counter[str] = Counter()
    for f, payload in tx_frames:
        tx_id = str(payload.get("transactionInfo", {}).get("transactionId"))
        per_tx.setdefault(tx_id, []).append(payload)
        triggers[f"{payload.get('eventType')} {payload.get('triggerReason')}"] += 1
        if payload.get("triggerReason") != "MeterValuePeriodic":
            first_at.setdefault(_key(payload), f.rx)
    call_times = sorted(f.rx for f in frames if f.direction == STATION_TO_CSMS)

    bridge: dict[str, list[float]] = {kind: [] for kind in EXPECTED}
    bus: dict[str, list[float]] = {kind: [] for kind in EXPECTED}
    bus_all: list[float] = []
    ahead: list[int] = []  # station frames the CSMS received between t0 and the TE itself
    alone: list[float] = []  # latencies of TEs with nothing ahead of them on the websocket
    share: list[float] = []  # per event: MQTT arrival at the watcher -> CSMS has the TE
    missing: list[str] = []
    for p in events:
        arrived = mqtt.get((p.session, p.event))
        if arrived is not None:
            bus_all.append(arrived - p.t0)
        if p.event not in EXPECTED:
            continue
        if arrived is not None:
            bus[p.event].append(arrived - p.t0)
        at = first_at.get((p.session, *EXPECTED[p.event]))
        if at is None:
            missing.append(f"EVSE {p.evse} {p.session} {p.event}")
            continue
        bridge[p.event].append(at - p.t0)
        if arrived is not None:
            share.append(at - arrived)
        before = _count_between(call_times, p.t0, at)
        ahead.append(before)
        if before == 0:
            alone.append(at - p.t0)

    sessions = {p.session for p in events}
    tx_checks = check_transactions(per_tx, sessions)
    periodic = periodic_samples(tx_frames, interval_s)
    every = [x for xs in bridge.values() for x in xs]
    every_bus = [x for xs in bus.values() for x in xs]
    return {
        "sessions_started": len(sessions),
        "session_events": len(events),
        "session_events_seen_on_mqtt": len(mqtt),
        "transaction_events": len(tx_frames),
        "by_trigger": dict(sorted(triggers.items())),
        "latency": {kind: latency_stats(xs) for kind, xs in bridge.items()},
        "latency_all": latency_stats(every),
        "mqtt": {kind: latency_stats(xs) for kind, xs in bus.items()},
        "mqtt_all": latency_stats(every_bus),
        "mqtt_every_session_event": latency_stats(bus_all),
        "frames_ahead": {
            "median": statistics.median(ahead) if ahead else None,
            "max": max(ahead) if ahead else None,
            "with_none_ahead": len(alone),
        },
        "latency_none_ahead": latency_stats(alone),
        "bridge_share": latency_stats(share),
        "missing": missing,
        **tx_checks,
        "periodic": periodic,
        "first_frame_after_begin_s": (frames[0].rx - t_begin) if frames else None,
    }


def periodic_samples(
    tx_frames: list[tuple[Frame, dict[str, Any]]], interval_s: int
) -> dict[str, Any] | None:
    """MeterValuePeriodic against its grid (Started's timestamp + k x TxUpdatedInterval):
    how late each sample's own timestamp is, and the gaps between consecutive arrivals."""
    if interval_s <= 0:
        return None
    started: dict[str, datetime] = {}
    last_rx: dict[str, float] = {}
    lags: list[float] = []
    gaps: list[float] = []
    for f, payload in tx_frames:
        tx_id = str(payload.get("transactionInfo", {}).get("transactionId"))
        stamp = datetime.fromisoformat(str(payload["timestamp"]).replace("Z", "+00:00"))
        if payload.get("eventType") == "Started":
            started[tx_id] = stamp
        if payload.get("triggerReason") != "MeterValuePeriodic" or tx_id not in started:
            continue
        elapsed = (stamp - started[tx_id]).total_seconds()
        lags.append(elapsed - interval_s * int(elapsed // interval_s))
        if tx_id in last_rx:
            gaps.append(f.rx - last_rx[tx_id])
        last_rx[tx_id] = f.rx
    if not lags:
        return None
    return {
        "n": len(lags),
        "lag_median_ms": statistics.median(lags) * 1e3,
        "lag_max_ms": max(lags) * 1e3,
        "gap_min_s": min(gaps) if gaps else None,
        "gap_max_s": max(gaps) if gaps else None,
    }


def _count_between(ordered: list[float], start: float, end: float) -> int:
    """Values in ``ordered`` strictly between start and end."""
    return max(0, bisect.bisect_left(ordered, end) - bisect.bisect_right(ordered, start))


def check_transactions(
    per_tx: dict[str, list[dict[str, Any]]], sessions: set[str]
) -> dict[str, Any]:
    gaps = duplicates = 0
    bad_counts: list[str] = []
    for tx_id, payloads in per_tx.items():
        seqs = [int(p["seqNo"]) for p in payloads]
        distinct = set(seqs)
        duplicates += len(seqs) - len(distinct)
        gaps += max(distinct) + 1 - len(distinct)
        if not _one_started_one_ended(payloads):
            kinds = Counter(str(p.get("eventType")) for p in payloads)
            bad_counts.append(f"{tx_id}: Started x{kinds['Started']}, Ended x{kinds['Ended']}")
    without = sorted(sessions - per_tx.keys())
    unknown = sorted(per_tx.keys() - sessions)
    complete = sum(1 for tx_id in sessions & per_tx.keys() if _one_started_one_ended(per_tx[tx_id]))
    return {
        "transactions": len(per_tx),
        "sessions_completed": complete,
        "seq_gaps": gaps,
        "seq_duplicates": duplicates,
        "bad_started_ended": bad_counts,
        "sessions_without_transaction": without,
        "unknown_transactions": unknown,
    }


def _one_started_one_ended(payloads: list[dict[str, Any]]) -> bool:
    kinds = Counter(str(p.get("eventType")) for p in payloads)
    return kinds["Started"] == 1 and kinds["Ended"] == 1


def losses(results: dict[str, Any]) -> list[str]:
    a = results["analysis"]
    load = results["load"]
    lost = []
    if load["sessions_driven"] == 0:
        lost.append("no session was driven")
    if a["sessions_completed"] != a["sessions_started"]:
        lost.append(f"sessions completed {a['sessions_completed']} of {a['sessions_started']}")
    if a["missing"]:
        lost.append(f"{len(a['missing'])} TransactionEvents missing, e.g. {a['missing'][:3]}")
    if a["seq_gaps"] or a["seq_duplicates"]:
        lost.append(f"seqNo gaps {a['seq_gaps']}, duplicates {a['seq_duplicates']}")
    if a["bad_started_ended"]:
        lost.append(f"not one Started and one Ended: {a['bad_started_ended'][:3]}")
    if a["sessions_without_transaction"]:
        lost.append(f"sessions without a transaction: {a['sessions_without_transaction'][:3]}")
    if a["unknown_transactions"]:
        lost.append(f"transactions of no session: {a['unknown_transactions'][:3]}")
    if load["driver_errors"]:
        lost.append(f"driver errors: {load['driver_errors'][:3]}")
    if not results["ocpp_alive_at_end"]:
        lost.append("PyOCPP201 exited during the run")
    return lost


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    overall = results["analysis"]["latency_all"]
    p99 = overall["p99_ms"] if overall else float("inf")
    return [
        {
            "what": f"session_event -> TransactionEvent at the CSMS p99 < {TARGET_P99_MS:g} ms",
            "value": f"{p99:.2f} ms (n={overall['n'] if overall else 0})",
            "pass": p99 < TARGET_P99_MS,
        }
    ]


# report


def _row(label: str, stats: dict[str, float] | None) -> str:
    return stats_row(label, stats, width=40, mean=True)


def report(results: dict[str, Any]) -> str:
    facts, options = results["machine"], results["options"]
    a, load, res = results["analysis"], results["load"], results["resources"]
    header = f"  {'':<40}{'n':>6}{'median':>9}{'p99':>9}{'max':>9}{'mean':>9}   (ms)"
    lines = [
        "PyOCPP201 bridge benchmark",
        "=" * 76,
        f"python {facts['python']}, paho-mqtt {facts['paho-mqtt']}, {facts['mosquitto']}, "
        f"{facts['cpus']} CPUs ({facts['cpu']})",
        f"{facts['platform']}; load average at start "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"one private Mosquitto on {results['broker']}; demo CSMS in a child process; "
        "PyOCPP201 as its own process",
        f"{options['evses']} EVSEs, {options['duration']:g} s of DC sessions "
        f"(charging {options['charge_s'][0]:g}-{options['charge_s'][1]:g} s), "
        f"TxUpdatedInterval {options['updated_interval']} s, powermeter 1 Hz per EVSE",
        "",
        f"load: {load['wall_s']:.1f} s (new sessions for {options['duration']:g} s, the last "
        "ones played to their end and drained);",
        f"  "
        f"{a['sessions_started']} sessions, {a['session_events']} session events, "
        f"{load['powermeters']} powermeter vars",
        f"TransactionEvents at the CSMS: {a['transaction_events']} in {a['transactions']} "
        "transactions",
    ]
    lines += [f"    {count:>5}  {kind}" for kind, count in a["by_trigger"].items()]
    lines += [
        "",
        "1. session_event publish -> CSMS receives the TransactionEvent",
        header,
    ]
    for kind, (event_type, state) in EXPECTED.items():
        lines.append(_row(f"{kind} -> {event_type} {state}", a["latency"][kind]))
    lines.append(_row("all four", a["latency_all"]))
    ahead = a["frames_ahead"]
    lines += [
        _row("  of which nothing ahead on the websocket", a["latency_none_ahead"]),
        f"  station frames the CSMS received between publish and the TransactionEvent: "
        f"median {ahead['median']}, max {ahead['max']}",
        "",
        "2. the same session events, publish -> raw paho subscriber (MQTT only)",
        header,
    ]
    for kind in EXPECTED:
        lines.append(_row(kind, a["mqtt"][kind]))
    lines.append(_row("all four", a["mqtt_all"]))
    lines.append(_row("every session event", a["mqtt_every_session_event"]))
    lines += [
        "",
        "   the bridge's own share, per event: raw subscriber has it -> CSMS has the TE",
        "   (PyOCPP201's MQTT read, the bridge, websocket, the CSMS's read)",
        header,
        _row("all four", a["bridge_share"]),
    ]
    periodic = a["periodic"]
    if periodic is not None:
        lines += [
            "",
            f"   periodic samples (MeterValuePeriodic, {periodic['n']}): timestamp behind its "
            f"grid point median {periodic['lag_median_ms']:.0f} ms, max "
            f"{periodic['lag_max_ms']:.0f} ms;",
            f"   one transaction's samples arrive {periodic['gap_min_s']:.2f}-"
            f"{periodic['gap_max_s']:.2f} s apart",
        ]
    lines += [
        "",
        f"3. processes over the {res['window_s']:.1f} s load window (/proc/<pid>/stat)",
        f"  {'process':<44}{'cpu s':>8}{'% core':>9}",
    ]
    for name, cpu in res["cpu"].items():
        lines.append(f"  {name:<44}{cpu['cpu_s']:>8.2f}{cpu['core_pct']:>9.1f}")
    lines += [
        f"  PyOCPP201 RSS: {res['ocpp_rss_begin_mb']:.1f} MB at the start of the load, "
        f"{res['ocpp_rss_end_mb']:.1f} MB at the end ({res['ocpp_rss_growth_mb']:+.1f} MB); "
        f"peak {res['ocpp_peak_rss_mb']:.1f} MB",
        f"  PyOCPP201 log: {results['ocpp_log']['lines']} lines, "
        f"{results['ocpp_log']['flagged']} warnings/errors; exit status on SIGTERM "
        f"{results['ocpp_exit_status']}",
    ]
    lines += [f"    {line}" for line in results["ocpp_log"]["warnings_errors"]]
    lines += [
        "",
        "4. nothing lost",
        f"  {_ok(a['sessions_completed'] == a['sessions_started'])}  sessions completed "
        f"(exactly one Started and one Ended at the CSMS): "
        f"{a['sessions_completed']}/{a['sessions_started']}",
        f"  {_ok(not a['missing'])}  session events whose TransactionEvent arrived: "
        f"{sum(s['n'] for s in a['latency'].values() if s)}"
        f"/{sum(s['n'] for s in a['latency'].values() if s) + len(a['missing'])}",
        f"  {_ok(not (a['seq_gaps'] or a['seq_duplicates']))}  seqNo gaps {a['seq_gaps']}, "
        f"duplicates {a['seq_duplicates']} (per transaction)",
        f"  {_ok(not a['unknown_transactions'])}  transactions of no session: "
        f"{len(a['unknown_transactions'])}",
        f"  {_ok(a['session_events_seen_on_mqtt'] == a['session_events'])}  (watcher) session "
        f"events seen on MQTT: {a['session_events_seen_on_mqtt']}/{a['session_events']}",
    ]
    for item in results["lost"]:
        lines.append(f"  LOST  {item}")
    lines += ["", "targets (informational)"]
    for target in results["targets"]:
        lines.append(
            f"  {'PASS' if target['pass'] else 'MISS'}  {target['what']}: {target['value']}"
        )
    return "\n".join(lines)


def _ok(ok: bool) -> str:
    return "ok  " if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evses", type=int, default=8, help="EVSEs PyOCPP201 serves")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of new sessions")
    parser.add_argument(
        "--updated-interval", type=int, default=1, help="SampledDataCtrlr.TxUpdatedInterval, s"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the random session timing")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--csms-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.csms_child:
        return csms_child()
    if not 1 <= args.evses <= 128 or args.duration <= 0 or args.updated_interval < 0:
        parser.error("--evses 1..128, --duration > 0, --updated-interval >= 0")
    options = Options(args.evses, args.duration, args.updated_interval, seed=args.seed)
    results = run(options)
    print(report(results))
    if args.json is not None:
        write_json(args.json, results)
    return 1 if results["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
