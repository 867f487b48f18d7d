#!/usr/bin/env python3
"""everkit framework latency and footprint, next to a raw paho-mqtt baseline.

One run, one private Mosquitto (started here), four figures:

1. command round trip ``setExportVoltageCurrent`` through two ``Module`` objects (our
   in-process Manager, both modules standalone, validation on both sides), and the same bytes
   through two raw paho clients (QoS 2 both ways, TCP_NODELAY, answer from ``on_message``);
2. var publish-to-callback latency, framework and raw paho;
3. validation cost alone (compiled ``InterfaceValidators`` and plain ``jsonschema``);
4. peak RSS of one idle module process (``python -m everkit module PyExampleSupply``).

Framework and raw blocks alternate (ABBA order) so that machine noise hits both alike.
Targets are informational: the script always exits 0. See bench/README.md.

Run from the repository root: ``.venv/bin/python bench/framework_roundtrip.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from everkit.framework.broker import PrivateBroker, start_mosquitto
from everkit.framework.definitions import Definitions, contract_root
from everkit.framework.manager import Manager
from everkit.framework.manifests import ManifestStore
from everkit.framework.module import Module
from everkit.framework.runtime_config import load_runtime_config
from everkit.framework.transport import BrokerAddress
from everkit.framework.validation import SchemaCompiler, ValidatorCache, arguments_schema
from everkit.framework.wire import Topics, cmd_payload, result_payload, var_payload

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `tests.integration.harness` (the in-process stack)

WAIT_S = 10.0
BLOCKS = 4  # alternating framework/raw blocks per measurement
CMD = "setExportVoltageCurrent"
ARGS = {"voltage": 400.0, "current": 20.0}
VOLTAGE_CURRENT = {"voltage_V": 400.0, "current_A": 20.0}
CAPABILITIES = {
    "bidirectional": False,
    "current_regulation_tolerance_A": 1.0,
    "peak_current_ripple_A": 0.5,
    "max_export_voltage_V": 500.0,
    "min_export_voltage_V": 0.0,
    "max_export_current_A": 50.0,
    "min_export_current_A": 0.0,
    "max_export_power_W": 20000.0,
}
# same length, so that topic bytes on the wire are the same for framework and raw
FW_PREFIX = "benchfw/"
RAW_PREFIX = "benchrw/"
RSS_PREFIX = "benchrs/"

TARGET_RATIO = 1.5
TARGET_MEDIAN_MS = 2.0
TARGET_RSS_MB = 60.0

now_ns = time.perf_counter_ns


# statistics


@dataclass
class Latency:
    samples_ns: list[int]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ns) / 1e6

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.samples_ns)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e6

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples_ns) / 1e6

    def as_dict(self) -> dict[str, float]:
        return {
            "n": len(self.samples_ns),
            "median_ms": round(self.median_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "mean_ms": round(self.mean_ms, 4),
        }


def block_sizes(total: int, blocks: int) -> list[int]:
    base, extra = divmod(total, blocks)
    return [base + (1 if i < extra else 0) for i in range(blocks)]


def alternate(
    framework: Callable[[int], list[int]],
    raw: Callable[[int], list[int]],
    iterations: int,
    warmup: int,
) -> tuple[Latency, Latency]:
    """Warm both up, then ABBA blocks: FW RAW, RAW FW, FW RAW, RAW FW."""
    framework(warmup)
    raw(warmup)
    fw: list[int] = []
    rw: list[int] = []
    for index, size in enumerate(block_sizes(iterations, BLOCKS)):
        order = ((framework, fw), (raw, rw)) if index % 2 == 0 else ((raw, rw), (framework, fw))
        for run, sink in order:
            gc.collect()
            sink.extend(run(size))
    return Latency(fw), Latency(rw)


# raw paho clients


def raw_client(broker: BrokerAddress, name: str) -> paho.Client:
    """A paho 2.x client set up as everkit's Transport is, minus routing and dispatch."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{name}-{uuid.uuid4().hex[:8]}",
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)

    def nodelay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = nodelay
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect(broker.host, broker.port, keepalive=20)
    client.loop_start()
    if not connected.wait(WAIT_S):
        raise RuntimeError(f"raw client {name} could not connect to {broker}")
    return client


