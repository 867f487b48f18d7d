"""The wall clock of the modules that act on absolute times (PyOCPP201's charging
schedules and transaction timestamps, the energy tree's schedules).

Test-only hook: when the environment names a file in ``EVERKIT_TEST_CLOCK_OFFSET_FILE``,
the number of seconds written in it is added to the time, so an end-to-end test can step
the clock of running processes as an NTP step would (tests/e2e/test_faults.py). The file
is re-read when it changes. Never set outside tests; unset, this is ``datetime.now(UTC)``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

OFFSET_FILE_ENV = "EVERKIT_TEST_CLOCK_OFFSET_FILE"
_offset_file = os.environ.get(OFFSET_FILE_ENV) or None
_cache: tuple[int, float] = (-1, 0.0)  # (mtime_ns, seconds)


def utc_now() -> datetime:
    now = datetime.now(UTC)
    if _offset_file is None:
        return now
    return now + timedelta(seconds=_offset_s(_offset_file))


def _offset_s(path: str) -> float:
    global _cache  # noqa: PLW0603 - one cached reading per process
    try:
        mtime = os.stat(path).st_mtime_ns
        if mtime != _cache[0]:
            with open(path, encoding="ascii") as file:
                _cache = (mtime, float(file.read().strip() or 0.0))
    except (OSError, ValueError):
        return _cache[1]  # mid-write or gone: keep the last offset
    return _cache[1]
