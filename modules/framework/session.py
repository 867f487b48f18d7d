"""What a module process learns before it can run: environment, module config, definitions.

``ModuleEnvironment`` reads the EV_* variables the EVerest manager (or ``everkit run``) sets
(protocol reference section 10). ``ModuleConfig`` parses the GetConfig response (section
7.3). ``fetch_retained`` reads the manager's retained definition topics (section 3).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .transport import BrokerAddress, Transport
from .wire import MsgType, Topics, config_request_payload, decode, normalise_prefix


@dataclass(frozen=True)
class ModuleEnvironment:
    module_id: str
    broker: BrokerAddress
    everest_prefix: str = "everest/"
    external_prefix: str = ""
    prefix: str | None = None
    log_config_file: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ModuleEnvironment:
        env = os.environ if environ is None else environ
        module_id = env.get("EV_MODULE")
        if not module_id:
            raise ConfigError("EV_MODULE is not set: which module id should this process run?")
        if env.get("EV_MQTT_BROKER_SOCKET_PATH"):
            raise ConfigError(
                "EV_MQTT_BROKER_SOCKET_PATH is not supported; give EV_MQTT_BROKER_HOST/PORT"
            )
        port = env.get("EV_MQTT_BROKER_PORT", "1883")
        if not port.isdigit():
            raise ConfigError(f"EV_MQTT_BROKER_PORT must be a number, got {port!r}")
        return cls(
            module_id=module_id,
            broker=BrokerAddress(env.get("EV_MQTT_BROKER_HOST", "localhost"), int(port)),
            # everestpy defaults to "everest" without a slash; EVerest appends one anyway
            everest_prefix=normalise_prefix(env.get("EV_MQTT_EVEREST_PREFIX", "everest/")),
            external_prefix=env.get("EV_MQTT_EXTERNAL_PREFIX", ""),
            prefix=env.get("EV_PREFIX"),
            log_config_file=env.get("EV_LOG_CONF_FILE"),
        )


@dataclass(frozen=True)
class Fulfillment:
    """One connection of a requirement: which module implementation serves it."""

    requirement_id: str
    index: int
    module_id: str
    implementation_id: str


@dataclass(frozen=True)
class ModuleConfig:
    module_id: str
    module_name: str
    standalone: bool
    module: dict[str, Any]
    implementations: dict[str, dict[str, Any]]
    connections: dict[str, list[Fulfillment]]
    mapping: dict[str, Any] | None
    mappings: dict[str, Any]
    telemetry_enabled: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_response(cls, module_id: str, data: Any) -> ModuleConfig:
        if not isinstance(data, dict) or data.get("status") != "Ok":
            info = data.get("status_info", "") if isinstance(data, dict) else ""
            raise ConfigError(f"the manager refused our config request: {info}", module=module_id)
        body = data["response"]["data"]
        config = body["module_config"]
        params: dict[str, list[dict[str, Any]]] = config.get("configuration_parameters", {})
        values = {
            impl: {entry["name"]: entry["value"] for entry in entries}
            for impl, entries in params.items()
        }
        connections = {
            req: [
                Fulfillment(req, index, c["module_id"], c["implementation_id"])
                for index, c in enumerate(conns)
            ]
            for req, conns in (config.get("connections") or {}).items()
        }
        return cls(
            module_id=config.get("module_id", module_id),
            module_name=config["module_name"],
            standalone=bool(config.get("standalone", False)),
            module=values.pop("!module", {}),
            implementations=values,
            connections=connections,
            mapping=config.get("mapping"),
            mappings=body.get("mappings") or {},
            telemetry_enabled=bool(config.get("telemetry_enabled", False)),
            raw=body,
        )

    def impl_mapping(self, impl_id: str) -> dict[str, int] | None:
        """The 3-tier mapping of one implementation: its own, else the module's."""
        mapping = self.mapping or {}
        impl = (mapping.get("implementations") or {}).get(impl_id)
        merged = dict(mapping.get("module") or {})
        merged.update(impl or {})
        return merged or None


def request_module_config(
    transport: Transport, topics: Topics, module_id: str, timeout: float, retry: float = 5.0
) -> ModuleConfig:
    """GetConfig handshake: subscribe to our response topic, ask, retry every ``retry`` s."""
    answered = threading.Event()
    answer: list[Any] = []

    def on_response(_topic: str, payload: bytes) -> None:
        try:
            envelope = decode(payload)
        except Exception:
            return
        if envelope.msg_type == MsgType.GET_CONFIG_RESPONSE and not answered.is_set():
            answer.append(envelope.data)
            answered.set()

    transport.subscribe(topics.config_response(module_id), on_response, inline=True)
    waited = 0.0
    try:
        while waited < timeout:
            transport.publish(topics.config_request, config_request_payload(module_id))
            step = min(retry, timeout - waited)
            if answered.wait(step):
                return ModuleConfig.from_response(module_id, answer[0])
            waited += step
    finally:
        transport.unsubscribe(topics.config_response(module_id))
    raise ConfigError(
        f"no manager answered our config request on {topics.config_request} "
        f"within {timeout:g} s (is the module id in the manager's config?)",
        module=module_id,
    )


@dataclass
class RetainedDefinitions:
    interfaces: dict[str, Any] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)
    manifests: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] | None = None


def fetch_retained(
    transport: Transport,
    topics: Topics,
    module_name: str,
    timeout: float,
    needed_interfaces: list[str] | None = None,
) -> RetainedDefinitions | None:
    """Read the manager's retained definitions, or None when none arrive in time.

    Waits for the list topics (interfaces, types), our own manifest, then for every
    listed definition (or just ``needed_interfaces`` when given). The manager clears these
    topics once every module is ready, so a module restarted later falls back to local
    definitions.
    """
    lock = threading.Condition()
    lists: dict[str, list[str]] = {}
    found = RetainedDefinitions()
    prefix = topics.prefix

    def on_message(topic: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            data = decode(payload).data
        except Exception:
            return
        name = topic[len(prefix) :]
        with lock:
            if name in ("interfaces", "types"):
                lists[name] = list(data)
            elif name == "settings":
                found.settings = data
            elif name.startswith("interface_definitions/"):
                found.interfaces[name.partition("/")[2]] = data
            elif name.startswith("type_definitions/"):
                found.types["/" + name.partition("/")[2]] = data
            elif name.startswith("manifests/"):
                found.manifests[name.partition("/")[2]] = data
            lock.notify_all()

    def complete() -> bool:
        if "interfaces" not in lists or "types" not in lists:
            return False
        if module_name not in found.manifests:
            return False
        wanted = needed_interfaces if needed_interfaces is not None else lists["interfaces"]
        wanted = [w for w in wanted if w in lists["interfaces"]]
        have_types = all(t in found.types for t in lists["types"])
        return have_types and all(w in found.interfaces for w in wanted)

    filters = [
        topics.interfaces,
        topics.types,
        topics.settings,
        f"{prefix}interface_definitions/+",
        f"{prefix}type_definitions/+",
        f"{prefix}manifests/+",
    ]
    for topic_filter in filters:
        transport.subscribe(topic_filter, on_message, qos=2, inline=True)
    try:
        with lock:
            if not lock.wait_for(complete, timeout):
                return None
            return found
    finally:
        for topic_filter in filters:
            transport.unsubscribe(topic_filter)


def dumps_compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
