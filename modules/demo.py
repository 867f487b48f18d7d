"""`everkit demo`: the software DC charger of config/sil-dc.yaml with its OCPP side.

Starts the demo CSMS on a free loopback port (recording every frame to
``<report>/ocpp.jsonl``), points PyOCPP201 at it with a fresh SQLite store, runs the config
until the car's script is done, and prints the OCPP traffic as it happens and a count of
messages at the end.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO

import yaml

from .cli import main as everkit_main
from .report import write_report

OCPP_MODULE = "PyOCPP201"
DEMO_STEP_S = 15  # cable check and pre-charge take ~9 s: lower ~6 s into charging, raise ~21 s


def _relay(stream: IO[str], prefix: str) -> None:
    for line in stream:
        print(f"{prefix}{line.rstrip()}", flush=True)


def _point_at(config: dict[str, object], url: str, store_dir: Path) -> int:
    """Set csms_url and CoreDatabasePath of every PyOCPP201 in the config; how many."""
    count = 0
    modules = config.get("active_modules") or {}
    assert isinstance(modules, dict)
    for entry in modules.values():
        if entry.get("module") == OCPP_MODULE:
            settings = entry.setdefault("config_module", {})
            settings["csms_url"] = url
            settings["CoreDatabasePath"] = str(store_dir / f"ocpp-{count}")
            count += 1
    return count


def summary(record: Path) -> str:
    """How many CALLs of each action went each way, and the transaction's events."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    events: list[str] = []
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        frame = entry["frame"]
        if not (isinstance(frame, list) and len(frame) == 4 and frame[0] == 2):
            continue
        sender = "station" if entry["dir"].startswith("station") else "CSMS"
        counts[(sender, frame[2])] += 1
        if frame[2] == "TransactionEvent":
            events.append(frame[3]["eventType"])
    lines = [
        f"  {n:4d} x {action} from the {sender}" for (sender, action), n in sorted(counts.items())
    ]
    if events:
        lines.append(
            f"  transaction: {events.count('Started')} started, "
            f"{events.count('Updated')} updates, {events.count('Ended')} ended"
        )
    return "\n".join(lines)


def run_demo(config_path: Path, report_dir: Path, limit_W: int, trace: bool) -> int:
    report_dir.mkdir(parents=True, exist_ok=True)
    record = report_dir / "ocpp.jsonl"
    record.unlink(missing_ok=True)
    csms = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "everkit.simulators.csms",
            "--port",
            "0",
            "--record",
            str(record),
            "--demo-limit-W",
            str(limit_W),
            "--demo-step-s",
            str(DEMO_STEP_S),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert csms.stdout is not None
        url = csms.stdout.readline().strip()
        if not url.startswith("ws"):
            print(f"everkit demo: the demo CSMS did not start ({url!r})", file=sys.stderr)
            return 1
        print(f"demo CSMS on {url}; OCPP frames go to {record}", flush=True)
        threading.Thread(target=_relay, args=(csms.stdout, "  ocpp | "), daemon=True).start()
        config = yaml.safe_load(config_path.read_text())
        with tempfile.TemporaryDirectory(prefix="everkit-demo-") as scratch:
            if not _point_at(config, url, Path(scratch)):
                print(f"everkit demo: {config_path} has no {OCPP_MODULE}", file=sys.stderr)
            run_config = Path(scratch) / config_path.name
            run_config.write_text(yaml.safe_dump(config))
            status = everkit_main(["run", str(run_config), *(["--trace"] if trace else [])])
    finally:
        csms.terminate()
        csms.wait(timeout=10)
    if record.exists():
        print("OCPP messages of the session:\n" + summary(record), flush=True)
        for written in write_report(record, report_dir):
            print(f"wrote {written}", flush=True)
    return status
