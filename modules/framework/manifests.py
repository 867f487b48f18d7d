"""Module manifests and the meta-schema machinery the manager's boot check is built on.

The C++ manager validates manifests and the runtime config with pboettch's json-schema
validator, which also *patches in* every ``default`` the meta-schema declares. The
Python ``jsonschema`` package validates only, so ``apply_defaults`` reproduces the patch
by hand: what a module receives as ``manifests/<Name>`` must equal the C++ manager's output
byte for byte (``everest_manifests_DCSupplySimulator.json`` is the golden sample).

``config_map`` checks config values against a manifest's config set, since that is the
manifest's schema at work. Problems are collected as ``Problem`` values rather than raised
one by one, because the boot check reports every mistake of a config in one go
(``ConfigProblems``).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml

from .definitions import JsonDict, contract_root, load_yaml
from .errors import ConfigError

ConfigValue = str | bool | int | float

#: Manifest config type -> the ``datatype`` string on the wire (config/types.cpp).
_WIRE_DATATYPE = {"string": "string", "number": "number", "integer": "integer", "boolean": "bool"}

#: Module names become directory names, so they are checked before touching the disk.
MODULE_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]*$")

_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The C++ manager's format checker (config.cpp:55-71); every other format is accepted.
_TYPE_URI = re.compile(r"^((?:\/[a-zA-Z0-9\-\_]+)+#\/[a-zA-Z0-9\-\_]+)$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config or manifest, located by file, module id and key."""

    file: str
    message: str
    module: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = ", ".join(
            part
            for part in (
                f"module '{self.module}'" if self.module else None,
                f"key '{self.key}'" if self.key else None,
            )
            if part
        )
        return f"{self.file}: {where}: {self.message}" if where else f"{self.file}: {self.message}"


class ConfigProblems(ConfigError):
    """Every problem the boot check found; ``file``/``module``/``key`` name the first one."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("ConfigProblems needs at least one problem")
        first = problems[0]
        if len(problems) == 1:
            message = first.message
        else:
            lines = "\n".join(f"  {problem}" for problem in problems)
            message = f"{len(problems)} problems found:\n{lines}"
        super().__init__(message, file=first.file, module=first.module, key=first.key)
        self.problems = tuple(problems)


def read_yaml(path: Path) -> tuple[Any, Problem | None]:
    """Parse one YAML file; failures become a ``Problem`` naming the file and line."""
    try:
        with path.open(encoding="utf-8") as stream:
            return yaml.load(stream, Loader=_YAML_LOADER), None
    except OSError as exc:
        return None, Problem(str(path), f"cannot read: {exc.strerror}")
    except yaml.YAMLError as exc:
        return None, Problem(str(path), f"invalid YAML: {_yaml_reason(exc)}")


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return str(problem)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


# meta-schemas


def default_schemas_dir() -> Path:
    return contract_root() / "schemas"


@functools.lru_cache(maxsize=16)
def meta_validator(schemas_dir: Path, name: str) -> Any:
    """A Draft-07 validator for ``<schemas_dir>/<name>.yaml``; cached, the files are static."""
    schema = load_yaml(schemas_dir / f"{name}.yaml")
    return jsonschema.Draft7Validator(schema, format_checker=_format_checker())


def _format_checker() -> Any:
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("uri")(lambda value: not isinstance(value, str) or "://" in value)
    checker.checks("uri-reference")(
        lambda value: not isinstance(value, str) or _TYPE_URI.match(value) is not None
    )
    return checker


def schema_problems(validator: Any, instance: Any) -> list[tuple[list[str], str]]:
    """Every schema violation as (path, message), in document order.

    jsonschema reports a missing or unexpected property at the enclosing object; the path
    is extended by that property's name so that messages point at the key to fix.
    """
    found: list[tuple[list[str], str]] = []
    for error in validator.iter_errors(instance):
        path = [str(part) for part in error.absolute_path]
        culprit = _culprit(error)
        found.append(([*path, culprit] if culprit else path, str(error.message)))
    return sorted(found, key=lambda item: item[0])


def _culprit(error: Any) -> str | None:
    instance, schema = error.instance, error.schema
    if not isinstance(instance, dict) or not isinstance(schema, dict):
        return None
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in instance]
        return str(missing[0]) if missing else None
    if error.validator == "additionalProperties":
        known = schema.get("properties") or {}
        patterns = schema.get("patternProperties") or {}
        extra = [
            str(key)
            for key in instance
            if key not in known and not any(re.search(p, str(key)) for p in patterns)
        ]
        return extra[0] if len(extra) == 1 else None
    return None


def dotted(path: Iterable[str]) -> str | None:
    joined = ".".join(path)
    return joined or None


def apply_defaults(schema: Any, instance: Any, root: JsonDict) -> None:
    """Insert the schema's defaults into ``instance`` in place, as pboettch's validator does.

    A property missing from an object gets its schema's ``default`` (following a local
    ``$ref``); objects that were already present are walked through ``properties`` and
    ``patternProperties``. Inserted defaults are not walked further, exactly like the C++
    patch, which is computed from the document as it was.
    """
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or not isinstance(instance, dict):
        return
    properties = schema.get("properties") or {}
    patterns = schema.get("patternProperties") or {}
    present = list(instance.items())
    for name, subschema in properties.items():
        target = _resolve(subschema, root)
        if name not in instance and isinstance(target, dict) and "default" in target:
            instance[name] = copy.deepcopy(target["default"])
    for key, value in present:
        if key in properties:
            apply_defaults(properties[key], value, root)
        for pattern, subschema in patterns.items():
            if re.search(pattern, key):
                apply_defaults(subschema, value, root)


def _resolve(schema: Any, root: JsonDict) -> Any:
    """Follow local ``$ref`` chains (``#/$defs/...``), the only kind the meta-schemas use."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 16:
        ref: str = schema["$ref"]
        if not ref.startswith("#/"):
            return schema
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part.replace("~1", "/").replace("~0", "~")) if node else None
        schema = node
        seen += 1
    return schema


