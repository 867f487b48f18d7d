"""A demo/test OCPP 2.0.1 CSMS on the ``ocpp`` package and ``websockets``.

It is the peer ``make demo`` connects the charger to and the real-websocket peer the
bridge's tests talk to. It shares no code with the station-side bridge on purpose: two
independent readings of OCPP meet on the wire.

Stations connect to ``ws[s]://host:port/ocpp/<stationId>`` with subprotocol ``ocpp2.0.1``,
optionally with HTTP Basic auth (security profile 1) and TLS (profile 2). Every frame is
recorded (``DemoCsms.frames``, optionally a JSON-lines file). Run ``python -m
everkit.simulators.csms --help`` for the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from .csms_handle import InvalidStationReply, StationCallError, StationHandle
from .csms_record import (
    CALL,
    CALLERROR,
    CALLRESULT,
    CSMS_TO_STATION,
    STATION_TO_CSMS,
    CsmsError,
    CsmsTimeout,
    FrameEntry,
    payload_of,
)
from .csms_server import DemoCsms, DemoProfile, station_id_from_path
from .csms_station import ErrorSpec
from .csms_tls import TestPki, make_test_pki

__all__ = [
    "CSMS_TO_STATION",
    "STATION_TO_CSMS",
    "CsmsError",
    "CsmsTimeout",
    "DemoCsms",
    "DemoProfile",
    "ErrorSpec",
    "FrameEntry",
    "FramePrinter",
    "InvalidStationReply",
    "StationCallError",
    "StationHandle",
    "TestPki",
    "main",
    "make_test_pki",
    "payload_of",
    "station_id_from_path",
]


def _call_detail(action: str, payload: dict[str, Any]) -> str:
    """The few words a person wants to see after a CALL's action name."""
    if action == "TransactionEvent":
        event, trigger = payload.get("eventType"), payload.get("triggerReason")
        return f"{event} {trigger} seq {payload.get('seqNo')}"
    if action == "StatusNotification":
        where = f"{payload.get('evseId')}/{payload.get('connectorId')}"
        return f"evse {where} {payload.get('connectorStatus')}"
    if action == "BootNotification":
        return str(payload.get("reason", ""))
    if action == "Authorize":
        return str(payload.get("idToken", {}).get("idToken", ""))
    if action == "SetChargingProfile":
        profile = payload.get("chargingProfile", {})
        return f"{profile.get('chargingProfilePurpose')} evse {payload.get('evseId')}"
    return ""


def _result_detail(payload: dict[str, Any]) -> str:
    if "status" in payload:
        return str(payload["status"])
    if "idTokenInfo" in payload:
        return str(payload["idTokenInfo"].get("status"))
    return "ok"


class FramePrinter:
    """One short line per frame: ``CS001 → BootNotification PowerUp`` for a station's CALL,
    ``CS001 ← BootNotification: Accepted`` for the CSMS's answer; → is station to CSMS."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._actions: dict[tuple[str, str], str] = {}

    def __call__(self, entry: FrameEntry) -> None:
        frame = entry["frame"]
        arrow = "→" if entry["dir"] == STATION_TO_CSMS else "←"
        head = f"{entry['t'][11:19]} {entry['station']} {arrow}"
        kind = frame[0] if isinstance(frame, list) and frame else None
        payload = payload_of(frame)
        if kind == CALL and isinstance(payload, dict):
            self._actions[(entry["station"], frame[1])] = frame[2]
            line = f"{head} {frame[2]} {_call_detail(frame[2], payload)}"
        elif kind in (CALLRESULT, CALLERROR) and isinstance(payload, dict):
            action = self._actions.pop((entry["station"], frame[1]), "?")
            if kind == CALLERROR:
                line = f"{head} {action}: CALLERROR {frame[2]} {frame[3]}"
            else:
                line = f"{head} {action}: {_result_detail(payload)}"
        else:
            line = f"{head} unreadable frame {str(frame)[:80]}"
        print(line.rstrip(), file=self._out, flush=True)


def _parse_passwords(pairs: list[str]) -> dict[str, str] | None:
    if not pairs:
        return None
    passwords: dict[str, str] = {}
    for pair in pairs:
        station, sep, password = pair.partition(":")
        if not sep or not station:
            raise SystemExit(f"--password wants STATION:PASSWORD, got {pair!r}")
        passwords[station] = password
    return passwords


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="everkit csms",
        description="A demo OCPP 2.0.1 CSMS. Stations connect to <url>/<stationId>. "
        "The first line printed is the URL. → marks station-to-CSMS frames.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--record", type=Path, metavar="FILE", help="append frames as JSON lines")
    parser.add_argument(
        "--token", action="append", default=[], help="accepted idToken (repeatable; none: all)"
    )
    parser.add_argument(
        "--password",
        action="append",
        default=[],
        metavar="STATION:PW",
        help="require HTTP Basic auth (repeatable)",
    )
    parser.add_argument(
        "--tls-dir", type=Path, metavar="DIR", help="write a test CA and server cert; serve wss"
    )
    parser.add_argument(
        "--demo-limit-W",
        type=float,
        metavar="N",
        help="demo mode: TxProfile of N W on every started transaction, N/2 after --demo-step-s, "
        "N again after twice that",
    )
    parser.add_argument("--demo-step-s", type=int, default=60, metavar="S")
    parser.add_argument("--quiet", action="store_true", help="no line per frame")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace, out: TextIO) -> None:
    pki = make_test_pki(args.tls_dir) if args.tls_dir is not None else None
    demo = (
        DemoProfile(
            args.demo_limit_W, args.demo_limit_W / 2, args.demo_step_s, 2 * args.demo_step_s
        )
        if args.demo_limit_W
        else None
    )
    csms = DemoCsms(
        accepted_tokens=set(args.token) or None,
        basic_auth=_parse_passwords(args.password),
        ssl_context=pki.server_context if pki is not None else None,
        record_path=args.record,
        demo_profile=demo,
        on_frame=None if args.quiet else FramePrinter(out),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await csms.start(args.host, args.port)
    try:
        scheme = "wss" if pki is not None else "ws"
        print(f"{scheme}://{args.host}:{csms.port}/ocpp", file=out, flush=True)
        if pki is not None:
            print(f"CA file: {pki.ca_file}", file=out, flush=True)
        await stop.wait()
    finally:
        await csms.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop."""
    args = _arguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.quiet:
        logging.getLogger("everkit.csms").setLevel(logging.INFO)
    asyncio.run(_serve(args, out or sys.stdout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
