"""PyEnergyManager: the root of the energy tree. Shares the power out to the EVSEs.

It requires exactly one ``energy_trunk`` (energy): the top EnergyNode, whose
``energy_flow_request`` holds the whole tree. From that tree it computes each EVSE's power
(tree.py: the minimum along the path, water-filling where a node is short) and sends one
``enforce_limits`` per EVSE down the trunk; the nodes pass it on and the EVSE whose uuid
matches applies it. ``provides: main`` (energy_manager) has no commands or vars.

When: at once for the first request and for any request with ``priority_request``
anywhere in the tree, otherwise every ``update_interval`` seconds, so every EVSE hears
from the manager well within ``valid_for`` (ten intervals).

What differs from EVerest's EnergyManager:

- No slice trading: power is shared by exact water-filling (equal shares; what one EVSE
  cannot use goes to the others). ``slice_ampere`` and ``slice_watt`` are accepted and not
  used. Everything is shared in watts; amperes count as A x ``nominal_ac_voltage`` x phases.
- Import only (DC charging): export schedules and setpoints are passed through the tree
  but not acted on. No 1ph/3ph switching (the ``switch_3ph1ph_*`` keys are accepted and not
  used).
- The informative ``schedule`` of each EnforcedLimits lists the EVSE's power at every later
  change of a schedule in the tree within ``schedule_total_duration`` hours, instead of
  fixed ``schedule_interval_duration`` slots (accepted, not used).
- ``update_interval`` may be fractional (EVerest: integer seconds).
- ``debug`` logs every allocation; otherwise only changes are logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .. import wallclock
from ..framework import EverkitError, Module
from .tree import Limits, ManagerSettings, Request, enforced_limits, has_priority

log = logging.getLogger("PyEnergyManager")

TRUNK = "energy_trunk"
SEND_TIMEOUT_S = 5.0


def utc_now() -> datetime:
    return wallclock.utc_now()  # datetime.now(UTC), steppable by tests


def manager_settings(cfg: dict[str, Any]) -> ManagerSettings:
    return ManagerSettings(
        update_interval_s=float(cfg["update_interval"]),
        nominal_voltage_V=float(cfg["nominal_ac_voltage"]),
        horizon=timedelta(hours=float(cfg["schedule_total_duration"])),
    )


@dataclass
class Pacer:
    """When to recompute. Pure: times are monotonic seconds passed in."""

    interval_s: float
    next_run: float | None = None  # None: no request yet, nothing to compute

    def on_request(self, priority: bool, now: float) -> None:
        if priority or self.next_run is None:
            self.next_run = now

    def due(self, now: float) -> bool:
        return self.next_run is not None and now >= self.next_run

    def ran(self, now: float) -> None:
        self.next_run = now + self.interval_s

    def wait_s(self, now: float) -> float | None:
        """How long to sleep; None: until a request comes."""
        return None if self.next_run is None else max(0.0, self.next_run - now)


class PyEnergyManager:
    def __init__(
        self,
        module: Module,
        wall_clock: Callable[[], datetime] = utc_now,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.module = module
        self.wall_clock = wall_clock
        self.clock = clock
        cfg = module.module_config
        self.settings = manager_settings(cfg)
        self.debug = bool(cfg["debug"])
        self.pacer = Pacer(self.settings.update_interval_s)
        self.tree: Request | None = None
        self.runs = 0
        self._last: dict[str, tuple[float, str]] = {}  # uuid -> power, source logged last
        self._failing: set[str] = set()
        self._cond = threading.Condition()
        self._closed = False
        module.subscribe_variable(TRUNK, "energy_flow_request", self.on_request)
        self._thread = threading.Thread(target=self._run, name="energy-manager", daemon=True)

    @classmethod
    def attach(cls, module: Module) -> PyEnergyManager:
        """Subscribe to the trunk and start the loop; call before ``init_done``."""
        manager = cls(module)
        manager._thread.start()
        return manager

    def on_request(self, request: Request) -> None:
        with self._cond:
            self.tree = request
            self.pacer.on_request(has_priority(request), self.clock())
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(SEND_TIMEOUT_S + 1)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self.pacer.due(self.clock()):
                    self._cond.wait(self.pacer.wait_s(self.clock()))
                if self._closed:
                    return
                self.pacer.ran(self.clock())
                tree = self.tree
            if tree is None:
                continue
            try:
                self._send(enforced_limits(tree, self.wall_clock(), self.settings))
            except Exception:  # a bad tree must not end the loop; the next one may be fine
                log.exception("could not share out the power")
            self.runs += 1

    def _send(self, all_limits: list[Limits]) -> None:
        calls: dict[futures.Future[Any], str] = {}
        for limits in all_limits:
            self._log(limits)
            try:
                call = self.module.call_command_async(TRUNK, "enforce_limits", {"value": limits})
            except EverkitError:
                log.exception("enforce_limits for %s not sent", limits["uuid"])
                continue
            calls[call] = limits["uuid"]
        done, late = futures.wait(calls, timeout=SEND_TIMEOUT_S)
        for call in late:
            self.module.cancel_call(call)
        failing = {calls[call] for call in late}
        failing |= {calls[call] for call in done if call.exception() is not None}
        for uuid in sorted(failing - self._failing):
            log.warning("limits for %s were not taken; retrying every interval", uuid)
        for uuid in sorted(self._failing - failing):
            log.info("limits for %s taken again", uuid)
        self._failing = failing

    def _log(self, limits: Limits) -> None:
        power = limits["limits_root_side"]["total_power_W"]
        now = (round(power["value"], 1), power["source"])
        if self.debug or self._last.get(limits["uuid"]) != now:
            log.info("%s: %.1f W (limited by %s)", limits["uuid"], now[0], now[1])
        self._last[limits["uuid"]] = now


def main() -> None:
    module = Module.start()
    manager = PyEnergyManager.attach(module)
    module.init_done()
    try:
        module.serve_forever()
    finally:
        manager.close()
