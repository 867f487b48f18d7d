"""The whole SIL DC stack (config/sil-dc.yaml) as `everkit run` starts it, with the car
idle and the demo CSMS, so that a fuzzer can hit every module's topics while every module
runs as its own process. Module logs go to one file per module (``--log-dir``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from everkit.framework.transport import BrokerAddress
from tests.conftest import Captured, RawClient, _raw_client
from tests.e2e.conftest import start_csms
from tests.e2e.sil import sil_config
from tests.fuzz.inputs import ORIGIN

ROOT = Path(__file__).resolve().parents[2]
STARTED = re.compile(r"started module '([^']+)' \(([^)]+)\) as pid (\d+)")
WAIT_S = 60.0  # generous: two cores shared with other test runs


def fuzz_config(tmp_path: Path, prefix: str, csms_url: str) -> dict[str, Any]:
    # the car stays plugged out and never ends the run: only the fuzzer drives the stack
    idle = {"auto_exec": False, "exit_when_done": False}
    return sil_config(tmp_path, f"fuzz-{prefix}", csms_url, car=idle)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state


@dataclass
class Stack:
    prefix: str
    config: dict[str, Any]
    log_dir: Path
    process: subprocess.Popen[bytes]
    bus: RawClient
    pids: dict[str, int] = field(default_factory=dict)

    def log_of(self, module_id: str) -> str:
        path = self.log_dir / f"{module_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, module_id: str, predicate: Callable[[str], bool], timeout: float) -> str:
        """The module's log once ``predicate`` holds (the file is the only event we get)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_of(module_id)
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"log of {module_id} never matched; tail:\n{text[-2000:]}")
            time.sleep(0.05)

    def wait_for_condition(
        self, condition: Callable[[], bool], timeout: float, explain: Callable[[], str]
    ) -> None:
        """For what only shows in log files, which give no event to wait on."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(explain())
            time.sleep(0.05)

    def dead(self) -> list[str]:
        return [m for m, pid in self.pids.items() if not alive(pid)]

    def results(self, call_ids: set[str], timeout: float = WAIT_S) -> dict[str, dict[str, Any]]:
        """The CmdResult payloads (``data.data``) for ``call_ids``, by id; those that did
        not arrive within ``timeout`` are missing."""
        found: dict[str, dict[str, Any]] = {}
        seen = 0
        deadline = time.monotonic() + timeout
        with self.bus._changed:
            while True:
                for message in self.bus.messages[seen:]:
                    inner = _result_of(message)
                    if inner is not None and inner.get("id") in call_ids:
                        found[inner["id"]] = inner
                seen = len(self.bus.messages)
                remaining = deadline - time.monotonic()
                if len(found) >= len(call_ids) or remaining <= 0:
                    return found
                self.bus._changed.wait(remaining)

    def clear(self) -> None:
        with self.bus._changed:
            self.bus.messages.clear()

    def call(self, topic: str, payload: bytes) -> None:
        self.bus.client.publish(topic, payload, qos=1)

    def call_and_wait(self, topic: str, args: Any, timeout: float = WAIT_S) -> dict[str, Any]:
        call_id = f"probe-{uuid.uuid4().hex[:8]}"
        body = {"msg_type": "Cmd", "data": {"id": call_id, "args": args, "origin": ORIGIN}}
        self.bus.publish(topic, json.dumps(body))
        found = self.results({call_id}, timeout)
        assert call_id in found, f"no result for {topic} within {timeout} s"
        return found[call_id]


def _result_of(message: Captured) -> dict[str, Any] | None:
    if "/response/" not in message.topic:
        return None
    try:
        inner = json.loads(message.payload)["data"]["data"]
    except (ValueError, KeyError, TypeError):
        return None
    return inner if isinstance(inner, dict) else None


@contextmanager
def sil_stack(broker: BrokerAddress, prefix: str, tmp_path: Path) -> Iterator[Stack]:
    with start_csms(tmp_path) as csms:
        config = fuzz_config(tmp_path, prefix, csms.url)
        path = tmp_path / "sil-fuzz.yaml"
        path.write_text(yaml.safe_dump(config))
        log_dir = tmp_path / "logs"
        bus = _raw_client(broker)
        bus.subscribe(f"{prefix}ready")
        bus.subscribe(f"{prefix}modules/+/impl/+/cmd/+/response/{ORIGIN}")
        command = [sys.executable, "-m", "everkit", "run", str(path), "--broker", str(broker)]
        command += ["--prefix", prefix, "--log-dir", str(log_dir)]
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # glibc gives each of a module's handler threads its own malloc arena, and each
            # keeps freed 10 MB payload buffers: RSS then climbs by tens of MB per burst
            # until every arena holds one (measured: PyEvSimulator 51 -> 294 MB over three
            # bursts), which hides a real leak. Two arenas keep RSS a leak signal.
            env={**os.environ, "PYTHONUNBUFFERED": "1", "MALLOC_ARENA_MAX": "2"},
        )
        stack = Stack(prefix, config, log_dir, process, bus)
        try:
            bus.on_topic(f"{prefix}ready", timeout=WAIT_S)
            manager_log = (log_dir / "manager.log").read_text()
            stack.pids = {m: int(pid) for m, _name, pid in STARTED.findall(manager_log)}
            assert set(stack.pids) == set(config["active_modules"]), manager_log
            yield stack
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            bus.client.disconnect()
            bus.client.loop_stop()
