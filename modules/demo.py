"""`everkit demo`: the software DC charger of config/sil-dc.yaml with its OCPP side.

Starts the demo CSMS on a free loopback port (recording every frame to
``<report>/ocpp.jsonl``) and a private MQTT broker, points PyOCPP201 at the CSMS with a fresh
SQLite store, runs the config until the car's script is done, and shows the session live
(``everkit watch``'s dashboard on a terminal, one line per event otherwise). Every module
logs to ``<report>/logs/<module id>.log``; the end writes the session report.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from .cli import main as everkit_main
from .dashboard.board import Board, Layout
from .dashboard.watch import Dashboard, choose_live
from .framework.broker import PrivateBroker, start_private_broker
from .framework.errors import EverkitError
from .framework.listener import BusListener
from .report import write_report

OCPP_MODULE = "PyOCPP201"
DEMO_STEP_S = 15  # cable check and pre-charge take ~9 s: lower ~6 s into charging, raise ~21 s
UFTP_CSMS_STEP_S = 3600  # with --uftp: the CSMS's limit stays at --limit-W
UFTP_CHARGE_S = 150  # with --uftp: up to a minute to the next ISP, the ISP, and some after
PREFIX = "everest/"
LOG_TAIL_LINES = 15


def _point_at(config: dict[str, Any], url: str, store_dir: Path) -> int:
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


class _Console(logging.Handler):
    """Warnings and errors to whatever sys.stderr is at the time (the live view redirects
    it above the dashboard)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


def _log_warnings_only(verbose: bool) -> None:
    """Only warnings to the terminal: the manager's log goes to ``logs/manager.log``
    (``everkit run --log-dir``), the modules' to theirs."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = _Console(logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class Steps:
    """The demo's start-up steps, with a spinner on a terminal and a line each otherwise."""

    def __init__(self, live: bool) -> None:
        self._console: Any = None
        if live:
            from rich.console import Console  # noqa: PLC0415

            self._console = Console()

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        started = time.monotonic()
        if self._console is not None:
            with self._console.status(what + " ..."):
                yield
            self._console.print(f"[green]✓[/green] {what} ({time.monotonic() - started:.1f} s)")
        else:
            print(f"  demo | {what} ...", flush=True)
            yield
            print(f"  demo | {what}: done in {time.monotonic() - started:.1f} s", flush=True)


def _relay(stream: IO[str], to: Callable[[str], None]) -> None:
    for line in stream:
        to(line.rstrip())


def _start_csms(
    record: Path, limit_W: int, step_s: int, log: Path
) -> tuple[subprocess.Popen[str], str]:
    with log.open("ab") as log_file:  # the child keeps its own descriptor
        csms = _popen_csms(record, limit_W, step_s, log_file)
    assert csms.stdout is not None
    url = csms.stdout.readline().strip()
    if not url.startswith("ws"):
        csms.terminate()
        csms.wait(timeout=10)
        raise EverkitError(f"the demo CSMS did not start ({url!r}); see {log}")
    return csms, url


def _popen_csms(
    record: Path, limit_W: int, step_s: int, log_file: IO[bytes]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
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
            str(step_s),
        ],
        stdout=subprocess.PIPE,  # one line per OCPP message: the dashboard shows them
        stderr=log_file,
        text=True,
    )


def _with_uftp(config: dict[str, Any]) -> dict[str, Any]:
    """The UFTP node at the root of the energy tree, and a car that charges long enough for
    a one-minute ISP to begin and end during the session."""
    from .uftp.station_config import with_flex_node  # noqa: PLC0415  # only with --uftp

    config = with_flex_node(config)
    for entry in (config.get("active_modules") or {}).values():
        settings = entry.get("config_module") or {}
        script = settings.get("auto_exec_commands")
        if entry.get("module") == "PyEvSimulator" and isinstance(script, str):
            settings["auto_exec_commands"] = re.sub(
                r"iso_wait_for_stop \d+", f"iso_wait_for_stop {UFTP_CHARGE_S}", script
            )
    return config


def _start_flex(
    config: dict[str, Any], scratch: Path, broker: Any, logs: Path, note: Callable[[str], None]
) -> Any:
    try:
        from .uftp.demo import FlexDemo  # noqa: PLC0415  # needs the uftp extra
    except ImportError as exc:
        raise EverkitError(
            f"--uftp needs the uftp extra: pip install 'everkit[uftp]' ({exc})"
        ) from exc
    meter = _car_side_meter(config)
    flex = FlexDemo(scratch, broker, PREFIX, meter, logs)
    flex.start(note)
    return flex


