"""The session report of `everkit demo`: what the CSMS saw, as a plot and a summary.

Everything comes from the CSMS's frame record (JSON lines, one frame each): the power,
energy and SoC from the TransactionEvents' meter values, the limit from the charging
profiles the CSMS set (and GetCompositeSchedule answers). So the plot shows what an
operator's backend would see, not what the charger believes about itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .ocpp201.timestamps import parse_wire_timestamp

Cap = tuple[datetime, datetime, float]  # (start, end, W) of an ordered power cap

ENERGY = "Energy.Active.Import.Register"


@dataclass
class Session:
    power: list[tuple[datetime, float]] = field(default_factory=list)
    soc: list[tuple[datetime, float]] = field(default_factory=list)
    energy: list[tuple[datetime, float]] = field(default_factory=list)
    limit_steps: list[tuple[datetime, float]] = field(default_factory=list)
    events: list[tuple[datetime, str]] = field(default_factory=list)
    messages: dict[str, int] = field(default_factory=dict)


def read_session(record: Path) -> Session:
    session = Session()
    for line in record.read_text().splitlines():
        frame = json.loads(line)["frame"]
        if not (isinstance(frame, list) and len(frame) == 4 and frame[0] == 2):
            continue
        action, payload = frame[2], frame[3]
        session.messages[action] = session.messages.get(action, 0) + 1
        if action == "TransactionEvent":
            _transaction_event(session, payload)
        elif action == "SetChargingProfile":
            _profile(session, payload["chargingProfile"])
    session.limit_steps.sort()
    return session


def _transaction_event(session: Session, event: dict[str, Any]) -> None:
    moment = parse_wire_timestamp(event["timestamp"])
    session.events.append((moment, f"{event['eventType']} {event['triggerReason']}"))
    for meter in event.get("meterValue", []):
        at = parse_wire_timestamp(meter["timestamp"])
        for sample in meter["sampledValue"]:
            measurand = sample.get("measurand", ENERGY)
            value = float(sample["value"])
            if measurand == "Power.Active.Import":
                session.power.append((at, value))
            elif measurand == "SoC":
                session.soc.append((at, value))
            elif measurand == ENERGY:
                session.energy.append((at, value))


def _profile(session: Session, profile: dict[str, Any]) -> None:
    schedule = profile["chargingSchedule"][0]
    if schedule["chargingRateUnit"] != "W" or "startSchedule" not in schedule:
        return  # the demo CSMS sets absolute W schedules; others are not drawn
    start = parse_wire_timestamp(schedule["startSchedule"])
    for period in schedule["chargingSchedulePeriod"]:
        moment = start + timedelta(seconds=int(period["startPeriod"]))
        session.limit_steps.append((moment, float(period["limit"])))


def summary(session: Session) -> dict[str, Any]:
    energy = [value for _, value in session.energy]
    times = [moment for moment, _ in session.events]
    return {
        "energy_Wh": (max(energy) - min(energy)) if energy else 0.0,
        "duration_s": (max(times) - min(times)).total_seconds() if times else 0.0,
        "max_power_W": max((value for _, value in session.power), default=0.0),
        "soc_percent": {
            "start": session.soc[0][1] if session.soc else None,
            "end": session.soc[-1][1] if session.soc else None,
        },
        "limits_W": [value for _, value in session.limit_steps],
        "events": [f"{moment.isoformat()} {text}" for moment, text in session.events],
        "ocpp_messages": dict(sorted(session.messages.items())),
    }


def plot(session: Session, out: Path, caps: Sequence[Cap] = ()) -> None:
    """Power delivered, the CSMS's limit and any grid operator's caps (kW) over time, SoC
    on a second axis."""
    import matplotlib  # noqa: PLC0415  # heavy, and only the demo needs it

    matplotlib.use("Agg")  # a file, no display
    from matplotlib import pyplot  # noqa: PLC0415

    figure, power_axis = pyplot.subplots(figsize=(10, 5))
    if session.power:
        t0 = min(moment for moment, _ in session.power + session.limit_steps)
        seconds = [(m - t0).total_seconds() for m, _ in session.power]
        power_axis.plot(seconds, [w / 1000 for _, w in session.power], label="power delivered")
        end = max(seconds)
        # a profile may run on after the session: draw only what happened during it
        shown = [(m, w) for m, w in session.limit_steps if (m - t0).total_seconds() <= end]
        if shown:
            steps = [(m - t0).total_seconds() for m, _ in shown]
            values = [w / 1000 for _, w in shown]
            power_axis.step([*steps, end], [*values, values[-1]], where="post", label="CSMS limit")
        for index, (begin, until, watts) in enumerate(caps):
            power_axis.hlines(
                watts / 1000,
                (begin - t0).total_seconds(),
                (until - t0).total_seconds(),
                colors="tab:red",
                linewidth=2.5,
                label="DSO order cap (UFTP, SO)" if index == 0 else "_nolegend_",
            )
        if session.soc:
            soc_axis = power_axis.twinx()
            soc_axis.plot(
                [(m - t0).total_seconds() for m, _ in session.soc],
                [s for _, s in session.soc],
                color="tab:green",
                linestyle=":",
                label="SoC",
            )
            soc_axis.set_ylabel("EV state of charge (%)")
    power_axis.set_xlabel("time since the first reading (s)")
    power_axis.set_ylabel("kW")
    power_axis.set_title("DC session as the CSMS saw it")
    power_axis.grid(True, alpha=0.3)
    power_axis.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    pyplot.close(figure)


def write_report(record: Path, folder: Path, caps: Sequence[Cap] = ()) -> list[Path]:
    """session.png and session.json in ``folder``; the files written. ``caps``: (start,
    end, W) of the power caps a grid operator ordered (``everkit demo --uftp``)."""
    session = read_session(record)
    written = []
    summary_file = folder / "session.json"
    content = summary(session)
    if caps:
        content["order_caps"] = [
            {"start": begin.isoformat(), "end": until.isoformat(), "W": watts}
            for begin, until, watts in caps
        ]
    summary_file.write_text(json.dumps(content, indent=2) + "\n")
    written.append(summary_file)
    try:
        plot_file = folder / "session.png"
        plot(session, plot_file, caps)
        written.append(plot_file)
    except ImportError:
        print("no plot: matplotlib is not installed (pip install 'everkit[report]')")
    return written
