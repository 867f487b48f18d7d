"""The ``everkit`` command."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from . import __version__
from .framework.broker import PrivateBroker, start_private_broker
from .framework.definitions import Definitions, contract_root, load_yaml
from .framework.errors import EverkitError
from .framework.manager import Manager, check_contract
from .framework.manifests import ManifestStore
from .framework.restart import RestartPolicy
from .framework.runtime_config import load_runtime_config
from .framework.transport import BrokerAddress

log = logging.getLogger("everkit")

ENTRY_POINT_GROUP = "everkit.modules"


def available_modules() -> dict[str, str]:
    """Module name -> "package.module:function", from the ``everkit.modules`` entry points."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_main(name: str) -> Callable[[], None]:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            main: Callable[[], None] = ep.load()
            return main
    known = ", ".join(sorted(available_modules())) or "none"
    raise SystemExit(f"everkit: no module named {name!r} (installed: {known})")


def _setup_logging(tag: str, verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s %(levelname)-7s [{tag}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _log_also_to(file: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(file)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s [manager] %(name)s: %(message)s", "%H:%M:%S")
    )
    logging.getLogger().addHandler(handler)


def run_module(name: str) -> None:
    """Run one module in this process; the EV_* environment says who and where."""
    _setup_logging(os.environ.get("EV_MODULE", name))
    main = _load_main(name)
    try:
        main()
    except EverkitError as exc:
        log.error("%s cannot run: %s", name, exc)
        sys.exit(2)


# subcommands


def cmd_module(args: argparse.Namespace) -> int:
    if args.id:
        os.environ["EV_MODULE"] = args.id
    if args.broker:
        broker = BrokerAddress.parse(args.broker)
        os.environ["EV_MQTT_BROKER_HOST"] = broker.host
        os.environ["EV_MQTT_BROKER_PORT"] = str(broker.port)
    if args.prefix:
        os.environ["EV_MQTT_EVEREST_PREFIX"] = args.prefix
    run_module(args.name)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _setup_logging("manager", args.verbose)
    if args.log_dir:
        _log_also_to(Path(args.log_dir) / "manager.log")
    root = Path(args.contract) if args.contract else contract_root()
    definitions = Definitions.from_dirs(root)
    manifests = ManifestStore([Path(d) for d in args.manifests] + [root / "manifests"])
    try:
        config = load_runtime_config(
            Path(args.config), manifests=manifests, definitions=definitions
        )
        check_contract(config, definitions)
    except EverkitError as exc:
        print(f"everkit run: invalid config, nothing started:\n{exc}", file=sys.stderr)
        return 2
    try:
        restart = _restart_policy(args, config.modules, frozenset(args.standalone))
    except ValueError as exc:
        print(f"everkit run: {exc}", file=sys.stderr)
        return 2
    if args.check:
        count = len(config.modules)
        print(f"{args.config}: valid ({count} module{'s' * (count != 1)})")
        return 0
    private: PrivateBroker | None = None
    # only a broker the file names itself counts: the schema fills in localhost:1883
    written = (load_yaml(Path(args.config)) or {}).get("settings") or {}
    if args.broker:
        broker = BrokerAddress.parse(args.broker)
    elif "mqtt_broker_host" in written or "mqtt_broker_port" in written:
        # as EVerest's manager does: the config names the broker
        broker = BrokerAddress(
            str(config.settings["mqtt_broker_host"]), int(config.settings["mqtt_broker_port"])
        )
    else:
        try:
            private = start_private_broker(prefer_embedded=args.embedded_broker)
        except EverkitError as exc:
            print(f"everkit run: cannot start a broker: {exc}", file=sys.stderr)
            return 1
        broker = private.address
        log.info("private %s broker on %s", private.kind, broker)
    prefix = args.prefix or str(config.settings.get("mqtt_everest_prefix", "everest/"))
    manager = Manager(
        config,
        definitions,
        broker,
        prefix=prefix,
        standalone=frozenset(args.standalone),
        trace=(lambda line: print(f"  bus | {line}", flush=True)) if args.trace else None,
        log_dir=Path(args.log_dir) if args.log_dir else None,
        restart=restart,
    )
    for sig, name in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
        signal.signal(sig, lambda *_, n=name: manager.request_stop(f"{n} received"))
    try:
        manager.start()
        outcome = manager.supervise()
    except EverkitError as exc:
        log.error("%s", exc)
        manager.shutdown()
        outcome = None
    finally:
        if private is not None:
            private.stop()
    if outcome is None:
        return 1
    log.info("everkit run finished: %s", outcome.reason)
    return outcome.status


def _restart_policy(
    args: argparse.Namespace, modules: Mapping[str, Any], standalone: frozenset[str]
) -> RestartPolicy | None:
    if not args.restart and not args.restart_all:
        return None
    ids = {part for item in args.restart for part in item.split(",") if part}
    unknown = sorted(ids - set(modules))
    if unknown:
        raise ValueError(f"--restart names modules not in the config: {', '.join(unknown)}")
    elsewhere = sorted(ids & standalone) + sorted(
        i for i in ids if getattr(modules[i], "standalone", False)
    )
    if elsewhere:
        raise ValueError(f"--restart names standalone modules: {', '.join(elsewhere)}")
    return RestartPolicy(
        None if args.restart_all else frozenset(ids),
        limit=args.restart_limit,
        window_s=args.restart_window,
        delay_s=args.restart_delay,
    )


def cmd_install(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix)
    root = contract_root()
    modules_dir = prefix / "libexec" / "everest" / "modules"
    data_dir = prefix / "share" / "everest"
    environment = Path(sys.prefix)
    for name in sorted(available_modules()):
        manifest = root / "manifests" / f"{name}.yaml"
        if not manifest.is_file():
            print(f"everkit install: module {name} has no manifest at {manifest}", file=sys.stderr)
            return 1
        target = modules_dir / name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(manifest, target / "manifest.yaml")
        (target / "module.py").write_text(
            "# everkit launcher written by `everkit install`\n"
            f"from everkit.cli import run_module\nrun_module({name!r})\n",
            encoding="utf-8",
        )
        venv = target / ".venv"
        if venv.is_symlink() or venv.exists():
            venv.unlink()
        # EVerest runs <module dir>/.venv/bin/python3 when .venv exists; link the whole env
        venv.symlink_to(environment, target_is_directory=True)
        print(f"installed {name} -> {target}")
    added = 0
    for kind in ("interfaces", "types", "errors"):
        (data_dir / kind).mkdir(parents=True, exist_ok=True)
        for source in sorted((root / kind).glob("*.yaml")):
            destination = data_dir / kind / source.name
            if not destination.exists():  # never replace EVerest's own files
                shutil.copyfile(source, destination)
                added += 1
    print(f"added {added} contract files EVerest lacked under {data_dir}")
    return 0


def cmd_modules(_args: argparse.Namespace) -> int:
    for name, target in sorted(available_modules().items()):
        print(f"{name:24} {target}")
    return 0


def _default_demo_config() -> Path:
    return contract_root() / "config" / "sil-dc.yaml"


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415  # ocpp and websockets load only for these

    return run_demo(
        Path(args.config),
        Path(args.report),
        limit_W=args.limit_W,
        trace=args.trace,
        view=args.view,
        verbose=args.verbose,
        uftp=args.uftp,
    )


# Commands with a parser of their own: everything after the name goes to their main(argv).
# Imported only when used (ocpp, websockets and matplotlib are slow to load).
PASSTHROUGH = {
    "csms": (
        "everkit.simulators.csms",
        "run the demo OCPP 2.0.1 CSMS (for the demo and for trying a station)",
    ),
    "check": (
        "everkit.check",
        "check an EVerest bus (ours or C++) against the interface definitions",
    ),
    "watch": (
        "everkit.dashboard.watch",
        "the live dashboard of a running EVerest stack (per EVSE, errors, OCPP)",
    ),
    "uftp": (
        "everkit.uftp.main",
        "the UFTP (Shapeshifter) aggregator adapter: DSO FlexOrders as station power caps",
    ),
    "composite-replay": (
        "everkit.ocpp201.replay",
        "replay composite-schedule cases (libocpp's) through PyOCPP201's smart charging",
    ),
}


def run_passthrough(name: str, argv: list[str]) -> int:
    main_of: Callable[[list[str]], int] = importlib.import_module(PASSTHROUGH[name][0]).main
    return main_of(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="everkit",
        description="EVerest-compatible charger modules and the pure-Python framework that "
        "runs them. Modules are separate processes talking over MQTT in EVerest's wire format.",
    )
    parser.add_argument("--version", action="version", version=f"everkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run an EVerest runtime config: validate it, start a broker and every module",
        description="Validate CONFIG and its manifests (nothing starts if anything is wrong), "
        "start a private Mosquitto on a free loopback port (or use --broker), publish the "
        "definitions, start each module as its own process, send GlobalReady once all are "
        "ready, and stop everything when one module exits (or restart it: --restart) or on "
        "Ctrl-C.",
    )
    run.add_argument("config", help="EVerest runtime config (YAML), e.g. config/example.yaml")
    run.add_argument("--broker", metavar="HOST:PORT", help="use this MQTT broker")
    run.add_argument(
        "--embedded-broker",
        action="store_true",
        help="use everkit's embedded Python broker even if Mosquitto is installed",
    )
    run.add_argument("--prefix", help="EVerest MQTT prefix (default: settings or 'everest/')")
    run.add_argument(
        "--standalone",
        nargs="+",
        default=[],
        metavar="ID",
        help="module ids started elsewhere (e.g. one container each); awaited, not started",
    )
    run.add_argument("--trace", action="store_true", help="print every message on the bus")
    run.add_argument(
        "--restart",
        nargs="+",
        default=[],
        metavar="ID",
        help="restart these modules (ids, also comma-separated) when they fail instead of "
        "stopping all (EVerest's behaviour, the default)",
    )
    run.add_argument("--restart-all", action="store_true", help="restart any module that fails")
    run.add_argument(
        "--restart-limit",
        type=int,
        default=3,
        metavar="N",
        help="at most N restarts of one module within --restart-window, then stop all (default 3)",
    )
    run.add_argument(
        "--restart-window",
        type=float,
        default=60.0,
        metavar="S",
        help="the window of --restart-limit in seconds (default 60)",
    )
    run.add_argument(
        "--restart-delay",
        type=float,
        default=1.0,
        metavar="S",
        help="back-off before the first restart, doubled for each further one within the "
        "window (default 1 s)",
    )
    run.add_argument(
        "--log-dir",
        metavar="DIR",
        help="write each module's output to DIR/<module id>.log and ours to DIR/manager.log",
    )
    run.add_argument("--check", action="store_true", help="only validate the config, then exit")
    run.add_argument("--contract", metavar="DIR", help="folder with interfaces/ types/ errors/")
    run.add_argument(
        "--manifests", nargs="+", default=[], metavar="DIR", help="extra manifest folders"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=cmd_run)

    module = sub.add_parser(
        "module",
        help="run one module in the foreground (as a standalone module or a container)",
        description="Run module NAME. Who and where come from the EV_* environment that an "
        "EVerest manager or `everkit run` sets (EV_MODULE, EV_MQTT_BROKER_HOST/PORT, "
        "EV_MQTT_EVEREST_PREFIX); the options override it.",
    )
    module.add_argument("name", help="module name, e.g. PyExampleSupply (see `everkit modules`)")
    module.add_argument("--id", help="module id in the runtime config (EV_MODULE)")
    module.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker")
    module.add_argument("--prefix", help="EVerest MQTT prefix (EV_MQTT_EVEREST_PREFIX)")
    module.set_defaults(func=cmd_module)

    install = sub.add_parser(
        "install",
        help="lay out everkit's modules inside an EVerest prefix",
        description="Write PREFIX/libexec/everest/modules/<Name>/{manifest.yaml,module.py,"
        ".venv} for every everkit module, so that EVerest's own manager runs them, and add "
        "the interface/type/error files EVerest lacks under PREFIX/share/everest.",
    )
    install.add_argument("--prefix", required=True, help="EVerest install prefix, e.g. /usr")
    install.set_defaults(func=cmd_install)

    demo = sub.add_parser(
        "demo",
        help="a whole DC charging session with OCPP: SIL charger + demo CSMS",
        description="Start the demo CSMS and a private broker, point the config's PyOCPP201 "
        "at the CSMS (fresh store), run the config until the car's script is done, and show "
        "the session: a live dashboard on a terminal (per EVSE the phase, SoC, the car's "
        "target, setpoint and reading, the enforced limit and its source; errors; OCPP), one "
        "line per event otherwise. Writes REPORT/ocpp.jsonl (every OCPP frame), "
        "REPORT/session.json and session.png, and REPORT/logs/<module id>.log.",
    )
    demo.add_argument("--config", default=str(_default_demo_config()), help="runtime config")
    demo.add_argument("--report", default="session-report", help="folder for the recordings")
    demo.add_argument(
        "--limit-W",
        type=int,
        default=30000,
        help="power of the TxProfile the CSMS sets when the transaction starts (W)",
    )
    demo.add_argument(
        "--view",
        choices=("auto", "live", "lines"),
        default="auto",
        help="live: the rich dashboard; lines: one line per event; auto: live on a terminal",
    )
    demo.add_argument(
        "--trace", action="store_true", help="print every message on the bus (implies lines)"
    )
    demo.add_argument(
        "--uftp",
        action="store_true",
        help="also run the UFTP adapter and a DSO that orders flexibility during the session "
        "(one-minute ISPs; the plot shows the order's cap; needs the uftp extra)",
    )
    demo.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    demo.set_defaults(func=cmd_demo)

    for name, (_target, summary) in PASSTHROUGH.items():
        command = sub.add_parser(
            name,
            help=summary,
            add_help=False,
            description=f"`everkit {name} --help` lists its options.",
        )
        command.add_argument("args", nargs=argparse.REMAINDER, help="its own options")

    modules = sub.add_parser("modules", help="list the modules this installation provides")
    modules.set_defaults(func=cmd_modules)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:  # their own parser sees every option, --help too
        return run_passthrough(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
