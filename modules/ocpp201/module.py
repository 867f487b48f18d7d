"""PyOCPP201: binds the bridge (an asyncio loop on its own thread) to the EVerest bus.

Bus callbacks hand events to the loop with call_soon_threadsafe and return at once. The
bridge is built in the ready callback, once get_evse told us each EVSE's id and connector;
session events that arrive before are kept and replayed in order. EVSE commands run on
worker threads of the loop (asyncio.to_thread), so a slow EvseManager never blocks the
websocket. validate_token (an MQTT handler thread) waits for the Authorize round trip.
The ocpp_generic commands (MQTT handler threads) run on the loop too and wait for it; its
vars leave through one publisher thread, in the order the loop made them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

from ..framework import CommandError, Fulfillment, HandlerException, Module, NotReady
from ..framework.error_model import ErrorObject
from ..framework.errors import ConfigError
from .bridge import Bridge, Identity, utc_now
from .connection import Endpoint
from .device_model import DeviceModel, EvseShape, StationShape
from .generic import OcppGeneric
from .ports import EvsePort, LimitsPort, OcppEventsPort, SystemPort, TokenPort
from .smart_charging import PushSettings
from .store import Store
from .timestamps import wire_timestamp

log = logging.getLogger("PyOCPP201")

EVSE_CALL_TIMEOUT_S = 5.0
GENERIC_CMD_TIMEOUT_S = 10.0  # the loop answers at once unless it is wedged
GENERIC = "ocpp_generic"
INOPERATIVE = "evse_manager/Inoperative"
DB_FILE = "everkit-ocpp201.db"


class MqttEvse(EvsePort):
    def __init__(self, module: Module, evse: Fulfillment) -> None:
        self.module = module
        self.evse = evse

    def _call(self, cmd: str, args: dict[str, Any]) -> Any:
        return self.module.call_command(self.evse, cmd, args, timeout=EVSE_CALL_TIMEOUT_S)

    def enable(self, enabled: bool) -> bool:
        source = {
            "enable_source": "CSMS",
            "enable_state": "Enable" if enabled else "Disable",
            "enable_priority": 5000,
        }
        return bool(self._call("enable_disable", {"connector_id": 0, "cmd_source": source}))

    def stop_transaction(self, reason: str) -> bool:
        return bool(self._call("stop_transaction", {"request": {"reason": reason}}))

    def force_unlock(self, connector_id: int) -> bool:
        return bool(self._call("force_unlock", {"connector_id": connector_id}))


class MqttLimits(LimitsPort):
    def __init__(self, module: Module, sink: Fulfillment) -> None:
        self.module = module
        self.sink = sink

    def set_external_limits(self, limits: dict[str, Any]) -> None:
        self.module.call_command(
            self.sink, "set_external_limits", {"value": limits}, timeout=EVSE_CALL_TIMEOUT_S
        )


def energy_sinks(module: Module) -> dict[int, Fulfillment]:
    """evse_energy_sink connections by the EVSE id of their mapping (0 = the grid
    connection), as EVerest's OCPP201 finds them; a sink without mapping is a config error."""
    sinks: dict[int, Fulfillment] = {}
    for sink in module.connections("evse_energy_sink"):
        mapping = module.mapping_of(sink) or {}
        if "evse" not in mapping:
            raise ConfigError(
                f"the EnergyNode '{sink.module_id}' needs a mapping (module: evse: N)",
                module=module.info.id,
                key="connections.evse_energy_sink",
            )
        sinks[int(mapping["evse"])] = sink
    return sinks


class MqttTokens(TokenPort):
    def __init__(self, module: Module) -> None:
        self.module = module

    def provide(self, token: dict[str, Any]) -> None:
        self.module.publish_variable("auth_provider", "provided_token", token)


