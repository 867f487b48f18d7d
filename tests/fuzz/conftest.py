"""Fuzzing knobs and the record of how many inputs were tried.

``FUZZ_EXAMPLES`` scales every hypothesis budget (default 1, derandomized; 10 for a long
run). The counts
are printed at the end of the session (visible with ``pytest -s``) and written to
``fuzz-counts.json`` in pytest's base temporary directory."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator

import pytest

SCALE = max(1, int(os.environ.get("FUZZ_EXAMPLES", "1")))
#: The default run (`make test`, CI) draws the same inputs every time, so a failure there
#: is reproducible and a run cannot fail by chance; FUZZ_EXAMPLES > 1 explores freely.
DERANDOMIZE = SCALE == 1


def examples(default: int) -> int:
    return default * SCALE


@pytest.fixture(scope="session")
def fuzz_counts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Counter[str]]:
    counts: Counter[str] = Counter()
    yield counts
    path = tmp_path_factory.getbasetemp() / "fuzz-counts.json"
    path.write_text(json.dumps(dict(sorted(counts.items())), indent=1))
    print(f"\nfuzz inputs tried (FUZZ_EXAMPLES={SCALE}), also in {path}:")
    for key, value in sorted(counts.items()):
        print(f"  {key:55s} {value:7d}")
