"""The adapter process: the library's AGR service on the UFTP side, a StationLink per
station on the MQTT side, and the sans-IO guard and market in between.

Threads: the library hands inbound messages to its own worker threads; each takes the
adapter's lock, runs guard and market with ``now`` and queues what to send. Sends to the DSO
go through one retrying worker (outbound.py). Limits go to stations from a pusher thread
that also re-pushes every ``REPUSH_S`` and whenever a link reconnects, so a restarted node or
broker gets the caps again; the station enforces the pushed schedule by itself, including
its end, so a lost adapter cannot leave a cap in place beyond the order.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import Response
from fastapi.exceptions import HTTPException
from shapeshifter_uftp import ShapeshifterAgrService, SignedMessage

from .. import wallclock
from ..framework.errors import EverkitError
from . import library
from .config import AgrConfig
from .guard import InboundGuard, SeenMessages
from .market import Aggregator
from .messages import Outbox
from .messages import Response as UftpResponse
from .outbound import Outbound
from .schedule import external_limits
from .station_link import StationLink

log = logging.getLogger("everkit.uftp")

REPUSH_S = 60.0
KEY_LOOKUP_FAILED = 419  # the spec's HTTP status for a sender whose key cannot be found

Clock = Callable[[], datetime]


class _AgrService(ShapeshifterAgrService):  # type: ignore[misc]
    """The library's AGR endpoint, forwarding every message to the adapter."""

    def __init__(self, adapter: Adapter, **kwargs: Any) -> None:
        self.adapter = adapter
        super().__init__(**kwargs)

    def _receive_message(self, message: SignedMessage) -> Response:
        # The library looks the key up outside its error handling: an unknown sender would
        # get HTTP 500 instead of the spec's 419.
        if self.key_lookup_function(message.sender_domain, message.sender_role) is None:
            log.warning("message from unknown sender %s refused", message.sender_domain)
            raise HTTPException(KEY_LOOKUP_FAILED)
        return super()._receive_message(message)  # type: ignore[no-any-return]

    def process_flex_request(self, message: Any) -> None:
        self.adapter.on_flex_request(message)

    def process_flex_order(self, message: Any) -> None:
        self.adapter.on_flex_order(message)

    def process_flex_offer_response(self, message: Any) -> None:
        self.adapter.on_flex_offer_response(message)

    def _ignored(self, message: Any) -> None:
        log.info("%s from %s: nothing to do", type(message).__name__, message.sender_domain)

    process_flex_offer_revocation_response = _ignored
    process_flex_reservation_update = _ignored
    process_flex_settlement = _ignored
    process_d_prognosis_response = _ignored
    process_metering_response = _ignored
    process_agr_portfolio_query_response = _ignored
    process_agr_portfolio_update_response = _ignored


