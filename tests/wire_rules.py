"""A strict checker of EVerest wire rules, applied to every captured message.

Section 9 of the protocol reference lists what makes a C++ peer exit(1): an unknown
msg_type, a var without data.data, a Cmd without id or origin, an error object missing a
key, a CmdResult without data.data.id. Section 2-7 fix topics, envelopes and QoS. A
message that breaks any of these would take a real EVerest stack down.
"""

from __future__ import annotations

import json
import re
from typing import Any

MSG_TYPES = {
    "Var",
    "Cmd",
    "CmdResult",
    "ExternalMQTT",
    "RaiseError",
    "ClearError",
    "GetConfig",
    "GetConfigResponse",
    "Heartbeat",
    "ModuleReady",
    "GlobalReady",
}
ERROR_KEYS = {
    "type",
    "description",
    "message",
    "origin",
    "severity",
    "timestamp",
    "uuid",
    "state",
    "sub_type",
    "vendor_id",
}
RETAINED = re.compile(
    r"^(interfaces|interface_definitions/[^/]+|types|type_definitions/[^/]+|settings|schemas"
    r"|manifests/[^/]+|module_names)$"
)
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def violations(
    topic: str, payload: bytes, prefix: str, *, qos: int = 2, retain: bool = False
) -> list[str]:
    """Every rule this message breaks (empty list: a C++ peer would accept it)."""
    if not topic.startswith(prefix):
        return [f"topic outside the EVerest prefix {prefix!r}"]
    path = topic[len(prefix) :]
    if RETAINED.match(path) and payload == b"":
        # the manager clearing a definition; a live subscriber never sees the retain flag
        return []
    problems: list[str] = []
    try:
        body = json.loads(payload, parse_constant=_reject_constant)
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
    expected = _expected_msg_types(path)
    if expected and msg_type not in expected:
        problems.append(f"msg_type {msg_type} on {path}, expected {sorted(expected)}")
    check = {
        "Var": _var,
        "Cmd": _cmd,
        "CmdResult": _result,
        "RaiseError": _error,
        "ClearError": _error,
        "ModuleReady": _ready,
        "GlobalReady": _ready,
        "GetConfig": _get_config,
    }.get(msg_type)
    if check is not None:
        problems += check(data)
    return problems


def _expected_msg_types(path: str) -> set[str]:
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
        if not isinstance(error, dict) or set(error) != {
            "__everest__error_type",
            "__everest__error_msg",
        }:
            problems.append("CmdResult error needs exactly __everest__error_type/_msg")
        elif error["__everest__error_type"] not in {
            "MessageParsingError",
            "SchemaValidationError",
            "HandlerException",
            "CmdTimeout",
            "Shutdown",
            "NotReady",
        }:
            problems.append(f"unknown command error type {error['__everest__error_type']!r}")
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
