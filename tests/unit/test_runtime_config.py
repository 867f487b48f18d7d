"""The manager's pure half: runtime config check and the payloads it distributes.

Golden tests replay the C++ manager's captured messages (shared/everest/wire-samples) and
compare our payloads byte for byte; they skip when that folder is absent. Everything else
runs on small manifests and interfaces written to tmp_path.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from everkit.framework.definitions import Definitions, contract_root
from everkit.framework.errors import ConfigError
from everkit.framework.manifests import ConfigProblems, ManifestStore, distributed_manifest
from everkit.framework.runtime_config import (
    RuntimeConfig,
    config_value_response,
    error_response,
    interface_definitions_payload,
    interfaces_payload,
    load_runtime_config,
    manifests_payload,
    module_config_response,
    module_names_payload,
    settings_payload,
    types_payload,
    with_directories,
)

EVEREST = Path(__file__).resolve().parents[3] / "shared" / "everest"
SAMPLES = EVEREST / "wire-samples"
needs_everest = pytest.mark.skipif(
    not EVEREST.is_dir(), reason=f"upstream EVerest data not present at {EVEREST}"
)


def schemas_dir() -> Path:
    """everkit's own meta-schema copies; upstream's while the copies are not there yet."""
    own = contract_root() / "schemas"
    return own if (own / "config.yaml").is_file() else EVEREST / "schemas"


def envelope(data: Any) -> str:
    return json.dumps(
        {"data": data, "msg_type": "GetConfigResponse"}, separators=(",", ":"), sort_keys=True
    )


# small self-contained project in tmp_path

INTERFACES = {
    "power_supply_DC": "description: DC supply\ncmds: {}\nvars: {}\n",
    "powermeter": "description: meter\ncmds: {}\nvars: {}\n",
    "over_voltage_monitor": "description: OVM\ncmds: {}\nvars: {}\n",
}

MANIFESTS = {
    "Supply": """
description: a DC supply
config:
  label:
    description: free text
    type: string
    default: psu
provides:
  main:
    interface: power_supply_DC
    description: the supply
    config:
      max_power:
        description: watt
        type: number
        default: 1000
      phases:
        description: phase count
        type: integer
        default: 3
        enum: [1, 3]
  meter:
    interface: powermeter
    description: the meter
metadata:
  license: https://opensource.org/licenses/Apache-2.0
  authors: [Somebody]
""",
    "Monitor": """
description: a monitor
provides:
  main:
    interface: over_voltage_monitor
    description: the monitor
requires:
  power_supply:
    interface: power_supply_DC
metadata:
  license: https://opensource.org/licenses/Apache-2.0
  authors: [Somebody]
""",
    "Strict": """
description: has a mandatory entry
config:
  serial:
    description: no default
    type: string
metadata:
  license: https://opensource.org/licenses/Apache-2.0
  authors: [Somebody]
""",
}

BASE_CONFIG = """
active_modules:
  supply:
    module: Supply
  monitor:
    module: Monitor
    connections:
      power_supply:
        - module_id: supply
          implementation_id: main
"""


class Project:
    """tmp_path with interfaces/, errors/, manifests/ and a config file writer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for folder in ("interfaces", "errors", "types", "manifests"):
            (root / folder).mkdir()
        for name, text in INTERFACES.items():
            (root / "interfaces" / f"{name}.yaml").write_text(text)
        for name, text in MANIFESTS.items():
            (root / "manifests" / f"{name}.yaml").write_text(text)
        self.store = ManifestStore([root / "manifests"], schemas_dir=schemas_dir())
        self.definitions = Definitions.from_dirs(root)

    def config(self, text: str, name: str = "config.yaml") -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def load(self, text: str) -> RuntimeConfig:
        return load_runtime_config(
            self.config(text),
            manifests=self.store,
            definitions=self.definitions,
            schemas_dir=schemas_dir(),
        )

    def problem(self, text: str) -> str:
        """Load ``text``, expect a ConfigError, return its message."""
        with pytest.raises(ConfigError) as info:
            self.load(text)
        return str(info.value)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def assert_names(message: str, file: Path, module: str, key: str) -> None:
    assert str(file) in message
    assert f"module '{module}'" in message
    assert f"key '{key}'" in message


