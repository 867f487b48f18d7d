#!/usr/bin/env python3
"""everkit framework under load: commands at a paced rate between two module processes.

One run, one private Mosquitto (started here), two sides in the same run:

1. everkit framework: a requirer and a provider ``Module`` (our in-process Manager, both
   standalone), each in its own process; the requirer calls ``setExportVoltageCurrent``
   with ``call_command_async`` on an open-loop schedule (call i is due at t0 + i / rate, sent
   as soon as it is due, never held back by earlier answers), so a late answer costs the
   calls behind it honestly (latency counts from the due time, not from the send);
2. raw paho: the same two roles as two raw paho clients with the framework's Cmd / CmdResult
   bytes (the responder decodes the id and answers from ``on_message``), paced the same way.

Per side: calls sent, answered, lost (no answer within WAIT_S after the last one was sent),
error answers; latency median / p99 / p99.9 / max from the due time and from the send; the
sender's own lag; for the framework, how long each command waits between the responder's
network thread and a handler thread (``OrderedExecutor``, the one step raw paho lacks);
CPU (% of one core) and RSS of the caller, the responder and Mosquitto. ``--blocks N``
splits each side into N runs taken in ABBA order, so that a noisy machine hits both alike.
Target (informational): zero lost and p99 < 10 ms at 1,000 commands/s for 60 s.

Run from the repository root: ``.venv/bin/python bench/framework_load.py [--rate 1000]
[--duration 60] [--blocks 1]``. Exits 1 if a call was lost or answered with an error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (REPO, BENCH):  # `tests.integration.harness`; `framework_roundtrip`
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import framework_roundtrip as rt  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from benchstats import stop_process, write_json  # noqa: E402

from everkit.framework import dispatch  # noqa: E402
from everkit.framework.broker import PrivateBroker, start_mosquitto  # noqa: E402
from everkit.framework.definitions import Definitions, contract_root  # noqa: E402
from everkit.framework.module import Module  # noqa: E402
from everkit.framework.session import ModuleEnvironment  # noqa: E402
from everkit.framework.transport import BrokerAddress  # noqa: E402
from everkit.framework.wire import Topics, cmd_payload, decode, result_payload  # noqa: E402

CMD = rt.CMD
ARGS = rt.ARGS
PREFIX = "benchload/"  # each side works under its own sub-prefix of it
WAIT_S = 10.0  # an answer later than this after the last send counts as lost
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
TARGET_P99_MS = 10.0
SIDES = ("framework", "raw")
CLK_TCK = os.sysconf("SC_CLK_TCK")

now_ns = time.perf_counter_ns


# /proc


def cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    rest = text[text.rindex(")") + 2 :].split()  # fields 3.. (comm may hold spaces)
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    return rt.proc_status_kb(pid)["VmRSS"] / 1024  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Snapshot:
    at: float
    cpu: dict[str, float]
    rss: dict[str, float]


def snapshot(pids: dict[str, int]) -> Snapshot:
    cpu, rss = {}, {}
    for name, pid in pids.items():
        try:
            cpu[name] = cpu_seconds(pid)
            rss[name] = rss_mb(pid)
        except (OSError, ValueError, IndexError, KeyError):
            continue
    return Snapshot(time.monotonic(), cpu, rss)


def usage(begin: Snapshot, end: Snapshot) -> dict[str, dict[str, float]]:
    wall = end.at - begin.at
    return {
        name: {
            "cpu_s": end.cpu[name] - begin.cpu[name],
            "core_pct": 100.0 * (end.cpu[name] - begin.cpu[name]) / wall,
            "rss_begin_mb": begin.rss[name],
            "rss_end_mb": end.rss[name],
        }
        for name in begin.cpu
        if name in end.cpu
    }


# the paced caller, shared by both sides


@dataclass
class Pacing:
    rate: float
    duration: float
    warmup: float

    def calls(self) -> tuple[int, int]:
        """(warm-up calls, measured calls)."""
        return int(self.rate * self.warmup), int(self.rate * self.duration)

    def ledger(self) -> Ledger:
        return Ledger(sum(self.calls()))


class Ledger:
    """Due, sent and answered times (perf_counter_ns) of every call, by index."""

    def __init__(self, count: int) -> None:
        # preallocated int64 arrays: the bench's own records must not grow the caller's RSS
        self.due = array("q", bytes(8 * count))
        self.sent = array("q", bytes(8 * count))
        self.answered = array("q", bytes(8 * count))
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.outstanding = 0
        self.idle = threading.Condition(self.lock)

    def answer(self, index: int, error: str | None = None) -> None:
        stamp = now_ns()
        with self.lock:
            if self.answered[index]:
                self.errors.append(f"call {index} answered twice")
                return
            self.answered[index] = stamp
            if error is not None:
                self.errors.append(f"call {index}: {error}")
            self.outstanding -= 1
            if self.outstanding == 0:
                self.idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self.idle:
            return self.idle.wait_for(lambda: self.outstanding == 0, timeout)


def paced(
    send: Callable[[int], None], ledger: Ledger, pacing: Pacing, pids: dict[str, int]
) -> dict[str, Any]:
    """Warm up, then send calls on the open-loop schedule and wait for their answers."""
    warm, count = pacing.calls()
    period_ns = int(1e9 / pacing.rate)
    start = now_ns() + 50_000_000
    begin: Snapshot | None = None
    for index in range(warm + count):
        due = start + index * period_ns
        if index == warm:
            begin = snapshot(pids)
        delay = due - now_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        ledger.due[index] = due
        with ledger.lock:
            ledger.outstanding += 1
        ledger.sent[index] = now_ns()
        send(index)
    last_sent = now_ns()
    drained = ledger.wait_idle(WAIT_S)
    assert begin is not None
    end = snapshot(pids)
    return summarise(
        ledger,
        warm=warm,
        count=count,
        drained=drained,
        last_sent=last_sent,
        resources=usage(begin, end),
    )


def summarise(
    ledger: Ledger,
    *,
    warm: int,
    count: int,
    drained: bool,
    last_sent: int,
    resources: dict[str, dict[str, float]],
) -> dict[str, Any]:
    measured = range(warm, warm + count)
    limit = last_sent + int(WAIT_S * 1e9)
    with ledger.lock:
        answered = [i for i in measured if ledger.answered[i] and ledger.answered[i] <= limit]
        from_due = [(ledger.answered[i] - ledger.due[i]) / 1e6 for i in answered]
        from_send = [(ledger.answered[i] - ledger.sent[i]) / 1e6 for i in answered]
        lag = [(ledger.sent[i] - ledger.due[i]) / 1e6 for i in measured]
        errors = list(ledger.errors)
    first = ledger.due[warm]
    last = ledger.sent[warm + count - 1]
    return {
        "sent": count,
        "answered": len(answered),
        "lost": count - len(answered),
        "errors": len(errors),
        "error_examples": errors[:5],
        "drained": drained,
        "achieved_rate": count / max((last - first) / 1e9, 1e-9),
        "from_due": stats(from_due),
        "from_send": stats(from_send),
        "send_lag": stats(lag),
        "over_target": sum(1 for x in from_due if x >= TARGET_P99_MS),
        "worst_seconds": worst_seconds(ledger, answered, first),
        "resources": resources,
        # for merging blocks in the parent (µs resolution)
        "samples": {
            "from_due": [round(x, 3) for x in from_due],
            "from_send": [round(x, 3) for x in from_send],
            "send_lag": [round(x, 3) for x in lag],
        },
    }


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]

    return {
        "n": len(ordered),
        "median_ms": statistics.median(ordered),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "max_ms": ordered[-1],
        "mean_ms": statistics.fmean(ordered),
    }


def worst_seconds(ledger: Ledger, answered: list[int], first: int) -> list[dict[str, Any]]:
    """The three seconds of the run with the highest latency peak: where to look."""
    peaks: dict[int, float] = {}
    for i in answered:
        second = (ledger.due[i] - first) // 1_000_000_000
        latency = (ledger.answered[i] - ledger.due[i]) / 1e6
        peaks[second] = max(peaks.get(second, 0.0), latency)
    top = sorted(peaks.items(), key=lambda kv: kv[1], reverse=True)[:3]
    return [{"second": s, "max_ms": round(ms, 2)} for s, ms in top]


# the framework side (child processes)


class HandoffProbe:
    """How long each command waits between the network thread handing it over and a
    handler thread starting it: the framework's one step that raw paho does not have."""

    def __init__(self, capacity: int) -> None:
        # preallocated, like the caller's ledger: the probe must not grow the responder's RSS
        self.waits_ms = array("d", bytes(8 * capacity))
        self.count = 0
        original = dispatch.OrderedExecutor.submit

        def submit(executor: dispatch.OrderedExecutor, key: str, job: dispatch.Job) -> None:
            handed = now_ns()

            def timed() -> Any:
                if self.count < capacity:  # one topic: its jobs run one at a time
                    self.waits_ms[self.count] = (now_ns() - handed) / 1e6
                    self.count += 1
                return job()

            original(executor, key, timed)

        # bench-only instrumentation of this child process
        dispatch.OrderedExecutor.submit = submit  # type: ignore[method-assign]


