"""The OCPP bridge against the demo CSMS over real websockets, with the EVerest side in
memory: fake EVSE/token/system ports that record what the bridge asked of them, and
PyEvseManager's DC session events fed in by the test."""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from everkit.ocpp201.bridge import Bridge, Identity
from everkit.ocpp201.connection import Endpoint
from everkit.ocpp201.device_model import DeviceModel, EvseShape, StationShape
from everkit.ocpp201.ports import EvsePort, LimitsPort, OcppEventsPort, SystemPort, TokenPort
from everkit.ocpp201.store import Store
from everkit.simulators.csms import DemoCsms

WAIT_S = 10.0
STATION = "CS-TEST-1"
SESSION = "9b2f8c1e-1111-4a2b-9c3d-000000000001"
FAST = {  # short timers so that retries and samples happen within a test
    "OCPPCommCtrlr.RetryBackOffWaitMinimum": "0",
    "OCPPCommCtrlr.RetryBackOffRandomRange": "0",
    "OCPPCommCtrlr.MessageAttemptInterval(TransactionEvent)": "0",
}


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 60))


class Calls:
    """A thread-safe record of port calls; tests await the next one."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.all: list[tuple[Any, ...]] = []

    def add(self, *call: Any) -> None:
        self.all.append(call)
        self._queue.put(call)

    async def next(self, timeout: float = WAIT_S) -> tuple[Any, ...]:
        return await asyncio.to_thread(self._queue.get, True, timeout)


@dataclass
class FakeEvse(EvsePort):
    calls: Calls = field(default_factory=Calls)
    unlock_result: bool = True

    def enable(self, enabled: bool) -> bool:
        self.calls.add("enable", enabled)
        return enabled

    def stop_transaction(self, reason: str) -> bool:
        self.calls.add("stop_transaction", reason)
        return True

    def force_unlock(self, connector_id: int) -> bool:
        self.calls.add("force_unlock", connector_id)
        return self.unlock_result


@dataclass
class FakeTokens(TokenPort):
    calls: Calls = field(default_factory=Calls)

    def provide(self, token: dict[str, Any]) -> None:
        self.calls.add("provide", token)


@dataclass
class FakeLimits(LimitsPort):
    """An EnergyNode's external_energy_limits: records every set_external_limits."""

    calls: Calls = field(default_factory=Calls)

    def set_external_limits(self, limits: dict[str, Any]) -> None:
        self.calls.add("set_external_limits", limits)


@dataclass
class FakeSystem(SystemPort):
    calls: Calls = field(default_factory=Calls)

    def reset(self, immediate: bool) -> bool:
        self.calls.add("reset", immediate)
        return True


@dataclass
class FakeEvents(OcppEventsPort):
    """The ocpp_generic vars the bridge published, in order."""

    calls: Calls = field(default_factory=Calls)

    def publish(self, var: str, value: Any) -> None:
        self.calls.add(var, value)

    def of(self, var: str) -> list[Any]:
        return [value for kind, value in self.calls.all if kind == var]

    async def wait(
        self, var: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = WAIT_S
    ) -> Any:
        """The next publication of ``var`` that satisfies ``predicate`` (earlier ones are
        passed over)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            kind, value = await self.calls.next(max(deadline - loop.time(), 0.01))
            if kind == var and predicate(value):
                return value


def powermeter(energy_Wh: float, power_W: float = 0.0) -> dict[str, Any]:
    return {
        "timestamp": "2024-05-01T12:00:00.000Z",
        "energy_Wh_import": {"total": energy_Wh},
        "power_W": {"total": power_W},
        "voltage_V": {"DC": 400.0},
        "current_A": {"DC": power_W / 400.0},
    }


def event(kind: str, session: str = SESSION, **details: Any) -> dict[str, Any]:
    return {
        "uuid": session,
        "timestamp": "2024-05-01T12:00:00.000Z",
        "connector_id": 1,
        "event": kind,
        **details,
    }


CARD = {"id_token": {"value": "CAFE0001", "type": "ISO14443"}, "authorization_type": "RFID"}


def dc_session_start(token: dict[str, Any] = CARD, session: str = SESSION) -> list[dict[str, Any]]:
    """PyEvseManager's events from plug-in to energy flowing."""
    meter = powermeter(1000)
    return [
        event(
            "SessionStarted",
            session,
            session_started={"reason": "EVConnected", "meter_value": meter},
        ),
        event("AuthRequired", session),
        event("Authorized", session),
        event(
            "TransactionStarted",
            session,
            transaction_started={"id_tag": token, "meter_value": meter},
        ),
        event("PrepareCharging", session),
        event("ChargingStarted", session, charging_state_changed_event={"meter_value": meter}),
    ]


def dc_session_end(reason: str = "EVDisconnected", session: str = SESSION) -> list[dict[str, Any]]:
    meter = powermeter(6000)
    return [
        event("StoppingCharging", session),
        event("ChargingFinished", session),
        event(
            "TransactionFinished",
            session,
            transaction_finished={"meter_value": meter, "reason": reason},
        ),
        event("SessionFinished", session, session_finished={"meter_value": meter}),
    ]


@dataclass
class Rig:
    """One bridge (one EVSE) and what it drives."""

    bridge: Bridge
    store: Store
    evse: FakeEvse
    tokens: FakeTokens
    system: FakeSystem | None
    task: asyncio.Task[None]
    events: FakeEvents = field(default_factory=FakeEvents)

    def feed(self, events: list[dict[str, Any]], evse_id: int = 1) -> None:
        for item in events:
            self.bridge.on_session_event(evse_id, item)

    async def close(self) -> None:
        await self.bridge.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, WAIT_S)
        self.store.close()


async def until(condition: Any, timeout: float = WAIT_S) -> None:
    """Wait for a condition of the bridge's own state (it has no event for each)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


def make_bridge(
    folder: Path,
    csms_url: str,
    overrides: dict[str, str] | None = None,
    security_profile: int = 0,
    password: str = "",
    ca_file: str = "",
    system: bool = False,
    events: OcppEventsPort | None = None,
) -> tuple[Bridge, Store, FakeEvse, FakeTokens, FakeSystem | None]:
    store = Store.open(folder / "ocpp.db")
    shape = StationShape(
        station_id=STATION,
        vendor_name="everkit",
        model="test-dc",
        evses=[EvseShape(1, [1])],
        security_profile=security_profile,
    )
    model = DeviceModel.standard(
        shape,
        overrides={**FAST, **(overrides or {})},
        stored=store.load_variables(),
        persist=store.save_variable,
    )
    endpoint = Endpoint(csms_url, STATION, security_profile, password, ca_file)
    tokens = FakeTokens()
    fake_system = FakeSystem() if system else None
    bridge = Bridge(
        endpoint,
        Identity("everkit", "test-dc"),
        store,
        model,
        tokens,
        system=fake_system,
        events=events,
    )
    evse = FakeEvse()
    bridge.add_evse(1, 1, evse)
    return bridge, store, evse, tokens, fake_system


@contextlib.asynccontextmanager
async def running_bridge(folder: Path, csms: DemoCsms, **kwargs: Any) -> AsyncIterator[Rig]:
    events = FakeEvents()
    bridge, store, evse, tokens, system = make_bridge(folder, csms.url, events=events, **kwargs)
    rig = Rig(bridge, store, evse, tokens, system, asyncio.create_task(bridge.run()), events)
    try:
        yield rig
    finally:
        await rig.close()
