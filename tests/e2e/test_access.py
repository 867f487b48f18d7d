"""Access (issue 8, item 3): secrets stay out of every log, the stores that hold them are
private, and the broker's password file is not readable by others.

The SIL stack runs with OCPP security profile 1 (the demo CSMS demands HTTP Basic auth)
and with an MQTT user and password for every process, both secrets known to the test;
then every output the stack and the CSMS wrote is searched for them, in clear and in the
forms they travel in (base64 in the Authorization header)."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from everkit.framework.transport import BrokerAddress
from tests.conftest import RawClient
from tests.e2e.conftest import start_csms
from tests.e2e.sil import ROOT, SCRIPT, sil_config
from tests.e2e.test_sil_dc import session_events

pytestmark = pytest.mark.integration
STATION = "everkit-sil-1"
OCPP_SECRET = "sil-Basic-Auth-Zq8e7Vb1x4Ku"  # 27 characters: within OCPP's 16..40
MQTT_SECRET = "mqtt-Pw-Pj3Rk9Wd2mQxTn"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def forms(secret: str, user: str) -> list[bytes]:
    """The secret as a log could carry it: in clear, and as HTTP Basic's credentials."""
    basic = base64.b64encode(f"{user}:{secret}".encode())
    return [secret.encode(), basic, base64.b64encode(secret.encode())]


def test_a_session_with_secrets_logs_neither_and_keeps_the_ocpp_store_private(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient
) -> None:
    with start_csms(tmp_path, "--password", f"{STATION}:{OCPP_SECRET}") as csms:
        store = tmp_path / "private" / "ocpp"
        secured = {
            "CoreDatabasePath": str(store),
            "station_id": STATION,
            "security_profile": 1,
            "basic_auth_password": OCPP_SECRET,
        }
        config = sil_config(
            tmp_path, prefix, csms.url, script=SCRIPT.format(charge_s=3), ocpp=secured
        )
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        logs = tmp_path / "logs"
        command = [sys.executable, "-m", "everkit", "run", str(path), "--broker", str(broker)]
        env = {**os.environ, "EV_MQTT_USERNAME": "manager", "EV_MQTT_PASSWORD": MQTT_SECRET}
        done = subprocess.run(
            [*command, "--prefix", prefix, "--log-dir", str(logs), "--trace", "-v"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output.decode(errors="replace")[-3000:]
        # the secrets were in use: the CSMS let the station in, the session was reported
        assert [e["eventType"] for e in csms.calls("TransactionEvent")][-1] == "Ended"
        assert "TransactionFinished" in session_events(recorder)

    searched = {"everkit run stdout+stderr": output}
    searched |= {f"log {p.name}": p.read_bytes() for p in sorted(logs.iterdir())}
    searched["CSMS record"] = csms.record.read_bytes()
    assert len(searched) > 9  # the manager's log and one per module
    for secret, user in ((OCPP_SECRET, STATION), (MQTT_SECRET, "manager")):
        for where, text in searched.items():
            leaks = [form for form in forms(secret, user) if form in text]
            assert not leaks, f"{where} contains {leaks}"
    # on the bus, the OCPP password travels only to the ocpp module in its GetConfig answer
    # (EVerest's protocol; the ACL lets no other module user read that topic)
    carriers = {m.topic for m in recorder.messages if OCPP_SECRET.encode() in m.payload}
    assert carriers == {f"{prefix}modules/ocpp/response"}, carriers  # found where it is
    assert not [m for m in recorder.messages if MQTT_SECRET.encode() in m.payload]
    # the store holds BasicAuthPassword: the module made it and its folder private
    assert mode(store) == 0o700
    files = sorted(store.iterdir())
    assert files, "no store written"
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}


def test_make_passwd_writes_a_private_file_of_hashes_only(tmp_path: Path) -> None:
    output = tmp_path / "passwd"
    output.write_text("stale:entry\n")
    output.chmod(0o644)
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "make-passwd"), "--output", str(output)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert mode(output) == 0o600
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    passwords = {
        str(s["environment"]["EV_MQTT_PASSWORD"])
        for s in compose["services"].values()
        if "EV_MQTT_PASSWORD" in (s.get("environment") or {})
    }
    text = output.read_text()
    assert "stale" not in text
    assert passwords
    assert not [p for p in passwords if p in text], "a password in clear"
    assert all(line.split(":", 1)[1].startswith("$7$") for line in text.splitlines())
