#!/usr/bin/env python3
"""PyEvseManager in the whole SIL DC charger: enforce_limits to CAN, CPU use, start-up time.

One run, one private Mosquitto (started here), three parts (issue 4):

1. the latency from an ``enforce_limits`` command (a peer module calls it on
   evse_manager's ``energy_grid`` implementation) to the first 0x1C frame
   (SET_MODULE_OUTPUT) on the CAN bus whose current reflects the new limit. The SIL stack
   of config/sil-dc.yaml runs in this process (python-can's virtual bus only works within
   one process): our in-process Manager, every module standalone and built here with its
   own ``attach()``/constructor, a peer that requires ``energy``, and a CAN observer on the
   PSU's channel. The car asks for 100 A; the limit alternates between a high and a low
   power, and only the decreases are timed (increases are ramped by PyEvseManager);
2. the CPU use of ``everkit run config/sil-dc.yaml`` (manager and every module process)
   over 20 s of charging, from /proc/<pid>/stat;
3. the time from starting ``everkit run config/sil-dc.yaml`` to GlobalReady on the bus
   (median of 5 runs).

Targets are informational: the script always exits 0. See bench/README.md.

Run from the repository root: ``.venv/bin/python bench/sil_dc.py``.
"""

from __future__ import annotations

import argparse
import gc
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import can
import paho.mqtt.client as paho
import yaml

from everkit.auth.module import PyAuth
from everkit.evse_manager.core import ChargerCore
from everkit.evse_manager.effects import Effect, Publish
from everkit.evse_manager.module import PyEvseManager
from everkit.framework.broker import PrivateBroker, start_mosquitto
from everkit.framework.errors import EverkitError
from everkit.framework.module import Module
from everkit.framework.transport import BrokerAddress
from everkit.framework.wire import MessageParsingError, Topics, decode
from everkit.power_supply_infy import codec
from everkit.power_supply_infy.codec import Command
from everkit.power_supply_infy.module import PyInfyPowerDC, parse_addresses
from everkit.simulators.ev import EvSimulator
from everkit.simulators.hardware import HardwareSim

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (REPO, BENCH):  # `tests.integration.harness`; `framework_roundtrip` (raw paho)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SIL_CONFIG = REPO / "config" / "sil-dc.yaml"
WAIT_S = 10.0
CHARGING_TIMEOUT_S = 90.0  # plug-in, SLAC, auth, cable check (IMD self-test 3 s), pre-charge
PREFIX = "benchsil/"
META = {"license": "https://www.apache.org/licenses/LICENSE-2.0", "authors": ["everkit bench"]}
PEER_MANIFEST = {
    "BenchEnergyPeer": {
        "description": "calls enforce_limits on an EVSE like EVerest's EnergyManager does",
        "requires": {"energy": {"interface": "energy"}},
        "metadata": META,
    }
}
CAR_CURRENT_A = 100  # dc_target_current: more than either limit allows
LOW_W = 20000.0
HIGH_W = 30000.0
VALID_FOR_S = 60
SETTLED = 0.97  # the ramp back up counts as settled at 97 % of the high power
MAX_JITTER_S = 0.25  # random pause before each timed decrease: samples every tick phase
CHARGE_SCRIPT = (
    "sleep 1;plugin;iso_wait_slac_matched;iso_start_v2g_session DC;iso_wait_pwr_ready;"
    "iso_dc_power_on;iso_wait_for_stop {stop_s:g};iso_wait_v2g_session_stopped;sleep 1;"
    "unplug;sleep 2"
)

TARGET_P99_MS = 50.0
TARGET_READY_S = 3.0

now = time.perf_counter  # one clock in this process: calls, CAN arrivals, bus arrivals


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _roundtrip() -> ModuleType:
    """bench/framework_roundtrip.py: raw paho clients and the machine facts."""
    import framework_roundtrip  # noqa: PLC0415 - importable once BENCH is on sys.path

    return framework_roundtrip


def sil_config(channel: str, script: str, car: dict[str, Any] | None = None) -> dict[str, Any]:
    """config/sil-dc.yaml with its own CAN channel and the car's script (and settings)."""
    config = yaml.safe_load(SIL_CONFIG.read_text())
    modules = config["active_modules"]
    modules["psu"]["config_implementation"]["main"]["can_channel"] = channel
    modules["car"]["config_module"].update({"auto_exec_commands": script, **(car or {})})
    return config


