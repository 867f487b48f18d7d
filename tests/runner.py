"""Run `everkit run` the way a user does, on the test broker and prefix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from everkit.framework.transport import BrokerAddress

ROOT = Path(__file__).resolve().parents[1]


def run_config(
    config: dict[str, Any],
    folder: Path,
    broker: BrokerAddress,
    prefix: str,
    *extra: str,
    timeout: float = 120,
) -> tuple[int, str]:
    """Write ``config`` to ``folder``, run it to the end; (exit status, all output)."""
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "everkit",
            "run",
            str(path),
            "--broker",
            str(broker),
            "--prefix",
            prefix,
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr
