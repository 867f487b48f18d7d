#!/usr/bin/env python3
"""StationLink round trip: the UFTP adapter's set_external_limits against a real PyEnergyNode.

One run, one private Mosquitto (started here), our in-process Manager with three modules,
all standalone in this process: the PyEnergyNode ``uftp_limit`` (fuse 40 A), a leaf beneath
it and ``operator``, a Module requiring ``external_energy_limits`` on the node. Figures:

1. ``StationLink.set_external_limits`` (local contract check, Cmd, CmdResult) round trip,
   next to the baseline ``operator.call_command("set_external_limits")`` of the framework
   (the same check, the same bytes on the wire), in alternating ABBA blocks;
2. the cost of the local check alone (``check_args`` of the compiled validator), in µs.

Each call alternates between two schedules (20 kW and 11 kW now, the fuse later), so every
call changes the limits and the node republishes with priority, as a FlexOrder would.
Informational: the script always exits 0. Run from the repository root:
``.venv/bin/python bench/uftp_station_link.py``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `tests.integration.harness`
    sys.path.insert(0, str(REPO))

from benchstats import summary  # noqa: E402

from everkit.energy.node import PyEnergyNode  # noqa: E402
from everkit.energy.tree import format_timestamp  # noqa: E402
from everkit.framework.broker import start_mosquitto  # noqa: E402
from everkit.framework.session import Fulfillment  # noqa: E402
from everkit.uftp.station_link import StationAddress, StationLink, limits_validators  # noqa: E402
from tests.integration.harness import META, in_process_stack, start_module  # noqa: E402

PREFIX = "benchuftp/"
NODE = "uftp_limit"
WAIT_S = 10.0
MANIFESTS = {
    "BenchLeaf": {
        "description": "a consumer beneath the node",
        "provides": {"energy_grid": {"interface": "energy", "description": "leaf"}},
        "metadata": META,
    },
    "BenchOperator": {
        "description": "sets external limits like the adapter, through the framework",
        "requires": {"limits": {"interface": "external_energy_limits"}},
        "metadata": META,
    },
}
CONFIG = {
    "active_modules": {
        NODE: {
            "module": "PyEnergyNode",
            "config_module": {"fuse_limit_A": 40, "phase_count": 3},
            "connections": {
                "energy_consumer": [{"module_id": "leaf", "implementation_id": "energy_grid"}]
            },
        },
        "leaf": {"module": "BenchLeaf"},
        "operator": {
            "module": "BenchOperator",
            "connections": {
                "limits": [{"module_id": NODE, "implementation_id": "external_limits"}]
            },
        },
    }
}


def limits(watts: float) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "schedule_import": [
            {
                "timestamp": format_timestamp(now),
                "limits_to_root": {"total_power_W": {"value": watts, "source": "SO"}},
                "limits_to_leaves": {},
            },
            {
                "timestamp": format_timestamp(now + timedelta(minutes=15)),
                "limits_to_root": {},
                "limits_to_leaves": {},
            },
        ],
        "schedule_export": [],
        "schedule_setpoints": [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000, help="timed calls per side")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls per side")
    args = parser.parse_args()
    schedules = [limits(20000.0), limits(11000.0)]

    broker = start_mosquitto()
    folder = tempfile.TemporaryDirectory(prefix="everkit-bench-uftp-")
    try:
        with in_process_stack(broker.address, PREFIX, Path(folder.name), CONFIG, MANIFESTS) as (
            _manager,
            started,
        ):
            for module_id in (NODE, "leaf", "operator"):
                started[module_id] = start_module(
                    broker.address, PREFIX, module_id, default_timeout=WAIT_S
                )
            PyEnergyNode.attach(started[NODE])
            started["leaf"].implement_command("energy_grid", "enforce_limits", lambda value: None)
            ready = threading.Event()
            started[NODE].init_done()
            started["leaf"].init_done()
            started["operator"].init_done(ready.set)
            assert ready.wait(WAIT_S), "no GlobalReady"
            operator = started["operator"]
            target = Fulfillment("limits", 0, NODE, "external_limits")
            link = StationLink(
                StationAddress("bench", broker.address, PREFIX), on_power=lambda name, watts: None
            )
            link.start()
            try:

                def via_link(value: dict[str, Any]) -> None:
                    link.set_external_limits(value, timeout_s=WAIT_S)

                def via_framework(value: dict[str, Any]) -> None:
                    operator.call_command(target, "set_external_limits", {"value": value})

                sides = {"link": via_link, "framework": via_framework}
                samples: dict[str, list[int]] = {name: [] for name in sides}
                for call in sides.values():
                    for i in range(args.warmup):
                        call(schedules[i % 2])
                block = max(1, args.iterations // 4)
                for order in (("link", "framework"), ("framework", "link")) * 2:
                    for name in order:
                        gc.collect()
                        for i in range(block):
                            started_ns = time.perf_counter_ns()
                            sides[name](schedules[i % 2])
                            samples[name].append(time.perf_counter_ns() - started_ns)
            finally:
                link.stop()
    finally:
        broker.stop()
        folder.cleanup()

    validators = limits_validators()
    loops = 20000
    checks = []
    for _ in range(5):
        started_ns = time.perf_counter_ns()
        for _ in range(loops):
            validators.check_args("set_external_limits", {"value": schedules[0]})
        checks.append((time.perf_counter_ns() - started_ns) / loops / 1000)

    print(f"set_external_limits round trip, {len(samples['link'])} calls per side (ms)")
    for name in ("link", "framework"):
        figures = summary(samples[name])
        print(
            f"  {name:<10} median {figures['median']:.3f}  p99 {figures['p99']:.3f}  "
            f"mean {figures['mean']:.3f}"
        )
    ratio = summary(samples["link"])["median"] / summary(samples["framework"])["median"]
    print(f"  ratio link/framework (median): {ratio:.2f}")
    print(f"local contract check of the value: {statistics.median(checks):.1f} µs (median of 5)")


if __name__ == "__main__":
    main()
