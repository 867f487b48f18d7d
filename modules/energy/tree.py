"""The energy tree's arithmetic: what a node asks for, and how much each EVSE gets.

Pure: no threads, no MQTT, no clock. Schedules carry absolute timestamps, so time comes in
as ``now`` (an aware UTC datetime); ids come in with the config. node.py and manager.py own
the bus, the locks and the wall clock.

Requests and limits stay dicts exactly as on the wire (types/energy.yaml: EnergyFlowRequest,
ExternalLimits, EnforcedLimits), so what the tests build is what the modules publish.

The rules (docs/energy.md explains them with examples):

- Everything is shared out in watts. A schedule entry's *cap* is the tightest of all its
  limits, on both sides (``limits_to_root`` and ``limits_to_leaves``): ``total_power_W`` as
  it is, ``ac_max_current_A`` times the nominal voltage times the phases (the entry's
  ``ac_max_phase_count``, else the default). ``conversion_efficiency`` is taken as 1.
- The entry in force at ``now`` is the last one whose timestamp is not after ``now``; when
  every timestamp lies ahead, the first entry is in force (as in EVerest).
- A request with children is a *node*: its cap limits the sum of everything beneath it. A
  request without children whose ``node_type`` is not ``Generic`` is a *leaf* (an EVSE): it
  asks for its cap and nothing more; a leaf that names no limit asks for nothing. A Generic
  request without children takes no part.
- Each leaf gets the minimum along its path: a node passes on min(what it got, its cap) and
  shares that among its children by water-filling (equal shares; what a child needs less
  than its share goes to the others).
- The source of a leaf's power names what limits it: the leaf's own request when it gets all
  it asked for, else the cap of the node that cut it (an external limit keeps its own
  source, such as "CSO" or "SO"; a fuse says "PyEnergyNode <id> fuse").
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..framework.error_model import rfc3339_ms

Request = dict[str, Any]  # an EnergyFlowRequest as on the wire
Entry = dict[str, Any]  # a ScheduleReqEntry
Limits = dict[str, Any]  # an EnforcedLimits

DEFAULT_PHASES = 3
GENERIC = "Generic"
#: Values beyond this are typos, not installations; clamping keeps sums finite.
MAX_POWER_W = 1e12


# time


def parse_timestamp(text: Any) -> datetime | None:
    """RFC 3339 to an aware datetime; None when unreadable (such an entry is skipped)."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
        # all in UTC, so that comparing them cannot overflow
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


format_timestamp = rfc3339_ms  # 2026-05-06T09:41:12.345Z, as EVerest's modules write


def entry_in_force(schedule: Sequence[Entry], now: datetime) -> Entry | None:
    """The last entry that has started by ``now``; the first one if none has (EVerest's
    rule: the first entry applies at once even if its timestamp lies ahead)."""
    started = [
        (moment, index, entry)
        for index, entry in enumerate(schedule)
        if (moment := parse_timestamp(entry.get("timestamp"))) is not None and moment <= now
    ]
    if started:
        return max(started, key=lambda item: (item[0], item[1]))[2]
    return schedule[0] if schedule else None


# caps


@dataclass(frozen=True)
class Cap:
    """A power limit in W and who set it."""

    watts: float
    source: str


UNLIMITED = Cap(math.inf, "unlimited")


def tightest(caps: Iterable[Cap | None]) -> Cap | None:
    """The lowest cap; on a tie the earlier one, so callers list the preferred source first."""
    best: Cap | None = None
    for cap in caps:
        if cap is not None and (best is None or cap.watts < best.watts):
            best = cap
    return best


def _watts(value: Any) -> float:
    watts = float(value)
    return 0.0 if math.isnan(watts) else min(max(watts, 0.0), MAX_POWER_W)


def entry_phases(entry: Entry) -> int | None:
    """The lowest ac_max_phase_count on either side (kept within 1..3), if any."""
    counts = [
        min(max(int(limits["ac_max_phase_count"]["value"]), 1), DEFAULT_PHASES)
        for side in ("limits_to_root", "limits_to_leaves")
        if "ac_max_phase_count" in (limits := entry.get(side) or {})
    ]
    return min(counts) if counts else None


