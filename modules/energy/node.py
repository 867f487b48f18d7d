"""PyEnergyNode: one node of the energy tree, a fuse and the place where external limits
enter. Binds the node core (tree.py) to the bus.

Towards the root it provides ``energy_grid`` (energy): the merged ``energy_flow_request``
of everything beneath it plus its own limits. Towards the leaves it requires
``energy_consumer`` (energy, 1..128), and optionally a ``powermeter`` whose readings ride
along as ``energy_usage_root``. ``external_limits`` (external_energy_limits) lets a grid
operator (source "SO"/"EMS") or PyOCPP201 (source "CSO") cap the node.

Its own limit is ``fuse_limit_A`` x ``nominal_voltage_V`` x ``phase_count`` watts, merged
with the external import schedule entry by entry (the tighter limit wins and names its
source), and published as ``limits_to_root.total_power_W`` of each entry.

What differs from EVerest's EnergyNode:

- ``set_external_limits`` republishes at once, with ``priority_request: true`` when the
  limits differ from the previous ones, so the manager recomputes at once. EVerest waits
  for the next child update (up to a second) and sends no priority. Identical limits sent
  again (OCPP refreshes its composite schedules every 30 s) republish without priority.
- The node's limits go up in watts: amperes are always converted with
  ``nominal_voltage_V``, so ``enhance_external_schedule`` is accepted but changes nothing.
- ``enforce_limits`` goes only to the child whose subtree holds the uuid; to all children
  (as EVerest always does) while no child has reported that uuid.
- ``price_information`` may be connected, for configs that do; prices are not used.

Threads: var callbacks and command handlers run on the framework's workers; each takes the
core's lock, publishes and returns. ``enforce_limits`` waits (bounded) for the children it
forwarded to, so the manager learns about a child that did not take its limits.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from datetime import datetime
from typing import Any

from .. import wallclock
from ..framework import HandlerException, Module
from .tree import DEFAULT_PHASES, EnergyNodeCore, NodeConfig, Request

log = logging.getLogger("PyEnergyNode")

GRID = "energy_grid"
EXTERNAL = "external_limits"
CONSUMERS = "energy_consumer"
FORWARD_TIMEOUT_S = 5.0  # EvseManager answers enforce_limits at once

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return wallclock.utc_now()  # datetime.now(UTC), steppable by tests


def node_config(module_id: str, cfg: dict[str, Any]) -> NodeConfig:
    return NodeConfig(
        uuid=module_id,
        fuse_limit_A=float(cfg["fuse_limit_A"]),
        # EVerest: "omit if not limited"; 0 means the same
        phase_count=int(cfg.get("phase_count") or DEFAULT_PHASES),
        nominal_voltage_V=float(cfg["nominal_voltage_V"]),
    )


class PyEnergyNode:
    def __init__(self, module: Module, clock: Clock = utc_now) -> None:
        self.module = module
        self.clock = clock
        self.children = module.connections(CONSUMERS)
        config = node_config(module.info.id, module.module_config)
        self.core = EnergyNodeCore(config, len(self.children))
        self.lock = threading.Lock()
        module.implement_command(GRID, "enforce_limits", self.enforce_limits)
        module.implement_command(EXTERNAL, "set_external_limits", self.set_external_limits)
        for index, child in enumerate(self.children):
            callback = functools.partial(self.on_child_request, index)
            module.subscribe_variable(child, "energy_flow_request", callback)
        for meter in module.connections("powermeter"):
            module.subscribe_variable(meter, "powermeter", self.on_powermeter)
        fuse = config.fuse
        log.info(
            "%s: fuse %g A x %d phases = %.0f W, %d consumer(s)",
            config.uuid,
            config.fuse_limit_A,
            config.phase_count,
            fuse.watts,
            len(self.children),
        )

    @classmethod
    def attach(cls, module: Module) -> PyEnergyNode:
        """Register the handlers and subscriptions; call before ``init_done``."""
        return cls(module)

    def on_child_request(self, index: int, request: Request) -> None:
        with self.lock:
            self._publish(self.core.on_child_request(index, request, self.clock()))

    def on_powermeter(self, reading: dict[str, Any]) -> None:
        with self.lock:
            self.core.on_powermeter(reading)

    def set_external_limits(self, value: dict[str, Any]) -> None:
        with self.lock:
            request = self.core.set_external_limits(value, self.clock())
            self._publish(request)
        if request["priority_request"]:
            first = request["schedule_import"][0]["limits_to_root"]["total_power_W"]
            log.info(
                "external limits changed; first entry %.0f W (%s)", first["value"], first["source"]
            )

    def enforce_limits(self, value: dict[str, Any]) -> None:
        with self.lock:
            targets = self.core.route(value)
        if not targets:
            # the manager shares power out to leaves; a node has nothing to apply
            log.debug("enforce_limits for this node itself ignored")
            return
        calls = [
            self.module.call_command_async(self.children[index], "enforce_limits", {"value": value})
            for index in targets
        ]
        done, late = futures.wait(calls, timeout=FORWARD_TIMEOUT_S)
        for call in late:
            self.module.cancel_call(call)
        failed = [call.exception() for call in done if call.exception() is not None]
        if late or failed:
            reasons = [str(exc) for exc in failed] + ["no answer"] * len(late)
            raise HandlerException(
                f"limits for {value['uuid']} not taken by {len(reasons)} consumer(s): "
                + "; ".join(reasons)
            )

    def _publish(self, request: Request) -> None:
        self.module.publish_variable(GRID, "energy_flow_request", request)


def main() -> None:
    module = Module.start()
    PyEnergyNode.attach(module)
    module.init_done()
    module.serve_forever()
