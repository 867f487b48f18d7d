"""`everkit install --prefix P`: the layout EVerest's manager expects, and a module started
the way EVerest starts Python modules (<dir>/.venv/bin/python3 <dir>/module.py + EV_*)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from everkit.framework.definitions import Definitions, contract_root
from everkit.framework.manager import Manager
from everkit.framework.manifests import ManifestStore
from everkit.framework.runtime_config import load_runtime_config
from everkit.framework.transport import BrokerAddress

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_install_lays_out_modules_and_the_launcher_runs_under_everest_conventions(
    tmp_path: Path, broker: BrokerAddress, prefix: str
) -> None:
    install_prefix = tmp_path / "everest"
    done = subprocess.run(
        [sys.executable, "-m", "everkit", "install", "--prefix", str(install_prefix)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    module_dir = install_prefix / "libexec" / "everest" / "modules" / "PyExampleSupply"
    assert "installed PyExampleSupply" in done.stdout
    assert (
        yaml.safe_load((module_dir / "manifest.yaml").read_text())["provides"]["main"]["interface"]
        == "power_supply_DC"
    )
    python = module_dir / ".venv" / "bin" / "python3"
    assert python.exists()
    assert (install_prefix / "share" / "everest" / "interfaces" / "power_supply_DC.yaml").is_file()

    config_file = tmp_path / "one.yaml"
    config_file.write_text(
        yaml.safe_dump({"active_modules": {"supply": {"module": "PyExampleSupply"}}})
    )
    definitions = Definitions.from_dirs(contract_root())
    config = load_runtime_config(
        config_file,
        manifests=ManifestStore([contract_root() / "manifests"]),
        definitions=definitions,
    )
    manager = Manager(config, definitions, broker, prefix=prefix, standalone=frozenset({"supply"}))
    manager.start()
    env = dict(os.environ)
    env.update(
        EV_MODULE="supply",
        EV_PREFIX=str(install_prefix),
        EV_LOG_CONF_FILE=str(contract_root() / "config" / "logging.ini"),
        EV_MQTT_EVEREST_PREFIX=prefix,
        EV_MQTT_EXTERNAL_PREFIX="",
        EV_MQTT_BROKER_HOST=broker.host,
        EV_MQTT_BROKER_PORT=str(broker.port),
    )
    process = subprocess.Popen([str(python), str(module_dir / "module.py")], env=env, cwd=tmp_path)
    try:
        assert manager.global_ready.wait(30), "the installed module never became ready"
    finally:
        process.terminate()
        # 0 after a clean stop; -SIGTERM if the signal beat serve_forever's handler
        assert process.wait(10) in (0, -signal.SIGTERM)
        manager.shutdown()