class Adapter:
    def __init__(
        self,
        config: AgrConfig,
        *,
        clock: Clock = wallclock.utc_now,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        peers = {peer.domain: peer for peer in config.peers}
        self.guard = InboundGuard(
            config.domain, peers, SeenMessages(config.state_dir / "seen-messages.jsonl")
        )
        self.market = Aggregator(
            config.domain, config.congestion_points, new_id, config.baseline_window
        )
        self.service = _AgrService(
            self,
            sender_domain=config.domain,
            signing_key=config.signing_key,
            key_lookup_function=lambda domain, role: (
                peers[domain].public_key if domain in peers and role == "DSO" else None
            ),
            endpoint_lookup_function=lambda domain, role: (
                peers[domain].endpoint if domain in peers else None
            ),
            host=config.host,
            port=config.port,
            path=config.path,
            version=config.version,
        )
        self.outbound = Outbound(self._send)
        self.links = {
            address.name: StationLink(
                address,
                on_power=self._on_power,
                on_connected=self._on_link_connected,
                on_schedule=self._on_schedule,
            )
            for address in config.stations
        }
        self.pushed: dict[str, dict[str, Any]] = {}  # what each station last confirmed
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.pusher = threading.Thread(target=self._push_loop, name="uftp-push", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.outbound.start()
        for link in self.links.values():
            try:
                link.start()
            except EverkitError as exc:  # the link keeps reconnecting; pushes retry
                log.warning("station %s not reachable yet: %s", link.address.name, exc)
        self.pusher.start()
        self.service.run_in_thread()
        log.info(
            "UFTP AGR %s listening on http://%s:%d%s, %d station(s)",
            self.config.domain,
            self.config.host,
            self.config.port,
            self.config.path,
            len(self.links),
        )

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.service.stop()
        self.outbound.stop()
        self.pusher.join(timeout=10)
        for link in self.links.values():
            link.stop()

    # -- inbound ---------------------------------------------------------------------------

    def on_flex_request(self, message: Any) -> None:
        self._handle(
            message, "FlexRequestResponse", library.flex_request, self.market.on_flex_request
        )

    def on_flex_order(self, message: Any) -> None:
        self._handle(message, "FlexOrderResponse", library.flex_order, self.market.on_flex_order)

    def _handle(
        self,
        message: Any,
        response_kind: str,
        convert: Callable[[Any], Any],
        decide: Callable[[Any, datetime], Outbox],
    ) -> None:
        """Convert, check (guard), decide (market), answer; push limits if they changed."""
        try:
            inbound = convert(message)
        except (ValueError, TypeError, AttributeError) as exc:
            self._unreadable(response_kind, message, exc)
            return
        with self.lock:
            now = self.clock()
            reason = self.guard.check(inbound.header, now)
            if reason:
                out = Outbox([_refusal(response_kind, inbound.header, reason)])
            else:
                out = decide(inbound, now)
        if out.limits_changed:
            self.wake.set()
        self._dispatch(out)

    def on_flex_offer_response(self, message: Any) -> None:
        header = library.header(message)
        with self.lock:
            if self.guard.check(header, self.clock()):
                return
            if str(message.result) != "Accepted":
                log.warning(
                    "FlexOffer %s rejected by %s: %s",
                    message.flex_offer_message_id,
                    header.sender_domain,
                    message.rejection_reason,
                )
                self.market.on_flex_offer_rejected(str(message.flex_offer_message_id))

    def _unreadable(self, kind: str, message: Any, exc: Exception) -> None:
        """Schema-valid but not usable (a time without offset, ...): the spec's "Invalid
        Message", never an exception lost in the library's thread pool."""
        reason = f"Invalid Message: {exc}"
        log.warning("%s %s refused: %s", type(message).__name__, message.message_id, reason)
        response = UftpResponse(
            kind,
            str(message.sender_domain),
            str(message.conversation_id),
            str(message.message_id),
            reason,
        )
        self._dispatch(Outbox([response]))

    def _on_power(self, station: str, watts: float) -> None:
        with self.lock:
            self.market.on_power(station, watts, self.clock())

    def _on_schedule(self, station: str, request: dict[str, Any]) -> None:
        with self.lock:
            self.market.on_schedule(station, request)

    def _on_link_connected(self, station: str) -> None:
        with self.lock:
            self.pushed.pop(station, None)
        self.wake.set()

    # -- outbound --------------------------------------------------------------------------

    def _dispatch(self, out: Outbox) -> None:
        for response in out.responses:
            self.outbound.put(response.recipient_domain, library.to_response(response))
        for offer in out.offers:
            self.outbound.put(offer.recipient_domain, library.to_flex_offer(offer))

    def _send(self, recipient: str, message: Any) -> None:
        client = self.service.dso_client(recipient)
        kind = type(message).__name__  # FlexOffer -> send_flex_offer, ...
        getattr(client, "send" + re.sub(r"([A-Z])", r"_\1", kind).lower())(message)

    def limits(self, now: datetime) -> dict[str, dict[str, Any]]:
        """The ExternalLimits each station should hold now."""
        with self.lock:
            self.market.forget_finished(now)
            caps = self.market.caps(now)
        return {
            name: external_limits(caps.get(name, []), now, self.config.source)
            for name in self.links
        }

    def _push_loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(REPUSH_S)
            self.wake.clear()
            if self.stopping.is_set():
                return
            self.push_now()

    def push_now(self) -> None:
        for name, limits in self.limits(self.clock()).items():
            try:
                self.links[name].set_external_limits(limits)
            except EverkitError as exc:
                log.warning("limits for station %s not delivered (%s); retrying", name, exc)
                threading.Timer(5.0, self.wake.set).start()
                continue
            with self.lock:
                changed = (
                    self.pushed.get(name, {}).get("schedule_import", [])[1:]
                    != limits["schedule_import"][1:]
                )
                self.pushed[name] = limits
            if changed:
                log.info("station %s: %s", name, _describe(limits))


def _refusal(kind: str, header: Any, reason: str) -> UftpResponse:
    log.warning(
        "%s %s from %s refused: %s", header.kind, header.message_id, header.sender_domain, reason
    )
    return UftpResponse(
        kind, header.sender_domain, header.conversation_id, header.message_id, reason
    )


def _describe(limits: dict[str, Any]) -> str:
    parts = []
    for entry in limits["schedule_import"]:
        power = entry["limits_to_root"].get("total_power_W")
        parts.append(
            f"{entry['timestamp']} {power['value']:.0f} W"
            if power
            else f"{entry['timestamp']} default"
        )
    return ", ".join(parts)
