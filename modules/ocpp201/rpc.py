"""OCPP-J 2.0.1 frame checks for what the CSMS sends us, before the `ocpp` package routes it.

The package validates payloads itself, but maps schema failures to error codes the spec does
not use for them (a missing field becomes ProtocolError, a too-long string
TypeConstraintViolation), swaps NotImplemented and NotSupported, and answers nothing at all
to a frame it cannot parse. A CSMS test tool (OCTT) checks these codes, so every CALL is
classified here and the package only sees CALLs that are well formed.

Error codes (OCPP-J 2.0.1, section 4.3 "RPC framework", CallError codes):

=============================  ==============================================================
frame not JSON / not an array   RpcFrameworkError, message id "-1" when it cannot be read
unknown message type number     MessageTypeNotSupported
CALL with a wrong element count RpcFrameworkError
payload not an object           FormatViolation
action unknown to OCPP 2.0.1    NotImplemented ("not known by receiver")
known action we do not handle   NotSupported ("recognised but not supported")
required field missing,         OccurrenceConstraintViolation
too few/many array items
wrong JSON type                 TypeConstraintViolation
enum, length, range, pattern    PropertyConstraintViolation
unexpected property, other      FormatViolation
=============================  ==============================================================
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import jsonschema.exceptions  # type: ignore[import-untyped]
from ocpp.messages import MessageType, get_validator
from ocpp.v201.enums import Action

OCPP_VERSION = "2.0.1"
UNREADABLE_ID = "-1"
MAX_DESCRIPTION = 255  # OCPP-J: errorDescription is at most 255 characters
CALL, CALLRESULT, CALLERROR = 2, 3, 4

_OCCURRENCE = {"required", "minItems", "maxItems", "minProperties", "maxProperties"}
_PROPERTY = {
    "enum",
    "maxLength",
    "minLength",
    "maximum",
    "minimum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "pattern",
    "multipleOf",
    "format",
}
_KNOWN_ACTIONS = {a.value for a in Action}


@dataclass(frozen=True)
class Rejection:
    """A CALL we answer with a CALLERROR instead of handing it to a handler."""

    message_id: str
    code: str
    description: str
    action: str = ""
    field: str = ""

    def __post_init__(self) -> None:
        # descriptions quote what the CSMS sent, which may be megabytes
        object.__setattr__(self, "description", _shorten(self.description))

    def frame(self) -> str:
        details = {"field": self.field} if self.field else {}
        return json.dumps([CALLERROR, self.message_id, self.code, self.description, details])

    def log_line(self) -> str:
        where = f" field '{self.field}'" if self.field else ""
        what = self.action or "frame"
        return f"{what} [{self.message_id}] refused with {self.code}:{where} {self.description}"


def classify(raw: str | bytes, handled: Collection[str]) -> Rejection | None:
    """None when ``raw`` may go to the `ocpp` package, else the CALLERROR to answer with."""
    try:
        frame = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        return Rejection(UNREADABLE_ID, "RpcFrameworkError", "frame is not valid JSON")
    if not isinstance(frame, list) or not frame:
        return Rejection(UNREADABLE_ID, "RpcFrameworkError", "frame is not a JSON array")
    message_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else UNREADABLE_ID
    kind = frame[0]
    if kind in (CALLRESULT, CALLERROR):
        return None
    if kind != CALL:
        return Rejection(message_id, "MessageTypeNotSupported", f"message type {kind!r}")
    if len(frame) != 4 or message_id == UNREADABLE_ID or not isinstance(frame[2], str):
        return Rejection(message_id, "RpcFrameworkError", "a CALL is [2, id, action, payload]")
    action, payload = frame[2], frame[3]
    if not isinstance(payload, dict):
        return Rejection(message_id, "FormatViolation", "payload is not an object", action)
    if action not in _KNOWN_ACTIONS:
        return Rejection(message_id, "NotImplemented", f"{action} is not an OCPP 2.0.1 action")
    if action not in handled:
        return Rejection(message_id, "NotSupported", f"{action} is not supported", action)
    return _check_payload(message_id, action, payload)


def _check_payload(message_id: str, action: str, payload: dict[str, Any]) -> Rejection | None:
    validator = get_validator(MessageType.Call, action, OCPP_VERSION)
    error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
    if error is None:
        return None
    code = _code_for(str(error.validator))
    return Rejection(message_id, code, error.message, action, _field(error))


def _field(error: jsonschema.exceptions.ValidationError) -> str:
    """The dotted path of the offending field; for a missing or unexpected property the
    property itself, not the object that lacks or has it."""
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        path += [name for name in error.validator_value if name not in error.instance][:1]
    elif error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        path += sorted(name for name in error.instance if name not in known)[:1]
    return ".".join(path)


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def _code_for(validator: str) -> str:
    if validator in _OCCURRENCE:
        return "OccurrenceConstraintViolation"
    if validator == "type":
        return "TypeConstraintViolation"
    if validator in _PROPERTY:
        return "PropertyConstraintViolation"
    return "FormatViolation"