# a valid config


def test_valid_config_gets_manifest_and_config_defaults(project: Project) -> None:
    config = project.load(BASE_CONFIG)

    supply = config.modules["supply"]
    assert supply.config_module == {"label": "psu"}
    assert supply.config_implementation == {"main": {"max_power": 1000.0, "phases": 3}, "meter": {}}
    assert isinstance(supply.config_implementation["main"]["max_power"], float)
    assert supply.manifest["requires"] == {}
    assert supply.manifest["provides"]["meter"]["config"] == {}
    assert supply.manifest["provides"]["main"]["config"]["phases"]["mutability"] == "ReadOnly"
    monitor = config.modules["monitor"]
    assert monitor.manifest["requires"]["power_supply"]["min_connections"] == 1
    assert monitor.manifest["requires"]["power_supply"]["max_connections"] == 1
    assert [(c.module_id, c.implementation_id) for c in monitor.connections["power_supply"]] == [
        ("supply", "main")
    ]


def test_int_given_for_a_number_entry_becomes_float(project: Project) -> None:
    config = project.load(
        BASE_CONFIG + "    config_implementation:\n      main: {}\n"
        "  extra:\n    module: Supply\n    config_implementation:\n      main:\n"
        "        max_power: 50000\n"
    )

    assert config.modules["extra"].config_implementation["main"]["max_power"] == 50000.0
    data = module_config_response(config, "extra")["response"]["data"]
    main = data["module_config"]["configuration_parameters"]["main"]
    assert json.dumps(main[0]["value"]) == "50000.0"


def test_settings_get_runtime_defaults_and_directories(project: Project) -> None:
    config = with_directories(project.load(BASE_CONFIG), "/usr")

    assert config.settings["mqtt_everest_prefix"] == "everest/"
    assert config.settings["mqtt_external_prefix"] == ""
    assert settings_payload(config.settings) == {
        "prefix": "/usr",
        "etc_dir": "/etc/everest",
        "data_dir": "/usr/share/everest",
        "modules_dir": "/usr/libexec/everest/modules",
        "telemetry_prefix": "everest-telemetry/",
        "telemetry_enabled": False,
        "validate_schema": False,
        "forward_exceptions": False,
    }


def test_settings_payload_without_directories_is_a_config_error(project: Project) -> None:
    with pytest.raises(ConfigError, match="with_directories"):
        settings_payload(project.load(BASE_CONFIG).settings)


def test_everest_manifest_layout_is_found_too(project: Project) -> None:
    everest_layout = project.root / "everest-modules" / "Supply"
    everest_layout.mkdir(parents=True)
    (everest_layout / "manifest.yaml").write_text(MANIFESTS["Supply"])
    store = ManifestStore([project.root / "everest-modules"], schemas_dir=schemas_dir())

    assert store.path("Supply") == everest_layout / "manifest.yaml"
    assert store.load("Supply")["provides"]["meter"]["config"] == {}
    assert store.path("Monitor") is None


# one test per error class: the message names file, module and key


def test_unknown_module_name_is_reported(project: Project) -> None:
    message = project.problem(BASE_CONFIG + "  ghost:\n    module: NoSuchModule\n")

    assert_names(message, project.root / "config.yaml", "ghost", "module")
    assert "NoSuchModule" in message


def test_missing_required_connection_is_reported(project: Project) -> None:
    message = project.problem("active_modules:\n  monitor:\n    module: Monitor\n")

    assert_names(message, project.root / "config.yaml", "monitor", "connections.power_supply")
    assert "not connected" in message


def test_connection_to_an_implementation_the_target_lacks_is_reported(project: Project) -> None:
    message = project.problem(
        BASE_CONFIG.replace("implementation_id: main", "implementation_id: x")
    )

    key = "connections.power_supply.0.implementation_id"
    assert_names(message, project.root / "config.yaml", "monitor", key)
    assert "does not provide 'x'" in message


