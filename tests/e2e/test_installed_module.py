"""Issue 7, item 4: the drop-in install, proven by a whole charging session.

`everkit install --prefix P` (twice), then config/sil-dc.yaml under `everkit run` with
`evse_manager` standalone, and the installed PyEvseManager started from P exactly the way
EVerest's manager starts a Python module (protocol reference section 10; upstream
FW/src/manager.cpp `setup_environment` and `exec_python_module`). Every claim about the
session is checked from what crossed the bus or the websocket.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import pytest

from everkit.framework.definitions import contract_root
from everkit.framework.transport import BrokerAddress
from tests.conftest import RawClient
from tests.e2e.conftest import CsmsProcess
from tests.e2e.sil import SCRIPT, sil_config
from tests.e2e.test_sil_dc import (
    SESSION,
    assert_reported_over_ocpp,
    payloads,
    raised,
    session_events,
)
from tests.runner import run_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
STANDALONE = "evse_manager"
MODULE = "PyEvseManager"


def install(prefix: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "everkit", "install", "--prefix", str(prefix)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def setup_environment(
    environ: Mapping[str, str],
    *,
    module_id: str,
    prefix: Path,
    log_config: Path,
    mqtt_everest_prefix: str,
    broker: BrokerAddress,
    mqtt_external_prefix: str = "",
) -> dict[str, str]:
    """EVerest's `setup_environment`: EV_MODULE overwrites, the rest keep inherited values."""
    env = dict(environ)
    env["EV_MODULE"] = module_id
    env.setdefault("EV_PREFIX", str(prefix))
    env.setdefault("EV_LOG_CONF_FILE", str(log_config))
    env.setdefault("EV_MQTT_EVEREST_PREFIX", mqtt_everest_prefix)
    env.setdefault("EV_MQTT_EXTERNAL_PREFIX", mqtt_external_prefix)
    env.setdefault("EV_MQTT_BROKER_HOST", broker.host)
    env.setdefault("EV_MQTT_BROKER_PORT", str(broker.port))
    return env


def exec_python_module(
    module_py: Path, prefix: Path, env: dict[str, str], output: IO[bytes]
) -> subprocess.Popen[bytes]:
    """EVerest's `exec_python_module`, after `setup_environment` has filled ``env``."""
    module_py = module_py.resolve()  # the manager passes the canonical path
    everestpy = prefix / "lib" / "everest" / "everestpy"
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{everestpy}:{old}" if old else str(everestpy)
    python = "python3"
    venv = module_py.parent / ".venv"
    if (venv / "bin" / "python3").exists():
        python = str(venv / "bin" / "python3")
        env["VIRTUAL_ENV"] = str(venv)
        env["VIRTUAL_ENV_PROMPT"] = "venv"
        env.pop("PYTHONHOME", None)
        old_path = env.get("PATH")
        env["PATH"] = f"{venv / 'bin'}:{old_path}" if old_path else str(venv / "bin")
    # EVerest ignores the cwd; "/" shows the launcher does not depend on the checkout
    return subprocess.Popen(
        [python, str(module_py)], env=env, cwd="/", stdout=output, stderr=subprocess.STDOUT
    )


def launch_like_everest(
    prefix: Path,
    module_name: str,
    module_id: str,
    broker: BrokerAddress,
    mqtt_prefix: str,
    log: Path,
) -> subprocess.Popen[bytes]:
    """How EVerest's manager would start the installed ``module_name`` as ``module_id``."""
    # EVerest hands over <etc>/default_logging.cfg, which must exist
    log_config = prefix / "etc" / "everest" / "default_logging.cfg"
    log_config.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(contract_root() / "config" / "logging.ini", log_config)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("EV_")}
    env = setup_environment(
        inherited,
        module_id=module_id,
        prefix=prefix,
        log_config=log_config,
        mqtt_everest_prefix=mqtt_prefix,
        broker=broker,
    )
    module_py = prefix / "libexec" / "everest" / "modules" / module_name / "module.py"
    with log.open("wb") as output:
        return exec_python_module(module_py, prefix, env, output)