def raw_subscribe(client: paho.Client, topic: str) -> None:
    done = threading.Event()
    client.on_subscribe = lambda *_: done.set()
    client.subscribe(topic, qos=2)
    if not done.wait(WAIT_S):
        raise RuntimeError(f"no SUBACK for {topic}")


def raw_close(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()


class RawCommand:
    """Caller and responder exchanging the framework's exact Cmd / CmdResult bytes."""

    def __init__(self, broker: BrokerAddress, total_calls: int) -> None:
        topics = Topics(RAW_PREFIX)
        self.cmd_topic = topics.cmd("provider", "main", CMD)
        self.response_topic = topics.cmd_response("provider", "main", CMD, "requirer")
        # one fresh UUID per call, built before timing: byte-identical in size and shape
        self.calls: list[tuple[bytes, bytes]] = []
        self.replies: dict[bytes, bytes] = {}
        for _ in range(total_calls):
            call_id = str(uuid.uuid4())
            request = cmd_payload(call_id, dict(ARGS), "requirer")
            reply = result_payload(call_id, "provider", None)
            self.calls.append((request, reply))
            self.replies[request] = reply
        self.next_call = 0
        self.expected = b""
        self.event = threading.Event()
        self.responder = raw_client(broker, "bench-raw-responder")
        self.caller = raw_client(broker, "bench-raw-caller")
        self.responder.on_message = self._answer
        self.caller.on_message = self._result
        raw_subscribe(self.responder, self.cmd_topic)
        raw_subscribe(self.caller, self.response_topic)

    def _answer(self, client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        client.publish(self.response_topic, self.replies[bytes(msg.payload)], qos=2)

    def _result(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.payload == self.expected:
            self.event.set()

    def run(self, count: int) -> list[int]:
        out = []
        for _ in range(count):
            request, reply = self.calls[self.next_call]
            self.next_call += 1
            event = threading.Event()
            self.expected, self.event = reply, event
            start = now_ns()
            self.caller.publish(self.cmd_topic, request, qos=2)
            if not event.wait(WAIT_S):
                raise RuntimeError("raw command round trip timed out")
            out.append(now_ns() - start)
        return out

    def close(self) -> None:
        raw_close(self.caller)
        raw_close(self.responder)


class RawVar:
    """Publisher and subscriber exchanging the framework's exact Var bytes."""

    def __init__(self, broker: BrokerAddress) -> None:
        self.topic = Topics(RAW_PREFIX).var("provider", "main", "voltage_current")
        self.payload = var_payload(VOLTAGE_CURRENT)
        self.event = threading.Event()
        self.arrived = 0
        self.publisher = raw_client(broker, "bench-raw-publisher")
        self.subscriber = raw_client(broker, "bench-raw-subscriber")
        self.subscriber.on_message = self._on_message
        raw_subscribe(self.subscriber, self.topic)

    def _on_message(self, _client: paho.Client, _userdata: Any, _msg: paho.MQTTMessage) -> None:
        self.arrived = now_ns()
        self.event.set()

    def run(self, count: int) -> list[int]:
        out = []
        for _ in range(count):
            event = threading.Event()
            self.event = event
            start = now_ns()
            self.publisher.publish(self.topic, self.payload, qos=2)
            if not event.wait(WAIT_S):
                raise RuntimeError("raw var timed out")
            out.append(self.arrived - start)
        return out

    def close(self) -> None:
        raw_close(self.publisher)
        raw_close(self.subscriber)


# the framework side


class FrameworkPair:
    """A provider and a requirer Module on our in-process Manager (tests' harness)."""

    def __init__(self, provider: Module, requirer: Module, definitions: Definitions) -> None:
        self.provider = provider
        self.requirer = requirer
        for impl, interface in provider.implementations.items():
            for cmd in definitions.interface(interface).cmds:
                provider.implement_command(impl, cmd, _ignore)
        self.event = threading.Event()
        self.arrived = 0
        requirer.subscribe_variable("psu", "voltage_current", self._on_var)
        ready = threading.Event()
        provider.init_done()
        requirer.init_done(ready.set)
        if not ready.wait(WAIT_S):
            raise RuntimeError("no GlobalReady from the in-process manager")

    def _on_var(self, _value: Any) -> None:
        self.arrived = now_ns()
        self.event.set()

    def run_command(self, count: int) -> list[int]:
        out = []
        call = self.requirer.call_command
        for _ in range(count):
            start = now_ns()
            call("psu", CMD, ARGS, timeout=WAIT_S)
            out.append(now_ns() - start)
        return out

    def run_var(self, count: int) -> list[int]:
        out = []
        publish = self.provider.publish_variable
        for _ in range(count):
            event = threading.Event()
            self.event = event
            start = now_ns()
            publish("main", "voltage_current", VOLTAGE_CURRENT)
            if not event.wait(WAIT_S):
                raise RuntimeError("framework var timed out")
            out.append(self.arrived - start)
        return out


def _ignore(**_kwargs: Any) -> None:
    return None


@contextmanager
def framework_pair(broker: BrokerAddress, definitions: Definitions) -> Iterator[FrameworkPair]:
    # imported here: `tests` is importable only once REPO is on sys.path (set above)
    from tests.integration.harness import in_process_stack, start_module  # noqa: PLC0415

    with (
        tempfile.TemporaryDirectory(prefix="everkit-bench-") as folder,
        in_process_stack(broker, FW_PREFIX, Path(folder)) as (_manager, started),
    ):
        started["provider"] = start_module(broker, FW_PREFIX, "provider")
        started["requirer"] = start_module(broker, FW_PREFIX, "requirer")
        yield FrameworkPair(started["provider"], started["requirer"], definitions)


# validation cost


def per_call_us(fn: Callable[[], Any], loops: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean time per call in a loop of ``loops`` calls."""
    for _ in range(min(loops, 1000)):
        fn()
    results = []
    for _ in range(repeats):
        start = now_ns()
        for _ in range(loops):
            fn()
        results.append((now_ns() - start) / loops / 1e3)
    return statistics.median(results)


def validation_costs(definitions: Definitions, loops: int) -> list[dict[str, Any]]:
    validators = ValidatorCache(definitions)["power_supply_DC"]
    interface = validators.interface
    compiler = SchemaCompiler(definitions)

    def plain(schema: dict[str, Any]) -> Any:
        contained = compiler.self_contained(schema)
        cls = jsonschema.validators.validator_for(contained)
        return cls(contained)

    args_plain = plain(arguments_schema(interface.cmds[CMD]))
    caps_plain = plain(interface.vars["capabilities"])
    vc_plain = plain(interface.vars["voltage_current"])
    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        (
            f"check_args {CMD}",
            lambda: validators.check_args(CMD, ARGS),
            lambda: args_plain.validate(ARGS),
        ),
        (
            "check_var capabilities (Capabilities)",
            lambda: validators.check_var("capabilities", CAPABILITIES),
            lambda: caps_plain.validate(CAPABILITIES),
        ),
        (
            "check_var voltage_current",
            lambda: validators.check_var("voltage_current", VOLTAGE_CURRENT),
            lambda: vc_plain.validate(VOLTAGE_CURRENT),
        ),
    ]
    return [
        {
            "what": name,
            "everkit_us": per_call_us(ours, loops),
            "jsonschema_us": per_call_us(theirs, max(loops // 10, 100)),
        }
        for name, ours, theirs in cases
    ]


# idle module RSS


def proc_status_kb(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0])
    return values


def idle_module_rss(broker: BrokerAddress, idle_s: float) -> dict[str, Any]:
    """Start PyExampleSupply as a real process under our in-process Manager and measure it."""
    with tempfile.TemporaryDirectory(prefix="everkit-bench-rss-") as folder:
        config_file = Path(folder) / "config.yaml"
        config_file.write_text(
            yaml.safe_dump({"active_modules": {"supply": {"module": "PyExampleSupply"}}})
        )
        definitions = Definitions.from_dirs(contract_root())
        store = ManifestStore([contract_root() / "manifests"])
        config = load_runtime_config(config_file, manifests=store, definitions=definitions)
        manager = Manager(
            config, definitions, broker, prefix=RSS_PREFIX, standalone=frozenset({"supply"})
        )
        # the supply publishes its capabilities in its ready(): proof GlobalReady arrived
        watcher = raw_client(broker, "bench-rss-watcher")
        saw_ready = threading.Event()
        watcher.on_message = lambda *_: saw_ready.set()
        raw_subscribe(watcher, Topics(RSS_PREFIX).var("supply", "main", "capabilities"))
        manager.start()
        env = dict(
            os.environ,
            EV_MODULE="supply",
            EV_MQTT_BROKER_HOST=broker.host,
            EV_MQTT_BROKER_PORT=str(broker.port),
            EV_MQTT_EVEREST_PREFIX=RSS_PREFIX,
        )
        log_path = Path(folder) / "module.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "everkit", "module", "PyExampleSupply"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            if not (manager.global_ready.wait(30) and saw_ready.wait(30)):
                raise RuntimeError("the supply module never became ready:\n" + log_path.read_text())
            time.sleep(idle_s)  # idle, as asked: ready, publishing voltage_current at 4 Hz
            status = proc_status_kb(process.pid)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raw_close(watcher)
            manager.shutdown()
    return {
        "pid": process.pid,
        "peak_rss_mb": status["VmHWM"] / 1024,
        "rss_mb": status["VmRSS"] / 1024,
        "exit_status": process.returncode,
    }


def interpreter_rss() -> dict[str, float]:
    """For scale: the same interpreter doing nothing, and with paho imported."""
    out = {}
    for label, code in (
        ("python_bare_mb", "import sys; sys.stdin.read()"),
        ("python_paho_mb", "import sys, paho.mqtt.client; sys.stdin.read()"),
    ):
        process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
        time.sleep(1.0)
        out[label] = proc_status_kb(process.pid)["VmHWM"] / 1024
        assert process.stdin is not None
        process.stdin.close()
        process.wait(10)
    return out


# report


def machine_facts() -> dict[str, str]:
    try:
        first = subprocess.run(
            ["mosquitto", "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        first = "unknown"
    return {
        "python": platform.python_version(),
        "paho-mqtt": version("paho-mqtt"),
        "mosquitto": first.strip(),
        "cpus": str(os.cpu_count()),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def latency_rows(title: str, fw: Latency, raw: Latency) -> list[str]:
    ratio = fw.median_ms / raw.median_ms
    return [
        f"{title}",
        f"  {'':<22}{'median':>10}{'p99':>10}{'mean':>10}   (ms, n={len(fw.samples_ns)} each)",
        f"  {'everkit framework':<22}{fw.median_ms:>10.3f}{fw.p99_ms:>10.3f}{fw.mean_ms:>10.3f}",
        f"  {'raw paho':<22}{raw.median_ms:>10.3f}{raw.p99_ms:>10.3f}{raw.mean_ms:>10.3f}",
        f"  ratio framework/raw (medians): {ratio:.2f}x",
    ]


def report(results: dict[str, Any]) -> str:
    facts = results["machine"]
    cmd_fw, cmd_raw = results["_cmd"]
    var_fw, var_raw = results["_var"]
    rss = results["idle_module_rss"]
    lines = [
        "everkit framework benchmark",
        "=" * 72,
        f"python {facts['python']}, paho-mqtt {facts['paho-mqtt']}, {facts['mosquitto']}, "
        f"{facts['cpus']} CPUs ({facts['cpu']})",
        f"{facts['platform']}",
        f"iterations {results['iterations']} (+{results['warmup']} warm-up) per side, "
        f"{BLOCKS} alternating ABBA blocks; one private Mosquitto on {results['broker']}",
        "",
        *latency_rows(
            f"1. command round trip {CMD} (QoS 2 both ways, validated both sides)",
            cmd_fw,
            cmd_raw,
        ),
        "",
        *latency_rows(
            "2. var publish -> subscriber callback (voltage_current, QoS 2)", var_fw, var_raw
        ),
        "",
        "3. validation cost alone (us per call)",
        f"  {'':<42}{'everkit':>10}{'jsonschema':>12}",
    ]
    for row in results["validation"]:
        lines.append(f"  {row['what']:<42}{row['everkit_us']:>10.2f}{row['jsonschema_us']:>12.1f}")
    lines += [
        "",
        "4. idle module process (PyExampleSupply, ready + 2 s idle)",
        f"  peak RSS (VmHWM) {rss['peak_rss_mb']:.1f} MB, current RSS (VmRSS) "
        f"{rss['rss_mb']:.1f} MB",
        f"  for scale: bare python {results['interpreter']['python_bare_mb']:.1f} MB, "
        f"python + paho {results['interpreter']['python_paho_mb']:.1f} MB (VmHWM)",
        "",
        "targets (informational)",
    ]
    for target in results["targets"]:
        lines.append(f"  {verdict(target['pass'])}  {target['what']}: {target['value']}")
    return "\n".join(lines)


def targets(cmd_fw: Latency, cmd_raw: Latency, rss: dict[str, Any]) -> list[dict[str, Any]]:
    ratio = cmd_fw.median_ms / cmd_raw.median_ms
    return [
        {
            "what": f"command round trip median <= {TARGET_RATIO}x raw paho",
            "value": f"{ratio:.2f}x",
            "pass": ratio <= TARGET_RATIO,
        },
        {
            "what": f"command round trip median < {TARGET_MEDIAN_MS:g} ms",
            "value": f"{cmd_fw.median_ms:.3f} ms",
            "pass": cmd_fw.median_ms < TARGET_MEDIAN_MS,
        },
        {
            "what": f"idle module peak RSS < {TARGET_RSS_MB:g} MB",
            "value": f"{rss['peak_rss_mb']:.1f} MB",
            "pass": rss["peak_rss_mb"] < TARGET_RSS_MB,
        },
    ]


def run(iterations: int, warmup: int, validation_loops: int) -> dict[str, Any]:
    definitions = Definitions.from_dirs(contract_root())
    results: dict[str, Any] = {
        "machine": machine_facts(),
        "iterations": iterations,
        "warmup": warmup,
    }
    broker: PrivateBroker = start_mosquitto()
    results["broker"] = str(broker.address)
    try:
        raw_cmd = RawCommand(broker.address, iterations + warmup)
        raw_var = RawVar(broker.address)
        try:
            with framework_pair(broker.address, definitions) as pair:
                results["_cmd"] = alternate(pair.run_command, raw_cmd.run, iterations, warmup)
                results["_var"] = alternate(pair.run_var, raw_var.run, iterations, warmup)
        finally:
            raw_cmd.close()
            raw_var.close()
        results["validation"] = validation_costs(definitions, validation_loops)
        results["idle_module_rss"] = idle_module_rss(broker.address, idle_s=2.0)
        results["interpreter"] = interpreter_rss()
    finally:
        broker.stop()
    cmd_fw, cmd_raw = results["_cmd"]
    results["targets"] = targets(cmd_fw, cmd_raw, results["idle_module_rss"])
    results["command_round_trip"] = {
        "framework": results["_cmd"][0].as_dict(),
        "raw_paho": results["_cmd"][1].as_dict(),
        "ratio_median": round(results["_cmd"][0].median_ms / results["_cmd"][1].median_ms, 3),
    }
    results["var_latency"] = {
        "framework": results["_var"][0].as_dict(),
        "raw_paho": results["_var"][1].as_dict(),
        "ratio_median": round(results["_var"][0].median_ms / results["_var"][1].median_ms, 3),
    }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000, help="timed calls per side")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per side first")
    parser.add_argument(
        "--validation-loops", type=int, default=20000, help="calls per validation timing loop"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.iterations < BLOCKS:
        parser.error(f"--iterations must be at least {BLOCKS}")
    results = run(args.iterations, args.warmup, args.validation_loops)
    print(report(results))
    if args.json is not None:
        public = {k: v for k, v in results.items() if not k.startswith("_")}
        args.json.write_text(json.dumps(public, indent=2) + "\n", encoding="utf-8")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
