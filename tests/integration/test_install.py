"""`everkit install --prefix P`: the layout EVerest's manager expects, and a module started
the way EVerest starts Python modules (<dir>/.venv/bin/python3 <dir>/module.py + EV_*).
A whole session through an installed module: tests/e2e/test_installed_module.py."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import yaml

from everkit.framework.definitions import Definitions, contract_root
from everkit.framework.manager import Manager
from everkit.framework.manifests import ManifestStore
from everkit.framework.runtime_config import load_runtime_config
from everkit.framework.transport import BrokerAddress
from tests.e2e.test_installed_module import install, launch_like_everest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_install_lays_out_modules_and_the_launcher_runs_under_everest_conventions(
    tmp_path: Path, broker: BrokerAddress, prefix: str
) -> None:
    install_prefix = tmp_path / "everest"
    printed = install(install_prefix)
    module_dir = install_prefix / "libexec" / "everest" / "modules" / "PyExampleSupply"
    assert "installed PyExampleSupply" in printed
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
    log = tmp_path / "supply.log"
    process = launch_like_everest(install_prefix, "PyExampleSupply", "supply", broker, prefix, log)
    try:
        assert manager.global_ready.wait(30), log.read_text()[-3000:]
    finally:
        process.terminate()
        # 0 after a clean stop; -SIGTERM if the signal beat serve_forever's handler
        assert process.wait(10) in (0, -signal.SIGTERM)
        manager.shutdown()
