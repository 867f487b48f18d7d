"""StationLink: the adapter's MQTT connection to one everkit/EVerest station.

The adapter is no EVerest module (no manager starts it, it has no manifest); towards each
station it acts as an outside caller with its own origin id, in EVerest's exact wire
format (``framework.wire``):

* ``set_external_limits`` calls the cmd of the PyEnergyNode the station's caps enter at and
  waits for the CmdResult with its call id. The value is checked against the contract
  (``external_energy_limits``) first, so a mistake of ours raises SchemaValidationError and
  never reaches the station; the node's answer raises the framework's CommandError subclass.
* every reading of each configured powermeter goes to ``on_power(station, watts)``.
* paho reconnects by itself (``framework.transport``), which then resubscribes; once the
  broker has acknowledged the subscriptions again, ``on_connected(station)`` runs. It also
  runs when the node publishes ModuleReady: a restarted node has lost its limits while our
  connection stayed up. After a broker restart the node reconnects at its own pace (1-5 s
  back-off), so a push made at once from ``on_connected`` may time out: retry it later.

Threads: ``on_power`` runs on paho's network thread (keep it short). ``on_connected`` runs
on the link's own notifier thread, never on paho's, so it may call ``set_external_limits``
and wait: the result is delivered by the network thread, which stays free.
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from ..framework.definitions import Definitions
from ..framework.errors import (
    CommandTimeout,
    ConfigError,
    MessageParsingError,
    SchemaValidationError,
    TransportError,
)
from ..framework.module import settle_call
from ..framework.transport import BrokerAddress, MqttCredentials, Transport
from ..framework.validation import InterfaceValidators, ValidatorCache
from ..framework.wire import MsgType, Topics, cmd_payload, decode

log = logging.getLogger(__name__)

INTERFACE = "external_energy_limits"
COMMAND = "set_external_limits"
POWERMETER_VAR = "powermeter"
FLOW_REQUEST_VAR = "energy_flow_request"


@dataclass(frozen=True)
class StationAddress:
    name: str  # the station's name in the adapter config
    broker: BrokerAddress
    prefix: str = "everest/"
    node: str = "uftp_limit"  # module id of the PyEnergyNode whose external_limits we set
    implementation: str = "external_limits"
    meters: tuple[tuple[str, str], ...] = ()  # (module_id, implementation_id) of powermeters
    origin: str = "uftp_agr"
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.password and not self.username:
            # a password alone would be dropped silently and the login fail obscurely
            raise ConfigError("a password needs a username", module=self.name, key="password")

    @property
    def credentials(self) -> MqttCredentials | None:
        """None without a username: the transport then falls back to EV_MQTT_USERNAME /
        EV_MQTT_PASSWORD, like every everkit MQTT client."""
        if not self.username:
            return None
        return MqttCredentials(self.username, self.password)


@functools.cache
def limits_validators() -> InterfaceValidators:
    # compiled once per process: every link checks against the same contract
    return ValidatorCache(Definitions.from_dirs())[INTERFACE]


class _NotifyingTransport(Transport):
    """A Transport that reports each (re)connection once the broker has acknowledged the
    resubscription, i.e. when a command sent now can be answered."""

    def __init__(self, *args: Any, on_ready: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_ready = on_ready
        self._announced = False  # paho's network thread only
        self.refused: str | None = None  # why the broker last refused us (e.g. credentials)

    def _announce(self) -> None:
        if self.connected and not self._announced:
            self._announced = True
            self._on_ready()

    def _on_connect(self, *args: Any) -> None:
        reason = args[3]
        self.refused = str(reason) if reason.is_failure else None
        super()._on_connect(*args)
        self._announce()

    def _on_subscribe(self, *args: Any) -> None:
        super()._on_subscribe(*args)
        self._announce()

    def _on_disconnect(self, *args: Any) -> None:
        super()._on_disconnect(*args)
        self._announced = False


_STOP = object()


class StationLink:
    def __init__(
        self,
        address: StationAddress,
        *,
        on_power: Callable[[str, float], None],
        on_connected: Callable[[str], None] = lambda name: None,
        on_schedule: Callable[[str, dict[str, Any]], None] = lambda name, request: None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.address = address
        self._on_power = on_power
        self._on_schedule = on_schedule
        self._on_connected = on_connected
        self._new_id = new_id
        self._validators = limits_validators()
        topics = Topics(address.prefix)
        self._cmd_topic = topics.cmd(address.node, address.implementation, COMMAND)
        self._response_topic = topics.cmd_response(
            address.node, address.implementation, COMMAND, address.origin
        )
        self._meter_topics = [topics.var(m, i, POWERMETER_VAR) for m, i in address.meters]
        self._pending: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._broken: set[tuple[str, str]] = set()  # (topic, field) already warned about
        self._events: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._notifier: threading.Thread | None = None
        self._transport = _NotifyingTransport(
            address.broker,
            client_id=f"{address.origin}-{address.name}-{uuid.uuid4().hex[:8]}",
            credentials=address.credentials,
            on_ready=lambda: self._events.put(None),
        )
        # subscribed before connecting: the first connect then waits for their SUBACK
        self._transport.subscribe(self._response_topic, self._on_result, inline=True)
        for topic in self._meter_topics:
            self._transport.subscribe(topic, self._on_reading, inline=True)
        # what the tree beneath the node will allow, ISP by ISP: part of the baseline
        self._transport.subscribe(
            topics.var(address.node, "energy_grid", FLOW_REQUEST_VAR), self._on_flow, inline=True
        )
        # a restarted node has lost its external limits, though our connection never broke
        self._transport.subscribe(
            topics.module_ready(address.node), self._on_node_ready, inline=True
        )

    # lifecycle

    def start(self, connect_timeout_s: float = 10.0) -> None:
        """Connect; raises TransportError when the broker does not answer in time. Once
        connected, paho keeps reconnecting on its own; a link that failed to start is spent
        (make a new one to try again)."""
        self._notifier = threading.Thread(
            target=self._notify, name=f"station-link-{self.address.name}", daemon=True
        )
        self._notifier.start()
        try:
            self._transport.connect(connect_timeout_s)
        except TransportError:
            self._events.put(_STOP)
            refused = self._transport.refused
            if refused is None:
                raise
            raise TransportError(
                f"station {self.address.name}: MQTT broker {self.address.broker} refused the "
                f"connection: {refused}"
            ) from None

    def stop(self) -> None:
        self._transport.close()
        self._events.put(_STOP)
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for future in pending:
            future.set_exception(TransportError(f"station {self.address.name}: link stopped"))
        if self._notifier is not None and self._notifier is not threading.current_thread():
            self._notifier.join(5.0)

    @property
    def connected(self) -> bool:
        return self._transport.connected

    def _notify(self) -> None:
        while self._events.get() is not _STOP:
            try:
                self._on_connected(self.address.name)
            except Exception:
                log.exception("station %s: on_connected failed", self.address.name)

    def _on_node_ready(self, topic: str, payload: bytes) -> None:
        try:
            ready = decode(payload).msg_type == MsgType.MODULE_READY
        except MessageParsingError:
            ready = False
        if ready:
            log.info("station %s: node '%s' (re)started", self.address.name, self.address.node)
            self._events.put(None)
        else:
            log.debug("station %s: ignored %s", self.address.name, topic)

    # set_external_limits

    def set_external_limits(self, limits: dict[str, Any], timeout_s: float = 5.0) -> None:
        """Replace the node's external limits (energy/ExternalLimits); returns once the
        node has taken them."""
        args = self._validators.check_args(COMMAND, {"value": limits})
        call_id = self._new_id()
        try:
            payload = cmd_payload(call_id, args, self.address.origin)
        except ValueError as exc:  # NaN or infinity: JSON has no form for them
            raise SchemaValidationError(
                f"{INTERFACE}.{COMMAND} arguments", "args", str(exc)
            ) from None
        if not self.connected:
            raise TransportError(
                f"station {self.address.name}: not connected to {self.address.broker}"
            )
        future: Future[None] = Future()
        with self._lock:
            self._pending[call_id] = future
        self._transport.publish(self._cmd_topic, payload)
        try:
            future.result(timeout_s)
        except FutureTimeout:
            with self._lock:
                self._pending.pop(call_id, None)
            raise CommandTimeout(
                f"station {self.address.name}: no result for {COMMAND} from "
                f"'{self.address.node}' within {timeout_s:g} s"
            ) from None

    def _on_result(self, topic: str, payload: bytes) -> None:
        try:
            envelope = decode(payload)
            inner = envelope.data["data"]
            call_id = inner["id"]
        except (MessageParsingError, KeyError, TypeError):
            log.warning(
                "station %s: dropped malformed command result on %s", self.address.name, topic
            )
            return
        with self._lock:
            future = self._pending.pop(call_id, None) if isinstance(call_id, str) else None
        if future is None:
            return  # a call we gave up on, or another caller's with our origin
        settle_call(future, inner, self._validators, COMMAND)

    # the node's energy_flow_request

    def _on_flow(self, topic: str, payload: bytes) -> None:
        try:
            request = decode(payload).data["data"]
            if not isinstance(request, dict) or not isinstance(request.get("children"), list):
                raise TypeError("no 'children' list")
        except (MessageParsingError, KeyError, TypeError) as exc:
            log.warning(
                "station %s: dropped energy_flow_request on %s: %s", self.address.name, topic, exc
            )
            return
        try:
            self._on_schedule(self.address.name, request)
        except Exception:
            log.exception("station %s: on_schedule failed", self.address.name)

    # powermeter readings

    def _on_reading(self, topic: str, payload: bytes) -> None:
        try:
            watts = power_of(payload)
        except MalformedReading as exc:
            # once per broken field until a good reading: a meter stuck sending the same
            # bad value must not flood the log
            if (topic, exc.field) not in self._broken:
                self._broken.add((topic, exc.field))
                log.warning(
                    "station %s: dropped powermeter reading on %s: field '%s' %s",
                    self.address.name,
                    topic,
                    exc.field,
                    exc.reason,
                )
            return
        if self._broken:
            self._broken = {b for b in self._broken if b[0] != topic}
        try:
            self._on_power(self.address.name, watts)
        except Exception:
            log.exception("station %s: on_power failed", self.address.name)


class MalformedReading(Exception):
    """A powermeter payload without a usable ``power_W.total``; ``field`` names the culprit."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def power_of(payload: bytes) -> float:
    """``power_W.total`` of a wire Var carrying powermeter/Powermeter."""
    try:
        envelope = decode(payload)
    except MessageParsingError as exc:
        raise MalformedReading("payload", exc.message) from None
    if envelope.msg_type != MsgType.VAR:
        raise MalformedReading("msg_type", f"is {envelope.msg_type}, not Var")
    data = envelope.data
    if not isinstance(data, dict) or "data" not in data:
        raise MalformedReading("data", "has no 'data' object")
    reading = data["data"]
    if not isinstance(reading, dict):
        raise MalformedReading("data.data", "is not a Powermeter object")
    power = reading.get("power_W")
    if not isinstance(power, dict) or "total" not in power:
        raise MalformedReading("power_W.total", "is missing")
    total = power["total"]
    if isinstance(total, bool) or not isinstance(total, int | float) or not math.isfinite(total):
        raise MalformedReading("power_W.total", f"is {total!r}, not a finite number")
    return float(total)
