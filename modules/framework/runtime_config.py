"""The manager's pure half: load and check a runtime config, build what it distributes.

``load_runtime_config`` does the C++ manager's boot check (protocol reference section 13,
row "Boot, always") before anything is started: the config against ``config.yaml``, every
used manifest against ``manifest.yaml``, config values against the manifests' config
schemas, implementation ids, connections and interfaces. All problems are collected and
raised together as one ``ConfigProblems`` (a ``ConfigError``), so a broken config is fixed
in one round trip instead of one error per restart.

The ``*_payload`` and ``*_response`` builders return the ``data`` of the manager's messages
(section 3 and 7). Serialised with ``sort_keys=True`` they equal the C++ manager's bytes;
``wire-samples/`` holds the golden captures the tests compare against. No MQTT, no
processes and no clocks here.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .definitions import Definitions, JsonDict
from .errors import ConfigError, ContractError
from .manifests import (
    ConfigParameter,
    ConfigProblems,
    ConfigValue,
    ManifestStore,
    Problem,
    apply_defaults,
    config_map,
    default_schemas_dir,
    distributed_manifest,
    dotted,
    meta_validator,
    read_yaml,
    schema_problems,
)
from .wire import normalise_prefix

log = logging.getLogger(__name__)

__all__ = [
    "ConfigParameter",
    "ConfigProblems",
    "Connection",
    "ManifestStore",
    "ModuleEntry",
    "RuntimeConfig",
    "config_value_response",
    "distributed_manifest",
    "error_response",
    "interface_definitions_payload",
    "interfaces_payload",
    "load_runtime_config",
    "manifests_payload",
    "module_config_response",
    "module_names_payload",
    "settings_payload",
    "type_definitions_payload",
    "types_payload",
    "with_directories",
]

#: Key of the module-level config in ``configuration_parameters`` (config_service.hpp).
MODULE_CONFIG = "!module"

#: runtime.hpp defaults; prefixes already carry the '/' the C++ side always appends.
SETTINGS_DEFAULTS: Mapping[str, Any] = {
    "mqtt_everest_prefix": "everest/",
    "mqtt_external_prefix": "",
    "telemetry_prefix": "everest-telemetry/",
    "telemetry_enabled": False,
    "validate_schema": False,
    "forward_exceptions": False,
}

#: The keys of the retained ``settings`` payload (settings.cpp:43-63), all required.
SETTINGS_PAYLOAD_KEYS = (
    "prefix",
    "etc_dir",
    "data_dir",
    "modules_dir",
    "telemetry_prefix",
    "telemetry_enabled",
    "validate_schema",
    "forward_exceptions",
)


@dataclass(frozen=True)
class Connection:
    """One fulfilment of a requirement: the providing module and implementation."""

    module_id: str
    implementation_id: str


@dataclass(frozen=True)
class ModuleEntry:
    """One ``active_modules`` entry, validated and completed with defaults.

    ``parameters`` has ``"!module"`` and one key per provided implementation, each sorted by
    name, as the C++ manager keeps them. ``mapping`` and ``access`` are already in the form
    the C++ manager serialises (``None`` when empty).
    """

    module_id: str
    module_name: str
    manifest: JsonDict
    standalone: bool
    parameters: Mapping[str, tuple[ConfigParameter, ...]]
    connections: Mapping[str, list[Connection]]
    mapping: JsonDict | None = None
    telemetry: JsonDict | None = None
    capabilities: list[str] | None = None
    access: JsonDict | None = None

    @property
    def config_module(self) -> dict[str, ConfigValue]:
        return {p.name: p.value for p in self.parameters.get(MODULE_CONFIG, ())}

    @property
    def config_implementation(self) -> dict[str, dict[str, ConfigValue]]:
        return {
            impl: {p.name: p.value for p in params}
            for impl, params in self.parameters.items()
            if impl != MODULE_CONFIG
        }

    @property
    def provides(self) -> dict[str, str]:
        """Implementation id -> interface name."""
        return {impl: body["interface"] for impl, body in self.manifest["provides"].items()}


@dataclass(frozen=True)
class RuntimeConfig:
    """A checked runtime config: the file it came from, its settings and its modules."""

    file: Path
    settings: Mapping[str, Any]
    modules: Mapping[str, ModuleEntry] = field(default_factory=dict)


# loading and checking


def load_runtime_config(
    path: Path | str,
    *,
    manifests: ManifestStore,
    definitions: Definitions,
    schemas_dir: Path | None = None,
) -> RuntimeConfig:
    """Parse, complete and check an EVerest runtime config; raise ``ConfigProblems`` if bad.

    Checks, as the C++ manager does at boot: the file against ``config.yaml``; each used
    manifest against ``manifest.yaml`` (and its config defaults against their own schema);
    ``config_module`` / ``config_implementation`` values against the manifest's config
    schemas (missing mandatory entry, type mismatch, schema keywords such as ``enum``);
    implementation ids in ``config_implementation``; connections (requirement declared,
    ``min_connections`` / ``max_connections``, target module exists, provides the
    implementation, interface names equal); every interface a manifest names exists.
    Mapping entries for unknown implementations only log a warning, as in C++.

    everkit is stricter than C++ in one place: an unknown config key is an error here,
    where the C++ manager only logs it and drops the value. A typo in a key would otherwise
    silently run the charger on a default.

    ``x-module-layout`` (admin-panel layout) is ignored. ``settings`` get the runtime
    defaults; the directory settings are left to ``with_directories``.
    """
    file = Path(path)
    raw, problem = read_yaml(file)
    if problem is not None:
        raise ConfigProblems([problem])
    return _Checker(file, manifests, definitions, schemas_dir or default_schemas_dir()).run(raw)


class _Checker:
    """Holds what every check needs, and the problems found so far."""

    def __init__(
        self, file: Path, store: ManifestStore, definitions: Definitions, schemas_dir: Path
    ) -> None:
        self.file = file
        self.where = str(file)
        self.store = store
        self.definitions = definitions
        self.schemas_dir = schemas_dir
        self.problems: list[Problem] = []

    def report(self, message: str, module: str | None = None, key: str | None = None) -> None:
        self.problems.append(Problem(self.where, message, module, key))

    def run(self, raw: Any) -> RuntimeConfig:
        doc = self._schema_checked(raw)
        broken = {p.module for p in self.problems if p.module}
        settings = self._settings(doc.get("settings") or {})
        declared: dict[str, JsonDict] = doc["active_modules"]
        modules: dict[str, ModuleEntry] = {}
        for module_id, body in declared.items():
            if module_id not in broken:
                entry = self._module(module_id, body)
                if entry is not None:
                    modules[module_id] = entry
        for entry in modules.values():
            self._check_connections(entry, declared, modules)
            _warn_about_mapping(entry)
        if self.problems:
            raise ConfigProblems(self.problems)
        return RuntimeConfig(self.file, settings, modules)

    def _schema_checked(self, raw: Any) -> JsonDict:
        """Validate against ``config.yaml`` and return a copy with its defaults applied."""
        validator = meta_validator(self.schemas_dir, "config")
        for path, message in schema_problems(validator, raw):
            if len(path) >= 2 and path[0] == "active_modules":
                self.report(message, path[1], dotted(path[2:]))
            else:
                self.report(message, None, dotted(path))
        if not isinstance(raw, dict) or not isinstance(raw.get("active_modules"), dict):
            if not self.problems:  # pragma: no cover - the schema requires active_modules
                self.report("no 'active_modules' mapping", key="active_modules")
            raise ConfigProblems(self.problems)
        doc = copy.deepcopy(raw)
        apply_defaults(validator.schema, doc, validator.schema)
        return doc

    def _settings(self, given: JsonDict) -> dict[str, Any]:
        settings = {**SETTINGS_DEFAULTS, **given}
        for key in ("mqtt_everest_prefix", "telemetry_prefix"):
            settings[key] = normalise_prefix(str(settings[key]))
        if settings["mqtt_everest_prefix"] == settings["mqtt_external_prefix"]:
            message = "the everest and external MQTT prefixes must differ"
            self.report(message, key="settings.mqtt_external_prefix")
        if "mqtt_broker_socket_path" in given:
            if "mqtt_broker_host" in given:
                message = "set either mqtt_broker_socket_path or mqtt_broker_host, not both"
                self.report(message, key="settings.mqtt_broker_socket_path")
        else:
            settings.setdefault("mqtt_broker_host", "localhost")
            settings.setdefault("mqtt_broker_port", 1883)
        return settings

    def _module(self, module_id: str, body: JsonDict) -> ModuleEntry | None:
        name: str = body["module"]
        manifest = self._manifest(module_id, name)
        if manifest is None:
            return None
        self._check_interfaces(module_id, name, manifest)
        parameters = self._parameters(module_id, body, manifest)
        return ModuleEntry(
            module_id=module_id,
            module_name=name,
            manifest=manifest,
            standalone=bool(body.get("standalone", False)),
            parameters=parameters,
            connections={
                req: [Connection(c["module_id"], c["implementation_id"]) for c in fulfilments]
                for req, fulfilments in body["connections"].items()
            },
            mapping=_serialised_mapping(body.get("mapping")),
            telemetry=dict(body["telemetry"]) if "telemetry" in body else None,
            capabilities=list(body["capabilities"]) if "capabilities" in body else None,
            access=_serialised_access(body.get("access")),
        )

    def _manifest(self, module_id: str, name: str) -> JsonDict | None:
        if self.store.path(name) is None:
            searched = ", ".join(str(d) for d in self.store.dirs) or "(no manifest folders)"
            self.report(f"unknown module '{name}': no manifest in {searched}", module_id, "module")
            return None
        manifest, problems = self.store.try_load(name)
        self.problems.extend(replace(p, module=module_id) for p in problems)
        return manifest

    def _check_interfaces(self, module_id: str, name: str, manifest: JsonDict) -> None:
        """Every interface the manifest names must load; the problem points into the manifest."""
        manifest_file = str(self.store.path(name))
        for section in ("provides", "requires"):
            for item_id, item in manifest[section].items():
                interface = item["interface"]
                try:
                    self.definitions.interface(interface)
                except ContractError as exc:
                    message = f"interface '{interface}' cannot be used: {exc}"
                    key = f"{section}.{item_id}.interface"
                    self.problems.append(Problem(manifest_file, message, module_id, key))

    def _parameters(
        self, module_id: str, body: JsonDict, manifest: JsonDict
    ) -> dict[str, tuple[ConfigParameter, ...]]:
        given_impls: JsonDict = body["config_implementation"]
        for impl in given_impls:
            if impl not in manifest["provides"]:
                message = f"implementation '{impl}' is not provided by {body['module']}"
                self.report(message, module_id, f"config_implementation.{impl}")
        sections = [(MODULE_CONFIG, "config_module", manifest["config"], body["config_module"])]
        for impl in sorted(manifest["provides"]):
            declared = manifest["provides"][impl]["config"]
            given = given_impls.get(impl, {})
            sections.append((impl, f"config_implementation.{impl}", declared, given))
        parameters = {}
        for section, prefix, declared, given in sections:
            params, problems = config_map(declared, given)
            parameters[section] = params
            for name, message in problems:
                self.report(message, module_id, f"{prefix}.{name}")
        return parameters

    def _check_connections(
        self, entry: ModuleEntry, declared: Mapping[str, Any], modules: Mapping[str, ModuleEntry]
    ) -> None:
        requires: JsonDict = entry.manifest["requires"]
        for req in entry.connections:
            if req not in requires:
                message = f"requirement '{req}' is not declared by {entry.module_name}"
                self.report(message, entry.module_id, f"connections.{req}")
        for req, requirement in requires.items():
            self._check_requirement(entry, req, requirement, declared, modules)

    def _check_requirement(
        self,
        entry: ModuleEntry,
        req: str,
        requirement: JsonDict,
        declared: Mapping[str, Any],
        modules: Mapping[str, ModuleEntry],
    ) -> None:
        low, high = requirement["min_connections"], requirement["max_connections"]
        key = f"connections.{req}"
        fulfilments = entry.connections.get(req)
        if fulfilments is None:
            if low >= 1:
                message = f"required requirement is not connected (min_connections {low})"
                self.report(message, entry.module_id, key)
            return
        if not low <= len(fulfilments) <= high:
            message = f"{len(fulfilments)} connection(s), the manifest allows {low} to {high}"
            self.report(message, entry.module_id, key)
        for index, connection in enumerate(fulfilments):
            problem = _connection_problem(connection, requirement["interface"], declared, modules)
            if problem is not None:
                self.report(problem[1], entry.module_id, f"{key}.{index}.{problem[0]}")


def _connection_problem(
    connection: Connection,
    interface: str,
    declared: Mapping[str, Any],
    modules: Mapping[str, ModuleEntry],
) -> tuple[str, str] | None:
    """(field, message) for a connection that cannot fulfil the requirement, else None."""
    target_id, impl = connection.module_id, connection.implementation_id
    if target_id not in declared:
        return "module_id", f"module '{target_id}' is not in active_modules"
    target = modules.get(target_id)
    if target is None:  # the target itself is broken and already reported
        return None
    provided = target.provides
    if impl not in provided:
        return "implementation_id", (
            f"module '{target_id}' ({target.module_name}) does not provide '{impl}'"
        )
    if provided[impl] != interface:
        return "implementation_id", (
            f"requires interface '{interface}', but {target_id}.{impl} provides '{provided[impl]}'"
        )
    return None


def _serialised_mapping(raw: Any) -> JsonDict | None:
    """ModuleTierMappings as C++ serialises it: ``None`` when there is no mapping at all."""
    if not isinstance(raw, dict):
        return None
    out: JsonDict = {}
    module = raw.get("module") or {}
    if "evse" in module:
        out["module"] = _tier(module)
    implementations = raw.get("implementations") or {}
    if implementations:
        out["implementations"] = {impl: _tier(m) for impl, m in implementations.items()}
    return out or None


def _tier(mapping: JsonDict) -> JsonDict:
    tier = {"evse": mapping["evse"]}
    if "connector" in mapping:
        tier["connector"] = mapping["connector"]
    return tier


def _serialised_access(raw: Any) -> JsonDict | None:
    """Access as C++ serialises it: absent flags become false; no ``config`` -> ``None``."""
    config = raw.get("config") if isinstance(raw, dict) else None
    if not isinstance(config, dict):
        return None
    flags = ("allow_global_read", "allow_global_write", "allow_set_read_only")
    per_module = ("allow_read", "allow_write", "allow_set_read_only")
    return {
        "config": {
            **{flag: bool(config.get(flag, False)) for flag in flags},
            "modules": {
                module_id: {flag: bool(rights.get(flag, False)) for flag in per_module}
                for module_id, rights in (config.get("modules") or {}).items()
            },
        }
    }


def _warn_about_mapping(entry: ModuleEntry) -> None:
    for impl in (entry.mapping or {}).get("implementations", {}):
        if impl not in entry.manifest["provides"]:
            log.warning(
                "mapping of implementation '%s' of module '%s' (%s) refers to an implementation "
                "the module does not provide",
                impl,
                entry.module_id,
                entry.module_name,
            )


def with_directories(
    config: RuntimeConfig,
    prefix: Path | str,
    *,
    etc_dir: Path | str | None = None,
    data_dir: Path | str | None = None,
    modules_dir: Path | str | None = None,
) -> RuntimeConfig:
    """Fill in prefix/etc_dir/data_dir/modules_dir with EVerest's defaults (runtime.cpp).

    An explicit argument wins over the config file's ``settings``, which wins over the
    default derived from ``prefix``.
    """
    prefix = Path(prefix)
    defaults = {
        "etc_dir": Path("/etc/everest") if prefix == Path("/usr") else prefix / "etc" / "everest",
        "data_dir": prefix / "share" / "everest",
        "modules_dir": prefix / "libexec" / "everest" / "modules",
    }
    explicit = {"etc_dir": etc_dir, "data_dir": data_dir, "modules_dir": modules_dir}
    settings = dict(config.settings)
    settings["prefix"] = str(prefix)
    for key, default in defaults.items():
        chosen = explicit[key] or settings.get(key) or default
        settings[key] = str(chosen)
    return replace(config, settings=settings)


# what the manager publishes


def _response(status: str, status_info: str, response: Any) -> JsonDict:
    return {"status": status, "status_info": status_info, "type": "Get", "response": response}


def module_config_response(config: RuntimeConfig, module_id: str) -> JsonDict:
    """``data`` of ``modules/<id>/response`` for a ``Get``/``Module`` request.

    Raises ``KeyError`` for a module id not in the config; answer that with
    ``error_response``.
    """
    entry = config.modules[module_id]
    mappings: JsonDict = {}
    for fulfilments in entry.connections.values():
        for connection in fulfilments:
            mappings[connection.module_id] = _copy(config.modules[connection.module_id].mapping)
    mappings[module_id] = _copy(entry.mapping)
    data: JsonDict = {"module_config": _module_config(entry), "mappings": mappings}
    if entry.telemetry is not None:  # config.cpp get_serialized_module_config adds it here too
        data["telemetry_config"] = dict(entry.telemetry)
    return _response("Ok", "", {"type": "Module", "data": data})


def _module_config(entry: ModuleEntry) -> JsonDict:
    """ModuleConfig as config/types.cpp serialises it.

    ``telemetry_enabled`` is always false: the C++ YAML parser never sets it (modules go by
    ``settings.telemetry_enabled`` and ``telemetry_config``). ``requirement.index`` is
    always 0 there, hence never written; a module counts positions itself.
    """
    body: JsonDict = {
        "standalone": entry.standalone,
        "module_name": entry.module_name,
        "module_id": entry.module_id,
        "configuration_parameters": {
            section: [p.to_wire() for p in params] for section, params in entry.parameters.items()
        },
        "telemetry_enabled": False,
        "connections": {
            req: [
                {
                    "module_id": c.module_id,
                    "implementation_id": c.implementation_id,
                    "requirement": {"id": req},
                }
                for c in fulfilments
            ]
            for req, fulfilments in entry.connections.items()
            if fulfilments  # C++ builds the map from the entries, so empty lists vanish
        },
        "mapping": _copy(entry.mapping),
        "access": _copy(entry.access),
    }
    if entry.capabilities is not None:
        body["capabilities"] = list(entry.capabilities)
    if entry.telemetry is not None:
        body["telemetry_config"] = dict(entry.telemetry)
    return body


def error_response(origin: str, message: str, *, request_type: str = "Module") -> JsonDict:
    """``data`` answering a request we cannot serve (unknown origin, bad request, ...).

    Same keys as the Ok response, with ``data: null``, so that a C++ client parses it and
    then sees status ``Error`` instead of failing on a missing key.
    """
    return _response("Error", f"request from '{origin}': {message}", _get(request_type, None))


def _get(request_type: str, data: Any) -> JsonDict:
    return {"type": request_type, "data": data}


def config_value_response(
    config: RuntimeConfig, origin: str, identifier: Mapping[str, Any] | None
) -> JsonDict:
    """``data`` answering ``Get``/``Value`` (config_service.cpp handle_get_config_value).

    Access rules as in C++: a module reads its own config; others need
    ``access.config.allow_global_read`` or ``modules.<id>.allow_read``. Unlike C++ (whose
    handler never fills ``response``), an Ok answer carries
    ``{"type": "Value", "data": <parameter>}``, which is what the C++ client reads.
    """
    requester = config.modules.get(origin)
    if requester is None:
        return error_response(origin, "unknown module id", request_type="Value")
    if not isinstance(identifier, Mapping) or not isinstance(identifier.get("module_id"), str):
        return error_response(origin, "No identifier provided", request_type="Value")
    target_id = identifier["module_id"]
    if not _may_read(requester, target_id):
        info = f"Access to config item denied: {origin} cannot access {target_id}"
        return _response("AccessDenied", info, _get("Value", None))
    section = identifier.get("module_implementation_id") or MODULE_CONFIG
    name = identifier.get("configuration_parameter_name")
    target = config.modules.get(target_id)
    params = target.parameters.get(section, ()) if target else ()
    for param in params:
        if param.name == name:
            return _response("Ok", "", _get("Value", param.to_wire()))
    missing = f"no config item '{name}' in {target_id} ({section})"
    return error_response(origin, missing, request_type="Value")


def _may_read(requester: ModuleEntry, target_id: str) -> bool:
    if requester.module_id == target_id:
        return True
    config = (requester.access or {}).get("config")
    if not config:
        return False
    rights = config["modules"].get(target_id, {})
    return bool(config["allow_global_read"] or rights.get("allow_read", False))


def settings_payload(settings: Mapping[str, Any]) -> JsonDict:
    """``data`` of the retained ``settings`` topic; directories come from ``with_directories``."""
    missing = [key for key in SETTINGS_PAYLOAD_KEYS if key not in settings]
    if missing:
        raise ConfigError(
            f"settings lack {', '.join(missing)}; call with_directories() first", key=missing[0]
        )
    return {key: settings[key] for key in SETTINGS_PAYLOAD_KEYS}


def module_names_payload(config: RuntimeConfig) -> dict[str, str]:
    return {module_id: entry.module_name for module_id, entry in config.modules.items()}


def manifests_payload(config: RuntimeConfig) -> dict[str, JsonDict]:
    """Module name -> ``data`` of its retained ``manifests/<Name>`` topic."""
    return {
        entry.module_name: distributed_manifest(entry.manifest) for entry in config.modules.values()
    }


def interfaces_payload(config: RuntimeConfig) -> list[str]:
    """``data`` of ``interfaces``: every interface an active module provides, sorted.

    Required-only interfaces are not listed (the golden sample lists exactly the provided
    ones), and the C++ std::set order is byte order, which ``sorted`` matches for ASCII.
    """
    return sorted({iface for entry in config.modules.values() for iface in entry.provides.values()})


def interface_definitions_payload(
    config: RuntimeConfig, definitions: Definitions
) -> dict[str, JsonDict]:
    """Interface name -> ``data`` of its retained ``interface_definitions/<name>`` topic."""
    return {name: definitions.interface(name).normalised for name in interfaces_payload(config)}


def types_payload(config: RuntimeConfig, definitions: Definitions) -> list[str]:
    """``data`` of ``types``: the type-file keys, but only when validate_schema is on (C++)."""
    if not config.settings.get("validate_schema"):
        return []
    return sorted(definitions.available_type_files())


def type_definitions_payload(
    config: RuntimeConfig, definitions: Definitions
) -> dict[str, JsonDict]:
    """Type key (``/power_supply_DC``) -> ``data`` of its ``type_definitions/...`` topic."""
    return {key: definitions.type_file(key) for key in types_payload(config, definitions)}


def _copy(value: Any) -> Any:
    return copy.deepcopy(value)
