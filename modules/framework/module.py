"""The module API: a Pythonic equivalent of everestpy, speaking EVerest's wire format.

Typical use::

    module = Module.start()                      # EV_* environment, GetConfig, definitions
    module.implement_command("main", "setMode", set_mode)   # set_mode(mode=..., phase=...)
    module.subscribe_variable("powersupply", "voltage_current", on_vc)
    module.init_done(on_ready)                   # checks handlers, sends ModuleReady
    module.serve_forever()                       # until SIGTERM / SIGINT

Everything crossing the bus is validated against the interface definitions, both ways:
arguments and results on caller and callee, vars on publish and on receive, error types on
raise. A local violation raises ``SchemaValidationError`` before anything is sent; a bad
incoming message is answered with a ``SchemaValidationError`` result or dropped with one log
line naming module, topic and field. Nothing a peer sends can stop the process.
"""

from __future__ import annotations

import inspect
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .definitions import ContractDirs, Definitions, contract_root, load_yaml
from .error_model import ActiveErrors, ErrorFactory, ErrorObject, Origin, WallClock
from .errors import (
    CommandError,
    CommandShutdown,
    CommandTimeout,
    ConfigError,
    ContractError,
    EverkitError,
    MessageParsingError,
    RemoteSchemaError,
    SchemaValidationError,
)
from .session import (
    Fulfillment,
    ModuleConfig,
    ModuleEnvironment,
    fetch_retained,
    request_module_config,
)
from .signals import MainThreadWaiter
from .transport import Transport
from .validation import InterfaceValidators, ValidatorCache
from .wire import (
    DEFAULT_CMD_TIMEOUT_S,
    ERROR_MSG_KEY,
    ERROR_TYPE_KEY,
    MsgType,
    Topics,
    cmd_payload,
    decode,
    encode,
    error_result_payload,
    ready_payload,
    result_payload,
    var_payload,
)

log = logging.getLogger(__name__)

CommandHandler = Callable[..., Any]
VarCallback = Callable[[Any], None]
ErrorCallback = Callable[[ErrorObject], None]
Requirement = str | Fulfillment


@dataclass(frozen=True)
class ModuleInfo:
    id: str
    name: str
    manifest: dict[str, Any]


@dataclass
class _ErrorSubscription:
    error_type: str | None  # None: every error of that connection
    on_raise: ErrorCallback
    on_clear: ErrorCallback


@dataclass
class _Connection:
    fulfillment: Fulfillment
    interface: str
    error_subscriptions: list[_ErrorSubscription] = field(default_factory=list)


