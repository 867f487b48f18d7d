"""PyInfyPowerDC as its own process under `everkit run`, driven by a standalone test peer."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from everkit.framework.definitions import Definitions, contract_root
from everkit.framework.error_model import ErrorObject
from everkit.framework.manifests import ManifestStore
from everkit.framework.module import Module
from everkit.framework.runtime_config import load_runtime_config
from everkit.framework.transport import BrokerAddress
from tests.integration.harness import start_module
from tests.integration.test_infy_driver import PEER_MANIFEST
from tests.runner import run_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WAIT = 15.0


def test_driver_process_serves_a_peer_over_mqtt(
    tmp_path: Path, broker: BrokerAddress, prefix: str
) -> None:
    config = yaml.safe_load((ROOT / "config" / "psu-sil.yaml").read_text())
    config["active_modules"]["peer"] = {
        "module": "TestPsuPeer",
        "connections": {"psu": [{"module_id": "psu", "implementation_id": "main"}]},
    }
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "TestPsuPeer.yaml").write_text(yaml.safe_dump(PEER_MANIFEST["TestPsuPeer"]))
    path = tmp_path / "psu.yaml"
    path.write_text(yaml.safe_dump(config))
    load_runtime_config(  # the same checks `everkit run` makes, so a typo fails here
        path,
        manifests=ManifestStore([manifests, contract_root() / "manifests"]),
        definitions=Definitions.from_dirs(),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "everkit",
            "run",
            str(path),
            "--broker",
            str(broker),
            "--prefix",
            prefix,
            "--standalone",
            "peer",
            "--manifests",
            str(manifests),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peer: Module | None = None
    try:
        peer = start_module(broker, prefix, "peer", default_timeout=WAIT)
        changed = threading.Condition()
        readings: list[dict[str, float]] = []
        caps: list[dict[str, Any]] = []
        errors: list[ErrorObject] = []

        def keep(bucket: list[Any]) -> Any:
            def add(value: Any) -> None:
                with changed:
                    bucket.append(value)
                    changed.notify_all()

            return add

        peer.subscribe_variable("psu", "voltage_current", keep(readings))
        peer.subscribe_variable("psu", "capabilities", keep(caps))
        peer.subscribe_error("psu", None, keep(errors), lambda e: None)
        ready = threading.Event()
        peer.init_done(ready.set)
        assert ready.wait(WAIT), "no GlobalReady"
        with changed:
            assert changed.wait_for(lambda: caps, WAIT)
        assert caps[-1]["max_export_current_A"] == 200.0
        peer.call_command("psu", "setExportVoltageCurrent", {"voltage": 380.0, "current": 40.0})
        peer.call_command("psu", "setMode", {"mode": "Export", "phase": "Charging"})
        with changed:
            assert changed.wait_for(lambda: readings and readings[-1]["current_A"] > 39, WAIT)
        started = time.monotonic()
        peer.call_command("psu", "setMode", {"mode": "Off", "phase": "Charging"})
        assert time.monotonic() - started < 2.0
        count = len(readings)
        with changed:
            assert changed.wait_for(lambda: len(readings) > count, WAIT)
        assert readings[-1]["current_A"] < 2.0
        assert errors == []
    finally:
        if peer is not None:
            peer.close()
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "SIGTERM received" in output, output


def test_a_can_setup_error_stops_the_module_with_a_clear_message(
    tmp_path: Path, broker: BrokerAddress, prefix: str
) -> None:
    config = yaml.safe_load((ROOT / "config" / "psu-sil.yaml").read_text())
    config["active_modules"]["psu"]["config_implementation"]["main"]["can_interface"] = "socketcan"
    status, output = run_config(config, tmp_path, broker, prefix, timeout=60)
    assert status == 1, output
    assert "module 'psu', key 'config_implementation.main.simulate_modules'" in output
    assert "simulate_modules needs can_interface: virtual" in output
    assert "Traceback" not in output