def entry_cap(
    entry: Entry, nominal_voltage_V: float, max_phases: int = DEFAULT_PHASES
) -> Cap | None:
    """The tightest power limit of one schedule entry; None when it names no limit.
    Amperes flow on the entry's phase count, but never on more than ``max_phases``."""
    phases = min(entry_phases(entry) or max_phases, max_phases)
    caps = []
    for side in ("limits_to_root", "limits_to_leaves"):
        limits = entry.get(side) or {}
        if "total_power_W" in limits:
            power = limits["total_power_W"]
            caps.append(Cap(_watts(power["value"]), str(power["source"])))
        if "ac_max_current_A" in limits:
            current = limits["ac_max_current_A"]
            watts = float(current["value"]) * nominal_voltage_V * phases
            caps.append(Cap(_watts(watts), str(current["source"])))
    return tightest(caps)


# the node's side: its own limits and the request it publishes


@dataclass(frozen=True)
class NodeConfig:
    """One PyEnergyNode: a fuse of ``fuse_limit_A`` on each of ``phase_count`` phases."""

    uuid: str
    fuse_limit_A: float
    phase_count: int = DEFAULT_PHASES
    nominal_voltage_V: float = 230.0

    @property
    def fuse(self) -> Cap:
        watts = self.fuse_limit_A * self.nominal_voltage_V * self.phase_count
        return Cap(_watts(watts), f"PyEnergyNode {self.uuid} fuse")


class EnergyNodeCore:
    """Keeps the children's latest requests and the external limits; builds the request the
    node publishes and decides where an enforce_limits call goes.

    Priority is an event, not a state: the request built right after external limits
    changed carries ``priority_request: true``; a child's priority flag travels up once and
    is cleared in the node's copy, so later republications do not wake the manager again.
    """

    def __init__(self, config: NodeConfig, child_count: int) -> None:
        self.config = config
        self.children: list[Request | None] = [None] * child_count
        self.external: dict[str, Any] | None = None
        self.meter: dict[str, Any] | None = None

    def on_child_request(self, index: int, request: Request, now: datetime) -> Request:
        """A child published its request; returns ours to publish at once."""
        self.children[index] = request
        return self._republish(now, priority=False)

    def set_external_limits(self, limits: dict[str, Any], now: datetime) -> Request:
        """Replace the external limits; returns our request to publish at once, with
        priority when they differ from the previous ones."""
        changed = limits != self.external
        self.external = copy.deepcopy(limits)
        return self._republish(now, priority=changed)

    def on_powermeter(self, reading: dict[str, Any]) -> None:
        """Goes out as energy_usage_root with the next request (no publication of its own:
        meters report often and the manager does not use the reading)."""
        self.meter = reading

    def request(self, now: datetime, priority: bool = False) -> Request:
        external = self.external or {}
        request: Request = {
            "uuid": self.config.uuid,
            "node_type": GENERIC,
            "priority_request": priority,
            "children": [child for child in self.children if child is not None],
            "schedule_import": self._own_schedule(external.get("schedule_import") or [], now),
            "schedule_export": self._own_schedule(external.get("schedule_export") or [], now),
            "schedule_setpoints": copy.deepcopy(external.get("schedule_setpoints") or []),
        }
        if self.meter is not None:
            request["energy_usage_root"] = self.meter
        return request

    def route(self, limits: Limits) -> list[int]:
        """The children an enforce_limits call must go to: the one whose subtree holds the
        uuid; all of them while none is known to (EVerest forwards to all, always). None
        at all when the limits are for this node itself: it has nothing to apply them to."""
        uuid = limits["uuid"]
        if uuid == self.config.uuid:
            return []
        known = [
            index
            for index, child in enumerate(self.children)
            if child is not None and contains(child, uuid)
        ]
        return known or list(range(len(self.children)))

    def _republish(self, now: datetime, priority: bool) -> Request:
        request = self.request(now, priority)
        self.children = [None if c is None else without_priority(c) for c in self.children]
        return request

    def _own_schedule(self, external: Sequence[Entry], now: datetime) -> list[Entry]:
        """The fuse, merged into each external entry (the tighter limit wins)."""
        if not external:
            return [self._entry(format_timestamp(now), None)]
        return [self._entry(str(entry["timestamp"]), entry) for entry in external]

    def _entry(self, timestamp: str, external: Entry | None) -> Entry:
        config = self.config
        fuse = config.fuse
        phases: dict[str, Any] = {"value": config.phase_count, "source": fuse.source}
        cap = fuse
        if external is not None:
            cap = (
                tightest([fuse, entry_cap(external, config.nominal_voltage_V, config.phase_count)])
                or fuse
            )
            external_phases = entry_phases(external)
            if external_phases is not None and external_phases < config.phase_count:
                phases = {"value": external_phases, "source": _phase_source(external)}
        entry: Entry = {
            "timestamp": timestamp,
            "limits_to_root": {
                "total_power_W": {"value": cap.watts, "source": cap.source},
                "ac_max_phase_count": phases,
            },
            "limits_to_leaves": {},
        }
        for key in ("conversion_efficiency", "price_per_kwh"):
            if external is not None and key in external:
                entry[key] = copy.deepcopy(external[key])
        return entry


