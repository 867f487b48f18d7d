#!/usr/bin/env python3
"""PyInfyPowerDC latency and var rate: MQTT command to CAN frame, and voltage_current at 4 Hz.

One run, one private Mosquitto (started here), our in-process Manager with two modules,
both standalone in this process, as in tests/integration/test_infy_driver.py:

- ``psu``: PyInfyPowerDC built with ``PyInfyPowerDC.attach`` (runner, CAN bus, effects
  sink) on a python-can virtual channel, hosting two simulated Infy modules (addresses 1
  and 2) on the same channel, so the driver polls them and gets answers, as on a charger;
- ``peer``: a Module that requires ``power_supply_DC`` and drives it like EvseManager.

A CAN observer bus on the same virtual channel sees every frame. Figures:

1. the latency from the peer's ``call_command_async("setExportVoltageCurrent")`` to the
   first matching 0x1C frame (SET_MODULE_OUTPUT, that voltage in mV, from the controller)
   arriving at the observer; next to it, in the same run and interleaved call by call, the
   plain ``call_command`` round trip for the same command;
2. ``voltage_current`` as received by the peer over ``--duration`` seconds: count, mean
   rate, largest gap and p99 gap. Part 1 runs during the first seconds of this window.

Targets are informational: the script always exits 0. See bench/README.md.

Run from the repository root: ``.venv/bin/python bench/psu_latency.py``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import can

from everkit.framework.broker import PrivateBroker, start_mosquitto
from everkit.framework.module import Module
from everkit.framework.transport import BrokerAddress
from everkit.power_supply_infy import codec
from everkit.power_supply_infy.codec import Command
from everkit.power_supply_infy.module import PyInfyPowerDC

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (REPO, BENCH):  # `tests.integration.harness`; `framework_roundtrip` (facts)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

WAIT_S = 10.0
PREFIX = "benchpsu/"
CMD = "setExportVoltageCurrent"
CURRENT_A = 20.0
ADDRESSES = "1,2"
META = {"license": "https://www.apache.org/licenses/LICENSE-2.0", "authors": ["everkit bench"]}
PEER_MANIFEST = {
    "BenchPsuPeer": {
        "description": "drives a power_supply_DC like EvseManager does",
        "requires": {"psu": {"interface": "power_supply_DC"}},
        "metadata": META,
    }
}

TARGET_P99_MS = 20.0
TARGET_RATE_HZ = 4.0
TARGET_RATE_TOLERANCE = 0.05
TARGET_MAX_GAP_MS = 350.0

now = time.perf_counter  # one clock for everything: commands, CAN arrivals, var arrivals


def can_voltage(i: int) -> float:
    """Part 1 voltages: 300.0 .. 499.5 V in 0.5 V steps (exact binary fractions)."""
    return 300.0 + i % 400 * 0.5


def round_trip_voltage(i: int) -> float:
    """Voltages of the interleaved plain round trips: never one of ``can_voltage``'s."""
    return 300.25 + i % 400 * 0.5


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@dataclass
class Latency:
    samples_s: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_s) * 1e3

    @property
    def p99_ms(self) -> float:
        return quantile(self.samples_s, 0.99) * 1e3

    @property
    def max_ms(self) -> float:
        return max(self.samples_s) * 1e3

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples_s) * 1e3

    def as_dict(self) -> dict[str, float]:
        return {
            "n": len(self.samples_s),
            "median_ms": round(self.median_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "max_ms": round(self.max_ms, 4),
            "mean_ms": round(self.mean_ms, 4),
        }


class CanObserver:
    """A third bus on the driver's virtual channel. Its thread stamps each frame with
    ``time.perf_counter()`` as soon as ``recv`` returns it, and keeps the first arrival
    of each 0x1C voltage (in mV) sent by the controller."""

    def __init__(self, channel: str, controller: int = codec.DEFAULT_CONTROLLER) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.controller = controller
        self.first_0x1c: dict[int, float] = {}
        self.arrivals: list[tuple[float, int]] = []  # (arrival, arbitration id), all frames
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
            self.arrivals.append((arrived, message.arbitration_id))
            decoded = codec.decode_request(message.arbitration_id, bytes(message.data))
            if (
                isinstance(decoded, codec.Decoded)
                and decoded.id.command == Command.SET_MODULE_OUTPUT
                and decoded.id.source == self.controller
            ):
                with self._changed:
                    self.first_0x1c.setdefault(decoded.payload.voltage_mV, arrived)
                    self._changed.notify_all()

    def forget(self, voltage_mV: int) -> None:
        with self._changed:
            self.first_0x1c.pop(voltage_mV, None)

    def wait_0x1c(self, voltage_mV: int, timeout: float = WAIT_S) -> float:
        with self._changed:
            if not self._changed.wait_for(lambda: voltage_mV in self.first_0x1c, timeout):
                raise RuntimeError(f"no 0x1C frame with {voltage_mV} mV within {timeout} s")
            return self.first_0x1c[voltage_mV]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.bus.shutdown()


class Arrivals:
    """What the peer received of one var, each stamped with ``time.perf_counter()``."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.values: list[Any] = []
        self._changed = threading.Condition()

    def __call__(self, value: Any) -> None:
        arrived = now()
        with self._changed:
            self.times.append(arrived)
            self.values.append(value)
            self._changed.notify_all()

    def wait(self, predicate: Any, timeout: float = WAIT_S) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.values), timeout):
                raise RuntimeError("timed out waiting for a var from the driver")


@dataclass
class Stack:
    peer: Module
    driver: PyInfyPowerDC
    observer: CanObserver
    voltage_current: Arrivals
    capabilities: Arrivals
    mode: Arrivals


@contextmanager
def psu_stack(broker: BrokerAddress) -> Iterator[Stack]:
    """The `psu` fixture of tests/integration/test_infy_driver.py, without pytest."""
    from tests.integration.harness import in_process_stack, start_module  # noqa: PLC0415

    channel = f"bench-infy-{uuid.uuid4().hex[:8]}"
    config = {
        "active_modules": {
            "psu": {
                "module": "PyInfyPowerDC",
                "config_implementation": {
                    "main": {
                        "can_interface": "virtual",
                        "can_channel": channel,
                        "module_addresses": ADDRESSES,
                        "simulate_modules": True,
                    }
                },
            },
            "peer": {
                "module": "BenchPsuPeer",
                "connections": {"psu": [{"module_id": "psu", "implementation_id": "main"}]},
            },
        }
    }
    with (
        tempfile.TemporaryDirectory(prefix="everkit-bench-psu-") as folder,
        in_process_stack(broker, PREFIX, Path(folder), config, PEER_MANIFEST) as (_, started),
    ):
        observer = CanObserver(channel)
        psu_module = start_module(broker, PREFIX, "psu")
        started["psu"] = psu_module
        driver = PyInfyPowerDC.attach(psu_module)
        peer = start_module(broker, PREFIX, "peer", default_timeout=WAIT_S)
        started["peer"] = peer
        seen = {var: Arrivals() for var in ("voltage_current", "capabilities", "mode")}
        for var, arrivals in seen.items():
            peer.subscribe_variable("psu", var, arrivals)
        ready = threading.Event()
        psu_module.init_done(driver.sink.ready)
        peer.init_done(ready.set)
        try:
            if not ready.wait(WAIT_S):
                raise RuntimeError("no GlobalReady from the in-process manager")
            yield Stack(peer, driver, observer, **seen)
        finally:
            driver.close()
            observer.close()


# part 1


def export_at(stack: Stack, voltage: float) -> None:
    """Into Export at ``voltage``/20 A; returns once the simulated output follows."""
    stack.capabilities.wait(bool)  # the modules answered: the split covers both
    stack.peer.call_command("psu", CMD, {"voltage": voltage, "current": CURRENT_A})
    stack.peer.call_command("psu", "setMode", {"mode": "Export", "phase": "Charging"})
    stack.mode.wait(lambda values: values and values[-1] == "Export")
    stack.voltage_current.wait(
        lambda values: values and abs(values[-1]["current_A"] - CURRENT_A) < 1.0
    )


def command_to_frame(stack: Stack, i: int) -> tuple[float, float]:
    """One call_command_async -> first matching 0x1C at the observer, then one plain
    call_command round trip. Returns both durations in seconds."""
    peer, observer = stack.peer, stack.observer
    voltage = can_voltage(i)
    voltage_mV = round(voltage * 1000)
    observer.forget(voltage_mV)
    args = {"voltage": voltage, "current": CURRENT_A}
    t0 = now()
    future = peer.call_command_async("psu", CMD, args)
    arrived = observer.wait_0x1c(voltage_mV)
    future.result(WAIT_S)  # the provider is idle again before the next call
    to_frame = arrived - t0
    args = {"voltage": round_trip_voltage(i), "current": CURRENT_A}
    t0 = now()
    peer.call_command("psu", CMD, args, timeout=WAIT_S)
    return to_frame, now() - t0


def measure_commands(stack: Stack, iterations: int, warmup: int) -> tuple[Latency, Latency]:
    for i in range(warmup):
        command_to_frame(stack, i)
    to_frame: list[float] = []
    round_trip: list[float] = []
    gc.collect()
    for i in range(iterations):
        frame_s, trip_s = command_to_frame(stack, i)
        to_frame.append(frame_s)
        round_trip.append(trip_s)
    return Latency(to_frame), Latency(round_trip)


# part 2


def rate_figures(times: list[float], start: float, end: float, busy_until: float) -> dict[str, Any]:
    window = [t for t in times if start <= t <= end]
    if len(window) < 3:
        raise RuntimeError(f"only {len(window)} voltage_current arrivals in the window")
    gaps = [(a, b - a) for a, b in itertools.pairwise(window)]
    values = [gap for _, gap in gaps]
    during = [gap for a, gap in gaps if a <= busy_until]
    span = window[-1] - window[0]
    return {
        "count": len(window),
        "span_s": round(span, 3),
        "rate_hz": (len(window) - 1) / span,
        "max_gap_ms": max(values) * 1e3,
        "p99_gap_ms": quantile(values, 0.99) * 1e3,
        "median_gap_ms": statistics.median(values) * 1e3,
        "min_gap_ms": min(values) * 1e3,
        "max_gap_during_part1_ms": max(during) * 1e3 if during else None,
    }


def can_traffic(arrivals: list[tuple[float, int]], start: float, end: float) -> dict[str, Any]:
    """Frames per second between ``start`` and ``end``, by direction and command."""
    counts: Counter[str] = Counter()
    for at, arbitration_id in arrivals:
        if start <= at <= end:
            frame_id = codec.FrameId.unpack(arbitration_id)
            side = "driver" if frame_id.source == codec.DEFAULT_CONTROLLER else "modules"
            counts[side] += 1
            counts[f"{side} {frame_id.command:#04x}"] += 1
    span = end - start
    return {key: round(count / span, 2) for key, count in sorted(counts.items())}


# report


def machine_facts() -> dict[str, str]:
    from framework_roundtrip import machine_facts as framework_facts  # noqa: PLC0415

    return {**framework_facts(), "python-can": version("python-can")}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def targets(to_frame: Latency, rate: dict[str, Any]) -> list[dict[str, Any]]:
    low = TARGET_RATE_HZ * (1 - TARGET_RATE_TOLERANCE)
    high = TARGET_RATE_HZ * (1 + TARGET_RATE_TOLERANCE)
    return [
        {
            "what": f"MQTT command -> 0x1C frame p99 < {TARGET_P99_MS:g} ms",
            "value": f"{to_frame.p99_ms:.3f} ms",
            "pass": to_frame.p99_ms < TARGET_P99_MS,
        },
        {
            "what": f"voltage_current rate {TARGET_RATE_HZ:g} Hz +/- {TARGET_RATE_TOLERANCE:.0%}",
            "value": f"{rate['rate_hz']:.3f} Hz",
            "pass": low <= rate["rate_hz"] <= high,
        },
        {
            "what": f"voltage_current largest gap < {TARGET_MAX_GAP_MS:g} ms",
            "value": f"{rate['max_gap_ms']:.1f} ms",
            "pass": rate["max_gap_ms"] < TARGET_MAX_GAP_MS,
        },
    ]


def report(results: dict[str, Any]) -> str:
    facts = results["machine"]
    to_frame, trip = results["_to_frame"], results["_round_trip"]
    rate = results["voltage_current"]
    traffic = results["can_traffic"]
    lines = [
        "PyInfyPowerDC benchmark",
        "=" * 72,
        f"python {facts['python']}, paho-mqtt {facts['paho-mqtt']}, "
        f"python-can {facts['python-can']}, {facts['mosquitto']}, "
        f"{facts['cpus']} CPUs ({facts['cpu']})",
        f"{facts['platform']}",
        f"one private Mosquitto on {results['broker']}; driver + 2 simulated modules "
        f"(addresses {ADDRESSES}) + peer + CAN observer in this process; mode Export",
        "",
        f"1. {CMD} on MQTT -> 0x1C frame at the CAN observer "
        f"({results['iterations']} calls, +{results['warmup']} warm-up)",
        f"  {'':<32}{'median':>9}{'p99':>9}{'max':>9}{'mean':>9}   (ms)",
    ]
    for label, latency in (
        ("call_command_async -> 0x1C frame", to_frame),
        ("call_command round trip", trip),
    ):
        lines.append(
            f"  {label:<32}{latency.median_ms:>9.3f}{latency.p99_ms:>9.3f}"
            f"{latency.max_ms:>9.3f}{latency.mean_ms:>9.3f}"
        )
    lines += [
        f"  (interleaved call by call; part 1 took {results['part1_s']:.2f} s, run during the"
        f" first seconds of the part 2 window)",
        "",
        f"2. voltage_current at the peer over {results['duration_s']:g} s",
        f"  count {rate['count']}, mean rate {rate['rate_hz']:.3f} Hz over {rate['span_s']:.1f} s",
        f"  gaps (ms): median {rate['median_gap_ms']:.1f}, p99 {rate['p99_gap_ms']:.1f}, "
        f"max {rate['max_gap_ms']:.1f}, min {rate['min_gap_ms']:.1f}; "
        f"largest while part 1 ran {rate['max_gap_during_part1_ms']:.1f}",
        f"  CAN traffic after part 1 (steady Export, polling): {traffic.get('driver', 0):.1f}"
        f" frames/s from the driver, {traffic.get('modules', 0):.1f}/s from the modules",
        "",
        "targets (informational)",
    ]
    for target in results["targets"]:
        lines.append(f"  {verdict(target['pass'])}  {target['what']}: {target['value']}")
    return "\n".join(lines)


def run(iterations: int, warmup: int, duration: float) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": machine_facts(),
        "iterations": iterations,
        "warmup": warmup,
        "duration_s": duration,
    }
    broker: PrivateBroker = start_mosquitto()
    results["broker"] = str(broker.address)
    try:
        with psu_stack(broker.address) as stack:
            export_at(stack, 400.0)
            start = now()
            to_frame, trip = measure_commands(stack, iterations, warmup)
            busy_until = now()
            remaining = start + duration - now()
            if remaining > 0:
                time.sleep(remaining)
            end = now()
            results["part1_s"] = busy_until - start
            results["voltage_current"] = rate_figures(
                list(stack.voltage_current.times), start, end, busy_until
            )
            results["can_traffic"] = can_traffic(
                list(stack.observer.arrivals), min(busy_until, end - 1.0), end
            )
            results["driver"] = {
                "send_failures": stack.driver.runner.send_failures,
                "ignored": dict(stack.driver.runner.core.ignored),
            }
    finally:
        broker.stop()
    results["_to_frame"], results["_round_trip"] = to_frame, trip
    results["command_to_frame"] = to_frame.as_dict()
    results["command_round_trip"] = trip.as_dict()
    results["targets"] = targets(to_frame, results["voltage_current"])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500, help="timed commands (part 1)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed commands first")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="voltage_current window in s (part 2)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.duration <= 1:
        parser.error("--iterations must be >= 1 and --duration > 1")
    results = run(args.iterations, args.warmup, args.duration)
    print(report(results))
    if args.json is not None:
        public = {k: v for k, v in results.items() if not k.startswith("_")}
        args.json.write_text(json.dumps(public, indent=2) + "\n", encoding="utf-8")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
