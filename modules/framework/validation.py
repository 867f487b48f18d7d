"""Compiled validators for cmd arguments, cmd results, vars and error types.

Each schema fragment of an interface is turned into one self-contained JSON schema (every
``$ref: /<file>#/<Type>`` rewritten to a local ``#/definitions/<file>/<Type>`` and the
referenced types copied in, transitively), then compiled once with fastjsonschema. A
validation on the hot path is then a plain Python function call (a few microseconds).

Formats (``date-time`` ...) are not enforced and defaults are never inserted into the
value: validation only ever reads.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

import fastjsonschema

from .definitions import Command, Definitions, Interface, JsonDict
from .errors import ContractError, SchemaValidationError

_REF = re.compile(r"^/([A-Za-z0-9_\-]+)#/([A-Za-z0-9_\-]+)$")

Validator = Callable[[Any], None]


def _no_check(_value: Any) -> None:
    return None


class SchemaCompiler:
    """Builds self-contained schemas from interface fragments and compiles them."""

    def __init__(self, definitions: Definitions) -> None:
        self._definitions = definitions

    def self_contained(self, schema: JsonDict) -> JsonDict:
        """Copy ``schema`` with every type reference resolved into local definitions."""
        needed: dict[tuple[str, str], JsonDict] = {}
        root: JsonDict = self._rewrite(schema, needed)
        pending = list(needed)
        while pending:
            file, name = pending.pop()
            if needed[(file, name)]:
                continue
            types = self._definitions.type_file("/" + file)
            if name not in types:
                raise ContractError(f"type '{name}' not found in types/{file}.yaml")
            before = set(needed)
            needed[(file, name)] = self._rewrite(types[name], needed)
            pending.extend(set(needed) - before)
        if needed:
            definitions: dict[str, dict[str, JsonDict]] = {}
            for (file, name), body in needed.items():
                definitions.setdefault(file, {})[name] = body
            root = {"definitions": definitions, **root}
        return root

    def _rewrite(self, node: Any, needed: dict[tuple[str, str], JsonDict]) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    match = _REF.match(value)
                    if not match:
                        raise ContractError(f"unsupported $ref {value!r}")
                    file, name = match.groups()
                    needed.setdefault((file, name), {})
                    out[key] = f"#/definitions/{file}/{name}"
                elif key == "description":
                    continue
                else:
                    out[key] = self._rewrite(value, needed)
            return out
        if isinstance(node, list):
            return [self._rewrite(item, needed) for item in node]
        return copy.copy(node)

    def compile(self, schema: JsonDict, what: str, root_name: str = "value") -> Validator:
        """A function that returns None or raises ``SchemaValidationError`` naming the field."""
        compiled = fastjsonschema.compile(
            self.self_contained(schema), use_default=False, use_formats=False
        )

        def validate(value: Any) -> None:
            try:
                compiled(value)
            except fastjsonschema.JsonSchemaValueException as exc:
                raise _explain(exc, what, root_name) from None

        return validate


def _explain(
    exc: fastjsonschema.JsonSchemaValueException, what: str, root_name: str
) -> SchemaValidationError:
    path = [str(p) for p in (exc.path or ["data"])][1:]
    field = ".".join([root_name, *path]) if path else root_name
    reason = exc.message
    if exc.name and reason.startswith(exc.name):
        reason = reason[len(exc.name) :].strip()
    return SchemaValidationError(what, field, reason)


def arguments_schema(command: Command) -> JsonDict:
    """All declared arguments required, nothing else allowed (EVerest's caller check)."""
    return {
        "type": "object",
        "properties": dict(command.arguments),
        "required": sorted(command.arguments),
        "additionalProperties": False,
    }


class InterfaceValidators:
    """Every validator one interface needs, compiled once."""

    def __init__(self, interface: Interface, compiler: SchemaCompiler) -> None:
        self.interface = interface
        self._args: dict[str, Validator] = {}
        self._results: dict[str, Validator] = {}
        self._vars: dict[str, Validator] = {}
        for name, command in interface.cmds.items():
            where = f"{interface.name}.{name}"
            self._args[name] = compiler.compile(
                arguments_schema(command), f"{where} arguments", "args"
            )
            self._results[name] = (
                _no_check
                if command.result.get("type") == "null" and "$ref" not in command.result
                else compiler.compile(command.result, f"{where} result", "retval")
            )
        for name, schema in interface.vars.items():
            self._vars[name] = compiler.compile(schema, f"{interface.name} var {name}", name)
        self._error_types = frozenset(interface.error_types)

    def check_args(self, cmd: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
        """Validate call arguments; ``None`` (sent by C++ callers) counts as ``{}``."""
        value = {} if args is None else args
        self._command(self._args, cmd)(value)
        return dict(value)

    def check_result(self, cmd: str, retval: Any) -> None:
        if retval is None and self._results[cmd] is _no_check:
            return
        if self._results[cmd] is _no_check:
            raise SchemaValidationError(
                f"{self.interface.name}.{cmd} result", "retval", "must be null"
            )
        self._command(self._results, cmd)(retval)

    def check_var(self, var: str, value: Any) -> None:
        try:
            validator = self._vars[var]
        except KeyError:
            raise ContractError(
                f"var '{var}' is not declared by interface '{self.interface.name}'"
            ) from None
        validator(value)

    def check_error_type(self, error_type: str) -> None:
        if error_type not in self._error_types:
            raise ContractError(
                f"error type '{error_type}' is not declared by interface '{self.interface.name}'"
            )

    def has_command(self, cmd: str) -> bool:
        return cmd in self._args

    def _command(self, table: dict[str, Validator], cmd: str) -> Validator:
        try:
            return table[cmd]
        except KeyError:
            raise ContractError(
                f"command '{cmd}' is not declared by interface '{self.interface.name}'"
            ) from None


class ValidatorCache:
    """One ``InterfaceValidators`` per interface name, built on first use."""

    def __init__(self, definitions: Definitions) -> None:
        self.definitions = definitions
        self._compiler = SchemaCompiler(definitions)
        self._cache: dict[str, InterfaceValidators] = {}

    def __getitem__(self, interface: str) -> InterfaceValidators:
        found = self._cache.get(interface)
        if found is None:
            found = InterfaceValidators(self.definitions.interface(interface), self._compiler)
            self._cache[interface] = found
        return found
