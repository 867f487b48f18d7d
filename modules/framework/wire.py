"""EVerest's MQTT wire format (framework 0.25, everest-core >= 2025.12): topics and envelopes.

This is the only place in everkit that knows topic strings. Every EVerest-prefixed payload
is ``{"msg_type": <MsgType>, "data": <payload>}``; the protocol reference sections 2-7 give
the shapes. Everything here is pure: no sockets, no clocks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .errors import MessageParsingError


class MsgType(StrEnum):
    """The only msg_type strings a C++ peer accepts; any other makes it exit(1)."""

    VAR = "Var"
    CMD = "Cmd"
    CMD_RESULT = "CmdResult"
    EXTERNAL_MQTT = "ExternalMQTT"
    RAISE_ERROR = "RaiseError"
    CLEAR_ERROR = "ClearError"
    GET_CONFIG = "GetConfig"
    GET_CONFIG_RESPONSE = "GetConfigResponse"
    HEARTBEAT = "Heartbeat"
    MODULE_READY = "ModuleReady"
    GLOBAL_READY = "GlobalReady"


MSG_TYPES = frozenset(m.value for m in MsgType)

#: Keys of a failed command result (since framework 0.23).
ERROR_TYPE_KEY = "__everest__error_type"
ERROR_MSG_KEY = "__everest__error_msg"

#: How long an EVerest caller waits for a command result (everest.cpp:38).
DEFAULT_CMD_TIMEOUT_S = 300.0

QOS = 2


def normalise_prefix(prefix: str) -> str:
    """EVerest always appends '/' to the everest prefix."""
    return prefix if prefix.endswith("/") else prefix + "/"


@dataclass(frozen=True)
class Topics:
    """Topic builder for one EVerest prefix (e.g. ``everest/``)."""

    prefix: str = "everest/"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", normalise_prefix(self.prefix))

    # module and implementation topics
    def module(self, module_id: str) -> str:
        return f"{self.prefix}modules/{module_id}"

    def impl(self, module_id: str, impl_id: str) -> str:
        return f"{self.prefix}modules/{module_id}/impl/{impl_id}"

    def var(self, module_id: str, impl_id: str, name: str) -> str:
        return f"{self.impl(module_id, impl_id)}/var/{name}"

    def cmd(self, module_id: str, impl_id: str, name: str) -> str:
        return f"{self.impl(module_id, impl_id)}/cmd/{name}"

    def cmd_response(self, module_id: str, impl_id: str, name: str, caller_id: str) -> str:
        return f"{self.cmd(module_id, impl_id, name)}/response/{caller_id}"

    def error(self, module_id: str, impl_id: str, error_type: str) -> str:
        """``error_type`` is ``<namespace>/<Name>``, so this topic has two levels after error/."""
        return f"{self.impl(module_id, impl_id)}/error/{error_type}"

    def all_errors(self, module_id: str, impl_id: str) -> str:
        return f"{self.impl(module_id, impl_id)}/error/#"

    def module_ready(self, module_id: str) -> str:
        return f"{self.module(module_id)}/ready"

    def metadata(self, module_id: str) -> str:
        return f"{self.module(module_id)}/metadata"

    def config_response(self, module_id: str) -> str:
        return f"{self.module(module_id)}/response"

    @property
    def config_request(self) -> str:
        return f"{self.prefix}config/request"

    @property
    def global_ready(self) -> str:
        return f"{self.prefix}ready"

    # the manager's retained definition topics
    @property
    def interfaces(self) -> str:
        return f"{self.prefix}interfaces"

    def interface_definition(self, interface: str) -> str:
        return f"{self.prefix}interface_definitions/{interface}"

    @property
    def types(self) -> str:
        return f"{self.prefix}types"

    def type_definition(self, type_key: str) -> str:
        """``type_key`` is ``/power_supply_DC``; its leading '/' is not doubled."""
        return f"{self.prefix}type_definitions/{type_key.lstrip('/')}"

    @property
    def settings(self) -> str:
        return f"{self.prefix}settings"

    @property
    def schemas(self) -> str:
        return f"{self.prefix}schemas"

    def manifest(self, module_name: str) -> str:
        return f"{self.prefix}manifests/{module_name}"

    @property
    def module_names(self) -> str:
        return f"{self.prefix}module_names"


@dataclass(frozen=True, slots=True)
class Envelope:
    msg_type: str
    data: Any


def encode(msg_type: MsgType, data: Any, *, sort_keys: bool = False) -> bytes:
    """Serialise one envelope. ``sort_keys`` reproduces the C++ manager's byte order."""
    body = {"msg_type": msg_type.value, "data": data}
    return json.dumps(body, separators=(",", ":"), sort_keys=sort_keys, allow_nan=False).encode()


def decode(payload: bytes) -> Envelope:
    """Parse one envelope, refusing anything a C++ peer would choke on."""
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MessageParsingError(f"payload is not JSON: {exc}") from None
    except RecursionError:  # nested deeper than Python's parser goes (a few hundred levels)
        raise MessageParsingError("payload is not JSON: nested too deeply to parse") from None
    if not isinstance(body, dict):
        raise MessageParsingError("payload is not a JSON object")
    msg_type = body.get("msg_type")
    if msg_type not in MSG_TYPES:
        raise MessageParsingError(f"unknown msg_type {msg_type!r}")
    if "data" not in body:
        raise MessageParsingError("envelope has no 'data'")
    return Envelope(msg_type, body["data"])


# payload builders: the exact shapes of protocol reference sections 4-7


def var_payload(value: Any) -> bytes:
    return encode(MsgType.VAR, {"data": value})


def cmd_payload(call_id: str, args: dict[str, Any] | None, origin: str) -> bytes:
    return encode(MsgType.CMD, {"id": call_id, "args": args, "origin": origin})


def result_payload(call_id: str, origin: str, retval: Any) -> bytes:
    inner = {"id": call_id, "retval": retval, "origin": origin}
    return encode(MsgType.CMD_RESULT, {"type": "result", "data": inner})


def error_result_payload(
    call_id: str, origin: str, error_type: str, message: str, retval: Any = None
) -> bytes:
    inner: dict[str, Any] = {
        "id": call_id,
        "origin": origin,
        "error": {ERROR_TYPE_KEY: error_type, ERROR_MSG_KEY: message},
    }
    if retval is not None:
        inner["retval"] = retval
    return encode(MsgType.CMD_RESULT, {"type": "result", "data": inner})


def ready_payload(msg_type: MsgType) -> bytes:
    return encode(msg_type, True)


def config_request_payload(origin: str) -> bytes:
    return encode(
        MsgType.GET_CONFIG, {"type": "Get", "origin": origin, "request": {"type": "Module"}}
    )