def test_connection_to_an_implementation_of_the_wrong_interface_is_reported(
    project: Project,
) -> None:
    message = project.problem(
        BASE_CONFIG.replace("implementation_id: main", "implementation_id: meter")
    )

    key = "connections.power_supply.0.implementation_id"
    assert_names(message, project.root / "config.yaml", "monitor", key)
    assert "'power_supply_DC'" in message
    assert "'powermeter'" in message


def test_connection_to_a_module_not_in_the_config_is_reported(project: Project) -> None:
    message = project.problem(BASE_CONFIG.replace("module_id: supply", "module_id: nobody"))

    key = "connections.power_supply.0.module_id"
    assert_names(message, project.root / "config.yaml", "monitor", key)


def test_config_value_of_the_wrong_type_is_reported(project: Project) -> None:
    message = project.problem(
        BASE_CONFIG + "  other:\n    module: Supply\n    config_implementation:\n"
        "      main:\n        phases: three\n"
    )

    key = "config_implementation.main.phases"
    assert_names(message, project.root / "config.yaml", "other", key)
    assert "expected integer, got string 'three'" in message


def test_float_for_an_integer_entry_is_reported(project: Project) -> None:
    message = project.problem(
        BASE_CONFIG + "  other:\n    module: Supply\n    config_implementation:\n"
        "      main:\n        phases: 3.0\n"
    )

    assert_names(
        message, project.root / "config.yaml", "other", "config_implementation.main.phases"
    )


def test_config_value_outside_its_enum_is_reported(project: Project) -> None:
    message = project.problem(
        BASE_CONFIG + "  other:\n    module: Supply\n    config_implementation:\n"
        "      main:\n        phases: 2\n"
    )

    assert_names(
        message, project.root / "config.yaml", "other", "config_implementation.main.phases"
    )


def test_unknown_config_key_is_an_error_not_just_a_log(project: Project) -> None:
    message = project.problem(
        BASE_CONFIG + "  other:\n    module: Supply\n    config_module:\n      lable: typo\n"
    )

    assert_names(message, project.root / "config.yaml", "other", "config_module.lable")
    assert "unknown config entry" in message


def test_missing_mandatory_config_entry_is_reported(project: Project) -> None:
    message = project.problem(BASE_CONFIG + "  strict:\n    module: Strict\n")

    assert_names(message, project.root / "config.yaml", "strict", "config_module.serial")
    assert "mandatory" in message


def test_unknown_implementation_id_in_config_implementation_is_reported(
    project: Project,
) -> None:
    message = project.problem(
        BASE_CONFIG + "  other:\n    module: Supply\n    config_implementation:\n"
        "      mian:\n        max_power: 1\n"
    )

    assert_names(message, project.root / "config.yaml", "other", "config_implementation.mian")


def test_too_many_connections_are_reported(project: Project) -> None:
    message = project.problem(
        BASE_CONFIG + "        - module_id: supply\n          implementation_id: main\n"
    )

    assert_names(message, project.root / "config.yaml", "monitor", "connections.power_supply")
    assert "2 connection(s)" in message


def test_connection_for_an_undeclared_requirement_is_reported(project: Project) -> None:
    message = project.problem(
        BASE_CONFIG + "  other:\n    module: Supply\n    connections:\n      nope:\n"
        "        - module_id: supply\n          implementation_id: main\n"
    )

    assert_names(message, project.root / "config.yaml", "other", "connections.nope")


def test_invalid_yaml_names_the_file_and_line(project: Project) -> None:
    message = project.problem("active_modules:\n  supply:\n    module: [unclosed\n")

    assert str(project.root / "config.yaml") in message
    assert "invalid YAML" in message
    assert "line " in message


def test_config_schema_violation_names_module_and_key(project: Project) -> None:
    message = project.problem(BASE_CONFIG + "    standalone: maybe\n")

    assert_names(message, project.root / "config.yaml", "monitor", "standalone")


