"""Conformance of EVerest bus traffic: wire rules, interface schemas, unanswered commands.

Two layers, one code path for the tests and for ``everkit check``:

* ``violations`` checks one message on its own against the wire rules. Section 9 of the
  protocol reference lists what makes a C++ peer exit(1): an unknown msg_type, a var
  without data.data, a Cmd without id or origin, an error object missing a key, a
  CmdResult without data.data.id. Sections 2-7 fix topics, envelopes and QoS.
* ``Checker`` follows a whole bus: it learns which interface each implementation provides
  (from the manager's retained topics, the modules' metadata, or a given table), checks
  cmd arguments, results, vars and error types against those interfaces, pairs every Cmd
  with its CmdResult and counts what it saw. It is sans-IO: messages and the time come in
  as arguments.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .definitions import ContractDirs, Definitions
from .error_model import REQUIRED_KEYS
from .errors import ContractError, EverkitError, SchemaValidationError
from .validation import InterfaceValidators, ValidatorCache
from .wire import ERROR_MSG_KEY, ERROR_TYPE_KEY, MSG_TYPES, normalise_prefix

ERROR_KEYS = frozenset(REQUIRED_KEYS)  # what a C++ peer needs to parse an error
COMMAND_ERROR_TYPES = frozenset(
    {
        "MessageParsingError",
        "SchemaValidationError",
        "HandlerException",
        "CmdTimeout",
        "Shutdown",
        "NotReady",
    }
)
RETAINED = re.compile(
    r"^(interfaces|interface_definitions/[^/]+|types|type_definitions/[^/]+|settings|schemas"
    r"|manifests/[^/]+|module_names)$"
)
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

#: How long a Cmd may wait for its CmdResult before ``Checker`` calls it unanswered.
DEFAULT_GRACE_S = 10.0

EXCERPT_CHARS = 200


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_strict(payload: bytes) -> Any:
    """JSON as a C++ peer reads it: NaN and infinities are refused."""
    return json.loads(payload, parse_constant=_reject_constant)


def violations(
    topic: str, payload: bytes, prefix: str, *, qos: int = 2, retain: bool = False
) -> list[str]:
    """Every wire rule this message breaks (empty list: a C++ peer would accept it)."""
    if not topic.startswith(prefix):
        return [f"topic outside the EVerest prefix {prefix!r}"]
    path = topic[len(prefix) :]
    if RETAINED.match(path) and payload == b"":
        # the manager clearing a definition; a live subscriber never sees the retain flag
        return []
    problems: list[str] = []
    try:
        body = parse_strict(payload)
    except ValueError as exc:
        return [f"payload is not strict JSON: {exc}"]
    if not isinstance(body, dict):
        return ["payload is not a JSON object"]
    if set(body) != {"msg_type", "data"}:
        problems.append(f"envelope keys are {sorted(body)}, expected msg_type and data")
    msg_type, data = body.get("msg_type"), body.get("data")
    if msg_type not in MSG_TYPES:
        return [*problems, f"unknown msg_type {msg_type!r} (kills C++ peers)"]
    if qos != 2:
        problems.append(f"QoS {qos}, EVerest uses QoS 2")
    if retain and not RETAINED.match(path):
        problems.append("retained message outside the manager's definition topics")
    expected = expected_msg_types(path)
    if expected and msg_type not in expected:
        problems.append(f"msg_type {msg_type} on {path}, expected {sorted(expected)}")
    check = _DATA_RULES.get(msg_type)
    if check is not None:
        problems += check(data)
    return problems


def expected_msg_types(path: str) -> set[str]:
    """The msg_types allowed on a topic (``path`` is the topic without the prefix)."""
    parts = path.split("/")
    if path == "ready":
        return {"GlobalReady"}
    if path == "config/request":
        return {"GetConfig"}
    if RETAINED.match(path):
        return {"GetConfigResponse"}
    if parts[0] != "modules" or len(parts) < 3:
        return set()
    if len(parts) == 3:
        return {
            "ready": {"ModuleReady"},
            "response": {"GetConfigResponse"},
            "metadata": {"GetConfigResponse"},
        }.get(parts[2], set())
    if parts[2] != "impl" or len(parts) < 6:
        return set()
    kind = parts[4]
    if kind == "var" and len(parts) == 6:
        return {"Var"}
    if kind == "cmd" and len(parts) == 6:
        return {"Cmd"}
    if kind == "cmd" and len(parts) == 8 and parts[6] == "response":
        return {"CmdResult"}
    if kind == "error" and len(parts) == 7:
        return {"RaiseError", "ClearError"}
    return set()


def _var(data: Any) -> list[str]:
    return [] if isinstance(data, dict) and "data" in data else ["Var without data.data"]


def _cmd(data: Any) -> list[str]:
    if not isinstance(data, dict):
        return ["Cmd data is not an object"]
    problems = [
        f"Cmd without string {k}" for k in ("id", "origin") if not isinstance(data.get(k), str)
    ]
    if "args" not in data or not (data["args"] is None or isinstance(data["args"], dict)):
        problems.append("Cmd args must be an object or null")
    return problems


def _result(data: Any) -> list[str]:
    if not isinstance(data, dict) or data.get("type") != "result":
        return ["CmdResult data must have type 'result'"]
    inner = data.get("data")
    if not isinstance(inner, dict) or not isinstance(inner.get("id"), str):
        return ["CmdResult without data.data.id (kills C++ callers)"]
    problems = [] if isinstance(inner.get("origin"), str) else ["CmdResult without origin"]
    if "error" in inner:
        error = inner["error"]
        if not isinstance(error, dict) or set(error) != {ERROR_TYPE_KEY, ERROR_MSG_KEY}:
            problems.append("CmdResult error needs exactly __everest__error_type/_msg")
        elif error[ERROR_TYPE_KEY] not in COMMAND_ERROR_TYPES:
            problems.append(f"unknown command error type {error[ERROR_TYPE_KEY]!r}")
    elif "retval" not in inner:
        problems.append("CmdResult has neither retval nor error")
    return problems


def _error(data: Any) -> list[str]:
    if not isinstance(data, dict):
        return ["error object is not an object"]
    problems = [f"error object lacks {k}" for k in sorted(ERROR_KEYS - set(data))]
    origin = data.get("origin")
    if not isinstance(origin, dict) or not {"module_id", "implementation_id"} <= set(origin):
        problems.append("error origin needs module_id and implementation_id")
    if data.get("severity") not in {"Low", "Medium", "High"}:
        problems.append(f"bad severity {data.get('severity')!r}")
    if data.get("state") not in {"Active", "ClearedByModule", "ClearedByReboot"}:
        problems.append(f"bad state {data.get('state')!r}")
    if not TIMESTAMP.match(str(data.get("timestamp"))):
        problems.append(f"timestamp {data.get('timestamp')!r} is not RFC 3339 with ms and Z")
    if not UUID.match(str(data.get("uuid"))):
        problems.append(f"uuid {data.get('uuid')!r} is not a UUID")
    return problems


def _ready(data: Any) -> list[str]:
    return [] if data is True else [f"ready data must be true, got {data!r}"]


def _get_config(data: Any) -> list[str]:
    if not isinstance(data, dict) or not {"type", "origin", "request"} <= set(data):
        return ["GetConfig needs type, origin and request"]
    return []


_DATA_RULES: dict[str, Callable[[Any], list[str]]] = {
    "Var": _var,
    "Cmd": _cmd,
    "CmdResult": _result,
    "RaiseError": _error,
    "ClearError": _error,
    "ModuleReady": _ready,
    "GlobalReady": _ready,
    "GetConfig": _get_config,
}


# the stateful checker


@dataclass(frozen=True)
class Finding:
    """One broken rule. ``kind`` is ``wire``, ``schema``, ``contract`` or ``unanswered``."""

    kind: str
    topic: str
    reason: str
    excerpt: str = ""
    field: str | None = None
    at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "topic": self.topic,
            "reason": self.reason,
            "field": self.field,
            "payload": self.excerpt,
            "at": self.at,
        }


@dataclass(frozen=True)
class PendingCmd:
    topic: str
    call_id: str
    origin: str
    sent_at: float
    excerpt: str


@dataclass(frozen=True)
class ImplTopic:
    """What a ``modules/M/impl/I/<kind>/<name>[/...]`` topic names."""

    module_id: str
    impl_id: str
    kind: str
    name: str
    rest: tuple[str, ...]


def parse_impl_topic(path: str) -> ImplTopic | None:
    parts = path.split("/")
    if len(parts) < 6 or parts[0] != "modules" or parts[2] != "impl":
        return None
    if parts[4] == "error" and len(parts) == 7:
        return ImplTopic(parts[1], parts[3], "error", f"{parts[5]}/{parts[6]}", ())
    return ImplTopic(parts[1], parts[3], parts[4], parts[5], tuple(parts[6:]))


def excerpt(payload: bytes) -> str:
    return payload[:EXCERPT_CHARS].decode("utf-8", errors="replace")


@dataclass
class _Learned:
    """What the manager and the modules told us about the stack."""

    interfaces: dict[str, Any] = field(default_factory=dict)
    types: dict[str, Any] = field(default_factory=dict)
    manifests: dict[str, Any] = field(default_factory=dict)
    module_names: dict[str, str] = field(default_factory=dict)
    provides: dict[tuple[str, str], str] = field(default_factory=dict)


class Checker:
    """Follows one EVerest bus and reports every message that breaks a rule.

    ``providers`` maps ``(module_id, impl_id)`` to an interface name; it is the fallback
    for a stack whose manager's retained topics are gone. ``fallback`` folders supply
    interfaces and types the manager did not publish (a C++ manager publishes types only
    with validate_schema on).
    """

    def __init__(
        self,
        prefix: str = "everest/",
        *,
        providers: Mapping[tuple[str, str], str] | None = None,
        fallback: ContractDirs | None = None,
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        self.prefix = normalise_prefix(prefix)
        self.grace_s = grace_s
        self.findings: list[Finding] = []
        #: (module_id, interface or "", msg_type) -> messages seen
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.messages = 0
        self.unchecked: Counter[str] = Counter()
        self._given = dict(providers or {})
        self._fallback = fallback
        self._learned = _Learned()
        self._pending: dict[tuple[str, str, str, str], PendingCmd] = {}
        self._validators: ValidatorCache | None = None

    # feeding

    def feed(
        self, topic: str, payload: bytes, qos: int = 2, retain: bool = False, now: float = 0.0
    ) -> list[Finding]:
        """Check one message; returns the findings it caused (also kept in ``findings``)."""
        self.messages += 1
        found = [
            Finding("wire", topic, reason, excerpt(payload), at=now)
            for reason in violations(topic, payload, self.prefix, qos=qos, retain=retain)
        ]
        body = self._body(payload)
        path = topic[len(self.prefix) :] if topic.startswith(self.prefix) else None
        if path is not None and body is not None:
            msg_type, data = body
            self._learn(path, msg_type, data)
            where = parse_impl_topic(path)
            interface = self.interface_of(where.module_id, where.impl_id) if where else None
            module = where.module_id if where else _module_of(path)
            self.counts[(module, interface or "", msg_type)] += 1
            if where is not None and not found and msg_type in expected_msg_types(path):
                found += self._check_impl(
                    topic,
                    payload,
                    where,
                    interface=interface,
                    msg_type=msg_type,
                    data=data,
                    now=now,
                )
        elif path is not None:
            self.counts[(_module_of(path), "", "(unparsable)")] += 1
        self.findings += found
        return found

    def expire(self, now: float) -> list[Finding]:
        """Report every Cmd that waited longer than the grace period for its result."""
        found = []
        for key, cmd in list(self._pending.items()):
            if now - cmd.sent_at >= self.grace_s:
                del self._pending[key]
                found.append(
                    Finding(
                        "unanswered",
                        cmd.topic,
                        f"Cmd {cmd.call_id} from {cmd.origin} got no CmdResult "
                        f"within {self.grace_s:g} s",
                        cmd.excerpt,
                        at=cmd.sent_at,
                    )
                )
        self.findings += found
        return found

    @property
    def pending(self) -> list[PendingCmd]:
        """Cmds still inside their grace period."""
        return list(self._pending.values())

    def interface_of(self, module_id: str, impl_id: str) -> str | None:
        key = (module_id, impl_id)
        found = self._learned.provides.get(key) or self._given.get(key)
        if found is not None:
            return found
        name = self._learned.module_names.get(module_id)
        manifest = self._learned.manifests.get(name) if name else None
        if isinstance(manifest, dict):
            provides = manifest.get("provides") or {}
            impl = provides.get(impl_id)
            if isinstance(impl, dict) and isinstance(impl.get("interface"), str):
                return str(impl["interface"])
        return None

    # learning

    @staticmethod
    def _body(payload: bytes) -> tuple[str, Any] | None:
        try:
            body = parse_strict(payload)
        except ValueError:
            return None
        if not isinstance(body, dict) or body.get("msg_type") not in MSG_TYPES:
            return None
        return str(body["msg_type"]), body.get("data")

    def _learn(self, path: str, msg_type: str, data: Any) -> None:
        if msg_type != "GetConfigResponse":
            return
        learned = self._learned
        head, _, name = path.partition("/")
        if head == "interface_definitions" and isinstance(data, dict):
            learned.interfaces[name] = data
            self._validators = None
        elif head == "type_definitions" and isinstance(data, dict):
            learned.types["/" + name] = data
            self._validators = None
        elif head == "manifests" and isinstance(data, dict):
            learned.manifests[name] = data
        elif path == "module_names" and isinstance(data, dict):
            learned.module_names.update({str(k): str(v) for k, v in data.items()})
        elif head == "modules" and path.endswith("/metadata") and isinstance(data, dict):
            module_id = path.split("/")[1]
            for impl_id, impl in (data.get("provides") or {}).items():
                if isinstance(impl, dict) and isinstance(impl.get("interface"), str):
                    learned.provides[(module_id, str(impl_id))] = impl["interface"]

    def _interface_validators(self, interface: str) -> InterfaceValidators:
        if self._validators is None:
            definitions = Definitions.from_retained(
                self._learned.interfaces, self._learned.types, fallback=self._fallback
            )
            self._validators = ValidatorCache(definitions)
        return self._validators[interface]

    # schema and pairing rules

    def _check_impl(
        self,
        topic: str,
        payload: bytes,
        where: ImplTopic,
        *,
        interface: str | None,
        msg_type: str,
        data: Any,
        now: float,
    ) -> list[Finding]:
        text = excerpt(payload)
        problems: list[tuple[str, str, str | None]] = []  # kind, reason, field
        if msg_type == "Cmd":
            problems += self._track_cmd(topic, where, data, now, text)
        elif msg_type == "CmdResult":
            problems += self._pair_result(where, data)
        if interface is None:
            self.unchecked[f"{where.module_id}/{where.impl_id}"] += 1
            return [Finding(k, topic, r, text, f, now) for k, r, f in problems]
        try:
            validators = self._interface_validators(interface)
            self._check_schema(validators, where, msg_type, data)
        except SchemaValidationError as exc:
            problems.append(("schema", str(exc), exc.field))
        except ContractError as exc:
            problems.append(("contract", str(exc), None))
        except EverkitError as exc:  # a definition we cannot load: say so, once per message
            problems.append(("contract", f"cannot check against {interface}: {exc}", None))
        return [Finding(k, topic, r, text, f, now) for k, r, f in problems]

    @staticmethod
    def _check_schema(
        validators: InterfaceValidators, where: ImplTopic, msg_type: str, data: Any
    ) -> None:
        if msg_type == "Cmd":
            validators.check_args(where.name, data.get("args"))
        elif msg_type == "CmdResult":
            inner = data["data"]
            # a failed call may carry the refused retval next to its error
            if "error" not in inner:
                validators.check_result(where.name, inner.get("retval"))
            elif not validators.has_command(where.name):
                validators.check_result(where.name, None)  # raises: command not declared
        elif msg_type == "Var":
            validators.check_var(where.name, data["data"])
        elif msg_type in ("RaiseError", "ClearError"):
            validators.check_error_type(where.name)
            if data.get("type") != where.name:
                raise ContractError(
                    f"error object type {data.get('type')!r} differs from its topic {where.name!r}"
                )

    def _track_cmd(
        self, topic: str, where: ImplTopic, data: Any, now: float, text: str
    ) -> list[tuple[str, str, str | None]]:
        key = (where.module_id, where.impl_id, where.name, data["id"])
        if key in self._pending:
            return [("wire", f"Cmd id {data['id']} reused while the first call is open", "id")]
        self._pending[key] = PendingCmd(topic, data["id"], data["origin"], now, text)
        return []

    def _pair_result(self, where: ImplTopic, data: Any) -> list[tuple[str, str, str | None]]:
        call_id = data["data"]["id"]
        cmd = self._pending.pop((where.module_id, where.impl_id, where.name, call_id), None)
        caller = where.rest[1]
        if cmd is not None and cmd.origin != caller:
            return [
                (
                    "wire",
                    f"CmdResult for {call_id} sent to {caller}, but the Cmd came from "
                    f"{cmd.origin}: the caller never sees it",
                    None,
                )
            ]
        return []

    # reporting

    def summary(self) -> dict[str, Any]:
        """The JSON report: counts, findings, pending cmds."""
        by_module: dict[str, dict[str, dict[str, int]]] = {}
        for (module, interface, kind), n in sorted(self.counts.items()):
            by_module.setdefault(module, {}).setdefault(interface or "-", {})[kind] = n
        return {
            "prefix": self.prefix,
            "messages": self.messages,
            "counts": by_module,
            "violations": [f.to_json() for f in self.findings if f.kind != "unanswered"],
            "unanswered": [f.to_json() for f in self.findings if f.kind == "unanswered"],
            "pending": [
                {"topic": p.topic, "id": p.call_id, "origin": p.origin, "sent_at": p.sent_at}
                for p in self._pending.values()
            ],
            "unchecked_implementations": dict(sorted(self.unchecked.items())),
        }

    @property
    def ok(self) -> bool:
        return not self.findings


def _module_of(path: str) -> str:
    parts = path.split("/")
    if parts[0] == "modules" and len(parts) > 1:
        return parts[1]
    return "(manager)"