def _phase_source(entry: Entry) -> str:
    counts = [
        limits["ac_max_phase_count"]
        for side in ("limits_to_root", "limits_to_leaves")
        if "ac_max_phase_count" in (limits := entry.get(side) or {})
    ]
    return str(min(counts, key=lambda count: count["value"])["source"])


# tree walking


def walk(request: Request) -> Iterator[Request]:
    """The request and every request beneath it, depth first."""
    yield request
    for child in request.get("children") or []:
        yield from walk(child)


def contains(request: Request, uuid: str) -> bool:
    return any(node.get("uuid") == uuid for node in walk(request))


def has_priority(request: Request) -> bool:
    """True when any request in the tree asks to be handled at once."""
    return any(node.get("priority_request") for node in walk(request))


def without_priority(request: Request) -> Request:
    """A copy with every priority flag cleared (shares the unchanged parts)."""
    children = request.get("children") or []
    if not has_priority(request):
        return request
    quiet = {**request, "children": [without_priority(child) for child in children]}
    if quiet.get("priority_request"):
        quiet["priority_request"] = False
    return quiet


# allocation


def water_fill(available: float, demands: Sequence[float]) -> list[float]:
    """Share ``available`` equally; a demand below its share gets just the demand and the
    rest is shared among the others. Never more than asked, never more than available
    in total (up to float rounding), and a demand of at least available/n gets at least
    that."""
    shares = [0.0] * len(demands)
    remaining = max(available, 0.0)
    order = sorted(range(len(demands)), key=lambda i: demands[i])
    for position, index in enumerate(order):
        demand = max(demands[index], 0.0)
        level = remaining / (len(order) - position)
        shares[index] = demand if demand <= level else level
        remaining -= shares[index]
    return shares


@dataclass(frozen=True)
class Grant:
    """What one leaf may draw now."""

    uuid: str
    power: Cap
    phases: int


@dataclass(frozen=True)
class _Demand:
    uuid: str
    cap: Cap  # the request's own cap (UNLIMITED for a node without one)
    wants: Cap  # what the subtree can use: min(cap, sum of the children's wants)
    phases: int
    children: tuple[_Demand, ...]
    leaf: bool


