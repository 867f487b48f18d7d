"""The contract: EVerest interface, type and error YAML, loaded and normalised.

Sources, in the order a module prefers them:
  * the manager's retained topics (already normalised, see ``Definitions.from_retained``),
  * an EVerest data dir (``<prefix>/share/everest`` with interfaces/, types/, errors/),
  * everkit's own contract folders (``contract_root()``).

Normalisation follows the C++ manager (protocol reference section 12.2) so that what we
publish as ``interface_definitions/<name>`` is what C++ modules expect byte for byte.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ContractError

# libyaml is ~10x faster; module start-up time depends on it
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

JsonDict = dict[str, Any]


def load_yaml(path: Path) -> Any:
    """Read one YAML file; a syntax error names the file and line."""
    try:
        with path.open(encoding="utf-8") as stream:
            return yaml.load(stream, Loader=_Loader)
    except OSError as exc:
        raise ContractError(f"cannot read: {exc.strerror}", file=str(path)) from None
    except yaml.YAMLError as exc:
        raise ContractError(f"invalid YAML: {exc}", file=str(path)) from None


def contract_root() -> Path:
    """Folder holding interfaces/, types/, errors/, schemas/ and manifests/.

    ``EVERKIT_DATA_DIR`` wins; then the source tree (editable installs and checkouts);
    then ``<sys.prefix>/share/everkit`` where a wheel puts the files.
    """
    env = os.environ.get("EVERKIT_DATA_DIR")
    if env:
        return Path(env)
    source_tree = Path(__file__).resolve().parents[2]
    if (source_tree / "interfaces").is_dir():
        return source_tree
    return Path(sys.prefix) / "share" / "everkit"


@dataclass(frozen=True)
class ContractDirs:
    interfaces: Path
    types: Path
    errors: Path

    @classmethod
    def under(cls, root: Path) -> ContractDirs:
        """The layout of both everkit's checkout and an EVerest data dir."""
        return cls(root / "interfaces", root / "types", root / "errors")


@dataclass(frozen=True)
class Command:
    name: str
    arguments: Mapping[str, JsonDict]
    result: JsonDict


@dataclass(frozen=True)
class Interface:
    """A normalised interface: what the manager distributes and what we validate against."""

    name: str
    normalised: JsonDict

    @property
    def cmds(self) -> dict[str, Command]:
        return {
            name: Command(name, cmd["arguments"], cmd["result"])
            for name, cmd in self.normalised["cmds"].items()
        }

    @property
    def vars(self) -> Mapping[str, JsonDict]:
        result: Mapping[str, JsonDict] = self.normalised["vars"]
        return result

    @property
    def error_types(self) -> list[str]:
        """Every ``<namespace>/<Name>`` this interface may raise."""
        return [f"{ns}/{name}" for ns, errs in self.normalised["errors"].items() for name in errs]

    def error_description(self, error_type: str) -> str:
        ns, _, name = error_type.partition("/")
        try:
            return str(self.normalised["errors"][ns][name]["description"])
        except KeyError:
            raise ContractError(
                f"error type '{error_type}' is not declared by interface '{self.name}'"
            ) from None


def _drop_description(schema: Any) -> None:
    if isinstance(schema, dict):
        schema.pop("description", None)


def normalise_interface(
    name: str, raw: Any, error_list: Any, *, file: str | None = None
) -> JsonDict:
    """Apply the manager's defaults, strip descriptions and expand error references.

    ``error_list(namespace)`` returns the parsed ``errors/<namespace>.yaml``.
    """
    if not isinstance(raw, dict):
        raise ContractError("interface file must be a mapping", file=file)
    iface = copy.deepcopy(raw)
    iface.pop("description", None)
    cmds = iface.setdefault("cmds", {}) or {}
    iface["cmds"] = cmds
    for cmd in cmds.values():
        _drop_description(cmd)
        arguments = cmd.setdefault("arguments", {}) or {}
        cmd["arguments"] = arguments
        for arg in arguments.values():
            _drop_description(arg)
        result = cmd.setdefault("result", {"type": "null"})
        _drop_description(result)
    variables = iface.setdefault("vars", {}) or {}
    iface["vars"] = variables
    for var in variables.values():
        _drop_description(var)
        var.setdefault("qos", 2)
        items = var.get("items")
        if isinstance(items, dict):
            _drop_description(items)
            for prop in (items.get("properties") or {}).values():
                _drop_description(prop)
    iface["errors"] = _expand_errors(name, iface.get("errors") or [], error_list, file)
    return iface


