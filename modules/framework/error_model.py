"""EVerest error objects (device faults), their factory and the active-error bookkeeping.

Not to be confused with Python exceptions (errors.py): these are the objects a module raises
on ``.../error/<namespace>/<Name>`` (protocol reference section 6). A C++ peer requires
every key, so ``to_wire`` always writes all of them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .errors import MessageParsingError

WallClock = Callable[[], datetime]


class Severity(StrEnum):
    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"


class ErrorState(StrEnum):
    ACTIVE = "Active"
    CLEARED_BY_MODULE = "ClearedByModule"
    CLEARED_BY_REBOOT = "ClearedByReboot"


REQUIRED_KEYS = (
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
)


def rfc3339_ms(moment: datetime) -> str:
    """``2026-05-06T09:41:12.345Z``: the form EVerest's date::format produces."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Origin:
    module_id: str
    implementation_id: str
    mapping: dict[str, int] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "module_id": self.module_id,
            "implementation_id": self.implementation_id,
        }
        if self.mapping:
            wire["mapping"] = dict(self.mapping)
        return wire


@dataclass(frozen=True)
class ErrorObject:
    type: str
    description: str
    message: str
    origin: Origin
    severity: Severity
    timestamp: str
    uuid: str
    state: ErrorState = ErrorState.ACTIVE
    sub_type: str = ""
    vendor_id: str = "everest"

    @property
    def key(self) -> tuple[str, str]:
        return (self.type, self.sub_type)

    @property
    def active(self) -> bool:
        return self.state is ErrorState.ACTIVE

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "description": self.description,
            "message": self.message,
            "origin": self.origin.to_wire(),
            "severity": self.severity.value,
            "timestamp": self.timestamp,
            "uuid": self.uuid,
            "state": self.state.value,
            "sub_type": self.sub_type,
            "vendor_id": self.vendor_id,
        }

    @classmethod
    def from_wire(cls, data: Any) -> ErrorObject:
        """Strict parse: a missing key is a parsing error, as it would be in C++."""
        if not isinstance(data, dict):
            raise MessageParsingError("error object is not a JSON object")
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise MessageParsingError(f"error object lacks {', '.join(missing)}")
        origin = data["origin"]
        if not isinstance(origin, dict) or not {"module_id", "implementation_id"} <= set(origin):
            raise MessageParsingError("error origin needs module_id and implementation_id")
        try:
            state = ErrorState(data["state"])
        except ValueError:
            raise MessageParsingError(f"unknown error state {data['state']!r}") from None
        try:
            severity = Severity(data["severity"])
        except ValueError:  # C++ reads an unknown severity as High
            severity = Severity.HIGH
        return cls(
            type=str(data["type"]),
            description=str(data["description"]),
            message=str(data["message"]),
            origin=Origin(
                str(origin["module_id"]), str(origin["implementation_id"]), origin.get("mapping")
            ),
            severity=severity,
            timestamp=str(data["timestamp"]),
            uuid=str(data["uuid"]),
            state=state,
            sub_type=str(data["sub_type"]),
            vendor_id=str(data["vendor_id"]),
        )


@dataclass
class ErrorFactory:
    """Creates complete error objects for one implementation (everestpy's error factory)."""

    origin: Origin
    describe: Callable[[str], str]
    now: WallClock = field(default=lambda: datetime.now(UTC))
    new_id: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))

    def create(
        self,
        error_type: str,
        sub_type: str = "",
        message: str = "",
        severity: Severity = Severity.LOW,
        vendor_id: str = "everest",
    ) -> ErrorObject:
        return ErrorObject(
            type=error_type,
            description=self.describe(error_type),
            message=message,
            origin=self.origin,
            severity=severity,
            timestamp=rfc3339_ms(self.now()),
            uuid=self.new_id(),
            sub_type=sub_type,
            vendor_id=vendor_id,
        )


class ActiveErrors:
    """The set of active errors, keyed the way EVerest deduplicates them."""

    def __init__(self) -> None:
        self._active: dict[tuple[str, str, str, str], ErrorObject] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(error: ErrorObject) -> tuple[str, str, str, str]:
        return (error.type, error.sub_type, error.origin.module_id, error.origin.implementation_id)

    def add(self, error: ErrorObject) -> bool:
        """Store an active error; False when the same one is already active."""
        with self._lock:
            key = self._key(error)
            if key in self._active:
                return False
            self._active[key] = error
            return True

    def clear(
        self, error_type: str | None, sub_type: str | None = None, *, origin: Origin | None = None
    ) -> list[ErrorObject]:
        """Remove matching active errors and return them with state ClearedByModule.

        ``error_type`` None clears all; ``sub_type`` None matches any sub type.
        """
        with self._lock:
            matching = [
                key
                for key, error in self._active.items()
                if (error_type is None or error.type == error_type)
                and (sub_type is None or error.sub_type == sub_type)
                and (
                    origin is None
                    or (error.origin.module_id, error.origin.implementation_id)
                    == (origin.module_id, origin.implementation_id)
                )
            ]
            removed = [self._active.pop(key) for key in matching]
        return [replace(error, state=ErrorState.CLEARED_BY_MODULE) for error in removed]

    def is_active(self, error_type: str, sub_type: str | None = None) -> bool:
        with self._lock:
            return any(
                e.type == error_type and (sub_type is None or e.sub_type == sub_type)
                for e in self._active.values()
            )

    def snapshot(self) -> list[ErrorObject]:
        with self._lock:
            return list(self._active.values())