def enforced_limits(power_W: float, node: str = "evse_manager") -> dict[str, Any]:
    """An EnforcedLimits for energy node ``node`` as EVerest's EnergyManager sends it
    (total_power_W is a NumberWithSource); the schedule's first slot has the same limit."""
    limit = {"total_power_W": {"value": power_W, "source": "bench"}}
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "uuid": node,
        "valid_for": VALID_FOR_S,
        "limits_root_side": limit,
        "schedule": [{"timestamp": stamp, "limits_to_root": limit}],
    }


# bus watcher (raw paho)


class BusWatcher:
    """A raw paho client that stamps (``time.perf_counter()``) what it was asked to see:
    the first message of all, GlobalReady, every module's ready and config request, and
    every session event."""

    def __init__(self, broker: BrokerAddress, prefix: str, everything: bool = False) -> None:
        self.topics = Topics(prefix)
        self.first_message: float | None = None
        self.global_ready: float | None = None
        self.module_ready: dict[str, float] = {}
        self.config_request: dict[str, float] = {}
        self.events: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._session_event = self.topics.var("evse_manager", "evse", "session_event")
        rt = _roundtrip()
        self.client = rt.raw_client(broker, "bench-sil-watcher")
        self.client.on_message = self._on_message
        filters = (
            [f"{self.topics.prefix}#"]
            if everything
            else [self.topics.global_ready, self._session_event]
        )
        for topic in filters:
            rt.raw_subscribe(self.client, topic)

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        arrived = now()
        topic, prefix = msg.topic, self.topics.prefix
        with self._changed:
            if self.first_message is None:
                self.first_message = arrived
            if topic == self.topics.global_ready:
                self.global_ready = self.global_ready or arrived
            elif topic == self._session_event:
                event = _data(msg.payload)
                if isinstance(event, dict):
                    self.events.append((arrived, str(event.get("data", {}).get("event"))))
            elif topic.startswith(f"{prefix}modules/") and topic.endswith("/ready"):
                module_id = topic[len(f"{prefix}modules/") : -len("/ready")]
                self.module_ready.setdefault(module_id, arrived)
            elif topic == self.topics.config_request:
                request = _data(msg.payload)
                if isinstance(request, dict):
                    self.config_request.setdefault(str(request.get("origin")), arrived)
            self._changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def event_at(self, name: str) -> float | None:
        return next((at for at, event in self.events if event == name), None)

    def close(self) -> None:
        _roundtrip().raw_close(self.client)


def _data(payload: bytes) -> Any:
    try:
        return decode(payload).data
    except MessageParsingError:
        return None


# part 1: enforce_limits -> 0x1C, the whole stack in this process


@dataclass(frozen=True)
class Setpoint:
    """One 0x1C frame from the controller, as the observer's thread received it."""

    at: float
    destination: int
    voltage_V: float
    current_A: float


class SetpointObserver:
    """A bus on the driver's virtual channel (CanRecorder-style) that keeps every 0x1C
    the controller sends, stamped with ``time.perf_counter()`` as soon as ``recv`` returns."""

    def __init__(self, channel: str, controller: int = codec.DEFAULT_CONTROLLER) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.controller = controller
        self.frames: list[Setpoint] = []
        self.seen = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="can-observer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        recv = self.bus.recv
        while not self._stop.is_set():
            message = recv(0.05)
            if message is None:
                continue
            arrived = now()
            self.seen += 1
            frame_id = codec.FrameId.unpack(message.arbitration_id)
            if frame_id.source != self.controller or frame_id.command != Command.SET_MODULE_OUTPUT:
                continue
            decoded = codec.decode_request(message.arbitration_id, bytes(message.data))
            if isinstance(decoded, codec.Decoded):
                setpoint = decoded.payload
                with self._changed:
                    self.frames.append(
                        Setpoint(
                            arrived,
                            decoded.id.destination,
                            setpoint.voltage_V,
                            setpoint.current_A,
                        )
                    )
                    self._changed.notify_all()

    def first(
        self, since: float, predicate: Callable[[Setpoint], bool], timeout: float = WAIT_S
    ) -> Setpoint:
        found: list[Setpoint] = []

        def match() -> bool:
            # frames arrive in time order: look only at the ones since `since`
            start = len(self.frames)
            while start > 0 and self.frames[start - 1].at >= since:
                start -= 1
            found[:] = [f for f in self.frames[start:] if predicate(f)][:1]
            return bool(found)

        with self._changed:
            if not self._changed.wait_for(match, timeout):
                raise RuntimeError(f"no matching 0x1C frame within {timeout} s")
        return found[0]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.bus.shutdown()


