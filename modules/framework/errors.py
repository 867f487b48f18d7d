"""The one exception root of everkit and its tree.

    EverkitError
    ├── ContractError            a YAML contract file is broken, or code disagrees with it
    ├── ConfigError              a runtime config or module config is invalid (file, module, key)
    ├── SchemaValidationError    a value does not match its schema (names the field)
    ├── TransportError           the MQTT broker cannot be reached
    └── CommandError             a command call failed; ``error_type`` is EVerest's wire name
        ├── MessageParsingError      "MessageParsingError"
        ├── RemoteSchemaError        "SchemaValidationError" reported by the other side
        ├── HandlerException         "HandlerException"
        ├── CommandTimeout           "CmdTimeout"
        ├── CommandShutdown          "Shutdown"
        └── NotReady                 "NotReady"

Local mistakes (calling with bad arguments, publishing a bad var) raise
``SchemaValidationError`` before anything is sent; failures reported by the peer arrive as
``CommandError`` subclasses, so callers can tell "I broke the contract" from "they did".
"""

from __future__ import annotations


class EverkitError(Exception):
    """Root of every exception everkit raises on purpose."""


class ContractError(EverkitError):
    """A contract file is invalid, or handlers and the interface disagree."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ", ".join(part for part in (file, f"key '{key}'" if key else None) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.file = file
        self.key = key


class ConfigError(EverkitError):
    """A runtime config is invalid. Names the file, the module and the key at fault."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        module: str | None = None,
        key: str | None = None,
    ) -> None:
        parts = [file, f"module '{module}'" if module else None, f"key '{key}'" if key else None]
        where = ", ".join(part for part in parts if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.file = file
        self.module = module
        self.key = key


class SchemaValidationError(EverkitError):
    """A value failed its JSON schema. ``field`` is a dotted path such as ``args.voltage``."""

    def __init__(self, what: str, field: str, reason: str) -> None:
        super().__init__(f"{what}: field '{field}' {reason}")
        self.what = what
        self.field = field
        self.reason = reason


class TransportError(EverkitError):
    """The MQTT connection could not be established or was lost for good."""


class CommandError(EverkitError):
    """A command call ended in an EVerest command error."""

    error_type = "HandlerException"

    def __init__(self, message: str) -> None:
        super().__init__(f"{self.error_type}: {message}")
        self.message = message

    @staticmethod
    def from_wire(error_type: str, message: str) -> CommandError:
        cls = _COMMAND_ERRORS.get(error_type, HandlerException)
        return cls(message)


class MessageParsingError(CommandError):
    error_type = "MessageParsingError"


class RemoteSchemaError(CommandError):
    error_type = "SchemaValidationError"


class HandlerException(CommandError):
    error_type = "HandlerException"


class CommandTimeout(CommandError):
    error_type = "CmdTimeout"


class CommandShutdown(CommandError):
    error_type = "Shutdown"


class NotReady(CommandError):
    error_type = "NotReady"


_COMMAND_ERRORS: dict[str, type[CommandError]] = {
    cls.error_type: cls
    for cls in (
        MessageParsingError,
        RemoteSchemaError,
        HandlerException,
        CommandTimeout,
        CommandShutdown,
        NotReady,
    )
}
