"""``everkit run``: the EVerest manager, in Python.

What it does, in the C++ manager's order (protocol reference sections 7 and 10):
  1. load and validate the runtime config and every manifest (the caller does this before
     anything starts: ``runtime_config.load_runtime_config``);
  2. publish the retained definition topics, answer GetConfig requests;
  3. start every non-standalone module as its own process with the EV_* environment;
  4. wait for every ModuleReady (standalone ones too), clear the retained topics, publish
     GlobalReady;
  5. supervise: when one module exits, or on SIGINT/SIGTERM, stop all of them and say why.

A module exiting with status 0 ends the run with status 0 (the demo relies on this); any
other exit, or a module that cannot start, ends it with status 1, as in EVerest, so that a
service manager restarts the stack.

Opt-in (``restart``, ``everkit run --restart``): a module that fails is started again
after a back-off, at most a few times in a window (restart.py); the definitions are
published again for it and GlobalReady is re-sent once it is ready, which the modules
already running ignore (EVerest's modules do the same with a repeated GlobalReady).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .definitions import Definitions, contract_root, load_yaml
from .errors import ConfigError, EverkitError, MessageParsingError
from .restart import GiveUp, RestartPolicy
from .runtime_config import (
    RuntimeConfig,
    error_response,
    interface_definitions_payload,
    interfaces_payload,
    manifests_payload,
    module_config_response,
    module_names_payload,
    settings_payload,
    type_definitions_payload,
    types_payload,
    with_directories,
)
from .signals import MainThreadWaiter
from .trace import describe
from .transport import BrokerAddress, Transport
from .validation import ValidatorCache
from .wire import MsgType, Topics, decode, encode, ready_payload

log = logging.getLogger("everkit.manager")

STOP_GRACE_S = 5.0
#: EVerest requires EV_LOG_CONF_FILE to name an existing file, even for Python modules
LOG_CONFIG = contract_root() / "config" / "logging.ini"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Children get SIGTERM if the manager dies, as EVerest's do (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def module_command(module_name: str) -> list[str]:
    """How a module process is started: ``python -m everkit module <Name>``."""
    return [sys.executable, "-m", "everkit", "module", module_name]


@dataclass(frozen=True)
class Outcome:
    """Why the run ended, and with which exit status."""

    reason: str
    status: int


@dataclass
class _Child:
    module_id: str
    module_name: str
    process: subprocess.Popen[bytes]


@dataclass
class Manager:
    config: RuntimeConfig
    definitions: Definitions
    broker: BrokerAddress
    prefix: str = "everest/"
    standalone: frozenset[str] = frozenset()
    trace: Callable[[str], None] | None = None
    command_for: Callable[[str], list[str]] = module_command
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: each module's stdout and stderr go to <log_dir>/<module id>.log (else: ours)
    log_dir: Path | None = None
    #: None: one module exiting stops all (EVerest); else failed modules are restarted
    restart: RestartPolicy | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        settings = self.config.settings
        if not all(settings.get(k) for k in ("prefix", "etc_dir", "data_dir", "modules_dir")):
            self.config = with_directories(self.config, settings.get("prefix") or sys.prefix)
        self.topics = Topics(self.prefix)
        self._transport = Transport(self.broker, client_id=f"everkit-manager-{os.getpid()}")
        self._retained: list[str] = []
        self._ready: dict[str, bool] = dict.fromkeys(self.config.modules, False)
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._children: dict[str, _Child] = {}
        self._lock = threading.Lock()
        self._waiter: MainThreadWaiter | None = None
        self._timers: list[threading.Timer] = []
        self.global_ready = threading.Event()
        #: (module id, pid) of every start, restarts included, in order
        self.starts: list[tuple[str, int]] = []

    # start-up

    def start(self, connect_timeout: float = 10.0) -> None:
        """Connect, publish the definitions, serve GetConfig and start the modules."""
        self._transport.connect(connect_timeout)
        if self.trace is not None:
            printer = self.trace

            def on_any(topic: str, payload: bytes) -> None:
                line = describe(topic, payload, self.topics.prefix)
                if line:
                    printer(line)

            self._transport.subscribe(f"{self.topics.prefix}#", on_any)
        self._transport.subscribe(self.topics.config_request, self._on_config_request)
        for module_id in self.config.modules:
            self._transport.subscribe(
                self.topics.module_ready(module_id), self._ready_handler(module_id)
            )
        self.publish_definitions()
        for module_id, entry in self.config.modules.items():
            if entry.standalone or module_id in self.standalone:
                log.info("waiting for standalone module '%s' (%s)", module_id, entry.module_name)
                continue
            self._launch(module_id, entry.module_name)

    def publish_definitions(self) -> None:
        """The retained topics of section 3, sorted keys as the C++ manager writes them."""
        config, definitions = self.config, self.definitions
        items: list[tuple[str, Any]] = [(self.topics.interfaces, interfaces_payload(config))]
        items += [
            (self.topics.interface_definition(name), body)
            for name, body in interface_definitions_payload(config, definitions).items()
        ]
        items.append((self.topics.types, types_payload(config, definitions)))
        items += [
            (self.topics.type_definition(key), body)
            for key, body in type_definitions_payload(config, definitions).items()
        ]
        items.append((self.topics.settings, settings_payload(config.settings)))
        if config.settings.get("validate_schema"):
            items.append((self.topics.schemas, _schemas_payload()))
        items += [
            (self.topics.manifest(name), body)
            for name, body in sorted(manifests_payload(config).items())
        ]
        items.append((self.topics.module_names, module_names_payload(config)))
        for topic, data in items:
            payload = encode(MsgType.GET_CONFIG_RESPONSE, data, sort_keys=True)
            self._transport.publish(topic, payload, qos=2, retain=True)
            self._retained.append(topic)

    def clear_definitions(self) -> None:
        for topic in self._retained:
            self._transport.publish(topic, b"", qos=0, retain=True)
        self._retained.clear()

    def _on_config_request(self, _topic: str, payload: bytes) -> None:
        try:
            envelope = decode(payload)
            request = envelope.data
            origin = request["origin"]
            kind = request["request"]["type"]
        except (MessageParsingError, KeyError, TypeError) as exc:
            log.warning("ignored malformed config request: %s", exc)
            return
        if envelope.msg_type != MsgType.GET_CONFIG or not isinstance(origin, str):
            return
        if origin not in self.config.modules:
            log.warning("config request from unknown module '%s'", origin)
            data = error_response(origin, f"module '{origin}' is not in the config")
        elif request.get("type") == "Get" and kind == "Module":
            data = module_config_response(self.config, origin)
        else:
            data = error_response(origin, f"request type {kind!r} is not supported")
        self._transport.publish(
            self.topics.config_response(origin),
            encode(MsgType.GET_CONFIG_RESPONSE, data, sort_keys=True),
        )

    def _ready_handler(self, module_id: str) -> Callable[[str, bytes], None]:
        return lambda _topic, payload: self._on_module_ready(module_id, payload)

    def _on_module_ready(self, module_id: str, payload: bytes) -> None:
        try:
            envelope = decode(payload)
        except MessageParsingError:
            return
        if envelope.msg_type != MsgType.MODULE_READY or envelope.data is not True:
            return
        with self._lock:
            if self._ready[module_id]:
                return
            self._ready[module_id] = True
            waiting = [m for m, ready in self._ready.items() if not ready]
        log.info(
            "module '%s' is ready%s", module_id, f"; waiting for {len(waiting)}" * bool(waiting)
        )
        if not waiting:
            self.clear_definitions()
            self._transport.publish(self.topics.global_ready, ready_payload(MsgType.GLOBAL_READY))
            again = " again for the restarted module" if self.global_ready.is_set() else ""
            log.info("all %d modules ready: GlobalReady sent%s", len(self._ready), again)
            self.global_ready.set()

    # processes

    def _environment(self, module_id: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["EV_MODULE"] = module_id
        settings = self.config.settings
        defaults = {
            "EV_PREFIX": str(settings.get("prefix") or sys.prefix),
            "EV_LOG_CONF_FILE": str(LOG_CONFIG),
            "EV_MQTT_EXTERNAL_PREFIX": str(settings.get("mqtt_external_prefix", "")),
            # glibc gives each thread that frees a big payload an arena of its own and keeps
            # it: with the default, RSS ratchets up under large hostile payloads (tests/fuzz)
            "MALLOC_ARENA_MAX": "2",
        }
        for key, value in defaults.items():
            env.setdefault(key, value)
        # unlike EVerest we overwrite it: a module on another prefix would never be ready
        env["EV_MQTT_EVEREST_PREFIX"] = self.topics.prefix
        env["EV_MQTT_BROKER_HOST"] = self.broker.host
        env["EV_MQTT_BROKER_PORT"] = str(self.broker.port)
        if settings.get("validate_schema"):
            env["EV_VALIDATE_SCHEMA"] = "1"
        return env

    def _launch(self, module_id: str, module_name: str) -> None:
        command = self.command_for(module_name)
        log_file: IO[bytes] | None = None
        try:
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                log_file = (self.log_dir / f"{module_id}.log").open("ab")
            process = subprocess.Popen(
                command,
                env=self._environment(module_id),
                stdout=log_file,
                stderr=subprocess.STDOUT if log_file is not None else None,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl
                start_new_session=True,  # Ctrl-C reaches the manager, which stops us in order
            )
        except OSError as exc:
            self._post("failed", (module_id, f"cannot start {command[0]}: {exc}"))
            return
        finally:
            if log_file is not None:
                log_file.close()  # the child has its own descriptor
        log.info("started module '%s' (%s) as pid %d", module_id, module_name, process.pid)
        child = _Child(module_id, module_name, process)
        self._children[module_id] = child
        self.starts.append((module_id, process.pid))
        threading.Thread(
            target=lambda: self._post("exit", (module_id, process.pid, process.wait())),
            name=f"wait-{module_id}",
            daemon=True,
        ).start()

    # supervision

    def request_stop(self, reason: str) -> None:
        self._post("stop", reason)

    def _post(self, kind: str, detail: Any) -> None:
        self._events.put((kind, detail))
        waiter = self._waiter
        if waiter is not None:
            waiter.wake()

    def _wait_for_event(self) -> tuple[str, Any]:
        if threading.current_thread() is not threading.main_thread():
            return self._events.get()
        names = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
        with MainThreadWaiter(
            names, on_signal=lambda sig: self._events.put(("stop", f"{names[sig]} received"))
        ) as waiter:
            self._waiter = waiter
            while self._events.empty():
                waiter.wait()
            self._waiter = None
        return self._events.get()

    def supervise(self) -> Outcome:
        """Block until a module exits (and is not restarted) or a stop is requested; then
        stop everything."""
        while True:
            kind, detail = self._wait_for_event()
            if kind == "restart":
                self._relaunch(detail)
                continue
            if kind == "exit":
                module_id, pid, status = detail
                child = self._children[module_id]
                if child.process.pid != pid:
                    continue  # an old process of a module restarted since
                reason = (
                    f"module '{module_id}' ({child.module_name}, pid {pid}) {_how_it_ended(status)}"
                )
                if status != 0 and self._restart_later(module_id, reason):
                    continue
                outcome = Outcome(reason, 0 if status == 0 else 1)
            elif kind == "failed":
                module_id, message = detail
                outcome = Outcome(f"module '{module_id}' could not start: {message}", 1)
            elif kind == "give-up":
                outcome = Outcome(str(detail), 1)
            else:
                outcome = Outcome(str(detail), 0)
            break
        log.info("stopping all modules: %s", outcome.reason)
        self.shutdown()
        return outcome

    def _restart_later(self, module_id: str, reason: str) -> bool:
        """Apply the restart policy to a failed module; False: stop all."""
        if self.restart is None:
            return False
        decision = self.restart.on_failure(module_id, self.clock())
        if decision is None:
            return False
        if isinstance(decision, GiveUp):
            self._post("give-up", f"{reason}; {decision.reason}")
            return True
        policy = self.restart
        log.warning(
            "%s; restarting it in %g s (restart %d of at most %d within %g s)",
            reason,
            decision.delay_s,
            decision.count,
            policy.limit,
            policy.window_s,
        )
        timer = threading.Timer(decision.delay_s, self._post, ("restart", module_id))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return True

    def _relaunch(self, module_id: str) -> None:
        """Start ``module_id`` again as at boot: its GetConfig is answered as ever, the
        retained definitions are published again for it (they were cleared at GlobalReady)
        and GlobalReady is re-sent when it is ready, else its ready() would never run."""
        with self._lock:
            self._ready[module_id] = False
        if self._transport.connected:
            self.publish_definitions()
        self._launch(module_id, self._children[module_id].module_name)

    def shutdown(self) -> None:
        """SIGTERM every module, SIGKILL what is still there after a grace period."""
        for timer in self._timers:
            timer.cancel()
        running = [c for c in self._children.values() if c.process.poll() is None]
        for child in running:
            child.process.terminate()
        for child in running:
            try:
                child.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("module '%s' ignored SIGTERM; killing it", child.module_id)
                child.process.kill()
                child.process.wait()
        if self._retained and self._transport.connected:
            self.clear_definitions()
        self._transport.close()


def _how_it_ended(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name} (exit status {status})"
    return f"exited with status {status}"


def check_contract(config: RuntimeConfig, definitions: Definitions) -> None:
    """Compile every interface the config uses, as the C++ manager checks them at boot.

    This resolves every ``$ref`` down to the type files, so a missing type stops the run
    before anything starts instead of when a module first validates a value.
    """
    cache = ValidatorCache(definitions)
    problems: list[str] = []
    for module_id, entry in config.modules.items():
        used = [(f"provides.{impl}.interface", iface) for impl, iface in entry.provides.items()]
        used += [
            (f"requires.{req}.interface", spec["interface"])
            for req, spec in (entry.manifest.get("requires") or {}).items()
        ]
        for key, interface in used:
            try:
                cache[interface]
            except EverkitError as exc:
                problems.append(f"module '{module_id}', key '{key}': {exc}")
    if problems:
        raise ConfigError(
            "the contract is incomplete:\n  " + "\n  ".join(problems), file=str(config.file)
        )


def _schemas_payload() -> dict[str, Any]:
    root = contract_root() / "schemas"
    names = {
        "config": "config",
        "manifest": "manifest",
        "interface": "interface",
        "type": "type",
        "error_declaration_list": "error-declaration-list",
    }
    return {key: load_yaml(root / f"{stem}.yaml") for key, stem in names.items()}
