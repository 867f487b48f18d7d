"""``everkit check``: watch a live EVerest bus and report every message that breaks a rule.

The rules and the bookkeeping are in ``framework.conformance.Checker`` (sans-IO); this
module is the MQTT client, the live status line, the report and the exit status.
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

from .framework.conformance import DEFAULT_GRACE_S, Checker, Finding
from .framework.definitions import ContractDirs, contract_root
from .framework.errors import EverkitError
from .framework.listener import BusListener
from .framework.manifests import ManifestStore
from .framework.transport import BrokerAddress
from .framework.wire import normalise_prefix

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
CONNECT_TIMEOUT_S = 10.0
LIVE_EVERY_S = 0.5


@dataclass(frozen=True)
class Options:
    broker: BrokerAddress
    prefix: str = "everest/"
    duration: float | None = None
    definitions: Path | None = None
    config: Path | None = None
    report: Path | None = None
    quiet: bool = False
    grace: float = DEFAULT_GRACE_S


def providers_from_config(config: Path, manifest_dirs: list[Path]) -> dict[tuple[str, str], str]:
    """``(module_id, impl_id) -> interface`` from a runtime config and the modules' manifests."""
    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise EverkitError(f"cannot read runtime config {config}: {exc}") from None
    modules = raw.get("active_modules") if isinstance(raw, dict) else None
    if not isinstance(modules, dict):
        raise EverkitError(f"{config} has no active_modules mapping")
    store = ManifestStore(manifest_dirs)
    found: dict[tuple[str, str], str] = {}
    for module_id, body in modules.items():
        name = body.get("module") if isinstance(body, dict) else None
        manifest, _problems = store.try_load(str(name)) if name else (None, ())
        for impl_id, impl in ((manifest or {}).get("provides") or {}).items():
            found[(str(module_id), str(impl_id))] = str(impl["interface"])
    return found


class CheckRun:
    """One check session on a broker: a paho client feeding a ``Checker`` from a queue."""

    def __init__(self, options: Options, out: TextIO = sys.stderr) -> None:
        self.options = options
        self._out = out
        root = options.definitions or contract_root()
        providers: Mapping[tuple[str, str], str] = {}
        if options.config is not None:
            dirs = [options.config.parent / "manifests", root / "manifests"]
            providers = providers_from_config(options.config, dirs)
        self.checker = Checker(
            options.prefix,
            providers=providers,
            fallback=ContractDirs.under(root),
            grace_s=options.grace,
        )
        self.listener = BusListener(options.broker, options.prefix)
        self._stop = threading.Event()
        self._fed = threading.Condition()

    def connect(self) -> None:
        self.listener.connect(CONNECT_TIMEOUT_S)

    def close(self) -> None:
        self.listener.close()

    # checking side (the caller's thread)

    def stop(self) -> None:
        self._stop.set()

    def wait_for(self, predicate: Callable[[Checker], bool], timeout: float) -> bool:
        """Block until ``predicate(checker)`` holds (for tests and embedding)."""
        with self._fed:
            return self._fed.wait_for(lambda: predicate(self.checker), timeout)

    def run(self) -> None:
        """Check messages until ``stop()`` or the configured duration."""
        started = time.monotonic()
        last_live = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self.options.duration is not None and now - started >= self.options.duration:
                break
            try:
                item = self.listener.inbox.get(timeout=0.1)
            except queue.Empty:
                item = None
            with self._fed:
                if item is not None:
                    self.checker.feed(*item)
                self.checker.expire(time.monotonic())
                self._fed.notify_all()
            if not self.options.quiet and now - last_live >= LIVE_EVERY_S:
                last_live = now
                self._out.write("\r" + live_line(self.checker, now - started))
                self._out.flush()
        self._drain()
        if not self.options.quiet:
            self._out.write("\n")

    def _drain(self) -> None:
        with self._fed:
            while True:
                try:
                    self.checker.feed(*self.listener.inbox.get_nowait())
                except queue.Empty:
                    break
            self.checker.expire(time.monotonic())
            self._fed.notify_all()


def live_line(checker: Checker, elapsed: float) -> str:
    violations = sum(1 for f in checker.findings if f.kind != "unanswered")
    unanswered = len(checker.findings) - violations
    return (
        f"{elapsed:7.1f} s  {checker.messages} messages  {violations} violations  "
        f"{unanswered} unanswered  {len(checker.pending)} open cmds "
    )


def text_report(summary: dict[str, Any]) -> str:
    lines = [f"everkit check on prefix {summary['prefix']}: {summary['messages']} messages"]
    for module, interfaces in summary["counts"].items():
        for interface, kinds in interfaces.items():
            counted = ", ".join(f"{kind} {n}" for kind, n in kinds.items())
            lines.append(f"  {module:<24} {interface:<28} {counted}")
    for title, key in (("violations", "violations"), ("unanswered cmds", "unanswered")):
        entries = summary[key]
        lines.append(f"{len(entries)} {title}")
        for entry in entries:
            field = f" [field {entry['field']}]" if entry["field"] else ""
            lines.append(f"  {entry['kind']}: {entry['topic']}{field}")
            lines.append(f"    {entry['reason']}")
            lines.append(f"    payload: {entry['payload']}")
    if summary["pending"]:
        lines.append(f"{len(summary['pending'])} cmds still inside their grace period")
    if summary["unchecked_implementations"]:
        names = ", ".join(summary["unchecked_implementations"])
        lines.append(f"no interface known (schemas not checked) for: {names}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="everkit check",
        description="Watch an EVerest bus and report messages that break the wire rules "
        "or the interfaces, and commands that never got a result.",
    )
    parser.add_argument("--broker", required=True, help="MQTT broker as HOST:PORT")
    parser.add_argument("--prefix", default="everest/", help="EVerest MQTT prefix")
    parser.add_argument("--duration", type=float, help="stop after S seconds (default: Ctrl-C)")
    parser.add_argument(
        "--definitions", type=Path, help="folder with interfaces/, types/, errors/, manifests/"
    )
    parser.add_argument(
        "--config", type=Path, help="runtime config: which module implements which interface"
    )
    parser.add_argument("--report", type=Path, help="also write the report as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no live status line")
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_S,
        help=f"seconds a cmd may wait for its result (default {DEFAULT_GRACE_S:g})",
    )
    return parser


def parse_options(argv: list[str] | None) -> Options:
    args = _parser().parse_args(argv)
    try:
        broker = BrokerAddress.parse(args.broker)
    except (ValueError, EverkitError) as exc:
        _parser().error(f"--broker: {exc}")
    if args.duration is not None and args.duration <= 0:
        _parser().error("--duration must be positive")
    return Options(
        broker=broker,
        prefix=normalise_prefix(args.prefix),
        duration=args.duration,
        definitions=args.definitions,
        config=args.config,
        report=args.report,
        quiet=args.quiet,
        grace=args.grace,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_options(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        run = CheckRun(options)
        run.connect()
    except EverkitError as exc:
        print(f"everkit check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    previous = _install_stop(run)
    try:
        run.run()
    finally:
        run.close()
        _restore(previous)
    summary = run.checker.summary()
    print(text_report(summary))
    if options.report is not None:
        options.report.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK if run.checker.ok else EXIT_FINDINGS


def _install_stop(run: CheckRun) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(_signum: int, _frame: FrameType | None) -> None:
        run.stop()

    return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


__all__ = ["CheckRun", "Finding", "Options", "main", "providers_from_config", "text_report"]