def _expand_errors(
    interface: str, references: list[Any], error_list: Any, file: str | None
) -> dict[str, dict[str, JsonDict]]:
    expanded: dict[str, dict[str, JsonDict]] = {}
    for entry in references:
        reference = entry.get("reference", "") if isinstance(entry, dict) else ""
        path, _, single = reference.partition("#/")
        if not path.startswith("/errors/"):
            raise ContractError(f"bad error reference {reference!r}", file=file, key="errors")
        namespace = path.removeprefix("/errors/")
        declared = error_list(namespace)
        chosen = [e for e in declared if not single or e["name"] == single]
        if single and not chosen:
            raise ContractError(
                f"error '{single}' not found in errors/{namespace}.yaml", file=file, key="errors"
            )
        bucket = expanded.setdefault(namespace, {})
        for error in chosen:
            if error["name"] in bucket:
                raise ContractError(
                    f"interface '{interface}' references error '{namespace}/{error['name']}' twice",
                    file=file,
                    key="errors",
                )
            bucket[error["name"]] = {
                "name": error["name"],
                "description": error.get("description", ""),
                "namespace": namespace,
            }
    return expanded


@dataclass
class Definitions:
    """Lazy, thread-safe view of the contract: interfaces, type files and error lists.

    Whatever was given up front (e.g. from retained topics) wins; anything else is read
    from ``dirs`` on first use, so a module only parses the files it needs.
    """

    dirs: ContractDirs | None = None
    _interfaces: dict[str, Interface] = field(default_factory=dict)
    _types: dict[str, JsonDict] = field(default_factory=dict)
    _errors: dict[str, list[JsonDict]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def from_dirs(cls, root: Path | None = None) -> Definitions:
        return cls(dirs=ContractDirs.under(root or contract_root()))

    @classmethod
    def from_retained(
        cls,
        interface_definitions: Mapping[str, JsonDict],
        type_definitions: Mapping[str, JsonDict],
        fallback: ContractDirs | None = None,
    ) -> Definitions:
        """Build from what the manager published (already normalised).

        A C++ manager publishes type definitions only when validate_schema is on; the
        ``fallback`` folders fill the gap so that validation always works.
        """
        defs = cls(dirs=fallback)
        for name, normalised in interface_definitions.items():
            defs._interfaces[name] = Interface(name, dict(normalised))
        for key, types in type_definitions.items():
            defs._types["/" + key.lstrip("/")] = dict(types)
        return defs

    def interface(self, name: str) -> Interface:
        with self._lock:
            found = self._interfaces.get(name)
            if found is None:
                path = self._path("interfaces", name)
                raw = load_yaml(path)
                found = Interface(
                    name, normalise_interface(name, raw, self.error_list, file=str(path))
                )
                self._interfaces[name] = found
            return found

    def type_file(self, key: str) -> JsonDict:
        """The ``types:`` mapping of ``types/<file>.yaml``; ``key`` is ``/<file>``."""
        key = "/" + key.lstrip("/")
        with self._lock:
            found = self._types.get(key)
            if found is None:
                path = self._path("types", key.lstrip("/"))
                raw = load_yaml(path)
                if not isinstance(raw, dict) or not isinstance(raw.get("types"), dict):
                    raise ContractError("type file has no 'types' mapping", file=str(path))
                found = raw["types"]
                self._types[key] = found
            return found

    def error_list(self, namespace: str) -> list[JsonDict]:
        with self._lock:
            found = self._errors.get(namespace)
            if found is None:
                path = self._path("errors", namespace)
                raw = load_yaml(path)
                if not isinstance(raw, dict) or not isinstance(raw.get("errors"), list):
                    raise ContractError("error file has no 'errors' list", file=str(path))
                found = raw["errors"]
                self._errors[namespace] = found
            return found

    def available_interfaces(self) -> list[str]:
        names = set(self._interfaces)
        if self.dirs is not None and self.dirs.interfaces.is_dir():
            names.update(p.stem for p in self.dirs.interfaces.glob("*.yaml"))
        return sorted(names)

    def available_type_files(self) -> list[str]:
        names = set(self._types)
        if self.dirs is not None and self.dirs.types.is_dir():
            names.update("/" + p.stem for p in self.dirs.types.glob("*.yaml"))
        return sorted(names)

    def _path(self, kind: str, stem: str) -> Path:
        if self.dirs is None:
            raise ContractError(f"{kind[:-1]} '{stem}' is unknown and no contract folder is set")
        path = Path(getattr(self.dirs, kind)) / f"{stem}.yaml"
        if not path.is_file():
            raise ContractError(f"{kind[:-1]} '{stem}' not found", file=str(path))
        return path