@dataclass
class SilStack:
    peer: Module
    evse: PyEvseManager
    driver: PyInfyPowerDC
    car: EvSimulator
    observer: SetpointObserver
    watcher: BusWatcher
    modules: int  # simulated Infy modules sharing the current
    shim: str | None = None  # why the bench had to adapt enforce_limits, if it had to


def power_W(frame: Setpoint, modules: int) -> float:
    """The total power a 0x1C asks for, with the current shared evenly (equal modules)."""
    return frame.voltage_V * frame.current_A * modules


def core_understands_enforced_limits(core: ChargerCore) -> str | None:
    """None if ``ChargerCore.enforce_limits`` reads EVerest's EnforcedLimits (total_power_W
    is a NumberWithSource); else what goes wrong. Probed on a throwaway core."""
    probe = ChargerCore(core.config, energy_uuid=core.energy_uuid)
    try:
        probe.enforce_limits(enforced_limits(HIGH_W, core.energy_uuid), now=0.0)
        probe.tick(now=0.1)
    except Exception as exc:  # the finding itself
        return f"{type(exc).__name__}: {exc}"
    power = probe.energy.power_W
    if not isinstance(power, int | float):
        return f"EnergyBudget.power_W is {type(power).__name__} {power!r}, not a number"
    return None


def unwrap_number_with_source(core: ChargerCore) -> None:
    """Bench-side shim: hand ``enforce_limits`` plain numbers for NumberWithSource
    values, the shape the core reads today, and let it republish the limits as they
    came (the ``enforced_limits`` var is checked against the schema). Only installed
    when the probe fails."""
    original = core.enforce_limits

    def enforce_limits(limits: dict[str, Any], now: float) -> list[Effect]:
        root = dict(limits.get("limits_root_side") or {})
        for key, value in root.items():
            if isinstance(value, dict) and "value" in value:
                root[key] = value["value"]
        effects = original({**limits, "limits_root_side": root}, now)
        return [
            Publish(e.impl, e.var, limits)
            if isinstance(e, Publish) and e.var == "enforced_limits"
            else e
            for e in effects
        ]

    core.enforce_limits = enforce_limits  # type: ignore[method-assign]


@contextmanager
def sil_stack(broker: BrokerAddress, stop_s: float) -> Iterator[SilStack]:
    """config/sil-dc.yaml in this process, plus a peer that requires ``energy``."""
    from tests.integration.harness import in_process_stack, start_module  # noqa: PLC0415

    channel = f"bench-sil-{uuid.uuid4().hex[:8]}"
    config = sil_config(
        channel,
        CHARGE_SCRIPT.format(stop_s=stop_s),
        {"auto_exec": True, "exit_when_done": False, "dc_target_current": CAR_CURRENT_A},
    )
    config["active_modules"]["peer"] = {
        "module": "BenchEnergyPeer",
        "connections": {
            "energy": [{"module_id": "evse_manager", "implementation_id": "energy_grid"}]
        },
    }
    psu = config["active_modules"]["psu"]["config_implementation"]["main"]
    modules = len(parse_addresses(str(psu["module_addresses"])))
    closers: list[Callable[[], None]] = []
    with (
        tempfile.TemporaryDirectory(prefix="everkit-bench-sil-") as folder,
        in_process_stack(broker, PREFIX, Path(folder), config, PEER_MANIFEST) as (_, started),
    ):
        observer = SetpointObserver(channel)
        closers.append(observer.close)
        watcher = BusWatcher(broker, PREFIX)
        closers.append(watcher.close)
        try:
            for module_id in ("psu", "hardware", "car", "auth", "evse_manager", "peer"):
                started[module_id] = start_module(broker, PREFIX, module_id, default_timeout=WAIT_S)
            driver = PyInfyPowerDC.attach(started["psu"])
            closers.append(driver.close)
            hardware = HardwareSim.attach(started["hardware"])
            closers.append(hardware.close)
            car = EvSimulator.attach(started["car"])
            closers.append(car.close)
            auth = PyAuth.attach(started["auth"])
            closers.append(auth.close)
            evse = PyEvseManager(started["evse_manager"])
            closers.append(evse.close)
            shim = core_understands_enforced_limits(evse.core)
            if shim is not None:
                unwrap_number_with_source(evse.core)
            ready = threading.Event()
            started["psu"].init_done(driver.sink.ready)
            started["hardware"].init_done(hardware.ready)
            started["car"].init_done(car.on_ready)
            started["auth"].init_done(auth.ready)
            started["evse_manager"].init_done(evse.on_ready)
            started["peer"].init_done(ready.set)
            if not ready.wait(WAIT_S):
                raise RuntimeError("no GlobalReady from the in-process manager")
            yield SilStack(started["peer"], evse, driver, car, observer, watcher, modules, shim)
        finally:
            for close in reversed(closers):  # adapters first, then observer and watcher
                try:
                    close()
                except Exception as exc:  # shutting down: report it and go on
                    print(f"  (closing: {type(exc).__name__}: {exc})", file=sys.stderr)


