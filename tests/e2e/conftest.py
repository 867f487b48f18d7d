"""The demo CSMS as its own process (`everkit csms`), one per test, on a free port."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class CsmsProcess:
    url: str
    record: Path

    def frames(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def results_of(self, action: str) -> list[dict[str, Any]]:
        """Payloads of the station's CALLRESULTs to the CSMS's CALLs of ``action``."""
        asked = {
            f["frame"][1]
            for f in self.frames()
            if f["dir"] == "csms->station" and f["frame"][0] == 2 and f["frame"][2] == action
        }
        return [
            f["frame"][2]
            for f in self.frames()
            if f["dir"] == "station->csms" and f["frame"][0] == 3 and f["frame"][1] in asked
        ]

    def sent(self, action: str) -> list[dict[str, Any]]:
        """Payloads of the CALLs of ``action`` the CSMS sent."""
        return [
            f["frame"][3]
            for f in self.frames()
            if f["dir"] == "csms->station" and f["frame"][0] == 2 and f["frame"][2] == action
        ]

    def calls(self, action: str) -> list[dict[str, Any]]:
        """Payloads of the CALLs of ``action`` the station sent, in order."""
        return [
            f["frame"][3]
            for f in self.frames()
            if f["dir"] == "station->csms" and f["frame"][0] == 2 and f["frame"][2] == action
        ]


@pytest.fixture
def csms(tmp_path: Path) -> Iterator[CsmsProcess]:
    with start_csms(tmp_path) as process:
        yield process


@contextmanager
def start_csms(folder: Path, *options: str) -> Iterator[CsmsProcess]:
    """`everkit csms` with ``options`` (e.g. its demo mode) on a free port."""
    record = folder / "csms-frames.jsonl"
    command = [sys.executable, "-m", "everkit.simulators.csms", "--port", "0", "--quiet"]
    process = subprocess.Popen(
        [*command, "--record", str(record), *options], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("ws://"), url
        yield CsmsProcess(url, record)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
