"""``everkit uftp``: the UFTP aggregator adapter (``run``) and its key tool (``keygen``)."""

from __future__ import annotations

import argparse
import base64
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from ..framework.errors import EverkitError

EXTRA_HINT = "the UFTP adapter needs the uftp extra: pip install 'everkit[uftp]'"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="everkit uftp",
        description="UFTP (Shapeshifter) aggregator adapter: answers a DSO's FlexRequests with "
        "FlexOffers from the stations' flexible power and turns accepted FlexOrders into "
        "per-station power caps (external limits, source SO) over MQTT. See docs/uftp.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the adapter with a config file")
    run.add_argument("config", type=Path, help="the adapter's YAML config (docs/uftp.md)")
    run.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    keygen = sub.add_parser(
        "keygen", help="make an Ed25519 signing key pair (the secret key file is mode 600)"
    )
    keygen.add_argument("out", type=Path, help="file for the secret key (base64, 64 bytes)")
    return parser


def keygen(out: Path) -> int:
    from nacl.bindings import crypto_sign_keypair  # noqa: PLC0415  # the optional uftp extra

    if out.exists():
        print(f"everkit uftp keygen: {out} exists; not overwritten", file=sys.stderr)
        return 1
    public, secret = crypto_sign_keypair()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(base64.b64encode(secret).decode() + "\n")
    public_b64 = base64.b64encode(public).decode()
    print(f"secret key written to {out} (mode 600)")
    print(f"public key (give it to your DSOs): {public_b64}")
    print(f'DNS TXT record _AGR._usef.<your domain>: "cs1.{public_b64}"')
    return 0


def run(config_path: Path, verbose: bool) -> int:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        from . import config as config_module  # noqa: PLC0415  # the optional uftp extra
        from .service import Adapter  # noqa: PLC0415
    except ImportError as exc:
        print(f"everkit uftp: {EXTRA_HINT} ({exc})", file=sys.stderr)
        return 2
    try:
        config = config_module.load(config_path)
    except EverkitError as exc:
        print(f"everkit uftp: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    adapter = Adapter(config)
    adapter.start()
    stop.wait()
    adapter.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "keygen":
        try:
            return keygen(args.out)
        except ImportError:
            print(f"everkit uftp: {EXTRA_HINT}", file=sys.stderr)
            return 2
    return run(args.config, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