def wait_charging(watcher: BusWatcher, timeout: float = CHARGING_TIMEOUT_S) -> float:
    if not watcher.wait(lambda: watcher.event_at("ChargingStarted") is not None, timeout):
        seen = [event for _, event in watcher.events]
        raise RuntimeError(f"no ChargingStarted within {timeout:g} s; session events {seen}")
    at = watcher.event_at("ChargingStarted")
    assert at is not None
    return at


@dataclass
class Change:
    """One timed decrease."""

    to_frame_s: float  # t0 -> first 0x1C at the lower power
    to_return_s: float  # t0 -> enforce_limits returned (the caller's future resolved)
    frame: Setpoint
    settle_s: float  # how long the ramp back up took before this change (untimed)


def enforce(stack: SilStack, power: float) -> None:
    limits = enforced_limits(power, stack.evse.core.energy_uuid)
    stack.peer.call_command("energy", "enforce_limits", {"value": limits})


def settle_high(stack: SilStack, since: float) -> float:
    """Wait for the ramp back up: a 0x1C at >= SETTLED x the high power."""
    frame = stack.observer.first(
        since, lambda f: power_W(f, stack.modules) >= SETTLED * HIGH_W, timeout=WAIT_S
    )
    return frame.at - since


def timed_decrease(stack: SilStack, settle_s: float) -> Change:
    threshold = (LOW_W + HIGH_W) / 2
    returned: list[float] = []
    done = threading.Event()

    def stamp(_future: Any) -> None:
        returned.append(now())
        done.set()

    t0 = now()
    future = stack.peer.call_command_async(
        "energy", "enforce_limits", {"value": enforced_limits(LOW_W, stack.evse.core.energy_uuid)}
    )
    future.add_done_callback(stamp)
    frame = stack.observer.first(t0, lambda f: power_W(f, stack.modules) < threshold)
    future.result(WAIT_S)  # raises if the handler failed
    done.wait(WAIT_S)  # callbacks run just after result() is released
    return Change(frame.at - t0, returned[0] - t0, frame, settle_s)


def measure_enforce(
    stack: SilStack, changes: int, warmup: int, seed: int
) -> tuple[list[Change], dict[str, Any] | None]:
    """The timed decreases, and what stopped them early (None if nothing did): a change
    that finds no frame, or an enforce_limits that fails, ends the part, not the bench."""
    rng = random.Random(seed)
    out: list[Change] = []
    gc.collect()
    i = -1
    try:
        since = now()
        enforce(stack, HIGH_W)
        settle_s = settle_high(stack, since)
        for i in range(warmup + changes):
            time.sleep(rng.uniform(0.0, MAX_JITTER_S))
            change = timed_decrease(stack, settle_s)
            if i >= warmup:
                out.append(change)
            time.sleep(rng.uniform(0.0, 0.05))
            since = now()
            enforce(stack, HIGH_W)
            settle_s = settle_high(stack, since)
    except (RuntimeError, EverkitError) as exc:
        return out, {"at_change": i, "reason": f"{type(exc).__name__}: {exc}"}
    return out, None


