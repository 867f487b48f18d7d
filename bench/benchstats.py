"""Figures shared by the bench scripts that import it (uftp_station_link.py, uftp_adapter.py).

Not a package module: a script in bench/ has bench/ on ``sys.path[0]`` and imports it as
``benchstats``.
"""

from __future__ import annotations

import os
import statistics


def summary(samples_ns: list[int]) -> dict[str, float]:
    """median, p95, p99, max and mean in ms of ``perf_counter_ns`` differences."""
    ms = sorted(s / 1e6 for s in samples_ns)

    def rank(fraction: float) -> float:
        return ms[min(len(ms) - 1, int(len(ms) * fraction))]

    return {
        "median": statistics.median(ms),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": ms[-1],
        "mean": statistics.fmean(ms),
    }


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"