# manifests


class ManifestStore:
    """Finds, validates and completes module manifests, caching each by module name.

    Two layouts are searched, in the order of ``dirs``: everkit's ``<dir>/<Name>.yaml``
    (its ``manifests/`` folder) and EVerest's ``<dir>/<Name>/manifest.yaml``.
    """

    def __init__(self, dirs: Sequence[Path], *, schemas_dir: Path | None = None) -> None:
        self.dirs = [Path(d) for d in dirs]
        self.schemas_dir = Path(schemas_dir) if schemas_dir else default_schemas_dir()
        self._cache: dict[str, tuple[JsonDict | None, tuple[Problem, ...]]] = {}

    def path(self, name: str) -> Path | None:
        if not MODULE_NAME.match(name):
            return None
        for folder in self.dirs:
            for candidate in (folder / f"{name}.yaml", folder / name / "manifest.yaml"):
                if candidate.is_file():
                    return candidate
        return None

    def load(self, name: str) -> JsonDict:
        """The manifest with the meta-schema defaults applied; ``ConfigProblems`` if invalid."""
        manifest, problems = self.try_load(name)
        if manifest is None:
            raise ConfigProblems(problems)
        return manifest

    def try_load(self, name: str) -> tuple[JsonDict | None, tuple[Problem, ...]]:
        """Like ``load`` but returns the problems instead of raising (for the boot check)."""
        if name not in self._cache:
            self._cache[name] = self._load(name)
        manifest, problems = self._cache[name]
        return copy.deepcopy(manifest), problems

    def _load(self, name: str) -> tuple[JsonDict | None, tuple[Problem, ...]]:
        path = self.path(name)
        if path is None:
            searched = ", ".join(str(d) for d in self.dirs) or "(no folders)"
            message = f"no manifest for module '{name}' (searched {searched})"
            return None, (Problem(f"<manifest {name}>", message),)
        raw, problem = read_yaml(path)
        if problem is not None:
            return None, (problem,)
        return check_manifest(raw, str(path), self.schemas_dir)