def charger_errors(core: ChargerCore) -> list[str]:
    """What blocks the charger now: (source, type, sub_type) and severity."""
    return [
        f"{source} {error_type}{f' ({sub})' if sub else ''} {severity}"
        for (source, error_type, sub), severity in sorted(core.blocking.items())
    ]


def part1(broker: BrokerAddress, changes: int, warmup: int, seed: int) -> dict[str, Any]:
    per_cycle_s = 2.5  # generous: ramp back (~1.1 s at 25 A/s), jitter, margins
    stop_s = 120 + (changes + warmup) * per_cycle_s
    with sil_stack(broker, stop_s) as stack:
        charging_at = wait_charging(stack.watcher)
        start = now()
        samples, aborted = measure_enforce(stack, changes, warmup, seed)
        took = now() - start
        time.sleep(0.5)  # the session events of an abort are on their way
        events_during = [e for at, e in stack.watcher.events if at > charging_at]
        core = stack.evse.core
        result = {
            "changes": changes,
            "warmup": warmup,
            "low_W": LOW_W,
            "high_W": HIGH_W,
            "car_target_current_A": CAR_CURRENT_A,
            "ramp_A_per_s": float(stack.evse.module.module_config["dc_ramp_ampere_per_second"]),
            "modules": stack.modules,
            "took_s": took,
            "events_after_charging_started": events_during,
            "shim": stack.shim,
            "evse_state_at_end": str(core.state),
            "charger_errors_at_end": charger_errors(core),
            "car_script_error": stack.car.script_error,
            "aborted": aborted,
            "last_low_frame": _frame_dict(samples[-1].frame) if samples else None,
            "setpoint_frames": len(stack.observer.frames),
        }
    result["to_frame"] = latency_dict([c.to_frame_s for c in samples])
    result["to_return"] = latency_dict([c.to_return_s for c in samples])
    result["settle_s_median"] = statistics.median(c.settle_s for c in samples) if samples else None
    return result


def _frame_dict(frame: Setpoint) -> dict[str, Any]:
    return {
        "destination": frame.destination,
        "voltage_V": frame.voltage_V,
        "current_A": frame.current_A,
    }


def latency_dict(samples_s: list[float]) -> dict[str, float] | None:
    if not samples_s:
        return None
    return {
        "n": len(samples_s),
        "median_ms": statistics.median(samples_s) * 1e3,
        "p99_ms": quantile(samples_s, 0.99) * 1e3,
        "max_ms": max(samples_s) * 1e3,
        "mean_ms": statistics.fmean(samples_s) * 1e3,
    }


# parts 2 and 3: `everkit run config/sil-dc.yaml` as a subprocess