def framework_responder(broker: BrokerAddress, prefix: str, pacing: Pacing) -> int:
    probe = HandoffProbe(sum(pacing.calls()) + 100)  # + GetConfig and the like
    module = Module.start(ModuleEnvironment("provider", broker, prefix))
    definitions = Definitions.from_dirs(contract_root())
    for impl, interface in module.implementations.items():
        for cmd in definitions.interface(interface).cmds:
            module.implement_command(impl, cmd, _ignore)
    module.init_done()
    print("ready", flush=True)
    module.serve_forever()
    waits = [round(x, 3) for x in probe.waits_ms[: probe.count]]
    print(json.dumps({"handoff": waits}), flush=True)
    return 0


def _ignore(**_kwargs: Any) -> None:
    return None


def framework_caller(
    broker: BrokerAddress, prefix: str, pacing: Pacing, pids: dict[str, int]
) -> int:
    module = Module.start(ModuleEnvironment("requirer", broker, prefix))
    ready = threading.Event()
    module.init_done(ready.set)
    if not ready.wait(READY_TIMEOUT_S):
        raise RuntimeError("no GlobalReady")
    call = module.call_command_async
    ledger = pacing.ledger()

    def send(index: int) -> None:
        future = call("psu", CMD, ARGS)
        future.add_done_callback(lambda f: _settle(ledger, index, f))

    result = paced(send, ledger, pacing, {"caller": os.getpid(), **pids})
    module.close()
    print(json.dumps(result), flush=True)
    return 0


