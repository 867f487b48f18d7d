"""What a hostile or broken peer can put on an EVerest topic: the catalogue of every cmd
topic a module serves and every var topic it subscribes to (from its manifest, the runtime
config and the interface YAML), and payload builders for each kind of bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import find
from hypothesis import strategies as st

from everkit.framework.definitions import Definitions, contract_root, load_yaml
from everkit.framework.errors import SchemaValidationError
from everkit.framework.validation import SchemaCompiler, ValidatorCache, arguments_schema
from everkit.framework.wire import Topics
from tests.strategies import from_schema, wrong_value_for

ORIGIN = "fuzzer"
DEEP_LEVELS = 10_000
MB = 1024 * 1024


@dataclass(frozen=True)
class CmdTarget:
    module_id: str
    impl: str
    interface: str
    cmd: str
    topic: str
    args_schema: dict[str, Any]  # self-contained: every $ref local
    check: Callable[[Any], None]  # the framework's own validator: the oracle
    sample: dict[str, Any]  # one valid argument set


@dataclass(frozen=True)
class VarTarget:
    subscriber: str  # the module that subscribed
    interface: str
    var: str
    topic: str
    schema: dict[str, Any]
    check: Callable[[Any], None]


@dataclass(frozen=True)
class Catalogue:
    modules: dict[str, str]  # module id -> module name
    cmds: list[CmdTarget]
    vars: list[VarTarget]
    validators: ValidatorCache

    def cmd(self, module_id: str, impl: str, name: str) -> CmdTarget:
        return next(c for c in self.cmds if (c.module_id, c.impl, c.cmd) == (module_id, impl, name))

    def check_result(self, target: CmdTarget, retval: Any) -> None:
        self.validators[target.interface].check_result(target.cmd, retval)

    def cmds_of(self, module_id: str) -> list[CmdTarget]:
        return [c for c in self.cmds if c.module_id == module_id]

    def vars_of(self, module_id: str) -> list[VarTarget]:
        return [v for v in self.vars if v.subscriber == module_id]


def catalogue(config: dict[str, Any], prefix: str) -> Catalogue:
    """Every topic the modules of ``config`` listen on, with the schema they check."""
    root = contract_root()
    definitions = Definitions.from_dirs(root)
    compiler = SchemaCompiler(definitions)
    topics = Topics(prefix)
    active: dict[str, Any] = config["active_modules"]
    manifests = {
        name: load_yaml(root / "manifests" / f"{name}.yaml")
        for name in {entry["module"] for entry in active.values()}
    }
    cmds: list[CmdTarget] = []
    variables: list[VarTarget] = []
    for module_id, entry in active.items():
        manifest = manifests[entry["module"]]
        for impl, spec in (manifest.get("provides") or {}).items():
            interface = definitions.interface(spec["interface"])
            for name, command in interface.cmds.items():
                schema = compiler.self_contained(arguments_schema(command))
                check = compiler.compile(arguments_schema(command), name, "args")
                topic = topics.cmd(module_id, impl, name)
                sample = _sample_of(schema, check)
                cmds.append(
                    CmdTarget(module_id, impl, interface.name, name, topic, schema, check, sample)
                )
        requires = manifest.get("requires") or {}
        for req, fulfilments in (entry.get("connections") or {}).items():
            interface = definitions.interface(requires[req]["interface"])
            for target in fulfilments:
                for var, schema in interface.vars.items():
                    topic = topics.var(target["module_id"], target["implementation_id"], var)
                    contained = compiler.self_contained(schema)
                    check = compiler.compile(schema, var, var)
                    variables.append(
                        VarTarget(module_id, interface.name, var, topic, contained, check)
                    )
    names = {module_id: entry["module"] for module_id, entry in active.items()}
    return Catalogue(names, cmds, variables, ValidatorCache(definitions))


# envelopes


def cmd_envelope(call_id: str, args: Any) -> bytes:
    body = {"msg_type": "Cmd", "data": {"id": call_id, "args": args, "origin": ORIGIN}}
    return json.dumps(body).encode()


def var_envelope(value: Any) -> bytes:
    return json.dumps({"msg_type": "Var", "data": {"data": value}}).encode()


def deep(levels: int = DEEP_LEVELS) -> str:
    """JSON text nested ``levels`` deep: far beyond what Python's parser recurses into."""
    return "[" * levels + "]" * levels


def huge_text(size: int) -> str:
    return "x" * size


# bad inputs that every topic gets (the sweep), keyed by kind; each is a function of the
# call id (cmd topics) so that a result can be matched. ``expect`` says what the module
# must answer: "SchemaValidationError" for bad arguments, None for an envelope it cannot
# read (no answer possible: it is dropped with a log line naming the topic).


@dataclass(frozen=True)
class BadInput:
    kind: str
    build: Callable[[str], bytes]
    expect: str | None


def _cmd(call_id: str, args: Any, msg_type: str = "Cmd") -> bytes:
    data = {"id": call_id, "args": args, "origin": ORIGIN}
    return json.dumps({"msg_type": msg_type, "data": data}).encode()