class MqttEvents(OcppEventsPort):
    """ocpp_generic vars: one publisher thread keeps the loop's order and its pace."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self._publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocpp-vars")

    def publish(self, var: str, value: Any) -> None:
        self._publisher.submit(self._publish, var, value)

    def _publish(self, var: str, value: Any) -> None:
        try:
            self.module.publish_variable(GENERIC, var, value)
        except Exception:  # nobody waits for this thread: log it here or nowhere
            log.exception("publishing %s.%s failed: %r", GENERIC, var, value)

    def close(self) -> None:
        self._publisher.shutdown(wait=True)


class MqttSystem(SystemPort):
    def __init__(self, module: Module, system: Fulfillment) -> None:
        self.module = module
        self.system = system

    def reset(self, immediate: bool) -> bool:
        args = {"type": "Hard" if immediate else "Soft", "scheduled": not immediate}
        self.module.call_command(self.system, "reset", args, timeout=EVSE_CALL_TIMEOUT_S)
        return True


class FrameFile:
    """MessageLogPath: one JSON line per OCPP frame, in both directions."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8")

    def __call__(self, direction: str, frame: str) -> None:
        line = {"t": wire_timestamp(utc_now()), "dir": direction, "frame": frame}
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def to_validation_result(info: dict[str, Any]) -> dict[str, Any]:
    """OCPP IdTokenInfo (snake_case, from the package) → EVerest ValidationResult."""
    result: dict[str, Any] = {"authorization_status": info["status"], "tariff_messages": []}
    if info.get("cache_expiry_date_time"):
        result["expiry_time"] = info["cache_expiry_date_time"]
    group = info.get("group_id_token")
    if group:
        result["parent_id_token"] = {"value": group["id_token"], "type": group["type"]}
    if info.get("evse_id"):
        result["evse_ids"] = list(info["evse_id"])
    return result


def endpoint_from(cfg: dict[str, Any], stored_password: str | None) -> Endpoint:
    return Endpoint(
        csms_url=cfg["csms_url"],
        station_id=cfg["station_id"],
        security_profile=int(cfg["security_profile"]),
        password=stored_password or cfg["basic_auth_password"],
        ca_file=cfg["ca_file"],
    )


def parse_device_model(text: str) -> dict[str, str]:
    """The ``device_model`` config value: ``Component.Variable=value`` items, comma separated."""
    items: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"'{part}' is not Component.Variable=value")
        items[key.strip()] = value.strip()
    return items


def check_config(cfg: dict[str, Any], module_id: str) -> None:
    """What the manifest's schema cannot say: settings that only fail together."""
    problems = endpoint_from(cfg, None).problems()
    try:
        parse_device_model(cfg["device_model"])
    except ValueError as exc:
        problems.append(("device_model", str(exc)))
    if problems:
        key, reason = problems[0]
        more = "".join(f"; key '{k}': {r}" for k, r in problems[1:])
        raise ConfigError(reason + more, module=module_id, key=f"config_module.{key}")