def test_unknown_key_in_a_module_entry_is_reported(project: Project) -> None:
    message = project.problem(BASE_CONFIG + "    config_modul: {}\n")

    assert_names(message, project.root / "config.yaml", "monitor", "config_modul")


def test_invalid_manifest_names_the_manifest_file_and_key(project: Project) -> None:
    bad = MANIFESTS["Supply"].replace("interface: powermeter", "interface: 7")
    (project.root / "manifests" / "Supply.yaml").write_text(bad)

    message = project.problem(BASE_CONFIG)

    assert_names(
        message, project.root / "manifests" / "Supply.yaml", "supply", "provides.meter.interface"
    )


def test_manifest_default_that_breaks_its_own_schema_is_reported(project: Project) -> None:
    bad = MANIFESTS["Supply"].replace("default: 3", "default: 2")
    (project.root / "manifests" / "Supply.yaml").write_text(bad)

    with pytest.raises(ConfigError) as info:
        project.store.load("Supply")

    assert info.value.key == "provides.main.config.phases"
    assert str(project.root / "manifests" / "Supply.yaml") in str(info.value)


def test_manifest_license_must_be_a_uri_as_the_cpp_format_checker_demands(
    project: Project,
) -> None:
    bad = MANIFESTS["Supply"].replace("https://opensource.org/licenses/Apache-2.0", "Apache-2.0")
    (project.root / "manifests" / "Supply.yaml").write_text(bad)

    with pytest.raises(ConfigError) as info:
        project.store.load("Supply")

    assert info.value.key == "metadata.license"


def test_missing_interface_names_the_manifest_module_and_key(project: Project) -> None:
    (project.root / "interfaces" / "powermeter.yaml").unlink()

    message = project.problem(BASE_CONFIG)

    manifest = project.root / "manifests" / "Supply.yaml"
    assert_names(message, manifest, "supply", "provides.meter.interface")


def test_all_problems_are_reported_at_once(project: Project) -> None:
    with pytest.raises(ConfigProblems) as info:
        project.load(
            "active_modules:\n  monitor:\n    module: Monitor\n"
            "  ghost:\n    module: NoSuchModule\n"
            "  strict:\n    module: Strict\n"
        )

    keys = {(p.module, p.key) for p in info.value.problems}
    assert keys == {
        ("monitor", "connections.power_supply"),
        ("ghost", "module"),
        ("strict", "config_module.serial"),
    }
    assert "3 problems found" in str(info.value)