def everkit_run(config_path: Path, broker: BrokerAddress, prefix: str, log: Any) -> Any:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "everkit",
            "run",
            str(config_path),
            "--broker",
            str(broker),
            "--prefix",
            prefix,
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, float]:
    """(ppid, utime + stime in seconds) from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    rest = text[text.rindex(")") + 2 :].split()  # fields 3.. (comm may hold spaces)
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Direct children, from every /proc entry's ppid (works without CONFIG_PROC_CHILDREN)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid, _ = proc_stat(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return sorted(found)


def process_name(pid: int) -> str:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    module_id = next((e[10:].decode() for e in env if e.startswith(b"EV_MODULE=")), "")
    words = [a.decode(errors="replace") for a in argv if a]
    name = words[-1] if "module" in words else " ".join(words[-2:])
    return f"{module_id} ({name})" if module_id else name


def cpu_times(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            out[pid] = proc_stat(pid)[1]
        except (OSError, ValueError, IndexError):
            continue
    return out


def part2(broker: PrivateBroker, window_s: float, stop_s: float) -> dict[str, Any]:
    prefix = f"benchsilcpu{uuid.uuid4().hex[:6]}/"
    with tempfile.TemporaryDirectory(prefix="everkit-bench-cpu-") as folder:
        path = Path(folder) / "sil-dc.yaml"
        script = CHARGE_SCRIPT.format(stop_s=stop_s)
        config = sil_config("sil-dc", script)
        path.write_text(yaml.safe_dump(config))
        manifest = yaml.safe_load((REPO / "manifests" / "PyEvSimulator.yaml").read_text())
        car_current = config["active_modules"]["car"]["config_module"].get(
            "dc_target_current", manifest["config"]["dc_target_current"]["default"]
        )
        log_path = Path(folder) / "run.log"
        watcher = BusWatcher(broker.address, prefix)
        with log_path.open("wb") as log:
            process = everkit_run(path, broker.address, prefix, log)
        try:
            try:
                wait_charging(watcher)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}\n{log_path.read_text()[-3000:]}") from None
            time.sleep(1.0)  # past the first seconds of CurrentDemand (ramp to the request)
            manager = process.pid
            pids = [manager, *children(manager)]
            names = {pid: process_name(pid) for pid in pids}
            names[manager] = "manager (everkit run)"
            names[broker.process.pid] = "mosquitto (the bench's broker)"
            watched = [*pids, broker.process.pid]
            t_a, before = now(), cpu_times(watched)
            time.sleep(window_s)
            t_b, after = now(), cpu_times(watched)
            load = os.getloadavg()
            stopped_early = [e for at, e in watcher.events if t_a <= at <= t_b]
        finally:
            status = stop(process)
            watcher.close()
    wall = t_b - t_a
    rows = []
    for pid in watched:
        if pid in before and pid in after:
            used = after[pid] - before[pid]
            rows.append({"pid": pid, "name": names[pid], "cpu_s": used, "core_pct": used / wall})
    stack_rows = [r for r in rows if r["pid"] != broker.process.pid]
    total = sum(r["cpu_s"] for r in stack_rows)
    cpus = os.cpu_count() or 1
    return {
        "window_s": wall,
        "processes": rows,
        "stack_cpu_s": total,
        "stack_core_pct": 100 * total / wall,
        "stack_machine_pct": 100 * total / wall / cpus,
        "events_in_window": stopped_early,
        "car_current_A": car_current,
        "iso_wait_for_stop_s": stop_s,
        "loadavg": load,
        "exit_status": status,
    }


def part3(broker: BrokerAddress, runs: int) -> dict[str, Any]:
    samples = []
    with tempfile.TemporaryDirectory(prefix="everkit-bench-ready-") as folder:
        path = Path(folder) / "sil-dc.yaml"
        path.write_text(yaml.safe_dump(yaml.safe_load(SIL_CONFIG.read_text())))
        for i in range(runs):
            prefix = f"benchsilrdy{uuid.uuid4().hex[:6]}/"
            watcher = BusWatcher(broker, prefix, everything=True)
            log_path = Path(folder) / f"run{i}.log"
            with log_path.open("wb") as log:
                t0 = now()
                process = everkit_run(path, broker, prefix, log)
            try:
                if not watcher.wait(lambda w=watcher: w.global_ready is not None, 30):
                    raise RuntimeError(f"no GlobalReady within 30 s:\n{log_path.read_text()}")
            finally:
                status = stop(process)
                watcher.close()
            assert watcher.global_ready is not None
            assert watcher.first_message is not None
            samples.append(
                {
                    "global_ready_s": watcher.global_ready - t0,
                    "manager_first_publish_s": watcher.first_message - t0,
                    "config_request_s": {
                        k: v - t0 for k, v in sorted(watcher.config_request.items())
                    },
                    "module_ready_s": {k: v - t0 for k, v in sorted(watcher.module_ready.items())},
                    "exit_status": status,
                }
            )
            time.sleep(0.5)
    ready = [s["global_ready_s"] for s in samples]
    modules = sorted(samples[0]["module_ready_s"])

    def median_of(key: str, module_id: str) -> float | None:
        values = [s[key][module_id] for s in samples if module_id in s[key]]
        return statistics.median(values) if values else None

    return {
        "runs": samples,
        "global_ready_median_s": statistics.median(ready),
        "global_ready_max_s": max(ready),
        "manager_first_publish_median_s": statistics.median(
            s["manager_first_publish_s"] for s in samples
        ),
        "per_module_median_s": {
            m: {
                "config_request": median_of("config_request_s", m),
                "ready": median_of("module_ready_s", m),
            }
            for m in modules
        },
    }


# report


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = _roundtrip().machine_facts()
    return {**facts, "python-can": version("python-can"), "loadavg_start": os.getloadavg()}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if "enforce_limits" in results:
        e = results["enforce_limits"]
        timed = e["to_frame"]
        p99 = None if timed is None else timed["p99_ms"]
        out.append(
            {
                "what": f"enforce_limits -> 0x1C with the new current p99 < {TARGET_P99_MS:g} ms",
                "value": "no sample" if p99 is None else f"{p99:.2f} ms (n={timed['n']})",
                "pass": p99 is not None and p99 < TARGET_P99_MS,
            }
        )
        done = 0 if timed is None else timed["n"]
        survived = e["aborted"] is None and not e["charger_errors_at_end"]
        out.append(
            {
                "what": "check: the session survives every limit change (Charging, no error)",
                "value": f"{done}/{e['changes']} timed changes; state {e['evse_state_at_end']}"
                + (
                    f"; {'; '.join(e['charger_errors_at_end'])}"
                    if e["charger_errors_at_end"]
                    else ""
                ),
                "pass": survived,
            }
        )
    if "startup" in results:
        median = results["startup"]["global_ready_median_s"]
        out.append(
            {
                "what": f"everkit run start -> GlobalReady median < {TARGET_READY_S:g} s",
                "value": f"{median:.2f} s",
                "pass": median < TARGET_READY_S,
            }
        )
    return out


def report(results: dict[str, Any]) -> str:
    facts = results["machine"]
    load = ", ".join(f"{x:.2f}" for x in facts["loadavg_start"])
    lines = [
        "PyEvseManager / SIL DC benchmark",
        "=" * 72,
        f"python {facts['python']}, paho-mqtt {facts['paho-mqtt']}, "
        f"python-can {facts['python-can']}, {facts['mosquitto']}, "
        f"{facts['cpus']} CPUs ({facts['cpu']})",
        f"{facts['platform']}; load average at start {load}",
        f"one private Mosquitto on {results['broker']}",
    ]
    if "enforce_limits" in results:
        e = results["enforce_limits"]
        lines += [
            "",
            f"1. enforce_limits on MQTT -> first 0x1C with the new current "
            f"({e['changes']} changes, +{e['warmup']} warm-up)",
            "  whole config/sil-dc.yaml in this process: our Manager, every module standalone,",
            f"  {e['modules']} simulated Infy modules on a virtual channel, a peer calling"
            " energy_grid.enforce_limits,",
            "  a CAN observer on the channel",
            f"  car asks {e['car_target_current_A']} A; limit alternates {e['high_W'] / 1e3:g} kW"
            f" <-> {e['low_W'] / 1e3:g} kW (valid_for {VALID_FOR_S} s)",
            "  only DECREASES are timed (high -> low: applied at once); increases ramp at "
            f"{e['ramp_A_per_s']:g} A/s",
            "  and each timed change waits for the ramp back up to settle "
            + ("" if e["settle_s_median"] is None else f"(median {e['settle_s_median']:.2f} s)"),
            f"  {'':<36}{'median':>9}{'p99':>9}{'max':>9}{'mean':>9}   (ms)",
        ]
        for label, key in (
            ("call_command_async -> 0x1C frame", "to_frame"),
            ("call_command_async -> call returned", "to_return"),
        ):
            d = e[key]
            if d is None:
                lines.append(f"  {label:<36}  no sample")
                continue
            lines.append(
                f"  {label:<36}{d['median_ms']:>9.2f}{d['p99_ms']:>9.2f}"
                f"{d['max_ms']:>9.2f}{d['mean_ms']:>9.2f}"
            )
        last = e["last_low_frame"]
        if last:
            lines.append(
                f"  last low 0x1C: {last['voltage_V']:.1f} V x {last['current_A']:.2f} A per module"
            )
        lines.append(
            "  session events after ChargingStarted: "
            f"{', '.join(e['events_after_charging_started']) or 'none'}"
        )
        if e["aborted"] is not None:
            lines.append(
                f"  !! the changes stopped at change {e['aborted']['at_change']} (warm-up"
                f" included): {e['aborted']['reason']}"
            )
        if e["aborted"] is not None or e["charger_errors_at_end"]:
            lines += [
                f"  !! PyEvseManager state {e['evse_state_at_end']}; blocking errors: "
                f"{'; '.join(e['charger_errors_at_end']) or 'none'}",
                f"     car script: {e['car_script_error'] or 'running'}",
            ]
        if e["shim"]:
            lines += [
                "  !! ChargerCore.enforce_limits cannot read EVerest's EnforcedLimits:",
                f"     {e['shim']}",
                "     the bench unwrapped total_power_W {value, source} -> number before the"
                " core (bench-side shim)",
            ]
    if "cpu" in results:
        c = results["cpu"]
        lines += [
            "",
            f"2. CPU of `everkit run config/sil-dc.yaml` over {c['window_s']:.1f} s of charging"
            " (/proc/<pid>/stat utime+stime)",
            f"  the config as shipped (car asks {c['car_current_A']} A), iso_wait_for_stop "
            f"{c['iso_wait_for_stop_s']:g}; window starts 1 s after ChargingStarted",
            f"  {'process':<44}{'cpu s':>8}{'% core':>9}",
        ]
        for row in c["processes"]:
            lines.append(f"  {row['name']:<44}{row['cpu_s']:>8.2f}{100 * row['core_pct']:>9.1f}")
        lines += [
            f"  {'total stack (manager + modules)':<44}{c['stack_cpu_s']:>8.2f}"
            f"{c['stack_core_pct']:>9.1f}",
            f"  = {c['stack_core_pct']:.1f} % of one core, {c['stack_machine_pct']:.1f} % of"
            f" the {os.cpu_count()}-CPU machine (mosquitto not included); session events in"
            f" the window: {c['events_in_window'] or 'none'}",
        ]
    if "startup" in results:
        s = results["startup"]
        runs = ", ".join(f"{r['global_ready_s']:.2f}" for r in s["runs"])
        lines += [
            "",
            f"3. `everkit run config/sil-dc.yaml` process start -> GlobalReady "
            f"({len(s['runs'])} runs, SIGTERM after each)",
            f"  GlobalReady median {s['global_ready_median_s']:.2f} s, max "
            f"{s['global_ready_max_s']:.2f} s (runs: {runs})",
            f"  manager's first publish (definitions) median "
            f"{s['manager_first_publish_median_s']:.2f} s",
            f"  {'module':<16}{'config request':>16}{'ready':>9}   (median s after start)",
        ]
        for module_id, m in s["per_module_median_s"].items():
            request = "-" if m["config_request"] is None else f"{m['config_request']:.2f}"
            ready = "-" if m["ready"] is None else f"{m['ready']:.2f}"
            lines.append(f"  {module_id:<16}{request:>16}{ready:>9}")
    lines += ["", "targets (informational)"]
    for target in results["targets"]:
        lines.append(f"  {verdict(target['pass'])}  {target['what']}: {target['value']}")
    return "\n".join(lines)


@dataclass
class Options:
    changes: int = 100
    warmup: int = 3
    cpu_window: float = 20.0
    runs: int = 5
    seed: int = 4
    parts: set[int] = field(default_factory=lambda: {1, 2, 3})


def run(options: Options) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine_facts()}
    broker = start_mosquitto()
    results["broker"] = str(broker.address)
    try:
        if 1 in options.parts:
            results["enforce_limits"] = part1(
                broker.address, options.changes, options.warmup, options.seed
            )
        if 2 in options.parts:
            stop_s = options.cpu_window + 20  # iso_wait_for_stop: charging outlasts the window
            results["cpu"] = part2(broker, options.cpu_window, stop_s)
        if 3 in options.parts:
            results["startup"] = part3(broker.address, options.runs)
    finally:
        broker.stop()
    results["targets"] = targets(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=100, help="timed decreases (part 1)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed decreases first")
    parser.add_argument(
        "--cpu-window", type=float, default=20.0, help="CPU sampling window in s (part 2)"
    )
    parser.add_argument("--runs", type=int, default=5, help="start-up runs (part 3)")
    parser.add_argument("--seed", type=int, default=4, help="seed of the random pauses")
    parser.add_argument(
        "--parts", default="1,2,3", help="which parts to run, e.g. 1 or 2,3 (default all)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    parts = {int(p) for p in args.parts.split(",") if p.strip()}
    if args.changes < 1 or args.runs < 1 or args.cpu_window <= 1 or not parts <= {1, 2, 3}:
        parser.error("--changes and --runs must be >= 1, --cpu-window > 1, --parts from 1,2,3")
    options = Options(args.changes, args.warmup, args.cpu_window, args.runs, args.seed, parts)
    results = run(options)
    print(report(results))
    if args.json is not None:
        public = _public(results)
        args.json.write_text(json.dumps(public, indent=2) + "\n", encoding="utf-8")
        print(f"\nfigures written to {args.json}")
    return 0


def _public(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [_public(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