def _settle(ledger: Ledger, index: int, future: Future[Any]) -> None:
    if future.cancelled():
        return
    error = future.exception()
    ledger.answer(index, None if error is None else f"{type(error).__name__}: {error}")


# the raw paho side (child processes)


def raw_responder(broker: BrokerAddress, prefix: str, _pacing: Pacing) -> int:
    topics = Topics(prefix)
    cmd_topic = topics.cmd("provider", "main", CMD)
    response_topic = topics.cmd_response("provider", "main", CMD, "requirer")
    client = rt.raw_client(broker, "bench-load-responder")

    def answer(c: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        call_id = decode(bytes(msg.payload)).data["id"]
        c.publish(response_topic, result_payload(call_id, "provider", None), qos=2)

    client.on_message = answer
    rt.raw_subscribe(client, cmd_topic)
    print("ready", flush=True)
    _wait_for_signal()
    rt.raw_close(client)
    return 0


def raw_caller(broker: BrokerAddress, prefix: str, pacing: Pacing, pids: dict[str, int]) -> int:
    topics = Topics(prefix)
    cmd_topic = topics.cmd("provider", "main", CMD)
    response_topic = topics.cmd_response("provider", "main", CMD, "requirer")
    index_of: dict[str, int] = {}
    client = rt.raw_client(broker, "bench-load-caller")
    ledger = pacing.ledger()

    def on_result(_c: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        call_id = decode(bytes(msg.payload)).data["data"]["id"]
        index = index_of.pop(call_id, None)
        if index is not None:
            ledger.answer(index)

    def send(index: int) -> None:
        call_id = str(uuid.uuid4())
        index_of[call_id] = index
        client.publish(cmd_topic, cmd_payload(call_id, dict(ARGS), "requirer"), qos=2)

    client.on_message = on_result
    rt.raw_subscribe(client, response_topic)
    result = paced(send, ledger, pacing, {"caller": os.getpid(), **pids})
    rt.raw_close(client)
    print(json.dumps(result), flush=True)
    return 0


def _wait_for_signal() -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


# the parent: broker, manager, children


def child(
    role: str, side: str, broker: BrokerAddress, prefix: str, extra: list[str]
) -> subprocess.Popen[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", role, "--side", side]
    command += ["--broker", str(broker), "--prefix", prefix, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def stop_child(process: subprocess.Popen[str]) -> None:
    stop_process(process, STOP_TIMEOUT_S)


@contextmanager
def manager_for(side: str, broker: BrokerAddress, prefix: str) -> Iterator[None]:
    if side == "raw":
        yield
        return
    from tests.integration.harness import in_process_stack  # noqa: PLC0415

    with (
        tempfile.TemporaryDirectory(prefix="everkit-bench-load-") as folder,
        in_process_stack(broker, prefix, Path(folder)),
    ):
        yield


def run_side(side: str, broker: PrivateBroker, prefix: str, pacing: Pacing) -> dict[str, Any]:
    side_prefix = f"{prefix}{side}/"
    with ExitStack() as stack:
        stack.enter_context(manager_for(side, broker.address, side_prefix))
        extra = [f"--rate={pacing.rate}", f"--duration={pacing.duration}"]
        extra += [f"--warmup={pacing.warmup}"]
        responder = child("responder", side, broker.address, side_prefix, extra)
        stack.callback(stop_child, responder)
        assert responder.stdout is not None
        if responder.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {side} responder did not start")
        watch = f"responder={responder.pid},mosquitto={broker.process.pid}"
        extra += [f"--watch={watch}"]
        caller = child("caller", side, broker.address, side_prefix, extra)
        stack.callback(stop_child, caller)
        out, _ = caller.communicate(timeout=pacing.warmup + pacing.duration * 3 + 120)
        if caller.returncode != 0:
            raise RuntimeError(f"the {side} caller failed ({caller.returncode})")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        responder.send_signal(signal.SIGTERM)
        rest, _ = responder.communicate(timeout=STOP_TIMEOUT_S)  # reads while it writes
        lines = rest.strip().splitlines()
        result["responder"] = json.loads(lines[-1]) if lines else {}  # handoff samples
        return result


def run(
    pacing: Pacing,
    sides: list[str],
    *,
    blocks: int = 1,
    broker: PrivateBroker | None = None,
    prefix: str = PREFIX,
) -> dict[str, Any]:
    """The sides on ``broker`` (default: a private Mosquitto), each side's duration split
    into ``blocks`` runs taken in ABBA order, so that machine noise hits every side alike."""
    results: dict[str, Any] = {
        "machine": rt.machine_facts(),
        "options": {
            "rate": pacing.rate,
            "duration": pacing.duration,
            "warmup": pacing.warmup,
            "blocks": blocks,
        },
        "load_before": os.getloadavg(),
    }
    block = Pacing(pacing.rate, pacing.duration / blocks, pacing.warmup)
    done: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    with ExitStack() as stack:
        if broker is None:
            broker = stack.enter_context(start_mosquitto())  # a free loopback port, never 1883
        results["broker"] = str(broker.address)
        for index in range(blocks):
            for side in sides if index % 2 == 0 else reversed(sides):
                done[side].append(run_side(side, broker, prefix, block))
    for side in sides:
        results[side] = merge(done[side])
    results["load_after"] = os.getloadavg()
    return results


def merge(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's blocks as one run: counts summed, latencies pooled, CPU over all blocks,
    RSS from the first block's start to the last block's end."""
    pooled: dict[str, list[float]] = {"from_due": [], "from_send": [], "send_lag": []}
    handoff: list[float] = []
    for b in blocks:
        for key, values in b.pop("samples").items():
            pooled[key].extend(values)
        handoff.extend(b.pop("responder", {}).get("handoff", []))
    resources: dict[str, dict[str, float]] = {}
    for name in blocks[0]["resources"]:
        spans = [b["resources"][name] for b in blocks if name in b["resources"]]
        cpu_s = sum(u["cpu_s"] for u in spans)
        wall = sum(100.0 * u["cpu_s"] / u["core_pct"] for u in spans if u["core_pct"] > 0)
        resources[name] = {
            "cpu_s": cpu_s,
            "core_pct": 100.0 * cpu_s / wall if wall else 0.0,
            "rss_begin_mb": spans[0]["rss_begin_mb"],
            "rss_end_mb": spans[-1]["rss_end_mb"],
        }
    return {
        "sent": sum(b["sent"] for b in blocks),
        "answered": sum(b["answered"] for b in blocks),
        "lost": sum(b["lost"] for b in blocks),
        "errors": sum(b["errors"] for b in blocks),
        "error_examples": [e for b in blocks for e in b["error_examples"]][:5],
        "drained": all(b["drained"] for b in blocks),
        "achieved_rate": min(b["achieved_rate"] for b in blocks),
        "from_due": stats(pooled["from_due"]),
        "from_send": stats(pooled["from_send"]),
        "send_lag": stats(pooled["send_lag"]),
        "handoff": stats(handoff),
        "over_target": sum(1 for x in pooled["from_due"] if x >= TARGET_P99_MS),
        "worst_seconds": max((b["worst_seconds"] for b in blocks), key=_peak),
        "block_p99_ms": [round(b["from_due"]["p99_ms"], 2) for b in blocks if b["from_due"]],
        "resources": resources,
    }


def _peak(worst: list[dict[str, Any]]) -> float:
    return max((w["max_ms"] for w in worst), default=0.0)


# report


def _lat(label: str, s: dict[str, float] | None) -> str:
    if s is None:
        return f"  {label:<34}{'-':>8}"
    return (
        f"  {label:<34}{s['n']:>8}{s['median_ms']:>9.3f}{s['p99_ms']:>9.3f}"
        f"{s['p999_ms']:>9.3f}{s['max_ms']:>9.2f}"
    )


def report(results: dict[str, Any], sides: list[str]) -> str:
    facts, options = results["machine"], results["options"]
    lines = [
        "everkit framework load",
        "=" * 78,
        f"python {facts['python']}, paho-mqtt {facts['paho-mqtt']}, {facts['mosquitto']}, "
        f"{facts['cpus']} CPUs ({facts['cpu']})",
        f"load average before {_loads(results['load_before'])}, after "
        f"{_loads(results['load_after'])}; one private Mosquitto on {results['broker']}",
        f"{CMD} at {options['rate']:g}/s, open loop, for {options['duration']:g} s "
        f"(+{options['warmup']:g} s warm-up) in {options['blocks']} block(s) per side, "
        "ABBA order; caller and responder are separate processes",
        "",
        f"  {'side':<22}{'sent':>8}{'answered':>10}{'lost':>7}{'errors':>8}{'rate/s':>9}"
        f"{'>=10ms':>8}",
    ]
    for side in sides:
        r = results[side]
        lines.append(
            f"  {side:<22}{r['sent']:>8}{r['answered']:>10}{r['lost']:>7}{r['errors']:>8}"
            f"{r['achieved_rate']:>9.1f}{r['over_target']:>8}"
        )
    header = f"  {'':<34}{'n':>8}{'median':>9}{'p99':>9}{'p99.9':>9}{'max':>9}   (ms)"
    for side in sides:
        r = results[side]
        lines += [
            "",
            f"{side}",
            header,
            _lat("latency from the due time", r["from_due"]),
            _lat("latency from the send", r["from_send"]),
            _lat("sender lag (send - due)", r["send_lag"]),
            _lat("responder: network -> handler thread", r["handoff"]),
            f"  p99 from the due time per block, in run order: {r['block_p99_ms']}",
            "  worst seconds (s into their block: max ms): "
            + ", ".join(f"{w['second']}: {w['max_ms']}" for w in r["worst_seconds"]),
            f"  {'process':<14}{'cpu s':>8}{'% core':>9}{'RSS start':>11}{'RSS end':>10}  (MB)",
        ]
        for name, u in r["resources"].items():
            lines.append(
                f"  {name:<14}{u['cpu_s']:>8.2f}{u['core_pct']:>9.1f}"
                f"{u['rss_begin_mb']:>11.1f}{u['rss_end_mb']:>10.1f}"
            )
        for example in r["error_examples"]:
            lines.append(f"  error: {example}")
    lines += ["", "targets (informational)"]
    for side in sides:
        r = results[side]
        p99 = r["from_due"]["p99_ms"] if r["from_due"] else float("inf")
        ok = r["lost"] == 0 and r["errors"] == 0 and p99 < TARGET_P99_MS
        lines.append(
            f"  {'PASS' if ok else 'MISS'}  {side}: {r['lost']} lost, {r['errors']} errors, "
            f"p99 {p99:.2f} ms (target 0 lost, p99 < {TARGET_P99_MS:g} ms)"
        )
    return "\n".join(lines)


def _loads(values: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="commands per second")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument(
        "--sides",
        default="framework,raw",
        help=f"comma-separated, from {', '.join(SIDES)}",
    )
    parser.add_argument(
        "--blocks", type=int, default=1, help="split each side's duration into N ABBA blocks"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--child", choices=["caller", "responder"], help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=PREFIX, help=argparse.SUPPRESS)
    parser.add_argument("--watch", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        broker = BrokerAddress.parse(args.broker)
        if args.child == "responder":
            serve = raw_responder if args.side == "raw" else framework_responder
            return serve(broker, args.prefix, Pacing(args.rate, args.duration, args.warmup))
        pids = {k: int(v) for k, _, v in (p.partition("=") for p in args.watch.split(",") if p)}
        pacing = Pacing(args.rate, args.duration, args.warmup)
        caller = raw_caller if args.side == "raw" else framework_caller
        return caller(broker, args.prefix, pacing, pids)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if args.rate <= 0 or args.duration <= 0 or not set(sides) <= set(SIDES):
        parser.error(f"--rate > 0, --duration > 0, --sides from {','.join(SIDES)}")
    results = run(Pacing(args.rate, args.duration, args.warmup), sides, blocks=args.blocks)
    print(report(results, sides))
    if args.json is not None:
        write_json(args.json, results)
    bad = any(results[s]["lost"] or results[s]["errors"] for s in sides)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
