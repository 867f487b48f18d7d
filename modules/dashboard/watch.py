"""``everkit watch``: the live dashboard of a running EVerest stack (ours or C++).

A ``BusListener`` subscribed to ``<prefix>#`` queues every message; one thread feeds
the ``Board`` from it and redraws. The same pieces run inside ``everkit demo``.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import yaml

from ..framework.errors import EverkitError
from ..framework.listener import BusListener
from ..framework.transport import BrokerAddress
from .board import Board, Layout

REFRESH_S = 0.25


def drain_into(
    listener: BusListener, board: Board, now: Callable[[], float], wait_s: float
) -> None:
    """Feed the board what arrived (waiting up to ``wait_s`` for the first message)."""
    try:
        heard = listener.inbox.get(timeout=wait_s)
    except queue.Empty:
        return
    while True:
        board.feed(heard.topic, heard.payload, now())
        try:
            heard = listener.inbox.get_nowait()
        except queue.Empty:
            return


class Dashboard:
    """A board, a bus feed and a view, on a thread of their own until ``stop()``."""

    def __init__(
        self,
        board: Board,
        feed: BusListener,
        title: str,
        *,
        live: bool,
        out: TextIO = sys.stdout,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.board, self.feed, self.title = board, feed, title
        self.lock = threading.Lock()  # the board is fed here and noted from other threads
        self._live, self._out, self._clock = live, out, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def note(self, text: str) -> None:
        with self.lock:
            self.board.note(self._clock(), text)

    def note_ocpp(self, line: str) -> None:
        with self.lock:
            self.board.note_ocpp(line)

    def _run(self) -> None:
        if self._live:
            self._run_live()
        else:
            self._run_lines()

    def _step(self) -> None:
        with self.lock:
            drain_into(self.feed, self.board, self._clock, 0)
        self._stop.wait(REFRESH_S)

    def _run_live(self) -> None:
        from rich.console import Console  # noqa: PLC0415  # only a terminal needs rich
        from rich.live import Live  # noqa: PLC0415

        from .view import render  # noqa: PLC0415

        console = Console(file=self._out)
        with Live(console=console, refresh_per_second=4, redirect_stderr=False) as live:
            while not self._stop.is_set():
                self._step()
                with self.lock:
                    live.update(render(self.board, self._clock(), self.title))
            with self.lock:  # the last picture stays on the screen
                drain_into(self.feed, self.board, self._clock, 0)
                live.update(render(self.board, self._clock(), self.title), refresh=True)

    def _run_lines(self) -> None:
        from .view import LineView  # noqa: PLC0415

        def write(line: str) -> None:
            print(f"  view | {line}", file=self._out, flush=True)

        view = LineView(write)
        while not self._stop.is_set():
            self._step()
            with self.lock:
                view.update(self.board, self._clock())
        with self.lock:
            drain_into(self.feed, self.board, self._clock, 0)
            view.update(self.board, self._clock())


def rich_available() -> bool:
    try:
        import rich  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def choose_live(view: str, out: TextIO) -> bool:
    """``auto``: the live dashboard on a terminal with rich installed, else lines."""
    if view == "lines":
        return False
    if view == "live":
        if not rich_available():
            raise EverkitError("the live view needs rich: pip install 'everkit[dashboard]'")
        return True
    return out.isatty() and rich_available()


def layout_of(config: Path) -> Layout:
    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise EverkitError(f"cannot read runtime config {config}: {exc}") from None
    if not isinstance(raw, dict):
        raise EverkitError(f"{config} is not a runtime config (no mapping)")
    return Layout.from_config(raw)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="everkit watch",
        description="Show a running EVerest stack (everkit's or EVerest's C++ modules) live: "
        "per EVSE the session phase, SoC, the car's target, the power supply's setpoint and "
        "reading, the enforced limit and its source; active errors; the OCPP connection; "
        "recent events. It only listens.",
    )
    parser.add_argument("--broker", required=True, help="MQTT broker as HOST:PORT")
    parser.add_argument(
        "--config", required=True, type=Path, help="the stack's runtime config (which is what)"
    )
    parser.add_argument("--prefix", default="everest/", help="EVerest MQTT prefix")
    parser.add_argument("--duration", type=float, help="stop after S seconds (default: Ctrl-C)")
    parser.add_argument(
        "--view",
        choices=("auto", "live", "lines"),
        default="auto",
        help="live: redraw in the terminal (needs rich); lines: one line per event; "
        "auto: live on a terminal",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        broker = BrokerAddress.parse(args.broker)
        live = choose_live(args.view, sys.stdout)
        layout = layout_of(args.config)
        feed = BusListener(broker, args.prefix, qos=0)
        feed.connect()
    except (ValueError, EverkitError) as exc:
        print(f"everkit watch: {exc}", file=sys.stderr)
        return 2
    print(f"everkit watch: listening on {broker}, prefix {feed.prefix}", flush=True)
    board = Board(layout, feed.prefix, started=time.monotonic())
    dashboard = Dashboard(board, feed, f"everkit watch {args.config}", live=live)
    dashboard.start()
    try:
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        dashboard.stop()
        feed.close()
    return 0