def check_manifest(
    raw: Any, file: str, schemas_dir: Path
) -> tuple[JsonDict | None, tuple[Problem, ...]]:
    """Validate a parsed manifest, apply defaults and check the config defaults."""
    validator = meta_validator(schemas_dir, "manifest")
    problems = [
        Problem(file, message, key=dotted(path))
        for path, message in schema_problems(validator, raw)
    ]
    if problems or not isinstance(raw, dict):
        return None, tuple(problems)
    manifest = copy.deepcopy(raw)
    apply_defaults(validator.schema, manifest, validator.schema)
    problems.extend(_config_set_problems(manifest["config"], file, "config"))
    for impl_id, impl in manifest["provides"].items():
        problems.extend(_config_set_problems(impl["config"], file, f"provides.{impl_id}.config"))
    return (None if problems else manifest), tuple(problems)


def _config_set_problems(config_set: JsonDict, file: str, prefix: str) -> list[Problem]:
    """Each entry's ``default`` must fit the entry itself (config.cpp validate_config_schema)."""
    problems = []
    for name, entry in sorted(config_set.items()):
        key = f"{prefix}.{name}"
        try:
            jsonschema.Draft7Validator.check_schema(entry)
        except jsonschema.SchemaError as exc:
            problems.append(Problem(file, f"not a valid JSON schema: {exc.message}", key=key))
            continue
        if "default" not in entry:
            continue
        for error in jsonschema.Draft7Validator(entry).iter_errors(entry["default"]):
            problems.append(Problem(file, f"default does not fit: {error.message}", key=key))
    return problems


def distributed_manifest(manifest: JsonDict) -> JsonDict:
    """The manifest as the manager publishes it on ``manifests/<Name>``: no top-level config."""
    published = copy.deepcopy(manifest)
    published.pop("config", None)
    return published


# config values against a manifest config set


@dataclass(frozen=True)
class ConfigParameter:
    """One validated config entry with the manifest's characteristics."""

    name: str
    value: ConfigValue
    datatype: str  # wire form: string | number | integer | bool
    mutability: str  # ReadOnly | ReadWrite | WriteOnly

    def to_wire(self) -> JsonDict:
        characteristics = {"datatype": self.datatype, "mutability": self.mutability}
        return {"name": self.name, "value": self.value, "characteristics": characteristics}


def config_map(
    declared: Mapping[str, JsonDict], given: Mapping[str, Any]
) -> tuple[tuple[ConfigParameter, ...], list[tuple[str, str]]]:
    """Check one config map against its manifest config set (config.cpp parse_config_map).

    Returns the completed parameters sorted by name and (key, message) problems. An int
    given for a ``number`` entry is allowed and becomes a float, as in C++ (``get<double>``).
    """
    problems = [
        (name, "unknown config entry: not declared in the manifest")
        for name in sorted(set(given) - set(declared))
    ]
    parameters = []
    for name in sorted(declared):
        schema = declared[name]
        if name in given:
            value = given[name]
            message = _value_problem(value, schema)
            if message:
                problems.append((name, message))
                continue
        elif "default" in schema:
            value = schema["default"]
        else:
            problems.append((name, "missing mandatory config entry (no default in the manifest)"))
            continue
        parameters.append(
            ConfigParameter(
                name=name,
                value=_coerced(value, schema["type"]),
                datatype=_WIRE_DATATYPE[schema["type"]],
                mutability=schema["mutability"],
            )
        )
    return tuple(parameters), problems


def _value_problem(value: Any, schema: JsonDict) -> str | None:
    expected = schema["type"]
    actual = _json_type(value)
    if actual != expected and not (actual == "integer" and expected == "number"):
        return f"expected {expected}, got {actual} {value!r}"
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(value))
    return "; ".join(str(e.message) for e in errors) or None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _coerced(value: Any, schema_type: str) -> ConfigValue:
    if schema_type == "number":
        return float(value)
    if schema_type == "integer":
        return int(value)
    result: ConfigValue = value
    return result