class Module:
    """One EVerest module instance on the bus."""

    def __init__(
        self,
        env: ModuleEnvironment,
        transport: Transport,
        config: ModuleConfig,
        manifest: dict[str, Any],
        definitions: Definitions,
        *,
        now: WallClock | None = None,
        new_id: Callable[[], str] | None = None,
        default_timeout: float = DEFAULT_CMD_TIMEOUT_S,
    ) -> None:
        self.env = env
        self.config = config
        self.info = ModuleInfo(config.module_id, config.module_name, manifest)
        self.topics = Topics(env.everest_prefix)
        self.default_timeout = default_timeout
        self._transport = transport
        self._validators = ValidatorCache(definitions)
        self._now: WallClock = now or (lambda: datetime.now(UTC))
        self._new_id = new_id or (lambda: str(uuid.uuid4()))
        self._provides: dict[str, str] = {
            impl: spec["interface"] for impl, spec in (manifest.get("provides") or {}).items()
        }
        self._handlers: dict[tuple[str, str], CommandHandler] = {}
        self._pending: dict[str, tuple[Future[Any], InterfaceValidators, str]] = {}
        self._response_topics: set[str] = set()
        self._var_subscriptions: dict[str, list[VarCallback]] = {}
        self._raised = ActiveErrors()  # what we raised, per impl
        self._seen = ActiveErrors()  # what our requirements raised
        self._connections = self._resolve_connections(manifest)
        self._ready_callbacks: list[Callable[[], None]] = []
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._waiter: MainThreadWaiter | None = None
        self._lock = threading.Lock()
        self._check_provided_interfaces()
        transport.subscribe(self.topics.global_ready, self._on_global_ready)
        self._publish_metadata()
        self._subscribe_requirement_errors(manifest)

    # construction from the environment

    @classmethod
    def start(
        cls,
        env: ModuleEnvironment | None = None,
        *,
        contract: Path | None = None,
        connect_timeout: float = 30.0,
        config_timeout: float = 60.0,
        retained_timeout: float = 5.0,
        **kwargs: Any,
    ) -> Module:
        """Connect, fetch our config and the definitions, and build the module.

        Definitions come from the manager's retained topics when present; type files the
        manager did not publish (a C++ manager publishes none unless validate_schema is on)
        and everything else fall back to the local contract folders.
        """
        env = env or ModuleEnvironment.from_environ()
        transport = Transport(env.broker, client_id=f"{env.module_id}-{uuid.uuid4().hex[:8]}")
        transport.connect(connect_timeout)
        try:
            topics = Topics(env.everest_prefix)
            config = request_module_config(transport, topics, env.module_id, config_timeout)
            root = contract or contract_root()
            retained = fetch_retained(transport, topics, config.module_name, retained_timeout)
            dirs = ContractDirs.under(root)
            if retained is None:
                log.info("no retained definitions from the manager; using %s", root)
                definitions = Definitions(dirs=dirs)
                manifest = _local_manifest(root, config.module_name)
            else:
                definitions = Definitions.from_retained(retained.interfaces, retained.types, dirs)
                manifest = retained.manifests.get(config.module_name) or _local_manifest(
                    root, config.module_name
                )
            return cls(env, transport, config, manifest, definitions, **kwargs)
        except BaseException:
            transport.close()
            raise

    def _resolve_connections(self, manifest: dict[str, Any]) -> dict[str, list[_Connection]]:
        requires = manifest.get("requires") or {}
        resolved: dict[str, list[_Connection]] = {}
        for req_id, fulfillments in self.config.connections.items():
            if req_id not in requires:
                raise ContractError(
                    f"module '{self.info.id}' is connected on '{req_id}', "
                    f"which manifest {self.info.name} does not require"
                )
            interface = requires[req_id]["interface"]
            resolved[req_id] = [_Connection(f, interface) for f in fulfillments]
        return resolved

    def _check_provided_interfaces(self) -> None:
        for impl, interface in self._provides.items():
            try:
                self._validators[interface]
            except EverkitError as exc:
                raise ContractError(
                    f"implementation '{impl}' provides '{interface}', which cannot be loaded: {exc}"
                ) from None

    # introspection

    @property
    def implementations(self) -> dict[str, str]:
        """impl id -> interface name."""
        return dict(self._provides)

    def connections(self, requirement_id: str) -> list[Fulfillment]:
        return [c.fulfillment for c in self._connections.get(requirement_id, [])]

    def mapping_of(self, connection: Fulfillment) -> dict[str, int] | None:
        """The 3-tier mapping (``{"evse": 1, "connector": 1}``) of the implementation that
        serves ``connection``, as the manager reports it; None when it has none."""
        mapping = self.config.mappings.get(connection.module_id) or {}
        impl = (mapping.get("implementations") or {}).get(connection.implementation_id)
        merged = dict(mapping.get("module") or {})
        merged.update(impl or {})
        return merged or None

    @property
    def module_config(self) -> dict[str, Any]:
        return self.config.module

    def impl_config(self, impl_id: str) -> dict[str, Any]:
        return self.config.implementations.get(impl_id, {})

    # commands, callee side

    def implement_command(self, impl_id: str, cmd: str, handler: CommandHandler) -> None:
        """Serve ``cmd`` of implementation ``impl_id``; the handler gets the arguments as
        keyword arguments and returns the result (None for commands without one)."""
        validators = self._impl_validators(impl_id)
        if not validators.has_command(cmd):
            raise ContractError(
                f"implementation '{impl_id}' ({validators.interface.name}) has no command '{cmd}'"
            )
        if (impl_id, cmd) in self._handlers:
            raise ContractError(f"command '{impl_id}.{cmd}' already has a handler")
        _check_signature(handler, impl_id, cmd, list(validators.interface.cmds[cmd].arguments))
        self._handlers[(impl_id, cmd)] = handler
        topic = self.topics.cmd(self.info.id, impl_id, cmd)
        self._transport.subscribe(
            topic, lambda _t, payload: self._serve_command(impl_id, cmd, validators, payload)
        )

    def _serve_command(
        self, impl_id: str, cmd: str, validators: InterfaceValidators, payload: bytes
    ) -> None:
        topic = self.topics.cmd(self.info.id, impl_id, cmd)
        try:
            envelope = decode(payload)
            data = envelope.data
            if envelope.msg_type != MsgType.CMD or not isinstance(data, dict):
                raise MessageParsingError(f"expected a Cmd, got {envelope.msg_type}")
            call_id, origin = data.get("id"), data.get("origin")
            if not isinstance(call_id, str) or not isinstance(origin, str) or not origin:
                raise MessageParsingError("Cmd needs string 'id' and 'origin'")
        except MessageParsingError as exc:
            log.warning("dropped command on %s: %s", topic, exc.message)
            return
        response_topic = self.topics.cmd_response(self.info.id, impl_id, cmd, origin)
        retval: Any = None
        try:
            args = validators.check_args(cmd, data.get("args"))
            retval = self._handlers[(impl_id, cmd)](**args)
            validators.check_result(cmd, retval)
            reply = result_payload(call_id, self.info.id, retval)
        except SchemaValidationError as exc:
            log.warning("command %s.%s from %s: %s", impl_id, cmd, origin, exc)
            reply = _safe_error_result(call_id, self.info.id, "SchemaValidationError", exc, retval)
        except CommandError as exc:  # raised on purpose by the handler: no traceback
            log.info("command %s.%s from %s refused: %s", impl_id, cmd, origin, exc.message)
            reply = _safe_error_result(call_id, self.info.id, exc.error_type, exc.message)
        except Exception as exc:
            log.exception("handler of %s.%s failed", impl_id, cmd)
            reply = _safe_error_result(call_id, self.info.id, "HandlerException", exc)
        self._transport.publish(response_topic, reply)

    # commands, caller side

    def call_command(
        self,
        requirement: Requirement,
        cmd: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call and wait for the result; raises ``CommandError`` subclasses on failure."""
        future = self.call_command_async(requirement, cmd, args)
        limit = self.default_timeout if timeout is None else timeout
        try:
            return future.result(limit)
        except FutureTimeout:
            self._abandon(future)
            raise CommandTimeout(f"no result for '{cmd}' within {limit:g} s") from None

    def call_command_async(
        self, requirement: Requirement, cmd: str, args: Mapping[str, Any] | None = None
    ) -> Future[Any]:
        """Send the call and return a future (``asyncio.wrap_future`` makes it awaitable).

        The caller owns the timeout: ``future.result(timeout)``; a future abandoned on
        timeout should be passed to ``cancel_call`` so its slot is freed.
        """
        connection = self._connection(requirement)
        validators = self._validators[connection.interface]
        checked = validators.check_args(cmd, args)
        target = connection.fulfillment
        topic = self.topics.cmd(target.module_id, target.implementation_id, cmd)
        response = self.topics.cmd_response(
            target.module_id, target.implementation_id, cmd, self.info.id
        )
        with self._lock:
            if response not in self._response_topics:
                self._response_topics.add(response)
                self._transport.subscribe(response, self._on_result, inline=True)
        call_id = self._new_id()
        future: Future[Any] = Future()
        self._pending[call_id] = (future, validators, cmd)
        # C++ callers send null for commands without arguments; so do we
        self._transport.publish(topic, cmd_payload(call_id, checked or None, self.info.id))
        return future

    def cancel_call(self, future: Future[Any]) -> None:
        self._abandon(future)

    def _abandon(self, future: Future[Any]) -> None:
        with self._lock:
            for call_id, (pending, _, _) in list(self._pending.items()):
                if pending is future:
                    del self._pending[call_id]
        future.cancel()

    def _on_result(self, topic: str, payload: bytes) -> None:
        try:
            envelope = decode(payload)
            inner = envelope.data["data"]
            if not isinstance(inner, dict):
                raise TypeError("result data is not an object")
            call_id = inner["id"]
        except (MessageParsingError, KeyError, TypeError):
            log.warning("dropped malformed command result on %s", topic)
            return
        entry = self._pending.pop(call_id, None) if isinstance(call_id, str) else None
        if entry is None:
            return  # a result for a call we gave up on, or not ours
        future, validators, cmd = entry
        settle_call(future, inner, validators, cmd)

    # variables

    def publish_variable(self, impl_id: str, var: str, value: Any) -> None:
        self._impl_validators(impl_id).check_var(var, value)
        try:
            payload = var_payload(value)
        except ValueError as exc:  # NaN / Infinity have no JSON form
            raise SchemaValidationError(f"var {var}", var, str(exc)) from None
        self._transport.publish(self.topics.var(self.info.id, impl_id, var), payload)

    def subscribe_variable(self, requirement: Requirement, var: str, callback: VarCallback) -> None:
        connection = self._connection(requirement)
        validators = self._validators[connection.interface]
        if var not in validators.interface.vars:
            raise ContractError(
                f"var '{var}' is not declared by interface '{connection.interface}'"
            )
        target = connection.fulfillment
        topic = self.topics.var(target.module_id, target.implementation_id, var)
        with self._lock:
            callbacks = self._var_subscriptions.setdefault(topic, [])
            first = not callbacks
            callbacks.append(callback)
        if first:
            self._transport.subscribe(
                topic, lambda t, payload: self._on_var(t, payload, validators, var)
            )

    def _on_var(
        self, topic: str, payload: bytes, validators: InterfaceValidators, var: str
    ) -> None:
        try:
            envelope = decode(payload)
            if envelope.msg_type != MsgType.VAR or not isinstance(envelope.data, dict):
                raise MessageParsingError(f"expected a Var, got {envelope.msg_type}")
            if "data" not in envelope.data:
                raise MessageParsingError("Var has no data.data")
            value = envelope.data["data"]
            validators.check_var(var, value)
        except MessageParsingError as exc:
            log.warning("module %s dropped var on %s: %s", self.info.id, topic, exc.message)
            return
        except SchemaValidationError as exc:
            log.warning(
                "module %s dropped var on %s: field '%s' %s",
                self.info.id,
                topic,
                exc.field,
                exc.reason,
            )
            return
        for callback in list(self._var_subscriptions.get(topic, [])):
            callback(value)

    # errors, provider side

    def error_factory(self, impl_id: str) -> ErrorFactory:
        interface = self._impl_validators(impl_id).interface
        origin = Origin(self.info.id, impl_id, self.config.impl_mapping(impl_id))
        return ErrorFactory(origin, interface.error_description, self._now, self._new_id)

    def raise_error(self, impl_id: str, error: ErrorObject) -> bool:
        """Publish a RaiseError; False if the same (type, sub_type) is already active."""
        self._impl_validators(impl_id).check_error_type(error.type)
        if not self._raised.add(error):
            return False
        self._transport.publish(
            self.topics.error(self.info.id, impl_id, error.type),
            encode(MsgType.RAISE_ERROR, error.to_wire()),
        )
        return True

    def clear_error(
        self, impl_id: str, error_type: str | None = None, sub_type: str | None = ""
    ) -> list[ErrorObject]:
        """Clear errors we raised: one (type, sub_type), every sub type (``sub_type=None``)
        or everything of the implementation (``error_type=None``)."""
        if error_type is not None:
            self._impl_validators(impl_id).check_error_type(error_type)
        else:
            sub_type = None
        cleared = self._raised.clear(error_type, sub_type, origin=Origin(self.info.id, impl_id))
        for error in cleared:
            self._transport.publish(
                self.topics.error(self.info.id, impl_id, error.type),
                encode(MsgType.CLEAR_ERROR, error.to_wire()),
            )
        return cleared

    def active_errors(self, impl_id: str | None = None) -> list[ErrorObject]:
        return [
            e
            for e in self._raised.snapshot()
            if impl_id is None or e.origin.implementation_id == impl_id
        ]

    # errors, requirer side

    def subscribe_error(
        self,
        requirement: Requirement,
        error_type: str | None,
        on_raise: ErrorCallback,
        on_clear: ErrorCallback,
    ) -> None:
        """Follow one error type (or all, with ``error_type=None``) of a connection."""
        connection = self._connection(requirement)
        if (
            error_type is not None
            and error_type not in self._validators[connection.interface].interface.error_types
        ):
            raise ContractError(
                f"error '{error_type}' is not declared by interface '{connection.interface}'"
            )
        connection.error_subscriptions.append(_ErrorSubscription(error_type, on_raise, on_clear))

    def seen_errors(self) -> list[ErrorObject]:
        """Errors our requirements raised and have not cleared yet."""
        return self._seen.snapshot()

    def _subscribe_requirement_errors(self, manifest: dict[str, Any]) -> None:
        requires = manifest.get("requires") or {}
        for req_id, connections in self._connections.items():
            if (requires[req_id].get("ignore") or {}).get("errors"):
                continue
            for connection in connections:
                target = connection.fulfillment
                for error_type in self._validators[connection.interface].interface.error_types:
                    topic = self.topics.error(
                        target.module_id, target.implementation_id, error_type
                    )
                    self._transport.subscribe(topic, self._error_handler(connection))

    def _error_handler(self, connection: _Connection) -> Callable[[str, bytes], None]:
        return lambda topic, payload: self._on_error(topic, payload, connection)

    def _on_error(self, topic: str, payload: bytes, connection: _Connection) -> None:
        try:
            envelope = decode(payload)
            if envelope.msg_type not in (MsgType.RAISE_ERROR, MsgType.CLEAR_ERROR):
                raise MessageParsingError(
                    f"expected RaiseError/ClearError, got {envelope.msg_type}"
                )
            error = ErrorObject.from_wire(envelope.data)
        except MessageParsingError as exc:
            log.warning("module %s dropped error on %s: %s", self.info.id, topic, exc.message)
            return
        # like EVerest, the state decides raise vs clear, not the msg_type
        if error.active:
            if not self._seen.add(error):
                return
            callbacks = [s.on_raise for s in connection.error_subscriptions if _wants(s, error)]
        else:
            if not self._seen.clear(error.type, error.sub_type, origin=error.origin):
                return
            callbacks = [s.on_clear for s in connection.error_subscriptions if _wants(s, error)]
        for callback in callbacks:
            callback(error)

    # lifecycle

    def init_done(self, on_ready: Callable[[], None] | None = None) -> None:
        """Refuse to start if a command has no handler; then tell the manager we're ready."""
        missing = [
            f"{impl}.{cmd}"
            for impl, interface in self._provides.items()
            for cmd in self._validators[interface].interface.cmds
            if (impl, cmd) not in self._handlers
        ]
        if missing:
            raise ContractError(
                f"module '{self.info.id}' ({self.info.name}) has no handler for: "
                + ", ".join(sorted(missing))
            )
        if on_ready is not None:
            self._ready_callbacks.append(on_ready)
        self._transport.publish(
            self.topics.module_ready(self.info.id), ready_payload(MsgType.MODULE_READY)
        )

    def _on_global_ready(self, _topic: str, payload: bytes) -> None:
        try:
            envelope = decode(payload)
        except MessageParsingError:
            return
        if envelope.msg_type != MsgType.GLOBAL_READY or envelope.data is not True:
            return
        if self._ready.is_set():
            log.warning("module %s got GlobalReady again; ignored", self.info.id)
            return
        self._ready.set()
        for callback in self._ready_callbacks:
            callback()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def broker_connected(self) -> bool:
        """False while the MQTT link is down (the transport is reconnecting)."""
        return self._transport.connected

    def serve_forever(self) -> None:
        """Block until SIGTERM or SIGINT (or ``stop()``), then disconnect cleanly."""
        if threading.current_thread() is threading.main_thread():
            with MainThreadWaiter(on_signal=lambda _sig: self._stopped.set()) as waiter:
                self._waiter = waiter
                while not self._stopped.is_set():
                    waiter.wait()
                self._waiter = None
        else:
            self._stopped.wait()
        self.close()

    def stop(self) -> None:
        """Make ``serve_forever`` return; callable from any thread."""
        self._stopped.set()
        waiter = self._waiter
        if waiter is not None:
            waiter.wake()

    @property
    def stopped(self) -> threading.Event:
        """Set once the module is stopping; background loops wait on it."""
        return self._stopped

    def close(self) -> None:
        self._stopped.set()
        for future, _, cmd in list(self._pending.values()):
            if not future.done():
                future.set_exception(CommandShutdown(f"module closed while '{cmd}' was pending"))
        self._pending.clear()
        self._transport.close()

    # helpers

    def _impl_validators(self, impl_id: str) -> InterfaceValidators:
        try:
            return self._validators[self._provides[impl_id]]
        except KeyError:
            raise ContractError(
                f"module '{self.info.id}' ({self.info.name}) provides no implementation '{impl_id}'"
            ) from None

    def _connection(self, requirement: Requirement) -> _Connection:
        if isinstance(requirement, Fulfillment):
            req_id, index = requirement.requirement_id, requirement.index
        else:
            req_id, index = requirement, 0
        connections = self._connections.get(req_id, [])
        if index >= len(connections):
            raise ContractError(
                f"module '{self.info.id}' has no connection {index} on requirement '{req_id}'"
            )
        return connections[index]

    def _publish_metadata(self) -> None:
        provides = {impl: {"interface": iface} for impl, iface in self._provides.items()}
        self._transport.publish(
            self.topics.metadata(self.info.id),
            encode(MsgType.GET_CONFIG_RESPONSE, {"module": self.info.name, "provides": provides}),
        )


def _wants(subscription: _ErrorSubscription, error: ErrorObject) -> bool:
    return subscription.error_type is None or subscription.error_type == error.type


def _safe_error_result(
    call_id: str, origin: str, error_type: str, exc: BaseException | str, retval: Any = None
) -> bytes:
    message = str(exc)
    try:
        return error_result_payload(call_id, origin, error_type, message, retval)
    except (TypeError, ValueError):  # a retval that is not JSON: drop it, keep the error
        return error_result_payload(call_id, origin, error_type, message)


def _check_signature(handler: CommandHandler, impl: str, cmd: str, arguments: list[str]) -> None:
    """The handler must accept exactly the interface's arguments as keywords."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # builtins and C callables: trust them
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    required = {
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    unknown = set(arguments) - accepted
    extra = required - set(arguments)
    if unknown or extra:
        problems = []
        if unknown:
            problems.append(f"does not accept {', '.join(sorted(unknown))}")
        if extra:
            problems.append(f"requires {', '.join(sorted(extra))}, which the interface lacks")
        raise ContractError(f"handler for '{impl}.{cmd}' " + " and ".join(problems))


def _local_manifest(root: Path, module_name: str) -> dict[str, Any]:
    for path in (root / "manifests" / f"{module_name}.yaml",):
        if path.is_file():
            manifest = load_yaml(path)
            if isinstance(manifest, dict):
                return manifest
    raise ConfigError(f"no manifest for module '{module_name}' under {root / 'manifests'}")


def settle_call(
    future: Future[Any], result: dict[str, Any], validators: InterfaceValidators, cmd: str
) -> None:
    """Complete a call's future from the inner ``data`` of its CmdResult: the callee's
    error as the matching CommandError, a return value that breaks the contract as
    RemoteSchemaError, else the value."""
    error = result.get("error")
    if isinstance(error, dict):
        future.set_exception(
            CommandError.from_wire(
                str(error.get(ERROR_TYPE_KEY, "HandlerException")),
                str(error.get(ERROR_MSG_KEY, "")),
            )
        )
        return
    retval = result.get("retval")
    try:
        validators.check_result(cmd, retval)
    except SchemaValidationError as exc:
        future.set_exception(RemoteSchemaError(str(exc)))
        return
    future.set_result(retval)
