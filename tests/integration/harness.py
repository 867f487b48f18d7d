"""An in-process EVerest stack: our Manager (all modules standalone) on the test broker,
and Modules built in the test, so tests can drive both ends of the wire."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from everkit.framework.definitions import Definitions, contract_root
from everkit.framework.manager import Manager
from everkit.framework.manifests import ManifestStore
from everkit.framework.module import Module
from everkit.framework.runtime_config import load_runtime_config
from everkit.framework.session import ModuleEnvironment
from everkit.framework.transport import BrokerAddress

META = {"license": "https://www.apache.org/licenses/LICENSE-2.0", "authors": ["everkit tests"]}
TEST_MANIFESTS: dict[str, dict[str, Any]] = {
    "TestProvider": {
        "description": "test provider of a PSU and an IMD",
        "provides": {
            "main": {"interface": "power_supply_DC", "description": "psu"},
            "imd": {"interface": "isolation_monitor", "description": "imd"},
        },
        "metadata": META,
    },
    "TestRequirer": {
        "description": "test requirer of a PSU and an IMD",
        "requires": {
            "psu": {"interface": "power_supply_DC"},
            "imd": {"interface": "isolation_monitor"},
        },
        "metadata": META,
    },
}
TEST_CONFIG = {
    "active_modules": {
        "provider": {"module": "TestProvider", "mapping": {"module": {"evse": 1}}},
        "requirer": {
            "module": "TestRequirer",
            "connections": {
                "psu": [{"module_id": "provider", "implementation_id": "main"}],
                "imd": [{"module_id": "provider", "implementation_id": "imd"}],
            },
        },
    }
}


def write_test_config(
    folder: Path,
    config: dict[str, Any] | None = None,
    manifests: dict[str, dict[str, Any]] | None = None,
) -> Path:
    manifest_dir = folder / "manifests"
    manifest_dir.mkdir(exist_ok=True)
    for name, manifest in (TEST_MANIFESTS if manifests is None else manifests).items():
        (manifest_dir / f"{name}.yaml").write_text(yaml.safe_dump(manifest))
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(TEST_CONFIG if config is None else config))
    return path


@contextmanager
def in_process_stack(
    broker: BrokerAddress,
    prefix: str,
    folder: Path,
    config: dict[str, Any] | None = None,
    manifests: dict[str, dict[str, Any]] | None = None,
) -> Iterator[tuple[Manager, dict[str, Module]]]:
    """Start the manager; yield it and a dict the test fills with started modules."""
    config_file = write_test_config(folder, config, manifests)
    definitions = Definitions.from_dirs(contract_root())
    store = ManifestStore([folder / "manifests", contract_root() / "manifests"])
    config = load_runtime_config(config_file, manifests=store, definitions=definitions)
    manager = Manager(
        config, definitions, broker, prefix=prefix, standalone=frozenset(config.modules)
    )
    manager.start()
    started: dict[str, Module] = {}
    try:
        yield manager, started
    finally:
        for module in started.values():
            module.close()
        manager.shutdown()


def start_module(broker: BrokerAddress, prefix: str, module_id: str, **kwargs: Any) -> Module:
    env = ModuleEnvironment(module_id=module_id, broker=broker, everest_prefix=prefix)
    return Module.start(env, **kwargs)
