"""The live view: `everkit demo` on a terminal (a pseudo-terminal here) shows the dashboard
and writes the session report and one log per module; `everkit watch` follows a SIL session
on a real Mosquitto from the outside."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import yaml

from everkit.framework.transport import BrokerAddress
from tests.e2e.conftest import start_csms
from tests.e2e.sil import ROOT, SCRIPT, sil_config
from tests.e2e.test_sil_dc import run_session

pytestmark = pytest.mark.integration
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def short_demo_config(folder: Path) -> Path:
    """config/sil-dc.yaml with a 6 s charge and fast hardware, on a CAN channel of its own."""
    # `everkit demo` points PyOCPP201 at its own CSMS and store
    six_seconds = SCRIPT.format(charge_s=6)
    config = sil_config(folder, f"demo-{os.getpid()}", "ws://set-by-the-demo", script=six_seconds)
    config["active_modules"]["car"]["config_module"]["dc_target_current"] = 120  # the config's
    path = folder / "sil-dc.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_on_a_terminal(command: list[str], columns: int = 120, timeout: float = 150) -> str:
    """Run ``command`` with a pseudo-terminal as stdout/stderr; all it wrote, ANSI removed."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 60, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)}
    process = subprocess.Popen(command, stdout=terminal, stderr=terminal, cwd=ROOT, env=env)
    os.close(terminal)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout) == 0, ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    return ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def test_demo_on_a_terminal_shows_the_dashboard_and_writes_report_and_logs(
    tmp_path: Path,
) -> None:
    report = tmp_path / "report"
    config = short_demo_config(tmp_path)
    shown = run_on_a_terminal(
        [sys.executable, "-m", "everkit", "demo", "--config", str(config), "--report", str(report)]
    )
    # the start-up steps, then the last picture of the dashboard stays on the screen
    assert "✓ starting the demo CSMS" in shown
    assert "✓ starting the MQTT broker" in shown
    last = shown[shown.rindex("everkit demo · sil-dc.yaml") :]
    assert "all modules ready" in last
    assert "EVSE evse_manager" in last
    for phase in ("plugged in", "authorized", "cable check", "pre-charge", "charging", "finished"):
        assert f"✓ {phase}" in last, phase
    assert "30.0 kW from CSO" in shown  # the demo CSMS's TxProfile, as the EVSE enforced it
    assert re.search(r"present +\d+\.\d V", shown)
    assert "OCPP ocpp" in last
    assert "connected" in last
    assert "TransactionEvent Ended" in last
    assert "active errors" in last
    # the report and one log per module
    summary = json.loads((report / "session.json").read_text())
    assert summary["energy_Wh"] > 0
    assert (report / "session.png").stat().st_size > 0
    modules = yaml.safe_load(config.read_text())["active_modules"]
    logs = {path.stem for path in (report / "logs").glob("*.log")}
    assert logs == set(modules) | {"manager", "csms"}
    evse_log = (report / "logs" / "evse_manager.log").read_text()
    assert "session event SessionFinished" in evse_log
    assert "session event" not in (report / "logs" / "psu.log").read_text()


def test_watch_follows_a_session_from_outside_the_stack(
    tmp_path: Path, broker: BrokerAddress, prefix: str
) -> None:
    with start_csms(tmp_path, "--demo-limit-W", "20000") as csms:
        where = ["--config", str(ROOT / "config" / "sil-dc.yaml"), "--broker", str(broker)]
        watch = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "everkit",
                "watch",
                "--view",
                "lines",
                *where,
                "--prefix",
                prefix,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        assert watch.stdout is not None
        assert watch.stdout.readline().startswith("everkit watch: listening on")
        try:
            run_session(tmp_path, broker, prefix, csms)
        finally:
            watch.send_signal(signal.SIGINT)
            output, _ = watch.communicate(timeout=20)
    assert watch.returncode == 0, output
    events = re.findall(r"view \| \d+:\d\d (.*)", output)
    expected = [
        "evse_manager: SessionStarted",
        "evse_manager: Authorized",
        "evse_manager: cable check",
        "evse_manager: pre-charge",
        "evse_manager: ChargingStarted",
        "evse_manager: SessionFinished",
    ]
    found = [e for e in events if e in expected]
    assert found == expected, output
    assert "evse_manager: limit 20.0 kW (CSO)" in events, output
    assert "ocpp: CSMS connected" in events, output
    assert re.search(r"evse_manager: charging .* limit 20\.0 kW from CSO", output), output
