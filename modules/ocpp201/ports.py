"""The EVerest side as the bridge sees it: small blocking ports, one per thing it drives.

module.py implements them with MQTT commands and vars; tests implement them in memory. The
bridge calls them from worker threads (asyncio.to_thread), never from its event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

PORT_TIMEOUT_S = 5.0  # EvseManager answers these at once; a hung one must not stall OCPP


class EvsePort(ABC):
    """One EVSE's evse_manager commands."""

    @abstractmethod
    def enable(self, enabled: bool) -> bool:
        """enable_disable with source CSMS; True when the EVSE ends up enabled."""

    @abstractmethod
    def stop_transaction(self, reason: str) -> bool:
        """stop_transaction with an EVerest StopTransactionReason."""

    @abstractmethod
    def force_unlock(self, connector_id: int) -> bool:
        """force_unlock; True when the connector is unlocked."""


class TokenPort(ABC):
    """auth_token_provider: tokens the CSMS hands us (RequestStartTransaction)."""

    @abstractmethod
    def provide(self, token: dict[str, Any]) -> None:
        """Publish one ProvidedIdToken."""


class SystemPort(ABC):
    """The `system` module, when one is connected: a Reset restarts the charger."""

    @abstractmethod
    def reset(self, immediate: bool) -> bool:
        """system.reset; True when the system will reset."""


class LimitsPort(ABC):
    """external_energy_limits of the EnergyNode mapped to an EVSE (or 0: the grid)."""

    @abstractmethod
    def set_external_limits(self, limits: dict[str, Any]) -> None:
        """set_external_limits with an EVerest ExternalLimits value."""


class OcppEventsPort(ABC):
    """Vars of the ``ocpp_generic`` implementation (EVerest's ``ocpp`` interface).

    Unlike the other ports this one is called on the bridge's loop, so an implementation
    must not block: it queues the value and publishes it elsewhere, in call order (an
    is_connected false overtaken by an earlier true would leave listeners wrong).
    """

    @abstractmethod
    def publish(self, var: str, value: Any) -> None:
        """Publish one var of the ocpp interface."""


class NoEvents(OcppEventsPort):
    """For bridges nobody listens to (tests of other parts, tools)."""

    def publish(self, var: str, value: Any) -> None:
        pass
