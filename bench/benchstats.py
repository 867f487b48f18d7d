"""Helpers shared by the bench scripts: figures, report rows, stopping child processes.

Not a package module: a script in bench/ has bench/ on ``sys.path[0]`` and imports it as
``benchstats``.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
from pathlib import Path
from typing import Any


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


def stop_process(process: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM (a clean stop), SIGKILL after ``timeout``; the exit status. A piped stdout is
    closed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


def stats_row(
    label: str, stats: dict[str, float] | None, *, width: int, n_width: int = 6, mean: bool = False
) -> str:
    """One report line: n, median, p99, max (and mean) in ms, or '-' without samples."""
    if stats is None:
        return f"  {label:<{width}}{'-':>{n_width}}"
    row = (
        f"  {label:<{width}}{stats['n']:>{n_width}}{stats['median_ms']:>9.2f}"
        f"{stats['p99_ms']:>9.2f}{stats['max_ms']:>9.2f}"
    )
    return row + (f"{stats['mean_ms']:>9.2f}" if mean else "")


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nfigures written to {path}")