class PyOCPP201:
    def __init__(self, module: Module, clock: Callable[[], Any] = utc_now) -> None:
        self.module = module
        self.cfg = module.module_config
        self.clock = clock
        self.loop = asyncio.new_event_loop()
        self.bridge: Bridge | None = None
        self.store: Store | None = None
        self.frame_file: FrameFile | None = None
        self._lock = threading.Lock()
        self._early: list[tuple[int, str, Any]] = []
        self._evse_ids: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run_loop, name="ocpp-loop", daemon=True)
        self._run_task: Future[None] | None = None
        self.failed: Exception | None = None
        self.events = MqttEvents(module)
        self.generic: OcppGeneric | None = None

    @classmethod
    def attach(cls, module: Module) -> PyOCPP201:
        """Check the config, register handlers and subscriptions, start the loop thread.
        The bridge itself starts in ``ready``. Raises ConfigError naming the key."""
        check_config(module.module_config, module.info.id)
        energy_sinks(module)  # raises ConfigError before anything starts
        bridge = cls(module)
        module.implement_command("auth_validator", "validate_token", bridge.validate_token)
        for cmd in (
            "stop",
            "restart",
            "security_event",
            "get_variables",
            "set_variables",
            "change_availability",
            "monitor_variables",
        ):
            module.implement_command(GENERIC, cmd, getattr(bridge, "generic_" + cmd))
        for index, evse in enumerate(module.connections("evse_manager")):
            for var in ("session_event", "powermeter", "ev_info", "ready", "enforced_limits"):
                module.subscribe_variable(evse, var, bridge._handover(index, var))
            module.subscribe_error(
                evse,
                INOPERATIVE,
                bridge._error_handover(index, active=True),
                bridge._error_handover(index, active=False),
            )
        bridge._thread.start()
        return bridge

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # bus → loop ---------------------------------------------------------------------

    def _handover(self, index: int, var: str) -> Callable[[Any], None]:
        return lambda value: self._deliver(index, var, value)

    def _error_handover(self, index: int, active: bool) -> Callable[[ErrorObject], None]:
        return lambda _error: self._deliver(index, "fault", active)

    def _deliver(self, index: int, kind: str, value: Any) -> None:
        with self._lock:
            if self.bridge is None:
                self._early.append((index, kind, value))
                return
        self.loop.call_soon_threadsafe(self._dispatch, index, kind, value)

    def _dispatch(self, index: int, kind: str, value: Any) -> None:
        bridge = self.bridge
        assert bridge is not None
        evse_id = self._evse_ids[index]
        if kind == "session_event":
            bridge.on_session_event(evse_id, value)
        elif kind == "powermeter":
            bridge.on_powermeter(evse_id, value)
        elif kind == "ev_info":
            bridge.on_ev_info(evse_id, value)
        elif kind == "ready" and value:
            bridge.on_ready(evse_id)
        elif kind == "fault":
            bridge.on_fault(evse_id, bool(value))
        elif kind == "enforced_limits":
            bridge.on_enforced_limits(evse_id, value)

    # ready: learn the EVSEs, build and start the bridge ------------------------------

    def ready(self) -> None:
        threading.Thread(target=self._start_or_stop, name="ocpp-start", daemon=True).start()

    def _start_or_stop(self) -> None:
        try:
            self._start()
        except Exception as exc:  # a bridge that cannot start must not look alive
            log.error("PyOCPP201 cannot start: %s", exc)
            self.failed = exc
            self.module.stop()

    def _describe_evses(self) -> list[tuple[Fulfillment, int, int, bool]]:
        """(connection, EVSE id, connector id, answered) per EVSE. An EvseManager that
        answers get_evse is up and counts as ready: its one-off ``ready`` var may have gone
        out before this process (re)started."""
        described = []
        for index, evse in enumerate(self.module.connections("evse_manager")):
            evse_id, connector_id, answered = index + 1, 1, False
            try:
                info = self.module.call_command(evse, "get_evse", timeout=EVSE_CALL_TIMEOUT_S)
                evse_id, answered = int(info["id"]), True
                if info.get("connectors"):
                    connector_id = int(info["connectors"][0]["id"])
            except CommandError as exc:
                log.warning("get_evse of %s failed (%s): EVSE id %d", evse.module_id, exc, evse_id)
            described.append((evse, evse_id, connector_id, answered))
        return described

    def _start(self) -> None:
        described = self._describe_evses()
        cfg = self.cfg
        directory = Path(cfg["CoreDatabasePath"])
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = Store.open(directory / DB_FILE)
        shape = StationShape(
            station_id=cfg["station_id"],
            vendor_name=cfg["vendor_name"],
            model=cfg["model"],
            serial_number=cfg["serial_number"],
            firmware_version=cfg["firmware_version"] or _version(),
            security_profile=int(cfg["security_profile"]),
            connector_type=cfg["connector_type"],
            evses=[EvseShape(evse_id, [connector]) for _, evse_id, connector, _ in described],
        )
        model = DeviceModel.standard(
            shape,
            overrides=parse_device_model(cfg["device_model"]),
            stored=store.load_variables(),
            persist=store.save_variable,
        )
        identity = Identity(
            cfg["vendor_name"], cfg["model"], cfg["serial_number"], shape.firmware_version or ""
        )
        endpoint = endpoint_from(cfg, model.basic_auth_password())
        if cfg["MessageLogPath"]:
            name = f"ocpp-{cfg['station_id']}.jsonl"
            self.frame_file = FrameFile(Path(cfg["MessageLogPath"]) / name)
        systems = self.module.connections("system")
        system = MqttSystem(self.module, systems[0]) if systems else None

        async def build() -> Bridge:
            bridge = Bridge(
                endpoint,
                identity,
                store,
                model,
                MqttTokens(self.module),
                system=system,
                clock=self.clock,
                frame_log=self.frame_file,
                push=PushSettings(
                    interval_s=int(cfg["CompositeScheduleIntervalS"]),
                    duration_s=int(cfg["RequestCompositeScheduleDurationS"]),
                    unit=str(cfg["RequestCompositeScheduleUnit"]),
                ),
                events=self.events,
            )
            for evse, evse_id, connector_id, answered in described:
                bridge.add_evse(evse_id, connector_id, MqttEvse(self.module, evse))
                if answered:
                    bridge.on_ready(evse_id)
            for evse_id, sink in energy_sinks(self.module).items():
                bridge.smart.sinks[evse_id] = MqttLimits(self.module, sink)
            self.generic = OcppGeneric(bridge)
            return bridge

        bridge = asyncio.run_coroutine_threadsafe(build(), self.loop).result()
        self.store = store
        self._evse_ids = {index: described[index][1] for index in range(len(described))}
        with self._lock:
            self.bridge = bridge
            early, self._early = self._early, []
        for item in early:
            self.loop.call_soon_threadsafe(self._dispatch, *item)
        self._run_task = asyncio.run_coroutine_threadsafe(bridge.run(), self.loop)
        log.info(
            "PyOCPP201 %s → %s (security profile %d)",
            shape.station_id,
            endpoint.url,
            endpoint.security_profile,
        )

    # auth_token_validator -------------------------------------------------------------

    def validate_token(self, provided_token: dict[str, Any]) -> dict[str, Any]:
        bridge = self.bridge
        if bridge is None:
            return {"authorization_status": "Unknown", "tariff_messages": []}
        token = provided_token["id_token"]
        id_token = {"id_token": token["value"], "type": token["type"]}
        timeout = bridge.model.get_int("OCPPCommCtrlr", "MessageTimeout", instance="Default") + 5
        future = asyncio.run_coroutine_threadsafe(bridge.authorize(id_token), self.loop)
        try:
            return to_validation_result(future.result(timeout=timeout))
        except FutureTimeout:
            future.cancel()
            return {"authorization_status": "Timeout", "tariff_messages": []}

    # ocpp_generic ----------------------------------------------------------------------

    def _on_loop(self, work: Callable[[OcppGeneric], Any]) -> Any:
        """Run ``work`` on the bridge's loop (awaiting it if it is a coroutine)."""
        generic = self.generic
        if generic is None:
            raise NotReady("PyOCPP201 has not started yet (it starts at ready)")

        async def go() -> Any:
            result = work(generic)
            return await result if asyncio.iscoroutine(result) else result

        future = asyncio.run_coroutine_threadsafe(go(), self.loop)
        try:
            return future.result(timeout=GENERIC_CMD_TIMEOUT_S)
        except FutureTimeout:
            future.cancel()
            raise HandlerException("the OCPP loop did not answer in time") from None

    def generic_stop(self) -> bool:
        return bool(self._on_loop(lambda g: g.stop()))

    def generic_restart(self) -> bool:
        return bool(self._on_loop(lambda g: g.restart()))

    def generic_security_event(self, event: dict[str, Any]) -> None:
        self._on_loop(lambda g: g.security_event(event))

    def generic_get_variables(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._on_loop(lambda g: g.get_variables(requests))
        return result

    def generic_set_variables(
        self, requests: list[dict[str, Any]], source: str
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._on_loop(lambda g: g.set_variables(requests, source))
        return result

    def generic_change_availability(self, request: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._on_loop(lambda g: g.change_availability(request))
        return result

    def generic_monitor_variables(self, component_variables: list[dict[str, Any]]) -> None:
        self._on_loop(lambda g: g.monitor_variables(component_variables))

    def close(self) -> None:
        bridge = self.bridge
        if bridge is not None:
            asyncio.run_coroutine_threadsafe(bridge.stop(), self.loop).result(timeout=5)
            if self._run_task is not None:
                try:
                    self._run_task.result(timeout=10)
                except Exception as exc:
                    log.warning("bridge stopped with %s", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
        self.events.close()
        if self.store is not None:
            self.store.close()
        if self.frame_file is not None:
            self.frame_file.close()


def _version() -> str:
    try:
        return "everkit " + version("everkit")
    except PackageNotFoundError:
        return "everkit"


def main() -> None:
    if os.environ.get("EVERKIT_OCPP_WIRE_LOG") != "1":
        logging.getLogger("PyOCPP201.wire").setLevel(logging.WARNING)
    module = Module.start()
    bridge = PyOCPP201.attach(module)
    module.init_done(bridge.ready)
    try:
        module.serve_forever()
    finally:
        bridge.close()
    if bridge.failed is not None:
        raise SystemExit(2)
