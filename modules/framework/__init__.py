"""The everkit framework: EVerest's wire protocol, contract and module API in pure Python."""

from .definitions import ContractDirs, Definitions, Interface, contract_root
from .error_model import ErrorFactory, ErrorObject, ErrorState, Origin, Severity
from .errors import (
    CommandError,
    CommandShutdown,
    CommandTimeout,
    ConfigError,
    ContractError,
    EverkitError,
    HandlerException,
    MessageParsingError,
    NotReady,
    RemoteSchemaError,
    SchemaValidationError,
    TransportError,
)
from .module import Module, ModuleInfo
from .session import Fulfillment, ModuleConfig, ModuleEnvironment
from .transport import BrokerAddress
from .wire import DEFAULT_CMD_TIMEOUT_S, MsgType, Topics

__all__ = [
    "DEFAULT_CMD_TIMEOUT_S",
    "BrokerAddress",
    "CommandError",
    "CommandShutdown",
    "CommandTimeout",
    "ConfigError",
    "ContractDirs",
    "ContractError",
    "Definitions",
    "ErrorFactory",
    "ErrorObject",
    "ErrorState",
    "EverkitError",
    "Fulfillment",
    "HandlerException",
    "Interface",
    "MessageParsingError",
    "Module",
    "ModuleConfig",
    "ModuleEnvironment",
    "ModuleInfo",
    "MsgType",
    "NotReady",
    "Origin",
    "RemoteSchemaError",
    "SchemaValidationError",
    "Severity",
    "Topics",
    "TransportError",
    "contract_root",
]
