"""PyEnergyManager and PyEnergyNode on a real Mosquitto, with test peers around them: fake
EVSE leaves (publish energy_flow_request, record enforce_limits) and a grid operator that
calls set_external_limits. Every cmd and var crosses the bus and is validated by the
framework on both ends; a warning about a dropped or refused message fails the test."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from everkit.energy.manager import PyEnergyManager
from everkit.energy.node import PyEnergyNode
from everkit.energy.tree import format_timestamp
from everkit.framework.module import Module
from everkit.framework.session import Fulfillment
from everkit.framework.transport import BrokerAddress
from tests.integration.harness import META, in_process_stack, start_module

pytestmark = pytest.mark.integration
WAIT = 10.0
PEERS = {
    "TestEnergyLeaf": {
        "description": "a fake EVSE at the bottom of the energy tree",
        "provides": {"energy_grid": {"interface": "energy", "description": "leaf"}},
        "metadata": META,
    },
    "TestGridOperator": {
        "description": "sets external limits on energy nodes",
        "requires": {
            "limits": {
                "interface": "external_energy_limits",
                "min_connections": 1,
                "max_connections": 8,
            }
        },
        "metadata": META,
    },
}


@dataclass
class Seen:
    """enforce_limits calls as the leaves got them, with time.monotonic()."""

    calls: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, leaf: str, limits: dict[str, Any]) -> None:
        with self.changed:
            self.calls.append((time.monotonic(), leaf, limits))
            self.changed.notify_all()

    def of(self, leaf: str) -> list[tuple[float, dict[str, Any]]]:
        """The calls meant for ``leaf`` (a node may forward others' limits too)."""
        with self.changed:
            return [(t, v) for t, who, v in self.calls if who == leaf and v["uuid"] == leaf]

    def wait_for(
        self, leaf: str, predicate: Callable[[dict[str, Any]], bool], count: int = 1
    ) -> list[tuple[float, dict[str, Any]]]:
        with self.changed:
            assert self.changed.wait_for(
                lambda: len([c for c in self.of(leaf) if predicate(c[1])]) >= count, WAIT
            ), f"{leaf} got {[power(v) for _, v in self.of(leaf)]}"
            return [c for c in self.of(leaf) if predicate(c[1])]


def power(limits: dict[str, Any]) -> tuple[float, str]:
    total = limits["limits_root_side"]["total_power_W"]
    return total["value"], total["source"]


class FakeLeaf:
    """Asks for power like PyEvseManager does and records what it is allowed."""

    def __init__(self, module: Module, seen: Seen) -> None:
        self.module = module
        self.seen = seen
        self.requests = 0
        module.implement_command("energy_grid", "enforce_limits", self.enforce_limits)

    def enforce_limits(self, value: dict[str, Any]) -> None:
        self.seen.add(self.module.info.id, value)

    def ask(self, watts: float) -> None:
        limit = {"total_power_W": {"value": watts, "source": "TestEnergyLeaf"}}
        entry = {
            "timestamp": format_timestamp(datetime.now(UTC)),
            "limits_to_root": {},
            "limits_to_leaves": limit,
        }
        request = {
            "uuid": self.module.info.id,
            "node_type": "Evse",
            "children": [],
            "evse_state": "Charging",
            "schedule_import": [entry],
            "schedule_export": [],
            "schedule_setpoints": [],
        }
        self.requests += 1
        self.module.publish_variable("energy_grid", "energy_flow_request", request)


@dataclass
class Tree:
    manager: PyEnergyManager
    nodes: dict[str, PyEnergyNode]
    leaves: dict[str, FakeLeaf]
    operator: Module
    node_order: list[str]
    seen: Seen

    def set_external_limits(self, node: str, watts: float, source: str) -> None:
        entry = {
            "timestamp": format_timestamp(datetime.now(UTC)),
            "limits_to_root": {},
            "limits_to_leaves": {"total_power_W": {"value": watts, "source": source}},
        }
        limits = {"schedule_import": [entry], "schedule_export": [], "schedule_setpoints": []}
        target = Fulfillment("limits", self.node_order.index(node), node, "external_limits")
        self.operator.call_command(target, "set_external_limits", {"value": limits})


def runtime_config(
    nodes: dict[str, tuple[float, list[str]]], leaves: list[str], update_interval: float
) -> dict[str, Any]:
    """``nodes``: id -> (fuse_limit_A, consumer ids); the first node is the trunk."""

    def grid(module_id: str) -> dict[str, str]:
        return {"module_id": module_id, "implementation_id": "energy_grid"}

    trunk = next(iter(nodes))
    modules: dict[str, Any] = {
        "manager": {
            "module": "PyEnergyManager",
            "config_module": {"update_interval": update_interval},
            "connections": {"energy_trunk": [grid(trunk)]},
        },
        "operator": {
            "module": "TestGridOperator",
            "connections": {
                "limits": [{"module_id": n, "implementation_id": "external_limits"} for n in nodes]
            },
        },
    }
    for node_id, (fuse_A, consumers) in nodes.items():
        modules[node_id] = {
            "module": "PyEnergyNode",
            "config_module": {"fuse_limit_A": fuse_A, "phase_count": 3},
            "connections": {"energy_consumer": [grid(c) for c in consumers]},
        }
    for leaf_id in leaves:
        modules[leaf_id] = {"module": "TestEnergyLeaf"}
    return {"active_modules": modules}


@pytest.fixture
def make_tree(
    broker: BrokerAddress, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[Callable[..., Tree]]:
    """``make_tree(nodes, leaves, update_interval)`` starts the stack and waits for ready."""
    with ExitStack() as exits:

        def make(
            nodes: dict[str, tuple[float, list[str]]],
            leaves: list[str],
            update_interval: float = 30,
        ) -> Tree:
            setup = runtime_config(nodes, leaves, update_interval)
            _manager, started = exits.enter_context(
                in_process_stack(broker, prefix, tmp_path, setup, PEERS)
            )
            for module_id in ["manager", "operator", *nodes, *leaves]:
                started[module_id] = start_module(broker, prefix, module_id, default_timeout=WAIT)
            seen = Seen()
            tree = Tree(
                PyEnergyManager.attach(started["manager"]),
                {n: PyEnergyNode.attach(started[n]) for n in nodes},
                {leaf: FakeLeaf(started[leaf], seen) for leaf in leaves},
                started["operator"],
                list(nodes),
                seen,
            )
            exits.callback(tree.manager.close)
            ready = threading.Event()
            for module_id in ["manager", *nodes, *leaves]:
                started[module_id].init_done()
            tree.operator.init_done(ready.set)
            assert ready.wait(WAIT)
            return tree

        yield make
    complaints = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith(("everkit", "PyEnergy"))
    ]
    assert not complaints


def test_an_external_limit_reaches_the_evse_at_once_with_its_source(
    make_tree: Callable[..., Tree],
) -> None:
    """With update_interval 30 s, only the node's priority republication can bring the new
    limit within the 10 s wait."""
    tree = make_tree({"grid": (40, ["evse"])}, ["evse"], update_interval=30)
    tree.leaves["evse"].ask(50000)
    tree.seen.wait_for("evse", lambda v: power(v) == (27600, "PyEnergyNode grid fuse"))
    tree.set_external_limits("grid", 11000, "SO")
    ((_, limits),) = tree.seen.wait_for("evse", lambda v: power(v) == (11000, "SO"))
    assert limits["valid_for"] == 300
    assert limits["limits_root_side"]["ac_max_current_A"]["source"] == "SO"
    assert tree.leaves["evse"].requests == 1


def test_a_fuse_caps_the_evse(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree({"grid": (16, ["evse"])}, ["evse"])
    tree.leaves["evse"].ask(150000)
    ((_, limits),) = tree.seen.wait_for("evse", lambda v: True)
    assert power(limits) == (11040, "PyEnergyNode grid fuse")
    assert limits["limits_root_side"]["ac_max_current_A"]["value"] == pytest.approx(16)


def test_two_evses_share_a_node_by_water_filling(make_tree: Callable[..., Tree]) -> None:
    """grid (40 A, 27.6 kW) -> sink (32 A, 22.08 kW) -> a (asks 10 kW), b (asks 50 kW)."""
    layout = {"grid": (40.0, ["sink"]), "sink": (32.0, ["a", "b"])}
    tree = make_tree(layout, ["a", "b"], update_interval=1)
    tree.leaves["a"].ask(10000)
    tree.leaves["b"].ask(50000)
    tree.seen.wait_for("b", lambda v: power(v) == (22080 - 10000, "PyEnergyNode sink fuse"))
    tree.seen.wait_for("a", lambda v: power(v) == (10000, "TestEnergyLeaf"))
    # the nodes pass each limit only to the consumer it is meant for
    assert {who for _, who, v in tree.seen.calls if v["uuid"] == "a"} == {"a"}


def test_limits_keep_coming_every_update_interval(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree({"grid": (40, ["evse"])}, ["evse"], update_interval=0.2)
    tree.leaves["evse"].ask(50000)
    calls = tree.seen.wait_for("evse", lambda v: True, count=5)
    times = [t for t, _ in calls]
    assert all(later - earlier >= 0.1 for earlier, later in itertools.pairwise(times))
    assert {power(v) for _, v in calls} == {(27600, "PyEnergyNode grid fuse")}
    assert {v["valid_for"] for _, v in calls} == {2}
    assert tree.leaves["evse"].requests == 1