def sil_dc(tmp_path: Path, prefix: str, csms: CsmsProcess) -> dict[str, Any]:
    """config/sil-dc.yaml adapted as test_sil_dc's run_session adapts it."""
    return sil_config(tmp_path, prefix, csms.url, script=SCRIPT.format(charge_s=6))


def ready_topic(prefix: str, module_id: str) -> str:
    return f"{prefix}modules/{module_id}/ready"


def test_installed_evse_manager_runs_a_whole_session_under_everest_launch_conventions(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient, csms: CsmsProcess
) -> None:
    """Issue 7 item 4: install into an EVerest prefix, start the installed module.py the
    way EVerest's manager does (reference section 10), and the session works."""
    everest = tmp_path / "everest"
    install(everest)
    # an EVerest prefix has its own interface files; a re-install must leave them alone
    theirs = everest / "share" / "everest" / "interfaces" / "evse_manager.yaml"
    theirs.write_text("# EVerest's own copy\n" + theirs.read_text())
    module_dir = everest / "libexec" / "everest" / "modules" / MODULE
    launcher = (module_dir / "module.py").read_text()
    second = install(everest)
    assert f"installed {MODULE} -> {module_dir}" in second
    assert "added 0 contract files" in second, second
    assert theirs.read_text().startswith("# EVerest's own copy\n")
    assert (module_dir / "module.py").read_text() == launcher
    assert (module_dir / ".venv").resolve() == Path(sys.prefix).resolve()

    config = sil_dc(tmp_path, prefix, csms)
    others = [m for m in config["active_modules"] if m != STANDALONE]
    with ThreadPoolExecutor(1) as pool:
        manager = pool.submit(
            run_config, config, tmp_path, broker, prefix, "--standalone", STANDALONE
        )
        # the manager starts everything but evse_manager, which it only waits for
        for module_id in others:
            recorder.on_topic(ready_topic(prefix, module_id), timeout=60)
        assert not [m for m in recorder.messages if m.topic == ready_topic(prefix, STANDALONE)]
        module_log = tmp_path / "installed-evse_manager.log"
        process = launch_like_everest(everest, MODULE, STANDALONE, broker, prefix, module_log)
        try:
            status, output = manager.result(timeout=100)
            # EVerest's manager stops only what it started; a standalone module outlives it
            assert process.poll() is None, module_log.read_text()[-3000:]
        finally:
            process.terminate()
            stopped = process.wait(10)
    assert stopped == 0, module_log.read_text()[-3000:]
    assert status == 0, output[-3000:]
    assert f"waiting for standalone module '{STANDALONE}' ({MODULE})" in output
    assert f"started module '{STANDALONE}'" not in output
    # the car's script ending is what ended the run
    assert re.search(r"module 'car' \(PyEvSimulator, pid \d+\) exited with status 0", output)

    # the installed EvseManager answered on the bus: ready, then the whole session
    recorder.on_topic(ready_topic(prefix, STANDALONE), timeout=1)
    assert session_events(recorder) == ["Enabled", *SESSION]
    assert raised(recorder) == []
    setpoints = [
        d["args"] for _, d in payloads(recorder, "psu/impl/main/cmd/setExportVoltageCurrent")
    ]
    assert any(s["current"] * s["voltage"] > 1000.0 for s in setpoints), setpoints[-5:]
    meter = payloads(recorder, "hardware/impl/powermeter/var/powermeter")[-1][1]["data"]
    assert meter["energy_Wh_import"]["total"] > 5.0

    # the CSMS saw one whole transaction, Started ... Ended, with the meter's energy
    assert len(csms.calls("TransactionEvent")) >= 2
    assert_reported_over_ocpp(csms, meter_Wh=meter["energy_Wh_import"]["total"])
