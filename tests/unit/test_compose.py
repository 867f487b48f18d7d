"""docker-compose.yml and deploy/ agree with each other and with what everkit provides:
every command names a real subcommand or module, every mounted file exists, every module of
the deployment's config has its service, user, password and ACL entries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from everkit.cli import available_modules, build_parser
from everkit.simulators.csms import _arguments as csms_arguments

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
CONFIG: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "sil-dc.compose.yaml").read_text())
MODULES: dict[str, Any] = CONFIG["active_modules"]
EVERKIT_SERVICES = {name: s for name, s in SERVICES.items() if name != "mosquitto"}
MODULE_SERVICES = {n: s for n, s in EVERKIT_SERVICES.items() if s["command"][0] == "module"}


def acl_entries() -> dict[str | None, list[tuple[str, str]]]:
    """user (None for `pattern` lines) -> [(access, topic)] of deploy/mosquitto/acl."""
    entries: dict[str | None, list[tuple[str, str]]] = {None: []}
    user: str | None = None
    for line in (ROOT / "deploy" / "mosquitto" / "acl").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
            entries.setdefault(user, [])
        elif words[0] == "topic":
            entries.setdefault(user, []).append((words[1], words[2]))
        elif words[0] == "pattern":
            entries[None].append((words[1], words[2]))
    return entries


def test_every_command_is_an_everkit_subcommand() -> None:
    parser = build_parser()
    for name, service in EVERKIT_SERVICES.items():
        command = service["command"]
        assert service["image"] == "everkit:local", name
        # argparse exits on anything unknown; `everkit csms` hands its options to the CSMS
        if command[0] == "csms":
            options = csms_arguments(command[1:])
            assert (options.host, options.port) == ("0.0.0.0", 9000)
            assert str(options.record).startswith("/data/")
        else:
            assert parser.parse_args(command).command in {"run", "module"}, name


def test_module_services_run_the_configured_module_under_its_id() -> None:
    known = available_modules()
    assert set(MODULE_SERVICES) == set(MODULES)
    for module_id, service in MODULE_SERVICES.items():
        command = service["command"]
        assert command[1] in known, f"{module_id}: no module {command[1]!r}"
        assert command[1] == MODULES[module_id]["module"]
        assert command[command.index("--id") + 1] == module_id
        assert command[command.index("--broker") + 1] == "mosquitto:1883"


def test_manager_awaits_exactly_the_module_services() -> None:
    command = SERVICES["manager"]["command"]
    standalone = [command[i + 1] for i, word in enumerate(command) if word == "--standalone"]
    assert sorted(standalone) == sorted(MODULE_SERVICES)
    assert len(standalone) == len(set(standalone))
    assert command[:2] == ["run", "/config/sil-dc.yaml"]


def test_mounted_files_exist_in_the_repo() -> None:
    mounts = 0
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).is_file(), source
                mounts += 1
            else:
                assert source in COMPOSE["volumes"], f"undeclared volume {source}"
    assert mounts >= 4
    assert (ROOT / "Dockerfile").is_file()


def test_compose_config_differs_only_in_the_csms_url_and_the_store() -> None:
    original = yaml.safe_load((ROOT / "config" / "sil-dc.yaml").read_text())
    ocpp = MODULES["ocpp"]["config_module"]
    assert ocpp["csms_url"] == "ws://csms:9000/ocpp"
    assert ocpp["CoreDatabasePath"].startswith("/data/")
    ocpp_volumes = SERVICES["ocpp"]["volumes"]
    assert any(v.split(":")[1] == "/data" for v in ocpp_volumes)
    assert any(v.split(":")[1] == "/data" for v in SERVICES["csms"]["volumes"])
    ocpp.update(original["active_modules"]["ocpp"]["config_module"])
    assert original == CONFIG


def test_every_service_logs_in_as_its_own_user_with_a_password() -> None:
    users = {}
    for name, service in EVERKIT_SERVICES.items():
        env = service.get("environment") or {}
        if name == "csms":
            continue  # speaks OCPP only
        assert env["EV_MQTT_USERNAME"] == name
        assert env["EV_MQTT_PASSWORD"]
        users[name] = env["EV_MQTT_PASSWORD"]
    assert len(set(users.values())) == len(users), "users share a password"


def test_password_file_has_every_user() -> None:
    lines = (ROOT / "deploy" / "mosquitto" / "passwd").read_text().splitlines()
    assert {line.split(":")[0] for line in lines} == {"manager", *MODULES}


def test_acl_grants_each_connection_and_nothing_across_modules() -> None:
    """Module users write only their own tree, the config request, and the cmds of the
    providers they are connected to; they read those providers' vars, errors and the
    replies addressed to them."""
    acl = acl_entries()
    assert ("readwrite", "everest/modules/%u/#") in acl[None]
    assert acl["manager"][0] == ("readwrite", "#")
    for module_id, entry in MODULES.items():
        providers = {
            (c["module_id"], c["implementation_id"])
            for connections in (entry.get("connections") or {}).values()
            for c in connections
        }
        expected: set[tuple[str, str]] = set()
        for provider, impl in providers:
            base = f"everest/modules/{provider}/impl/{impl}"
            expected |= {
                ("write", f"{base}/cmd/+"),
                ("read", f"{base}/cmd/+/response/{module_id}"),
                ("read", f"{base}/var/#"),
                ("read", f"{base}/error/#"),
            }
        assert set(acl[module_id]) == expected, module_id
    writes = [t for access, t in acl[None] if "write" in access]
    assert writes == ["everest/modules/%u/#", "everest/config/request"]


@pytest.mark.parametrize("option", ["allow_anonymous false", "set_tcp_nodelay true"])
def test_mosquitto_conf_is_locked_down_and_fast(option: str) -> None:
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert re.search(rf"^{option}$", conf, re.MULTILINE)