def _car_side_meter(config: dict[str, Any]) -> tuple[str, str]:
    for entry in (config.get("active_modules") or {}).values():
        if entry.get("module") in ("PyEvseManager", "EvseManager"):
            (meter, *_) = entry.get("connections", {}).get("powermeter_car_side") or [None]
            if meter:
                return str(meter["module_id"]), str(meter["implementation_id"])
    raise EverkitError("--uftp: no EvseManager with a powermeter_car_side in the config")


def _tails(logs: Path) -> str:
    """The end of every module log that has a warning or an error in it."""
    parts = []
    for log in sorted(logs.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        if any(" WARNING " in line or " ERROR " in line for line in lines):
            tail = "\n".join(f"    {line}" for line in lines[-LOG_TAIL_LINES:])
            parts.append(f"  {log}:\n{tail}")
    return "\n".join(parts)


def run_demo(
    config_path: Path,
    report_dir: Path,
    *,
    limit_W: int,
    trace: bool,
    view: str,
    verbose: bool,
    uftp: bool = False,
) -> int:
    live = choose_live("lines" if trace else view, sys.stdout)  # a trace needs the lines
    report_dir.mkdir(parents=True, exist_ok=True)
    logs = report_dir / "logs"
    logs.mkdir(exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()
    _log_warnings_only(verbose)
    record = report_dir / "ocpp.jsonl"
    record.unlink(missing_ok=True)
    config = yaml.safe_load(config_path.read_text())
    if uftp:
        config = _with_uftp(config)
    steps = Steps(live)
    caps: list[tuple[Any, Any, float]] = []
    broker: PrivateBroker | None = None
    csms: subprocess.Popen[str] | None = None
    try:
        with steps.step("starting the demo CSMS"):
            # with a DSO order, the CSMS's limit stays put so the order's cap stands out
            step_s = UFTP_CSMS_STEP_S if uftp else DEMO_STEP_S
            csms, url = _start_csms(record, limit_W, step_s, logs / "csms.log")
        with steps.step("starting the MQTT broker"):
            broker = start_private_broker()
        print(f"  demo | CSMS on {url}, {broker.kind} on {broker.address}, logs in {logs}/")
        feed = BusListener(broker.address, PREFIX, qos=0)
        feed.connect()
        board = Board(Layout.from_config(config), PREFIX, started=time.monotonic())
        dashboard = Dashboard(board, feed, f"everkit demo · {config_path.name}", live=live)
        if live:
            to_board: Callable[[str], None] = dashboard.note_ocpp
        else:

            def to_board(line: str) -> None:
                print(f"  ocpp | {line}", flush=True)

        if live:
            to_events: Callable[[str], None] = dashboard.note
        else:

            def to_events(line: str) -> None:
                print(f"  {line}", flush=True)

        assert csms.stdout is not None
        threading.Thread(target=_relay, args=(csms.stdout, to_board), daemon=True).start()
        dashboard.start()
        try:
            with tempfile.TemporaryDirectory(prefix="everkit-demo-") as scratch:
                if not _point_at(config, url, Path(scratch)):
                    print(f"everkit demo: {config_path} has no {OCPP_MODULE}", file=sys.stderr)
                run_config = Path(scratch) / config_path.name
                run_config.write_text(yaml.safe_dump(config))
                flex = (
                    _start_flex(config, Path(scratch), broker.address, logs, to_events)
                    if uftp
                    else None
                )
                try:
                    status = everkit_main(
                        ["run", str(run_config), "--broker", str(broker.address)]
                        + ["--prefix", PREFIX, "--log-dir", str(logs)]
                        + ["--trace"] * trace
                    )
                finally:
                    if flex is not None:
                        flex.stop()
                        caps = list(flex.caps)
        finally:
            dashboard.stop()
            feed.close()
    except EverkitError as exc:
        print(f"everkit demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if broker is not None:
            broker.stop()
        if csms is not None:
            csms.terminate()
            csms.wait(timeout=10)
    print(f"the stack stopped with status {status}; module logs in {logs}/")
    if status != 0:
        print("the logs with warnings or errors end with:\n" + _tails(logs), file=sys.stderr)
    if record.exists():
        print("OCPP messages of the session:\n" + summary(record), flush=True)
        for written in write_report(record, report_dir, caps=caps):
            print(f"wrote {written}", flush=True)
    return status
