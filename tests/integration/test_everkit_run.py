"""`everkit run` as a user runs it: real processes, a real Mosquitto, the bus recorded."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from everkit.framework.transport import BrokerAddress
from tests.conftest import RawClient
from tests.wire_rules import violations

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 90


def everkit(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "everkit", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def run_to_end(*args: str) -> tuple[int, str]:
    process = everkit(*args)
    output, _ = process.communicate(timeout=RUN_TIMEOUT)
    return process.returncode, output


def payloads(recorder: RawClient, suffix: str) -> list[object]:
    return [
        json.loads(m.payload) if m.payload else None
        for m in recorder.messages
        if m.topic.endswith(suffix)
    ]


def test_example_config_runs_to_completion_with_a_clean_bus(
    broker: BrokerAddress, prefix: str, recorder: RawClient
) -> None:
    status, output = run_to_end(
        "run", "config/example.yaml", "--broker", str(broker), "--prefix", prefix
    )
    assert status == 0, output
    assert "module 'consumer' (PyExampleConsumer" in output
    assert "exited with status 0" in output
    assert "demo sequence complete" in output
    topics = [m.topic.removeprefix(prefix) for m in recorder.messages]

    # start-up in EVerest's order: definitions, config, ready, clear, GlobalReady
    first_ready = topics.index("ready")
    for retained in (
        "interfaces",
        "interface_definitions/power_supply_DC",
        "manifests/PyExampleSupply",
        "manifests/PyExampleConsumer",
        "module_names",
    ):
        assert retained in topics[:first_ready], retained
        cleared = [m for m in recorder.messages if m.topic == prefix + retained and not m.payload]
        assert cleared, f"{retained} was not cleared before GlobalReady"
    assert topics.index("modules/supply/ready") < first_ready
    assert topics.index("modules/consumer/ready") < first_ready
    assert payloads(recorder, "modules/supply/response")[0]["data"]["status"] == "Ok"

    # the demo's traffic: a refused command, commands, vars, an error raised and cleared
    results = payloads(recorder, "cmd/setExportVoltageCurrent/response/consumer")
    assert results[0]["data"]["data"]["error"]["__everest__error_type"] == "HandlerException"
    assert "retval" in results[1]["data"]["data"]
    assert payloads(recorder, "var/voltage_current")
    kinds = [p["msg_type"] for p in payloads(recorder, "error/power_supply_DC/OverTemperature")]
    assert kinds == ["RaiseError", "ClearError"]

    for message in recorder.messages:
        broken = violations(
            message.topic, message.payload, prefix, qos=message.qos, retain=message.retain
        )
        assert broken == [], (message.topic, message.payload[:200], broken)


def _config(tmp_path: Path, modules: dict[str, object]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"active_modules": modules}))
    return path


@pytest.mark.parametrize(
    ("modules", "module", "key"),
    [
        ({"x": {"module": "NoSuchModule"}}, "x", "module"),
        ({"c": {"module": "PyExampleConsumer"}}, "c", "connections.supply"),
        (
            {
                "s": {
                    "module": "PyExampleSupply",
                    "config_implementation": {"main": {"max_voltage_V": "high"}},
                }
            },
            "s",
            "config_implementation.main.max_voltage_V",
        ),
        (
            {"s": {"module": "PyExampleSupply", "config_module": {"colour": "red"}}},
            "s",
            "config_module.colour",
        ),
    ],
    ids=["unknown module", "missing connection", "bad value", "unknown key"],
)
def test_invalid_config_stops_before_anything_starts_naming_file_module_and_key(
    tmp_path: Path,
    broker: BrokerAddress,
    prefix: str,
    recorder: RawClient,
    modules: dict[str, object],
    module: str,
    key: str,
) -> None:
    config = _config(tmp_path, modules)
    status, output = run_to_end("run", str(config), "--broker", str(broker), "--prefix", prefix)
    assert status == 2, output
    assert str(config) in output
    assert f"module '{module}'" in output
    assert f"key '{key}'" in output
    marker = f"{prefix}marker"
    recorder.publish(marker, b"x")
    recorder.on_topic(marker)
    assert [m.topic for m in recorder.messages] == [marker], "something reached the bus"


def test_a_failing_module_stops_the_stack_with_status_1(
    tmp_path: Path, broker: BrokerAddress, prefix: str
) -> None:
    config = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
    config["active_modules"]["consumer"]["config_module"].update(
        target_voltage_V=450, target_current_A=50, step_timeout_s=5
    )  # 22.5 kW: the supply refuses it, the consumer's sequence fails
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(config))
    status, output = run_to_end("run", str(path), "--broker", str(broker), "--prefix", prefix)
    assert status == 1, output
    assert re.search(r"stopping all modules: module 'consumer' .* exited with status 1", output)


def test_ctrl_c_stops_every_module(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient
) -> None:
    config = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
    config["active_modules"]["consumer"]["config_module"]["exit_when_done"] = False
    path = tmp_path / "forever.yaml"
    path.write_text(yaml.safe_dump(config))
    process = everkit("run", str(path), "--broker", str(broker), "--prefix", prefix)
    recorder.wait_for(lambda m: m.topic == f"{prefix}ready", timeout=30)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "Ctrl-C received" in output
    pids = [int(p) for p in re.findall(r"as pid (\d+)", output)]
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_check_only_validates(tmp_path: Path) -> None:
    status, output = run_to_end("run", "config/example.yaml", "--check")
    assert status == 0
    assert "valid (2 modules)" in output


def test_help_documents_every_command() -> None:
    status, output = run_to_end("--help")
    assert status == 0
    for command in ("run", "module", "install", "modules"):
        assert re.search(rf"^\s+{command}\s+\S", output, re.MULTILINE), command
        sub_status, sub_output = run_to_end(command, "--help")
        assert sub_status == 0
        assert len(sub_output.splitlines()) > 3, sub_output


@pytest.mark.parametrize("flag", [[], ["--embedded-broker"]], ids=["mosquitto", "embedded"])
def test_demo_runs_on_its_own_private_broker(flag: list[str]) -> None:
    """What `make demo` does: no --broker, so everkit starts one (Mosquitto or embedded)."""
    status, output = run_to_end("run", "config/example.yaml", *flag)
    assert status == 0, output
    kind = "embedded" if flag else "mosquitto"
    assert f"private {kind} broker on 127.0.0.1:" in output
    assert "demo sequence complete" in output


def test_a_missing_type_file_stops_the_run_at_boot(tmp_path: Path) -> None:
    """Like the C++ manager, every interface in use is loaded and its $refs resolved
    before anything starts."""
    contract = tmp_path / "contract"
    for folder in ("interfaces", "errors", "types", "manifests", "schemas"):
        shutil.copytree(ROOT / folder, contract / folder)
    (contract / "types" / "power_supply_DC.yaml").unlink()
    status, output = run_to_end(
        "run", "config/example.yaml", "--check", "--contract", str(contract)
    )
    assert status == 2, output
    assert "module 'supply', key 'provides.main.interface'" in output
    assert "power_supply_DC.yaml" in output


def test_a_broker_named_in_the_config_settings_is_used(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient
) -> None:
    config = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
    config["settings"] = {
        "mqtt_broker_host": broker.host,
        "mqtt_broker_port": broker.port,
        "mqtt_everest_prefix": prefix,
    }
    path = tmp_path / "named-broker.yaml"
    path.write_text(yaml.safe_dump(config))
    status, output = run_to_end("run", str(path))
    assert status == 0, output
    assert "private" not in output
    recorder.on_topic(f"{prefix}ready")
