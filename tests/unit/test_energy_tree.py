"""The energy tree's arithmetic with a fixed ``now``: schedule entries, caps, the node's
merged request, water-filling, the manager's EnforcedLimits and when it recomputes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from everkit.energy.manager import Pacer
from everkit.energy.tree import (
    Cap,
    EnergyNodeCore,
    ManagerSettings,
    NodeConfig,
    allocate,
    change_times,
    enforced_limits,
    entry_cap,
    entry_in_force,
    format_timestamp,
    has_priority,
    parse_timestamp,
    water_fill,
)
from everkit.framework.definitions import Definitions
from everkit.framework.validation import SchemaCompiler, ValidatorCache
from tests.strategies import from_schema

DEFS = Definitions.from_dirs()
ENERGY = ValidatorCache(DEFS)["energy"]
EXTERNAL = ValidatorCache(DEFS)["external_energy_limits"]
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
VOLTS = 230.0
FUSE_16A = 16 * 230 * 3  # 11040 W
TOLERANCE_W = 1e-6


def at(minutes: float) -> str:
    return format_timestamp(NOW + timedelta(minutes=minutes))


def number(value: float, source: str) -> dict[str, Any]:
    return {"value": value, "source": source}


def entry(
    minutes: float = 0, *, leaves: dict[str, Any] | None = None, **root: Any
) -> dict[str, Any]:
    return {"timestamp": at(minutes), "limits_to_root": root, "limits_to_leaves": leaves or {}}


def leaf(uuid: str, watts: float, *, source: str = "PyEvseManager", **extra: Any) -> dict[str, Any]:
    """A request as PyEvseManager publishes it (its limit on the leaves' side)."""
    request = {
        "uuid": uuid,
        "node_type": "Evse",
        "children": [],
        "schedule_import": [entry(leaves={"total_power_W": number(watts, source)})],
        "schedule_export": [],
        "schedule_setpoints": [],
        **extra,
    }
    ENERGY.check_var("energy_flow_request", request)
    return request


def node(
    uuid: str,
    children: list[dict[str, Any]],
    watts: float | None = None,
    *,
    source: str = "fuse",
    schedule: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    if schedule is None:
        schedule = [entry(total_power_W=number(watts, source))] if watts is not None else []
    return {
        "uuid": uuid,
        "node_type": "Generic",
        "children": children,
        "schedule_import": schedule,
        "schedule_export": [],
        "schedule_setpoints": [],
    }


def external(*entries: dict[str, Any]) -> dict[str, Any]:
    limits = {"schedule_import": list(entries), "schedule_export": [], "schedule_setpoints": []}
    EXTERNAL.check_args("set_external_limits", {"value": limits})
    return limits


def grants(tree: dict[str, Any], now: datetime = NOW) -> dict[str, tuple[float, str]]:
    return {g.uuid: (g.power.watts, g.power.source) for g in allocate(tree, now, VOLTS)}


# time and schedule entries


def test_timestamps_read_rfc3339_and_write_utc_with_milliseconds() -> None:
    assert parse_timestamp("2026-01-01T13:00:00+01:00") == NOW
    assert parse_timestamp("2026-01-01T12:00:00") == NOW  # no offset: UTC
    assert parse_timestamp("yesterday") is None
    assert parse_timestamp(None) is None
    assert format_timestamp(NOW + timedelta(milliseconds=5)) == "2026-01-01T12:00:00.005Z"


def test_the_entry_in_force_is_the_last_one_that_has_started() -> None:
    schedule = [entry(-10, total_power_W=number(1, "a")), entry(-1, total_power_W=number(2, "b"))]
    schedule.append(entry(5, total_power_W=number(3, "c")))
    assert entry_in_force(schedule, NOW) is schedule[1]
    assert entry_in_force(schedule, NOW + timedelta(minutes=5)) is schedule[2]


def test_the_first_entry_is_in_force_even_if_it_lies_ahead() -> None:
    """EVerest's rule (types/energy.yaml: the first slot applies right away)."""
    schedule = [entry(30, total_power_W=number(1, "a")), entry(60, total_power_W=number(2, "b"))]
    assert entry_in_force(schedule, NOW) is schedule[0]
    assert entry_in_force([], NOW) is None


def test_entries_out_of_order_or_unreadable_do_not_confuse_the_choice() -> None:
    late, early = entry(-1, total_power_W=number(2, "b")), entry(-10, total_power_W=number(1, "a"))
    broken = {**entry(0), "timestamp": "not a time"}
    assert entry_in_force([late, early, broken], NOW) is late


def test_an_entry_cap_is_its_tightest_limit_on_either_side() -> None:
    amps = entry(ac_max_current_A=number(16, "CSO"), leaves={"total_power_W": number(20000, "b")})
    assert entry_cap(amps, VOLTS) == Cap(16 * 230 * 3, "CSO")
    one_phase = entry(ac_max_current_A=number(16, "CSO"), ac_max_phase_count=number(1, "CSO"))
    assert entry_cap(one_phase, VOLTS) == Cap(16 * 230, "CSO")
    watts = entry(leaves={"total_power_W": number(5000, "SO"), "ac_max_current_A": number(32, "x")})
    assert entry_cap(watts, VOLTS) == Cap(5000, "SO")
    assert entry_cap(entry(total_power_W=number(-5, "odd")), VOLTS) == Cap(0.0, "odd")
    assert entry_cap(entry(), VOLTS) is None


# the node: its fuse, its external limits and the request it publishes


def node_core(children: int = 2, fuse_A: float = 16, phases: int = 3) -> EnergyNodeCore:
    return EnergyNodeCore(NodeConfig("grid", fuse_A, phases, VOLTS), children)


def test_the_fuse_is_amperes_times_voltage_times_phases() -> None:
    assert NodeConfig("grid", 16, 3, 230).fuse == Cap(11040, "PyEnergyNode grid fuse")
    assert NodeConfig("grid", 32, 1, 120).fuse.watts == 32 * 120


def test_a_node_publishes_its_fuse_and_its_childrens_requests_on_each_child_update() -> None:
    core = node_core()
    first = core.on_child_request(1, leaf("evse_b", 50000), NOW)
    assert [child["uuid"] for child in first["children"]] == ["evse_b"]
    second = core.on_child_request(0, leaf("evse_a", 50000), NOW)
    assert [child["uuid"] for child in second["children"]] == ["evse_a", "evse_b"]
    assert second["uuid"] == "grid"
    assert second["node_type"] == "Generic"
    assert second["priority_request"] is False
    (own,) = second["schedule_import"]
    assert own["timestamp"] == format_timestamp(NOW)
    assert own["limits_to_root"]["total_power_W"] == number(FUSE_16A, "PyEnergyNode grid fuse")
    assert own["limits_to_root"]["ac_max_phase_count"]["value"] == 3
    ENERGY.check_var("energy_flow_request", second)


def test_set_external_limits_republishes_at_once_with_priority_only_when_they_changed() -> None:
    core = node_core()
    core.on_child_request(0, leaf("evse_a", 50000), NOW)
    limits = external(entry(leaves={"total_power_W": number(5000, "SO")}))
    changed = core.set_external_limits(limits, NOW)
    assert changed["priority_request"] is True
    assert [child["uuid"] for child in changed["children"]] == ["evse_a"]
    assert changed["schedule_import"][0]["limits_to_root"]["total_power_W"] == number(5000, "SO")
    assert core.set_external_limits(limits, NOW)["priority_request"] is False
    after = core.on_child_request(0, leaf("evse_a", 50000), NOW)
    assert after["priority_request"] is False
    ENERGY.check_var("energy_flow_request", changed)


def test_external_entries_keep_their_timestamps_and_the_tighter_limit_names_its_source() -> None:
    core = node_core(fuse_A=16)
    limits = external(
        entry(
            0, leaves={"total_power_W": number(5000, "CSO")}, ac_max_phase_count=number(1, "CSO")
        ),
        entry(10, leaves={"total_power_W": number(50000, "CSO")}),
        entry(20, leaves={"ac_max_current_A": number(10, "CSO")}),
    )
    request = core.set_external_limits(limits, NOW)
    merged = [e["limits_to_root"] for e in request["schedule_import"]]
    assert [e["timestamp"] for e in request["schedule_import"]] == [at(0), at(10), at(20)]
    assert merged[0]["total_power_W"] == number(5000, "CSO")
    assert merged[0]["ac_max_phase_count"] == number(1, "CSO")
    assert merged[1]["total_power_W"] == number(FUSE_16A, "PyEnergyNode grid fuse")
    assert merged[2]["total_power_W"] == number(10 * 230 * 3, "CSO")  # A x node voltage x phases
    ENERGY.check_var("energy_flow_request", request)


def test_the_fuse_caps_export_too_and_setpoints_pass_through() -> None:
    core = node_core(fuse_A=16)
    setpoint = {
        "timestamp": at(0),
        "setpoint": {"total_power_W": 3000, "priority": 0, "source": "EMS"},
    }
    limits = {
        "schedule_import": [],
        "schedule_export": [entry(leaves={"total_power_W": number(50000, "EMS")})],
        "schedule_setpoints": [setpoint],
    }
    EXTERNAL.check_args("set_external_limits", {"value": limits})
    request = core.set_external_limits(limits, NOW)
    exported = request["schedule_export"][0]["limits_to_root"]["total_power_W"]
    assert exported == number(FUSE_16A, "PyEnergyNode grid fuse")
    assert request["schedule_setpoints"] == [setpoint]
    ENERGY.check_var("energy_flow_request", request)


def test_external_amperes_flow_on_no_more_phases_than_the_node_has() -> None:
    core = node_core(fuse_A=63, phases=1)
    three = entry(
        leaves={"ac_max_current_A": number(16, "CSO")}, ac_max_phase_count=number(3, "CSO")
    )
    request = core.set_external_limits(external(three), NOW)
    root = request["schedule_import"][0]["limits_to_root"]
    assert root["total_power_W"] == number(16 * 230, "CSO")
    assert root["ac_max_phase_count"] == number(1, "PyEnergyNode grid fuse")


def test_empty_external_limits_leave_the_fuse_alone() -> None:
    core = node_core()
    core.set_external_limits(external(entry(leaves={"total_power_W": number(5000, "SO")})), NOW)
    request = core.set_external_limits(external(), NOW)
    assert request["priority_request"] is True
    assert request["schedule_import"][0]["limits_to_root"]["total_power_W"]["value"] == FUSE_16A


def test_a_childs_priority_request_travels_up_once() -> None:
    core = node_core()
    passed = core.on_child_request(0, leaf("evse_a", 50000, priority_request=True), NOW)
    assert has_priority(passed)
    later = core.on_child_request(1, leaf("evse_b", 50000), NOW)
    assert not has_priority(later)
    assert later["children"][0]["uuid"] == "evse_a"


def test_meter_readings_ride_along_as_energy_usage_root() -> None:
    core = node_core()
    reading = {"timestamp": at(0), "energy_Wh_import": {"total": 1234.5}}
    core.on_powermeter(reading)
    request = core.on_child_request(0, leaf("evse_a", 1000), NOW)
    assert request["energy_usage_root"] == reading
    ENERGY.check_var("energy_flow_request", request)


def test_enforce_limits_goes_to_the_child_that_holds_the_uuid() -> None:
    core = node_core(children=3)
    core.on_child_request(1, node("sink", [leaf("evse_a", 1000)], 5000), NOW)
    core.on_child_request(2, leaf("evse_b", 1000), NOW)
    assert core.route({"uuid": "evse_a"}) == [1]
    assert core.route({"uuid": "evse_b"}) == [2]
    assert core.route({"uuid": "unknown"}) == [0, 1, 2]  # EVerest: forward to all
    assert core.route({"uuid": "grid"}) == []


# water-filling and allocation


def test_water_filling_gives_what_one_cannot_use_to_the_others() -> None:
    assert water_fill(27600, [10000, 50000]) == [10000, 17600]
    assert water_fill(30000, [50000, 50000, 50000]) == [10000, 10000, 10000]
    assert water_fill(30000, [5000, 8000]) == [5000, 8000]
    assert water_fill(0, [5000]) == [0]
    assert water_fill(1000, []) == []


def test_a_fuse_caps_the_leaf_and_is_named() -> None:
    tree = node("grid", [leaf("evse", 50000)], FUSE_16A, source="PyEnergyNode grid fuse")
    assert grants(tree) == {"evse": (FUSE_16A, "PyEnergyNode grid fuse")}


def test_a_leaf_gets_no_more_than_it_asks_for_and_names_itself() -> None:
    tree = node("grid", [leaf("evse", 7000)], FUSE_16A)
    assert grants(tree) == {"evse": (7000, "PyEvseManager")}


def test_the_minimum_along_the_path_wins_and_names_its_source() -> None:
    sink = node("sink", [leaf("evse_a", 150000)], 11000, source="SO")
    tree = node("grid", [sink, leaf("evse_b", 150000)], 27600, source="PyEnergyNode grid fuse")
    assert grants(tree) == {
        "evse_a": (11000, "SO"),
        "evse_b": (16600, "PyEnergyNode grid fuse"),
    }


def test_two_leaves_share_a_node_by_water_filling() -> None:
    tree = node("grid", [leaf("a", 10000), leaf("b", 50000)], 27600, source="fuse")
    assert grants(tree) == {"a": (10000, "PyEvseManager"), "b": (17600, "fuse")}


def test_generic_nodes_without_children_take_no_part_and_a_silent_leaf_asks_nothing() -> None:
    silent = {**leaf("quiet", 1000), "schedule_import": []}
    tree = node("grid", [node("empty", [], 5000), silent, leaf("evse", 50000)], 20000)
    assert grants(tree) == {"quiet": (0.0, "quiet"), "evse": (20000, "fuse")}


def test_a_schedule_entry_counts_from_its_timestamp() -> None:
    schedule = [
        entry(0, total_power_W=number(5000, "CSO")),
        entry(30, total_power_W=number(9000, "CSO")),
    ]
    tree = node("sink", [leaf("evse", 50000)], schedule=schedule)
    assert grants(tree) == {"evse": (5000, "CSO")}
    assert grants(tree, NOW + timedelta(minutes=30)) == {"evse": (9000, "CSO")}
    assert change_times(tree, NOW, timedelta(hours=1)) == [NOW + timedelta(minutes=30)]
    assert change_times(tree, NOW, timedelta(minutes=10)) == []


def test_enforced_limits_carry_power_current_validity_and_the_coming_changes() -> None:
    schedule = [
        entry(0, total_power_W=number(5000, "CSO")),
        entry(30, total_power_W=number(9000, "CSO")),
    ]
    tree = node("sink", [leaf("evse", 50000)], schedule=schedule)
    (limits,) = enforced_limits(tree, NOW, ManagerSettings(update_interval_s=1.5))
    assert limits["uuid"] == "evse"
    assert limits["valid_for"] == 15  # ten update intervals
    root = limits["limits_root_side"]
    assert root["total_power_W"] == number(5000, "CSO")
    assert root["ac_max_current_A"] == pytest.approx(number(5000 / 230 / 3, "CSO"))
    assert [
        (e["timestamp"], e["limits_to_root"]["total_power_W"]["value"]) for e in limits["schedule"]
    ] == [
        (at(0), 5000),
        (at(30), 9000),
    ]
    ENERGY.check_args("enforce_limits", {"value": limits})


def test_the_current_is_per_phase_of_the_narrowest_phase_count_on_the_path() -> None:
    sink = node(
        "sink",
        [leaf("evse", 50000)],
        schedule=[entry(total_power_W=number(3680, "CSO"), ac_max_phase_count=number(1, "CSO"))],
    )
    (limits,) = enforced_limits(node("grid", [sink], 27600), NOW, ManagerSettings())
    assert limits["limits_root_side"]["ac_max_current_A"]["value"] == pytest.approx(16)


def test_has_priority_looks_through_the_whole_tree() -> None:
    deep = node("grid", [node("sink", [leaf("evse", 1, priority_request=True)], 5)], 5)
    assert has_priority(deep)
    assert not has_priority(node("grid", [leaf("evse", 1)], 5))


# when the manager recomputes


def test_the_first_request_and_priority_requests_are_handled_at_once() -> None:
    pacer = Pacer(interval_s=1.0)
    assert not pacer.due(100.0)
    assert pacer.wait_s(100.0) is None
    pacer.on_request(priority=False, now=100.0)
    assert pacer.due(100.0)
    pacer.ran(100.0)
    pacer.on_request(priority=False, now=100.2)
    assert not pacer.due(100.2)
    assert pacer.wait_s(100.2) == pytest.approx(0.8)
    assert pacer.due(101.0)
    pacer.on_request(priority=True, now=100.3)
    assert pacer.due(100.3)


# properties over random trees


@dataclass
class Spec:
    """A random tree: a leaf asks ``watts``; a node caps its subtree at ``watts`` (or not)."""

    watts: float | None
    children: list[Spec]
    uuid: str = ""

    def request(self) -> dict[str, Any]:
        if not self.children:
            assert self.watts is not None
            return leaf(self.uuid, self.watts)
        return node(self.uuid, [c.request() for c in self.children], self.watts, source=self.uuid)

    def leaves(self) -> list[Spec]:
        return [self] if not self.children else [x for c in self.children for x in c.leaves()]

    def nodes(self) -> list[Spec]:
        if not self.children:
            return []
        return [self, *(n for c in self.children for n in c.nodes())]


POWER = st.floats(0, 200_000, allow_nan=False)
LEAF = st.builds(Spec, POWER, st.just([]))
TREES = st.recursive(
    LEAF,
    lambda below: st.builds(Spec, st.none() | POWER, st.lists(below, min_size=1, max_size=4)),
    max_leaves=12,
)


def named(spec: Spec) -> Spec:
    ids = count()

    def name(s: Spec) -> None:
        s.uuid = f"n{next(ids)}"
        for child in s.children:
            name(child)

    name(spec)
    return spec


@settings(max_examples=300, deadline=None)
@given(TREES.map(named))
def test_no_node_gives_out_more_than_its_limit_and_no_leaf_more_than_it_asked(spec: Spec) -> None:
    got = grants(spec.request())
    for one in spec.leaves():
        assert one.watts is not None
        assert 0 <= got[one.uuid][0] <= one.watts
    for one in spec.nodes():
        if one.watts is not None:
            under = sum(got[x.uuid][0] for x in one.leaves())
            assert under <= one.watts + TOLERANCE_W


@settings(max_examples=300, deadline=None)
@given(POWER, st.lists(POWER, min_size=1, max_size=10))
def test_a_leaf_asking_at_least_an_equal_share_gets_at_least_that(
    cap: float, demands: list[float]
) -> None:
    spec = named(Spec(cap, [Spec(watts, []) for watts in demands]))
    got = grants(spec.request())
    equal_share = cap / len(demands)
    for one in spec.leaves():
        assert one.watts is not None
        if one.watts >= equal_share:
            assert got[one.uuid][0] >= equal_share - TOLERANCE_W
    # and nothing is left over while someone still wants more
    assert sum(w for w, _ in got.values()) == pytest.approx(min(cap, sum(demands)), abs=1e-6)


REQUEST_SCHEMA = SchemaCompiler(DEFS).self_contained(
    DEFS.interface("energy").vars["energy_flow_request"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(from_schema(REQUEST_SCHEMA), st.floats(0.05, 60))
def test_any_valid_request_tree_gives_valid_enforced_limits(
    tree: dict[str, Any], interval: float
) -> None:
    for limits in enforced_limits(tree, NOW, ManagerSettings(update_interval_s=interval)):
        ENERGY.check_args("enforce_limits", {"value": limits})