def test_mapping_of_an_unknown_implementation_only_warns(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        config = project.load(
            BASE_CONFIG + "    mapping:\n      implementations:\n        nope:\n          evse: 1\n"
        )

    assert config.modules["monitor"].mapping == {"implementations": {"nope": {"evse": 1}}}
    assert "nope" in caplog.text


def test_optional_requirement_may_stay_unconnected(project: Project) -> None:
    optional = MANIFESTS["Monitor"].replace(
        "interface: power_supply_DC", "interface: power_supply_DC\n    min_connections: 0"
    )
    (project.root / "manifests" / "Monitor.yaml").write_text(optional)

    config = project.load("active_modules:\n  monitor:\n    module: Monitor\n")

    assert config.modules["monitor"].connections == {}


# payload builders on the small project


def test_module_config_response_carries_mapping_telemetry_and_capabilities(
    project: Project,
) -> None:
    config = project.load(
        BASE_CONFIG + "    telemetry:\n      id: 7\n    capabilities: [CAP_NET_RAW]\n"
        "    mapping:\n      module:\n        evse: 1\n        connector: 2\n"
    )

    data = module_config_response(config, "monitor")["response"]["data"]

    assert data["telemetry_config"] == {"id": 7}
    assert data["mappings"] == {"monitor": {"module": {"evse": 1, "connector": 2}}, "supply": None}
    module_config = data["module_config"]
    assert module_config["capabilities"] == ["CAP_NET_RAW"]
    assert module_config["telemetry_config"] == {"id": 7}
    assert module_config["connections"]["power_supply"][0]["requirement"] == {"id": "power_supply"}


def test_empty_connection_list_is_left_out_of_the_response(project: Project) -> None:
    optional = MANIFESTS["Monitor"].replace(
        "interface: power_supply_DC", "interface: power_supply_DC\n    min_connections: 0"
    )
    (project.root / "manifests" / "Monitor.yaml").write_text(optional)
    config = project.load(
        "active_modules:\n  monitor:\n    module: Monitor\n"
        "    connections:\n      power_supply: []\n"
    )

    data = module_config_response(config, "monitor")["response"]["data"]

    assert data["module_config"]["connections"] == {}


def test_error_response_has_the_ok_shape_with_status_error() -> None:
    assert error_response("ghost", "unknown module id") == {
        "status": "Error",
        "status_info": "request from 'ghost': unknown module id",
        "type": "Get",
        "response": {"type": "Module", "data": None},
    }


def test_config_value_response_reads_own_config_and_denies_others(project: Project) -> None:
    config = project.load(BASE_CONFIG)
    own = {
        "module_id": "supply",
        "configuration_parameter_name": "max_power",
        "module_implementation_id": "main",
    }

    ok = config_value_response(config, "supply", own)
    denied = config_value_response(config, "monitor", own)

    assert ok["status"] == "Ok"
    assert ok["response"]["data"] == {
        "name": "max_power",
        "value": 1000.0,
        "characteristics": {"datatype": "number", "mutability": "ReadOnly"},
    }
    assert denied["status"] == "AccessDenied"
    assert denied["status_info"] == "Access to config item denied: monitor cannot access supply"


def test_config_value_response_honours_global_read_access(project: Project) -> None:
    config = project.load(
        BASE_CONFIG + "    access:\n      config:\n        allow_global_read: true\n"
    )
    item = {"module_id": "supply", "configuration_parameter_name": "label"}

    answer = config_value_response(config, "monitor", item)

    assert answer["status"] == "Ok"
    assert answer["response"]["data"]["value"] == "psu"
    assert config.modules["monitor"].access == {
        "config": {
            "allow_global_read": True,
            "allow_global_write": False,
            "allow_set_read_only": False,
            "modules": {},
        }
    }


def test_interfaces_payload_lists_only_provided_interfaces(project: Project) -> None:
    config = project.load("active_modules:\n  supply:\n    module: Supply\n")

    assert interfaces_payload(config) == ["power_supply_DC", "powermeter"]
    assert module_names_payload(config) == {"supply": "Supply"}


def test_types_payload_is_empty_unless_validate_schema(project: Project) -> None:
    (project.root / "types" / "units.yaml").write_text("description: u\ntypes: {}\n")
    plain = project.load(BASE_CONFIG)
    validating = project.load("settings:\n  validate_schema: true\n" + BASE_CONFIG)

    assert types_payload(plain, project.definitions) == []
    assert types_payload(validating, project.definitions) == ["/units"]


def test_distributed_manifest_drops_only_the_module_config(project: Project) -> None:
    manifest = project.store.load("Supply")

    published = distributed_manifest(manifest)

    assert "config" not in published
    assert "config" in manifest
    assert published["provides"] == manifest["provides"]
    assert published["enable_external_mqtt"] is False


# golden samples from the real C++ manager

PY_OVM_CONFIG = """
active_modules:
  dc_supply:
    module: DCSupplySimulator
  py_ovm:
    module: OVMSimulator
    standalone: true
    connections:
      power_supply:
        - module_id: dc_supply
          implementation_id: main
"""


def _upstream(config_file: Path) -> tuple[RuntimeConfig, Definitions]:
    definitions = Definitions.from_dirs(EVEREST)
    store = ManifestStore([EVEREST / "modules"], schemas_dir=schemas_dir())
    config = load_runtime_config(
        config_file, manifests=store, definitions=definitions, schemas_dir=schemas_dir()
    )
    return with_directories(config, "/opt/everest"), definitions


def _sample_configs(tmp_path: Path) -> dict[str, tuple[RuntimeConfig, Definitions]]:
    """Keyed by the module ids of the run: the cpp pair run and the standalone-peer run."""
    py_ovm = tmp_path / "config-py-ovm.yaml"
    py_ovm.write_text(PY_OVM_CONFIG)
    return {
        "dc_supply,ovm": _upstream(SAMPLES / "config-cpp-pair.yaml"),
        "dc_supply,py_ovm": _upstream(py_ovm),
    }


def _expected(topic: str, config: RuntimeConfig, definitions: Definitions) -> Any:
    """What we would publish on ``topic``; KeyError for topics the manager doesn't own."""
    name = topic.removeprefix("everest/")
    fixed = {
        "interfaces": lambda: interfaces_payload(config),
        "types": lambda: types_payload(config, definitions),
        "settings": lambda: settings_payload(config.settings),
        "module_names": lambda: module_names_payload(config),
    }
    if name in fixed:
        return fixed[name]()
    kind, _, rest = name.partition("/")
    if kind == "interface_definitions":
        return interface_definitions_payload(config, definitions)[rest]
    if kind == "manifests":
        return manifests_payload(config)[rest]
    if kind == "modules" and rest.endswith("/response"):
        return module_config_response(config, rest.removesuffix("/response"))
    raise KeyError(topic)


def _runs(jsonl: Path) -> list[list[tuple[str, str]]]:
    """Split a capture into manager runs; each run starts with a non-empty ``interfaces``."""
    runs: list[list[tuple[str, str]]] = []
    for line in jsonl.read_text().splitlines():
        message = json.loads(line)
        if message["topic"] == "everest/interfaces" and message["payload"]:
            runs.append([])
        if runs and message["payload"]:
            runs[-1].append((message["topic"], message["payload"]))
    return runs


@needs_everest
@pytest.mark.parametrize(
    ("capture", "manager_messages"),
    [("cpp-pair-run.jsonl", 22), ("standalone-peer-run.jsonl", 11)],
)
def test_every_manager_message_of_a_captured_run_matches_byte_for_byte(
    capture: str, manager_messages: int, tmp_path: Path
) -> None:
    configs = _sample_configs(tmp_path)
    compared = 0
    for run in _runs(SAMPLES / capture):
        names = next(json.loads(p)["data"] for t, p in run if t == "everest/module_names")
        config, definitions = configs[",".join(sorted(names))]
        for topic, payload in run:
            try:
                expected = _expected(topic, config, definitions)
            except KeyError:
                continue
            assert envelope(expected) == payload, topic
            compared += 1
    assert compared == manager_messages


@needs_everest
@pytest.mark.parametrize(
    ("sample", "module_id"),
    [
        ("everest_modules_dc_supply_response.json", "dc_supply"),
        ("everest_modules_py_ovm_response.json", "py_ovm"),
    ],
)
def test_module_config_response_matches_golden_sample(
    sample: str, module_id: str, tmp_path: Path
) -> None:
    config, _ = _sample_configs(tmp_path)["dc_supply,py_ovm"]

    produced = envelope(module_config_response(config, module_id))

    assert produced == (SAMPLES / sample).read_text().strip()


@needs_everest
def test_distributed_manifest_and_settings_match_golden_samples(tmp_path: Path) -> None:
    config, _ = _sample_configs(tmp_path)["dc_supply,py_ovm"]

    manifest = envelope(manifests_payload(config)["DCSupplySimulator"])
    settings = envelope(settings_payload(config.settings))

    assert manifest == (SAMPLES / "everest_manifests_DCSupplySimulator.json").read_text().strip()
    assert settings == (SAMPLES / "everest_settings.json").read_text().strip()


@needs_everest
@pytest.mark.parametrize("config_file", ["config-sil-dc.yaml", "config-sil-two-evse-dc.yaml"])
def test_upstream_sil_config_loads_without_problems(config_file: str) -> None:
    config, _ = _upstream(EVEREST / "config" / config_file)

    assert "evse_manager" in config.modules or "evse_manager_1" in config.modules
    for module_id in config.modules:
        assert module_config_response(config, module_id)["status"] == "Ok"
