"""The bridge's event loop: the CSMS connection, boot, heartbeat and the ordered outbox.

Everything here runs on one asyncio loop (module.py hands EVerest events over with
call_soon_threadsafe), so the cores need no locks. Messages leave through one sender, in
the order they were made; only Authorize, whose caller waits for it, goes directly (the
package still sends one CALL at a time).

Transaction messages are written to the SQLite queue before anything else happens to them:
made offline, they wait there (with ``offline: true``, E04); made online, they are sent from
the outbox and removed only when the CSMS answered. After every (re)connect and accepted boot
the status of every connector goes out, then the queue, in order. A CALLERROR or timeout on
an open connection is retried OCPPCommCtrlr.MessageAttempts times, MessageAttemptInterval
times the attempt number apart (the spec's rule for transaction-related messages); after
that the message is logged as undeliverable, with its payload, and dropped, as the spec
allows. A lost connection is not an attempt: the message stays queued. Other messages
(status, heartbeat, reports) live only in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ocpp.charge_point import camel_to_snake_case
from ocpp.exceptions import OCPPError
from ocpp.v201 import call
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from .. import wallclock
from .clock_step import ClockStep
from .connection import BackOff, Endpoint, open_connection
from .connector_status import ConnectorStatus
from .device_model import DeviceModel
from .ev_needs import charging_needs
from .limits import ExternalLimitReporter, RateChangeWatch
from .ports import PORT_TIMEOUT_S, EvsePort, NoEvents, OcppEventsPort, SystemPort, TokenPort
from .requests import CsmsRequestHandler
from .smart_charging import PushSettings, SmartCharging
from .station import FrameLog, Station
from .store import Store
from .timestamps import wire_timestamp
from .transactions import EvseTransactions, TxSettings

log = logging.getLogger("PyOCPP201")

Clock = Callable[[], datetime]
TICK_S = 0.5
DEFAULT_PUSH = PushSettings(interval_s=30, duration_s=600, unit="W")  # W: DC (EVerest's advice)
BOOT_RETRY_DEFAULT_S = 10
HELD_SECURITY_EVENTS = 100  # offline SecurityEventNotifications kept; beyond, the oldest drop


def utc_now() -> datetime:
    return wallclock.utc_now()  # datetime.now(UTC), steppable by tests


@dataclass
class Outgoing:
    action: str
    payload: dict[str, Any]  # camelCase, as on the wire
    queue_id: int | None = None  # set for messages kept in the SQLite queue


@dataclass
class Evse:
    id: int
    connector_id: int
    port: EvsePort
    tx: EvseTransactions
    status: ConnectorStatus
    external_limit: ExternalLimitReporter
    pending_availability: bool | None = None  # Scheduled ChangeAvailability (True = operative)
    rate: RateChangeWatch = field(default_factory=RateChangeWatch)
    needs_sent_for: str | None = None  # the transaction whose EV needs went out (K15)
    # the newest EnforcedLimits seen while offline: reported against the last one the CSMS
    # heard about once online again, so it learns the net change (K11-K13)
    limits_while_offline: dict[str, Any] | None = None


@dataclass
class Identity:
    vendor_name: str
    model: str
    serial_number: str = ""
    firmware_version: str = ""

    def charging_station(self) -> dict[str, Any]:
        station: dict[str, Any] = {"vendorName": self.vendor_name, "model": self.model}
        if self.serial_number:
            station["serialNumber"] = self.serial_number
        if self.firmware_version:
            station["firmwareVersion"] = self.firmware_version
        return station


@dataclass
class Counters:
    sent: int = 0
    received_calls: int = 0
    undeliverable: int = 0
    connects: int = 0


class Bridge:
    def __init__(
        self,
        endpoint: Endpoint,
        identity: Identity,
        store: Store,
        model: DeviceModel,
        tokens: TokenPort,
        *,
        system: SystemPort | None = None,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        frame_log: FrameLog | None = None,
        push: PushSettings = DEFAULT_PUSH,
        events: OcppEventsPort | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.events = events or NoEvents()
        self.identity = identity
        self.store = store
        self.model = model
        self.tokens = tokens
        self.system = system
        self.clock = clock
        self.frame_log = frame_log
        self.evses: dict[int, Evse] = {}
        self.online = False  # connected and boot accepted
        self.connected = False  # the websocket is open (the ocpp interface's is_connected)
        self.halted = False  # ocpp_generic stop: no connection until resume()
        self._kick = asyncio.Event()  # wakes run() from a back-off or halt wait
        # A04: security events made while offline go out once the CSMS accepted us again
        self._held_security: deque[dict[str, Any]] = deque(maxlen=HELD_SECURITY_EVENTS)
        self.registration = "Unknown"
        self.counters = Counters()
        self._rng = rng or random.Random()
        self._outbox: deque[Outgoing] = deque()  # our own messages: sent once Accepted
        self._requested: deque[Outgoing] = deque()  # what the CSMS asked for: sent at once
        self._wake = asyncio.Event()
        self._station: Station | None = None
        self._stopping = asyncio.Event()
        self._reconnect = asyncio.Event()
        self.reset_scheduled = False  # an OnIdle reset waits for the transactions to end
        self._heartbeat_changed = asyncio.Event()
        self._boot_triggered = asyncio.Event()
        self.requests = CsmsRequestHandler(self)
        self._push_settings = push
        # K05: TxProfiles of accepted RequestStartTransactions, by remoteStartId, installed
        # when the transaction they started begins
        self.remote_profiles: dict[int, dict[str, Any]] = {}
        self._smart: SmartCharging | None = None
        self._clock_step = ClockStep()

    # setup ---------------------------------------------------------------------------

    def add_evse(self, evse_id: int, connector_id: int, port: EvsePort) -> None:
        restored = self.store.load_transactions().get(evse_id)
        tx = EvseTransactions(self.tx_settings(evse_id, connector_id), restored=restored)
        status = ConnectorStatus(evse_id, connector_id)
        self.evses[evse_id] = Evse(
            evse_id, connector_id, port, tx, status, ExternalLimitReporter(evse_id)
        )

    @property
    def smart(self) -> SmartCharging:
        """Block K; built once the EVSEs are known (after the last add_evse)."""
        if self._smart is None:
            self._smart = SmartCharging(self, self._push_settings)
        return self._smart

    def tx_settings(self, evse_id: int, connector_id: int) -> TxSettings:
        m = self.model
        return TxSettings(
            evse_id=evse_id,
            connector_id=connector_id,
            tx_start_points=frozenset(m.get_list("TxCtrlr", "TxStartPoint")),
            tx_stop_points=frozenset(m.get_list("TxCtrlr", "TxStopPoint")),
            updated_interval_s=m.get_int("SampledDataCtrlr", "TxUpdatedInterval"),
            started_measurands=tuple(m.get_list("SampledDataCtrlr", "TxStartedMeasurands")),
            updated_measurands=tuple(m.get_list("SampledDataCtrlr", "TxUpdatedMeasurands")),
            ended_measurands=tuple(m.get_list("SampledDataCtrlr", "TxEndedMeasurands")),
        )

    def settings_changed(self) -> None:
        """Device-model values changed: rebuild what depends on them."""
        for evse in self.evses.values():
            evse.tx.settings = self.tx_settings(evse.id, evse.connector_id)
        self._heartbeat_changed.set()

    # EVerest events (called on the loop) -------------------------------------------

    def on_session_event(self, evse_id: int, event: dict[str, Any]) -> None:
        evse = self.evses[evse_id]
        now = self.clock()
        before = evse.tx.transaction_id
        for payload in evse.tx.on_session_event(event, now, offline=not self.online):
            self.emit_transaction_event(payload)
            self._install_remote_profile(evse, payload)
        self._save_tx(evse)
        if evse.tx.transaction_id != before:  # profiles in force change with transactions
            if before is not None:
                self.smart.transaction_ended(before)
            self.smart.changed()
        self._status(evse, evse.status.on_session_event(event, now))
        if not evse.tx.active:
            self._run_scheduled(evse)

    def _install_remote_profile(self, evse: Evse, payload: dict[str, Any]) -> None:
        info = payload["transactionInfo"]
        profile = self.remote_profiles.pop(info.get("remoteStartId", -1), None)
        if profile is None:
            return
        profile = {**profile, "transactionId": info["transactionId"]}
        verdict = self.smart.profiles.install(evse.id, profile, self.smart.running())
        log.info("TxProfile %s of the remote start: %s", profile.get("id"), verdict)
        self.smart.changed()

    def on_powermeter(self, evse_id: int, powermeter: dict[str, Any]) -> None:
        self.evses[evse_id].tx.on_powermeter(powermeter)

    def on_ev_info(self, evse_id: int, ev_info: dict[str, Any]) -> None:
        evse = self.evses[evse_id]
        evse.tx.on_ev_info(ev_info)
        tx_id = evse.tx.transaction_id
        if tx_id is not None and evse.needs_sent_for != tx_id:  # K15: once per transaction
            needs = charging_needs(evse_id, ev_info)
            if needs is not None and self.online:
                evse.needs_sent_for = tx_id
                self.send_live("NotifyEVChargingNeeds", needs)

    def on_enforced_limits(self, evse_id: int, enforced: dict[str, Any]) -> None:
        """What the energy tree applies to the EVSE (K11-K13): limits set outside OCPP are
        reported to the CSMS; a significant change during a transaction is a
        TransactionEvent ChargingRateChanged."""
        evse = self.evses[evse_id]
        significance = self.model.get_float("SmartChargingCtrlr", "LimitChangeSignificance")
        if self.online:
            for action, payload in evse.external_limit.update(enforced, significance):
                self.send_live(action, payload)
        else:
            evse.limits_while_offline = enforced
        if evse.rate.update(enforced, significance):
            for event in evse.tx.charging_rate_changed(self.clock(), offline=not self.online):
                self.emit_transaction_event(event)

    def on_fault(self, evse_id: int, active: bool) -> None:
        evse = self.evses[evse_id]
        evse.tx.set_faulted(active)
        self._status(evse, evse.status.set_faulted(active, self.clock()))

    def on_ready(self, evse_id: int) -> None:
        evse = self.evses[evse_id]
        self._status(evse, evse.status.set_ready(True, self.clock()))

    def _status(self, evse: Evse, payload: dict[str, Any] | None) -> None:
        if payload is None:
            return
        self.model.set_availability(evse.id, evse.connector_id, payload["connectorStatus"])
        if self.online:
            self.send_live("StatusNotification", payload)

    def _save_tx(self, evse: Evse) -> None:
        snapshot = evse.tx.snapshot()
        if snapshot is None:
            self.store.delete_transaction(evse.id)
        else:
            self.store.save_transaction(evse.id, snapshot)

    def _run_scheduled(self, evse: Evse) -> None:
        """ChangeAvailability and Reset that waited for the transaction to end."""
        if evse.pending_availability is not None:
            operative, evse.pending_availability = evse.pending_availability, None
            asyncio.get_running_loop().create_task(self.set_operative(evse, operative))
        if self.reset_scheduled and not any(e.tx.active for e in self.evses.values()):
            self.reset_scheduled = False
            asyncio.get_running_loop().create_task(self.reset(immediate=False))

    # outbox -------------------------------------------------------------------------

    def emit_transaction_event(self, payload: dict[str, Any]) -> None:
        queue_id = self.store.enqueue("TransactionEvent", payload)
        if self.online:
            self._push(Outgoing("TransactionEvent", payload, queue_id))
        self.events.publish("ocpp_transaction_event", self._everest_tx_event(payload))

    def _everest_tx_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """EVerest's OcppTransactionEvent for a TransactionEvent payload. The transaction id
        is EvseManager's session id, so both fields carry it (as in EVerest's OCPP201)."""
        tx_id = payload["transactionInfo"]["transactionId"]
        event: dict[str, Any] = {
            "transaction_event": payload["eventType"],
            "session_id": tx_id,
            "transaction_id": tx_id,
        }
        evse = payload.get("evse")
        if evse is None:  # OCPP sends the EVSE only until the CSMS knows it
            found = self.evse_with_transaction(tx_id)
            evse = {"id": found.id, "connectorId": found.connector_id} if found else None
        if evse is not None:
            event["evse"] = {"id": evse["id"]}
            if "connectorId" in evse:
                event["evse"]["connector_id"] = evse["connectorId"]
        return event

    def security_event(self, payload: dict[str, Any]) -> None:
        """A04: a SecurityEventNotification (camelCase payload) for the CSMS; held while
        offline and sent after the next accepted boot."""
        if self.online:
            self._push(Outgoing("SecurityEventNotification", payload))
        else:
            self._held_security.append(payload)

    def send_live(self, action: str, payload: dict[str, Any], requested: bool = False) -> None:
        """A message only worth sending on this connection. ``requested``: the CSMS asked
        for it (a report, a triggered message), so it may go before the boot is Accepted
        (B02.FR.02/03) and ahead of the queue."""
        if requested and self._station is not None:
            self._requested.append(Outgoing(action, payload))
            self._wake.set()
        elif self.online:
            self._push(Outgoing(action, payload))

    def _push(self, item: Outgoing) -> None:
        self._outbox.append(item)
        self._wake.set()

    def _next_item(self) -> tuple[Outgoing, deque[Outgoing]] | None:
        if self._requested:
            return self._requested[0], self._requested
        if self.online and self._outbox:
            return self._outbox[0], self._outbox
        return None

    def queued_transaction_events(self, transaction_id: str | None = None) -> int:
        return sum(
            1
            for m in self.store.pending()
            if transaction_id is None
            or m.payload["transactionInfo"]["transactionId"] == transaction_id
        )

    # connection lifecycle ---------------------------------------------------------

    async def run(self) -> None:
        """Connect, boot, serve; reconnect with back-off until stop()."""
        backoff = BackOff(
            wait_minimum_s=self.model.get_int("OCPPCommCtrlr", "RetryBackOffWaitMinimum"),
            random_range_s=self.model.get_int("OCPPCommCtrlr", "RetryBackOffRandomRange"),
            repeat_times=self.model.get_int("OCPPCommCtrlr", "RetryBackOffRepeatTimes"),
            rng=self._rng,
        )
        loop = asyncio.get_running_loop()
        ticker = loop.create_task(self._tick_forever())
        pusher = loop.create_task(self.smart.push_forever())
        self.events.publish("is_connected", self.connected)
        try:
            while not self._stopping.is_set():
                # no await between a check and the clear: a halt/resume/stop made on this
                # loop lands either before the check or after the clear, never in between
                self._kick.clear()
                if self.halted:
                    await self._kick.wait()
                    continue
                try:
                    await self._serve_one_connection(backoff)
                except (OSError, WebSocketException, TimeoutError) as exc:
                    log.warning("CSMS %s: %s", self.endpoint.url, _why(exc))
                if self.halted or self._stopping.is_set():
                    continue
                delay = backoff.next_delay()
                log.info("reconnecting in %.1f s", delay)
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), delay)
        finally:
            await _cancel_all({ticker, pusher})

    async def stop(self) -> None:
        self._stopping.set()
        self._reconnect.set()
        self._kick.set()

    def halt(self) -> bool:
        """ocpp_generic stop: close the connection and open none until resume(). False
        when already halted."""
        if self.halted:
            return False
        log.info("OCPP halted on request: closing the CSMS connection")
        self.halted = True
        self._reconnect.set()
        self._kick.set()
        return True

    def resume(self) -> None:
        """ocpp_generic restart: connect again now (no back-off wait)."""
        if self.halted:
            log.info("OCPP resumed on request")
            self.halted = False
        self._kick.set()

    def reconnect(self) -> None:
        """Close the current connection; run() opens a new one (a fresh boot)."""
        self._reconnect.set()

    async def _serve_one_connection(self, backoff: BackOff) -> None:
        timeout = self.model.get_int("OCPPCommCtrlr", "MessageTimeout", instance="Default")
        ping = self.model.get_int("OCPPCommCtrlr", "WebSocketPingInterval") or None
        # cleared before connecting, so that a halt() while the handshake runs still counts
        self._reconnect.clear()
        ws = await open_connection(self.endpoint, open_timeout=timeout, ping_interval=ping)
        self.counters.connects += 1
        backoff.reset()
        log.info("connected to %s", self.endpoint.url)
        self._set_connected(True)
        station = Station(self.endpoint.station_id, ws, self.requests, timeout, self.frame_log)
        self._station = station
        tasks = {
            asyncio.create_task(station.start(), name="receive"),
            asyncio.create_task(self._online_session(station), name="session"),
            asyncio.create_task(self._send_forever(station), name="sender"),
            asyncio.create_task(self._reconnect.wait(), name="reconnect"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        except ConnectionClosed as exc:
            log.warning("CSMS closed the connection: %s", exc)
        finally:
            self.online = False
            self._station = None
            self._hold_unsent_security_events()
            self._outbox.clear()
            self._requested.clear()
            await _cancel_all(tasks)
            await ws.close()
            self._set_connected(False)

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self.events.publish("is_connected", connected)

    def _hold_unsent_security_events(self) -> None:
        unsent = [i.payload for i in self._outbox if i.action == "SecurityEventNotification"]
        self._held_security.extendleft(reversed(unsent))

    async def _online_session(self, station: Station) -> None:
        await self._boot(station)
        # no await from here to the end of the block: nothing made meanwhile can be missed
        self.online = True
        now = self.clock()
        for evse in self.evses.values():
            self._push(Outgoing("StatusNotification", evse.status.current(now)))
        for message in self.store.pending():
            self._push(Outgoing(message.action, message.payload, message.id))
        while self._held_security:
            self._push(Outgoing("SecurityEventNotification", self._held_security.popleft()))
        significance = self.model.get_float("SmartChargingCtrlr", "LimitChangeSignificance")
        for evse in self.evses.values():
            if evse.limits_while_offline is not None:
                enforced, evse.limits_while_offline = evse.limits_while_offline, None
                for action, payload in evse.external_limit.update(enforced, significance):
                    self._push(Outgoing(action, payload))
        await self._heartbeat()

    async def _boot(self, station: Station) -> None:
        """B01-B03: BootNotification until Accepted; Pending and Rejected wait `interval`."""
        reason = self.store.get_meta("boot_reason") or "PowerUp"
        while True:
            request = call.BootNotification(
                charging_station=camel_to_snake_case(self.identity.charging_station()),
                reason=reason,
            )
            try:
                result = await station.call(request, suppress=False)
            except (OCPPError, TimeoutError) as exc:
                log.warning("BootNotification failed: %s", _why(exc))
                await asyncio.sleep(BOOT_RETRY_DEFAULT_S)
                continue
            self.registration = str(result.status)
            log.info("BootNotification: %s (interval %s s)", result.status, result.interval)
            self.events.publish("boot_notification_response", _boot_response(result))
            if result.status == "Accepted":
                if result.interval > 0:
                    self.model.set_internal(
                        "OCPPCommCtrlr", "HeartbeatInterval", str(result.interval)
                    )
                self.store.set_meta("boot_reason", "PowerUp")
                return
            wait = result.interval if result.interval > 0 else BOOT_RETRY_DEFAULT_S
            self._boot_triggered.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._boot_triggered.wait(), wait)
                reason = "Triggered"  # F06: the CSMS asked for it; same connection

    def trigger_boot(self) -> None:
        """TriggerMessage(BootNotification) while Pending/Rejected: send it now."""
        self._boot_triggered.set()

    async def _heartbeat(self) -> None:
        while True:
            self._heartbeat_changed.clear()
            interval = self.model.get_int("OCPPCommCtrlr", "HeartbeatInterval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heartbeat_changed.wait(), interval)
                continue  # a new interval: start counting again
            self.send_live("Heartbeat", {})

    async def _send_forever(self, station: Station) -> None:
        while True:
            found = self._next_item()
            if found is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            item, lane = found
            await self._deliver(station, item)
            if lane and lane[0] is item:
                lane.popleft()

    async def _deliver(self, station: Station, item: Outgoing) -> None:
        request = getattr(call, item.action)(**camel_to_snake_case(item.payload))
        while True:
            try:
                result = await station.call(request, suppress=False)
            except (OCPPError, TimeoutError) as exc:
                if item.queue_id is None:
                    log.warning("CSMS did not take %s: %s (not retried)", item.action, _why(exc))
                    return
                if not await self._retry(item, exc):
                    return
                continue
            self.counters.sent += 1
            if item.queue_id is not None:
                self.store.remove(item.queue_id)
            self._after_result(item, result)
            return

    async def _retry(self, item: Outgoing, exc: Exception) -> bool:
        assert item.queue_id is not None
        attempts = self.store.record_attempt(item.queue_id)
        allowed = self.model.get_int(
            "OCPPCommCtrlr", "MessageAttempts", instance="TransactionEvent"
        )
        if attempts >= max(allowed, 1):
            self.store.remove(item.queue_id)
            self.counters.undeliverable += 1
            log.error(
                "%s undeliverable after %d attempts (%s), dropped: %s",
                item.action,
                attempts,
                _why(exc),
                item.payload,
            )
            return False
        interval = self.model.get_int(
            "OCPPCommCtrlr", "MessageAttemptInterval", instance="TransactionEvent"
        )
        log.warning(
            "%s attempt %d failed (%s); retry in %d s", item.action, attempts, _why(exc), interval
        )
        await asyncio.sleep(interval * attempts)
        return True

    def _after_result(self, item: Outgoing, result: Any) -> None:
        if item.action != "TransactionEvent":
            return
        self.events.publish(
            "ocpp_transaction_event_response", self._everest_tx_response(item.payload, result)
        )
        info = getattr(result, "id_token_info", None)
        if not info or info.get("status") == "Accepted":
            return
        tx_id = item.payload["transactionInfo"]["transactionId"]
        evse = self.evse_with_transaction(tx_id)
        if evse is not None and self.model.get_bool("TxCtrlr", "StopTxOnInvalidId"):
            log.warning("CSMS rejected the token of %s (%s): stopping", tx_id, info.get("status"))
            evse.tx.deauthorized()
            asyncio.get_running_loop().create_task(
                asyncio.to_thread(evse.port.stop_transaction, "DeAuthorized")
            )

    def _everest_tx_response(self, payload: dict[str, Any], result: Any) -> dict[str, Any]:
        response: dict[str, Any] = {"original_transaction_event": self._everest_tx_event(payload)}
        if result.total_cost is not None:
            response["total_cost"] = float(result.total_cost)
        if result.charging_priority is not None:
            response["charging_priority"] = int(result.charging_priority)
        message = result.updated_personal_message
        if message:
            response["personal_message"] = {
                k: message[k] for k in ("format", "language", "content") if message.get(k)
            }
        return response

    async def _tick_forever(self) -> None:
        """Periodic meter values, each at its own deadline: a shared coarse tick would send
        every EVSE's sample in one burst and make the session events behind it wait."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._until_next_deadline())
            now = self.clock()
            step = self._clock_step.observe(now, loop.time())
            if step is not None:
                self._clock_stepped(step)
            for evse in self.evses.values():
                produced = evse.tx.tick(now, offline=not self.online)
                for payload in produced:
                    self.emit_transaction_event(payload)
                if produced:
                    self._save_tx(evse)

    def _clock_stepped(self, step: timedelta) -> None:
        """Timers keep their intervals; schedules are evaluated for the new time at once."""
        log.warning(
            "wall clock stepped by %+.1f s: sample timers moved with it, composite "
            "schedules pushed again for the new time",
            step.total_seconds(),
        )
        for evse in self.evses.values():
            if evse.tx.active:
                evse.tx.clock_stepped(step)
                self._save_tx(evse)
        self.smart.changed()

    def _until_next_deadline(self) -> float:
        """Seconds to the earliest sample due; at most TICK_S, so that settings changes
        and clock steps are seen soon."""
        deadlines = [d for e in self.evses.values() if (d := e.tx.next_deadline()) is not None]
        if not deadlines:
            return TICK_S
        wait = (min(deadlines) - self.clock()).total_seconds()
        return min(max(wait, 0.0), TICK_S)

    # things CSMS requests lead to --------------------------------------------------

    def refresh_clock(self) -> None:
        """ClockCtrlr.DateTime is read from the model; make it now before anyone reads it."""
        self.model.set_internal("ClockCtrlr", "DateTime", wire_timestamp(self.clock()))

    def evse_with_transaction(self, transaction_id: str) -> Evse | None:
        for evse in self.evses.values():
            if evse.tx.transaction_id == transaction_id:
                return evse
        return None

    async def set_operative(self, evse: Evse, operative: bool) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(evse.port.enable, operative), PORT_TIMEOUT_S)
        except Exception as exc:  # the EVSE is another process: report, keep serving
            log.error("EVSE %d enable_disable(%s) failed: %s", evse.id, operative, _why(exc))

    def schedule_reset(self) -> None:
        self.reset_scheduled = True

    async def reset(self, immediate: bool) -> None:
        """B11/B12: end transactions, let their Ended events go out, then restart."""
        now = self.clock()
        for evse in self.evses.values():
            if evse.tx.active:
                for payload in evse.tx.reset_stop(immediate, now, offline=not self.online):
                    self.emit_transaction_event(payload)
                self._save_tx(evse)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        asyncio.to_thread(evse.port.stop_transaction, "HardReset"), PORT_TIMEOUT_S
                    )
        await self._drain(
            timeout=self.model.get_int("OCPPCommCtrlr", "MessageTimeout", instance="Default")
        )
        self.store.set_meta("boot_reason", "RemoteReset")
        if self.system is not None:
            system = self.system
            if await asyncio.to_thread(system.reset, immediate):
                return
        log.info("reset: restarting the OCPP connection (no system module resets the charger)")
        self.reconnect()

    async def _drain(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.store.count() and self.online and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def authorize(self, id_token: dict[str, Any]) -> dict[str, Any]:
        """C01: ask the CSMS; offline, AuthCtrlr decides (C15 offline rules)."""
        station = self._station
        if station is not None and self.online:
            try:
                result = await station.call(call.Authorize(id_token=id_token), suppress=False)
            except (OCPPError, TimeoutError, ConnectionClosed) as exc:
                log.warning("Authorize failed: %s; treating as offline", _why(exc))
            else:
                return dict(result.id_token_info)
        if self.model.get_bool("AuthCtrlr", "LocalAuthorizeOffline") and self.model.get_bool(
            "AuthCtrlr", "OfflineTxForUnknownIdEnabled"
        ):
            return {"status": "Accepted"}
        return {"status": "Unknown"}


async def _cancel_all(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel until every task is done. Once is not enough on Python 3.11: the package's
    call() waits with asyncio.wait_for, which drops a cancel that arrives together with the
    awaited answer (CPython gh-86296), and the task would wait on forever."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)


def _boot_response(result: Any) -> dict[str, Any]:
    """EVerest's BootNotificationResponse (the package delivers snake_case already)."""
    response: dict[str, Any] = {
        "status": str(result.status),
        "current_time": result.current_time,
        "interval": int(result.interval),
    }
    info = result.status_info
    if info and info.get("reason_code"):
        response["status_info"] = {"reason_code": info["reason_code"]}
        if info.get("additional_info"):
            response["status_info"]["additional_info"] = info["additional_info"]
    return response


def _why(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        hint = " (wrong station id or password?)" if status == 401 else ""
        return f"HTTP {status}{hint}"
    if isinstance(exc, OCPPError):
        return f"CALLERROR {exc.code}: {exc.description}"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"
