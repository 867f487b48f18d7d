"""config/sil-dc.yaml as the end-to-end tests run it: fast hardware, a CAN channel and an
OCPP store of the test's own, its CSMS, and the test's knobs on top."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
FAST = {"imd_selftest_duration_ms": 500, "imd_interval_ms": 250}
SCRIPT = (
    "sleep 0.5;plugin;iso_wait_slac_matched;iso_start_v2g_session DC;iso_wait_pwr_ready;"
    "iso_dc_power_on;iso_wait_for_stop {charge_s};iso_wait_v2g_session_stopped;"
    "sleep 1;unplug;sleep 2"
)


def sil_config(
    tmp_path: Path,
    prefix: str,
    csms_url: str,
    *,
    script: str | None = None,
    car: dict[str, Any] | None = None,
    hardware: dict[str, Any] | None = None,
    psu: dict[str, Any] | None = None,
    ocpp: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The config with ``script`` for the car (20 A), and each knob dict merged into its
    module's settings; without a script the car keeps the config's own."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "config" / "sil-dc.yaml").read_text())
    modules = config["active_modules"]
    if script is not None:
        modules["car"]["config_module"].update(
            {"auto_exec_commands": script, "dc_target_current": 20}
        )
    modules["car"]["config_module"].update(car or {})
    modules["hardware"]["config_module"] = {**FAST, **(hardware or {})}
    modules["psu"]["config_implementation"]["main"].update(
        {"can_channel": f"sil-{prefix.strip('/')}", **(psu or {})}
    )
    modules["ocpp"]["config_module"].update(
        {"csms_url": csms_url, "CoreDatabasePath": str(tmp_path / "ocpp"), **(ocpp or {})}
    )
    return config
