"""How a ``Board`` looks: a rich layout for a terminal, one line per event for a log."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .board import PHASES, Board, EvseView, OcppView

_STATE_STYLE = {
    "charging": "bold green",
    "cable check": "bold yellow",
    "pre-charge": "bold yellow",
    "preparing": "yellow",
    "stopping": "yellow",
    "finished": "cyan",
    "available": "dim",
}


def clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _volts_amps(pair: tuple[float, float] | None) -> tuple[str, str, str]:
    if pair is None:
        return "-", "-", "-"
    volts, amps = pair
    return f"{volts:6.1f} V", f"{amps:6.1f} A", f"{volts * amps / 1000:5.1f} kW"


def _progress(evse: EvseView, board: Board) -> Text:
    text = Text()
    current = evse.current_phase
    for phase in PHASES:
        reached = evse.phases_reached.get(phase)
        if reached is None:
            text.append(f"○ {phase}", style="dim")
        elif phase == current and evse.session_ended is None:
            text.append(f"● {phase} {clock(reached - board.started)}", style="bold")
        else:
            text.append(f"✓ {phase} {clock(reached - board.started)}", style="green")
        text.append("  ")
    return text


def evse_panel(evse: EvseView, board: Board, now: float) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    for _ in range(3):
        grid.add_column(justify="right", no_wrap=True)
    grid.add_row("", "voltage", "current", "power")
    grid.add_row("car asks", *_volts_amps(evse.ev_target)[:2], "")
    grid.add_row("setpoint", *_volts_amps(evse.setpoint))
    grid.add_row("present", *_volts_amps(evse.present))
    soc = Table.grid(padding=(0, 1))
    soc.add_row(
        Text("SoC", style="bold"),
        ProgressBar(total=100, completed=evse.soc or 0.0, width=30),
        Text(f"{evse.soc:5.1f} %" if evse.soc is not None else "-"),
    )
    limit = Text("limit     ", style="bold")
    if evse.limit is None:
        limit.append("-")
    else:
        limit.append(f"{evse.limit.watts / 1000:.1f} kW", style="bold magenta")
        limit.append(f" from {evse.limit.source or '?'}")
    if evse.next_limit is not None:
        moment, later = evse.next_limit
        limit.append(f"   then {later.watts / 1000:.1f} kW at {moment[11:19]}", style="dim")
    energy = Text("energy    ", style="bold")
    delivered = evse.delivered_Wh
    if delivered is None:
        energy.append("-")
    else:
        end = evse.session_ended if evse.session_ended is not None else now
        start = evse.session_started if evse.session_started is not None else now
        energy.append(f"{delivered / 1000:.3f} kWh in {clock(end - start)}")
        energy.append(f", peak {evse.peak_power_W / 1000:.1f} kW")
    title = Text.assemble(
        (f"EVSE {evse.layout.module_id}", "bold"),
        "  ",
        (evse.state, _STATE_STYLE.get(evse.state, "")),
    )
    return Panel(
        Group(_progress(evse, board), soc, grid, limit, energy), title=title, title_align="left"
    )


def ocpp_panel(ocpp: OcppView) -> Panel:
    if ocpp.connected is None:
        state = Text("connection: not reported", style="dim")
    else:
        state = Text(
            "connected" if ocpp.connected else "offline",
            style="bold green" if ocpp.connected else "bold red",
        )
    if ocpp.boot_status:
        state.append(f"   boot {ocpp.boot_status}")
    lines = [Text(line, overflow="ellipsis", no_wrap=True) for line in ocpp.recent]
    return Panel(Group(state, *lines), title=f"OCPP {ocpp.module_id}", title_align="left")


def errors_panel(board: Board, now: float) -> Panel:
    if not board.errors:
        return Panel(Text("none", style="green"), title="active errors", title_align="left")
    table = Table.grid(padding=(0, 2))
    for error in board.errors.values():
        table.add_row(
            Text(error.type, style="bold red"),
            f"{error.module_id}.{error.impl_id}",
            error.severity,
            clock(now - error.since),
            Text(error.message, overflow="ellipsis", no_wrap=True),
        )
    return Panel(table, title="active errors", title_align="left", border_style="red")


def events_panel(board: Board) -> Panel:
    table = Table.grid(padding=(0, 2))
    for event in board.events:
        table.add_row(Text(clock(event.at - board.started), style="dim"), event.text)
    return Panel(table, title="events", title_align="left")


def render(board: Board, now: float, title: str) -> RenderableType:
    modules = len(board.layout.modules)
    ready = (
        "all modules ready"
        if board.global_ready
        else f"starting: {len(board.ready)}/{modules} modules ready"
    )
    header = Text.assemble(
        (title, "bold"), f"   {clock(now - board.started)}   {ready}   {board.messages} messages"
    )
    parts: list[RenderableType] = [header]
    parts += [evse_panel(evse, board, now) for evse in board.evses.values()]
    parts += [ocpp_panel(ocpp) for ocpp in board.ocpp.values()]
    parts += [errors_panel(board, now), events_panel(board)]
    return Group(*parts)


class LineView:
    """For a log or a pipe: each new event as a line, and a status line while charging."""

    def __init__(self, write: Callable[[str], None], status_every_s: float = 5.0) -> None:
        self._write = write
        self._every = status_every_s
        self._last_status: float | None = None
        self._printed = 0  # Event.seq of the last event written

    def update(self, board: Board, now: float) -> None:
        for event in board.events:
            if event.seq > self._printed:
                self._printed = event.seq
                self._write(f"{clock(event.at - board.started)} {event.text}")
        due = self._last_status is None or now - self._last_status >= self._every
        charging = [e for e in board.evses.values() if e.state == "charging"]
        if charging and due:
            self._last_status = now
            for evse in charging:
                self._write(f"{clock(now - board.started)} {status_line(evse)}")


def status_line(evse: EvseView) -> str:
    volts, amps, power = _volts_amps(evse.present)
    parts = [f"{evse.layout.module_id}: {evse.state}", volts, amps, power]
    if evse.limit is not None:
        parts.append(f"limit {evse.limit.watts / 1000:.1f} kW from {evse.limit.source}")
    if evse.soc is not None:
        parts.append(f"SoC {evse.soc:.1f} %")
    if evse.delivered_Wh is not None:
        parts.append(f"{evse.delivered_Wh / 1000:.3f} kWh")
    return "  ".join(parts)
