"""Block K in the bridge: the CSMS's profile messages, and composite schedules pushed to the
energy tree as external limits.

The maths and the rules live in sans-IO modules (profiles.py, composite.py, limits.py); this
class holds them together with the bridge's state (running transactions, the clock, the
EnergyNode ports) and decides when limits go out: after every accepted Set/Clear, when a
transaction starts or ends (its TxProfiles come and go, K02.FR.05), at the next period
boundary of any pushed schedule, and at least every CompositeScheduleIntervalS (EVerest's
OCPP201 does the same two triggers). A push to an EnergyNode happens only when the schedule
from now on differs from the one it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.exceptions import NotSupportedError
from ocpp.v201 import call_result

from .composite import CompositeSettings, TransactionInfo, composite_schedule
from .limits import external_limits
from .ports import PORT_TIMEOUT_S, LimitsPort
from .profiles import EXTERNAL, ProfileStore, report_batches
from .timestamps import parse_wire_timestamp

if TYPE_CHECKING:
    from .bridge import Bridge

log = logging.getLogger("PyOCPP201")
SMART = "SmartChargingCtrlr"


@dataclass(frozen=True)
class PushSettings:
    interval_s: int  # CompositeScheduleIntervalS (0: only on changes)
    duration_s: int  # RequestCompositeScheduleDurationS
    unit: str  # RequestCompositeScheduleUnit


def _status(result: type[Any], status: str, reason: str = "", info: str = "", **extra: Any) -> Any:
    status_info: dict[str, Any] | None = None
    if reason:
        status_info = {"reason_code": reason}
        if info:
            status_info["additional_info"] = info
    return result(status=status, status_info=status_info, **extra)


class SmartCharging:
    def __init__(self, bridge: Bridge, push: PushSettings) -> None:
        self.bridge = bridge
        self.push_settings = push
        self.profiles = ProfileStore(bridge.store, bridge.model, list(bridge.evses))
        self.sinks: dict[int, LimitsPort] = {}
        self._pushed: dict[int, list[tuple[datetime, float]]] = {}
        self._changed = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()  # referenced until done
        self.pushes = 0

    # state the rules need ----------------------------------------------------------

    def running(self) -> dict[int, str | None]:
        return {e.id: e.tx.transaction_id for e in self.bridge.evses.values()}

    def transaction_infos(self) -> dict[int, TransactionInfo]:
        infos = {}
        for evse in self.bridge.evses.values():
            tx_id, started = evse.tx.transaction_id, evse.tx.started_at
            if tx_id is not None and started is not None:
                infos[evse.id] = TransactionInfo(tx_id, started)
        return infos

    def composite(
        self, evse_id: int, start: datetime, duration_s: int, unit: str
    ) -> dict[str, Any]:
        return composite_schedule(
            self.profiles.all(),
            evse_id=evse_id,
            evse_ids=sorted(self.bridge.evses),
            start=start,
            duration_s=duration_s,
            unit=unit,
            settings=CompositeSettings.from_device_model(self.bridge.model),
            transactions=self.transaction_infos(),
        )

    def _require_available(self) -> None:
        if not self.bridge.model.get_bool(SMART, "Available"):
            raise NotSupportedError(description="smart charging is not available")  # K01.FR.29

    # K01 SetChargingProfile ------------------------------------------------------------

    def answer_set(self, evse_id: int, charging_profile: dict[str, Any]) -> Any:
        self._require_available()
        profile = snake_to_camel_case(charging_profile)
        verdict = self.profiles.install(evse_id, profile, self.running(), source="CSO")
        if not verdict.accepted:
            log.info(
                "SetChargingProfile %s on EVSE %d rejected: %s (%s)",
                profile.get("id"),
                evse_id,
                verdict.reason_code,
                verdict.additional_info,
            )
            return _status(
                call_result.SetChargingProfile,
                "Rejected",
                verdict.reason_code or "InvalidValue",
                verdict.additional_info or "",
            )
        self.changed()
        return _status(call_result.SetChargingProfile, "Accepted")

    # K10 ClearChargingProfile --------------------------------------------------------------

    def answer_clear(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
    ) -> Any:
        self._require_available()
        criteria = charging_profile_criteria or {}
        if charging_profile_id is None and criteria.get("charging_profile_purpose") == EXTERNAL:
            return _status(call_result.ClearChargingProfile, "Unknown", "InvalidValue")
        removed = self.profiles.clear(
            profile_id=charging_profile_id,
            evse_id=criteria.get("evse_id"),
            purpose=criteria.get("charging_profile_purpose"),
            stack_level=criteria.get("stack_level"),
        )
        if removed:
            self.changed()
        return _status(call_result.ClearChargingProfile, "Accepted" if removed else "Unknown")

    # K09 GetChargingProfiles -------------------------------------------------------------

    def _matching(self, evse_id: int | None, criterion: dict[str, Any]) -> list[Any]:
        return self.profiles.matching(
            evse_id=evse_id,
            purpose=criterion.get("charging_profile_purpose"),
            stack_level=criterion.get("stack_level"),
            ids=criterion.get("charging_profile_id"),
            sources=criterion.get("charging_limit_source"),
        )

    def answer_get_profiles(
        self, request_id: int, charging_profile: dict[str, Any], evse_id: int | None = None
    ) -> Any:
        found = self._matching(evse_id, charging_profile)
        return _status(call_result.GetChargingProfiles, "Accepted" if found else "NoProfiles")

    def after_get_profiles(
        self, request_id: int, charging_profile: dict[str, Any], evse_id: int | None = None
    ) -> None:
        batches = report_batches(self._matching(evse_id, charging_profile))
        for index, (evse, source, profiles) in enumerate(batches):
            payload = {
                "requestId": request_id,
                "chargingLimitSource": source,
                "evseId": evse,
                "chargingProfile": profiles,
                "tbc": index < len(batches) - 1,
            }
            self.bridge.send_live("ReportChargingProfiles", payload, requested=True)

    # K08 GetCompositeSchedule ------------------------------------------------------------

    def answer_get_composite(
        self, duration: int, evse_id: int, charging_rate_unit: str | None = None
    ) -> Any:
        self._require_available()
        units = self.bridge.model.get_list(SMART, "RateUnit")
        unit = charging_rate_unit or units[0]
        if evse_id != 0 and evse_id not in self.bridge.evses:
            return _status(call_result.GetCompositeSchedule, "Rejected", "EvseDoesNotExist")
        if unit not in units:
            return _status(call_result.GetCompositeSchedule, "Rejected", "UnsupportedRateUnit")
        schedule = self.composite(evse_id, self.bridge.clock(), duration, unit)
        return call_result.GetCompositeSchedule(
            status="Accepted", schedule=_snake_schedule(schedule)
        )

    # transactions ------------------------------------------------------------------------

    def transaction_ended(self, transaction_id: str) -> None:
        """K02.FR.05: the TxProfiles of a finished transaction are deleted."""
        if self.profiles.remove_transaction_profiles(transaction_id):
            log.info("TxProfiles of %s removed: the transaction ended", transaction_id)
        self.changed()

    # pushing limits to the energy tree ------------------------------------------------------

    def changed(self) -> None:
        self._changed.set()

    async def push_forever(self) -> None:
        """Push on every change, at the next period boundary, and every interval_s."""
        while True:
            wait = self.push_now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)
            self._changed.clear()

    def push_now(self) -> float:
        """Push what changed; seconds until the next period boundary or interval."""
        now = self.bridge.clock()
        settings = self.push_settings
        wait = float(settings.interval_s or settings.duration_s)
        for evse_id, sink in self.sinks.items():
            schedule = self.composite(evse_id, now, settings.duration_s, settings.unit)
            steps = _steps(schedule)
            if steps != self._pushed.get(evse_id):
                self._pushed[evse_id] = steps
                self.pushes += 1
                task = asyncio.get_running_loop().create_task(
                    self._send(evse_id, sink, external_limits(schedule))
                )
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
            upcoming = [(at - now).total_seconds() for at, _ in steps if at > now]
            if upcoming:
                wait = min(wait, *upcoming)
        return max(wait, 0.05)

    async def _send(self, evse_id: int, sink: LimitsPort, limits: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(
                asyncio.to_thread(sink.set_external_limits, limits), PORT_TIMEOUT_S
            )
        except Exception as exc:  # another process: report, retry with the next push
            log.error("set_external_limits for EVSE %d failed: %s", evse_id, exc)
            self._pushed.pop(evse_id, None)


def _steps(schedule: Mapping[str, Any]) -> list[tuple[datetime, float]]:
    """(absolute start, limit) of each period: what an EnergyNode acts on."""
    start = parse_wire_timestamp(str(schedule["scheduleStart"]))
    return [
        (start + timedelta(seconds=int(p["startPeriod"])), float(p["limit"]))
        for p in schedule["chargingSchedulePeriod"]
    ]


def _snake_schedule(schedule: Mapping[str, Any]) -> dict[str, Any]:
    """The composite as the `ocpp` package's result dataclass takes nested values."""
    return {
        "evse_id": schedule["evseId"],
        "duration": schedule["duration"],
        "schedule_start": schedule["scheduleStart"],
        "charging_rate_unit": schedule["chargingRateUnit"],
        "charging_schedule_period": [
            {
                "start_period": p["startPeriod"],
                "limit": p["limit"],
                **({"number_phases": p["numberPhases"]} if "numberPhases" in p else {}),
            }
            for p in schedule["chargingSchedulePeriod"]
        ],
    }