def bad_cmd_inputs(target: CmdTarget, huge_size: int) -> list[BadInput]:
    properties: dict[str, Any] = target.args_schema.get("properties", {})
    schema_error = "SchemaValidationError"
    inputs = [
        BadInput("not-json", lambda _i: b"\xff{not json", None),
        BadInput("not-an-object", lambda _i: b"[1, 2, 3]", None),
        BadInput("wrong-msg-type", lambda i: _cmd(i, {}, "Var"), None),
        BadInput("unknown-msg-type", lambda i: _cmd(i, {}, "Bogus"), None),
        BadInput(
            "no-origin",
            lambda i: json.dumps({"msg_type": "Cmd", "data": {"id": i, "args": {}}}).encode(),
            None,
        ),
        BadInput("data-not-object", lambda _i: b'{"msg_type":"Cmd","data":"x"}', None),
        BadInput("empty", lambda _i: b"", None),
        BadInput("deep-envelope", lambda _i: deep().encode(), None),
        BadInput(
            "deep-args",
            lambda i: (
                f'{{"msg_type":"Cmd","data":{{"id":"{i}","origin":"{ORIGIN}","args":'
                f"{deep()}}}}}".encode()
            ),
            None,  # nested deeper than the parser goes: the id cannot be read
        ),
        BadInput("args-not-object", lambda i: _cmd(i, [1, 2]), schema_error),
        BadInput(
            "extra-key", lambda i: _cmd(i, {**_sample(target), "fuzz_extra": 1}), schema_error
        ),
        BadInput(
            "huge-extra-key",
            lambda i: _cmd(i, {**_sample(target), "fuzz_huge": huge_text(huge_size)}),
            schema_error,
        ),
        BadInput(
            "nested-500",
            lambda i: (
                f'{{"msg_type":"Cmd","data":{{"id":"{i}","origin":"{ORIGIN}","args":'
                f'{{"fuzz_nested":{deep(500)}}}}}}}'.encode()
            ),
            schema_error,
        ),
    ]
    for name, schema in properties.items():
        wrong = wrong_value_for(schema, target.args_schema)
        inputs.append(
            BadInput(
                f"wrong-type:{name}",
                lambda i, n=name, w=wrong: _cmd(i, {**_sample(target), n: w}),
                schema_error,
            )
        )
        inputs.append(
            BadInput(
                f"missing:{name}",
                lambda i, n=name: _cmd(i, {k: v for k, v in _sample(target).items() if k != n}),
                schema_error,
            )
        )
    return inputs


def bad_var_inputs(target: VarTarget, huge_size: int) -> list[tuple[str, bytes]]:
    wrong = wrong_value_for(target.schema, target.schema)
    return [
        ("not-json", b"\xff{not json"),
        ("wrong-msg-type", json.dumps({"msg_type": "Cmd", "data": {"data": 1}}).encode()),
        ("no-data", b'{"msg_type":"Var","data":{}}'),
        ("data-not-object", b'{"msg_type":"Var","data":[1]}'),
        ("empty", b""),
        ("deep", deep().encode()),
        ("deep-value", f'{{"msg_type":"Var","data":{{"data":{deep()}}}}}'.encode()),
        ("nested-500", var_envelope({"fuzz": json.loads(deep(500))})),
        ("wrong-type", var_envelope(wrong)),
        ("huge", var_envelope(huge_text(huge_size))),
    ]


def _sample(target: CmdTarget) -> dict[str, Any]:
    return target.sample


def _sample_of(schema: dict[str, Any], check: Callable[[Any], None]) -> dict[str, Any]:
    """A small valid argument set; hypothesis' own search only where the short way fails
    (it takes a while per schema)."""
    value = _minimal(schema, schema)
    try:
        check(value)
    except SchemaValidationError:
        value = find(from_schema(schema), lambda _v: True)
    result: dict[str, Any] = value
    return result


def _minimal(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    while "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            k: _minimal(properties[k], root) for k in schema.get("required", []) if k in properties
        }
    if kind == "array":
        return [_minimal(schema.get("items", {}), root) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "a" * schema.get("minLength", 0)
    if kind in ("integer", "number"):
        low = schema.get("minimum", 0)
        return max(low, min(0, schema.get("maximum", 0)))
    if kind == "boolean":
        return False
    return None


# hypothesis strategies for random inputs on one topic


def valid_args(target: CmdTarget) -> st.SearchStrategy[dict[str, Any]]:
    strategy: st.SearchStrategy[dict[str, Any]] = from_schema(target.args_schema)
    return strategy


def valid_value(target: VarTarget) -> st.SearchStrategy[Any]:
    return from_schema(target.schema)


JSON_ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def mutated(value: Any, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """``value`` with one field replaced by a wrong type, dropped, or an extra one added."""
    if not isinstance(value, dict) or not value:
        return st.just(wrong_value_for(schema, schema))
    keys = sorted(value)
    properties = schema.get("properties", {})

    def wrong(key: str) -> Any:
        return {**value, key: wrong_value_for(properties.get(key, {}), schema)}

    def missing(key: str) -> Any:
        return {k: v for k, v in value.items() if k != key}

    options = [st.sampled_from(keys).map(wrong)]
    if set(schema.get("required", [])) & set(keys):
        required = sorted(set(schema.get("required", [])) & set(keys))
        options.append(st.sampled_from(required).map(missing))
    if schema.get("additionalProperties") is False:
        options.append(JSON_ANY.map(lambda extra: {**value, "fuzz_extra_key": extra}))
    return st.one_of(options)