def _demand(
    request: Request, now: datetime, nominal_voltage_V: float, phases_above: int
) -> _Demand | None:
    entry = entry_in_force(request.get("schedule_import") or [], now)
    own_phases = entry_phases(entry) if entry is not None else None
    phases = min(phases_above, own_phases or phases_above)
    cap = entry_cap(entry, nominal_voltage_V, phases) if entry is not None else None
    uuid = str(request["uuid"])
    children = request.get("children") or []
    if not children:
        if request.get("node_type") == GENERIC:
            return None
        wants = cap or Cap(0.0, uuid)
        return _Demand(uuid, wants, wants, phases, (), leaf=True)
    below = tuple(
        demand
        for child in children
        if (demand := _demand(child, now, nominal_voltage_V, phases)) is not None
    )
    own = cap or UNLIMITED
    total = sum(child.wants.watts for child in below)
    wants = own if own.watts <= total else Cap(total, uuid)
    return _Demand(uuid, own, wants, phases, below, leaf=False)


def allocate(tree: Request, now: datetime, nominal_voltage_V: float) -> list[Grant]:
    """Each leaf's power at ``now``, in tree order."""
    root = _demand(tree, now, nominal_voltage_V, DEFAULT_PHASES)
    grants: list[Grant] = []
    if root is not None:
        _share(root, UNLIMITED, grants)
    return grants


def _share(node: _Demand, budget: Cap, grants: list[Grant]) -> None:
    # on a tie the deeper limit is named: it is the one that stays when the upper one goes
    available = node.cap if node.cap.watts <= budget.watts else budget
    if node.leaf:
        power = node.wants if node.wants.watts <= available.watts else available
        grants.append(Grant(node.uuid, power, node.phases))
        return
    shares = water_fill(available.watts, [child.wants.watts for child in node.children])
    for child, share in zip(node.children, shares, strict=True):
        _share(child, Cap(share, available.source), grants)


# the manager's output


@dataclass(frozen=True)
class ManagerSettings:
    update_interval_s: float = 1.0
    nominal_voltage_V: float = 230.0
    #: How far ahead the informative schedule looks.
    horizon: timedelta = timedelta(hours=1)
    max_schedule_entries: int = 24

    @property
    def valid_for_s(self) -> int:
        """Ten update intervals, as EVerest: a leaf whose manager went silent stops."""
        return max(1, math.ceil(10 * self.update_interval_s))


def change_times(tree: Request, now: datetime, horizon: timedelta) -> list[datetime]:
    """Every import timestamp in the tree after ``now`` and within ``horizon``, sorted."""
    times = {
        moment
        for node in walk(tree)
        for entry in node.get("schedule_import") or []
        if (moment := parse_timestamp(entry.get("timestamp"))) is not None
        and now < moment <= now + horizon
    }
    return sorted(times)


def limits_res(grant: Grant, nominal_voltage_V: float) -> dict[str, Any]:
    """LimitsRes for a grant: the power, and the per-phase current it means."""
    power = grant.power
    current = power.watts / nominal_voltage_V / grant.phases
    return {
        "total_power_W": {"value": power.watts, "source": power.source},
        "ac_max_current_A": {"value": current, "source": power.source},
    }


def enforced_limits(tree: Request, now: datetime, settings: ManagerSettings) -> list[Limits]:
    """One EnforcedLimits per leaf: its power now, and what it will be at each later change
    within the horizon (for information; the leaf acts on ``limits_root_side`` only)."""
    volts = settings.nominal_voltage_V
    later = [
        (moment, {grant.uuid: grant for grant in allocate(tree, moment, volts)})
        for moment in change_times(tree, now, settings.horizon)
    ]
    result = []
    for grant in allocate(tree, now, volts):
        root_side = limits_res(grant, volts)
        schedule = [{"timestamp": format_timestamp(now), "limits_to_root": root_side}]
        for moment, grants in later:
            future = grants.get(grant.uuid)
            if future is None or len(schedule) >= settings.max_schedule_entries:
                continue
            limits = limits_res(future, volts)
            if limits != schedule[-1]["limits_to_root"]:
                schedule.append({"timestamp": format_timestamp(moment), "limits_to_root": limits})
        result.append(
            {
                "uuid": grant.uuid,
                "valid_for": settings.valid_for_s,
                "limits_root_side": root_side,
                "schedule": schedule,
            }
        )
    return result
