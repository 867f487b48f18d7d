"""Give a station config the energy node a UFTP adapter writes to: a PyEnergyNode between
the PyEnergyManager and the rest of the tree, whose only writer is the adapter.

Why a node of its own: ``set_external_limits`` replaces a node's whole schedule (last
writer wins, as in EVerest), and PyOCPP201 already writes the CSMS's limits to the nodes
mapped to EVSEs. On a node above them the order's cap and the CSMS's limits both hold:
the energy manager takes the tightest along the path. Its fuse is set high: the node
carries caps, the real fuses stay where they are."""

from __future__ import annotations

import copy
from typing import Any

NODE = "uftp_limit"
OPEN_FUSE_A = 1000.0  # never binding: the node only carries the orders' caps


def with_flex_node(config: dict[str, Any], node: str = NODE) -> dict[str, Any]:
    """A copy of ``config`` with ``node`` inserted at the root of every energy manager's
    tree. Raises ValueError when there is no PyEnergyManager or ``node`` exists."""
    config = copy.deepcopy(config)
    modules: dict[str, Any] = config.get("active_modules") or {}
    if node in modules:
        raise ValueError(f"the config already has a module {node!r}")
    managers = [m for m in modules.values() if m.get("module") == "PyEnergyManager"]
    if not managers:
        raise ValueError("the config has no PyEnergyManager: a UFTP cap needs an energy tree")
    trunks: list[dict[str, str]] = []
    for manager in managers:
        connections = manager.setdefault("connections", {})
        trunks += connections.get("energy_trunk", [])
        connections["energy_trunk"] = [{"module_id": node, "implementation_id": "energy_grid"}]
    modules[node] = {
        "module": "PyEnergyNode",
        "config_module": {"fuse_limit_A": OPEN_FUSE_A, "phase_count": 3},
        "connections": {"energy_consumer": trunks},
    }
    return config
