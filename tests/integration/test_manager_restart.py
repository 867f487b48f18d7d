"""`everkit run`'s restart policy with real module processes on a real Mosquitto: a killed
module is started again, re-fetches its config, gets the definitions and GlobalReady again;
the default (EVerest's) stops everything."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from everkit.framework.definitions import Definitions, contract_root
from everkit.framework.manager import Manager, Outcome
from everkit.framework.manifests import ManifestStore
from everkit.framework.restart import RestartPolicy
from everkit.framework.runtime_config import load_runtime_config
from everkit.framework.transport import BrokerAddress
from tests.conftest import Captured, RawClient

pytestmark = pytest.mark.integration
WAIT_S = 60.0
CONFIG = {
    "active_modules": {
        name: {"module": "PyExampleSupply", "config_implementation": {"main": {}}}
        for name in ("supply", "other")
    }
}


class Outcomes(list[Outcome]):
    """What supervise() returned, once it has."""

    def __init__(self) -> None:
        super().__init__()
        self.done = threading.Event()

    def wait(self, timeout: float) -> None:
        assert self.done.wait(timeout), "the manager did not stop"


@contextmanager
def supervised(
    tmp_path: Path, broker: BrokerAddress, prefix: str, restart: RestartPolicy | None
) -> Iterator[tuple[Manager, Outcomes]]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    definitions = Definitions.from_dirs(contract_root())
    config = load_runtime_config(
        path, manifests=ManifestStore([contract_root() / "manifests"]), definitions=definitions
    )
    manager = Manager(config, definitions, broker, prefix=prefix, restart=restart)
    outcome = Outcomes()
    manager.start()

    def supervise() -> None:
        outcome.append(manager.supervise())
        outcome.done.set()

    thread = threading.Thread(target=supervise, daemon=True)
    thread.start()
    try:
        yield manager, outcome
    finally:
        if thread.is_alive():
            manager.request_stop("test over")
        thread.join(WAIT_S)


def global_readies(recorder: RawClient, prefix: str, count: int) -> list[Captured]:
    return recorder.wait_for(lambda m: m.topic == f"{prefix}ready", timeout=WAIT_S, count=count)


def pid_of(manager: Manager, module_id: str) -> int:
    return [pid for m, pid in manager.starts if m == module_id][-1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_module_is_restarted_and_made_ready_then_the_limit_stops_all(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient
) -> None:
    policy = RestartPolicy(frozenset({"supply"}), limit=2, window_s=600.0, delay_s=0.2)
    with supervised(tmp_path, broker, prefix, policy) as (manager, outcome):
        global_readies(recorder, prefix, 1)
        other = pid_of(manager, "other")
        for restart in (1, 2):
            os.kill(pid_of(manager, "supply"), signal.SIGKILL)
            global_readies(recorder, prefix, 1 + restart)
        # the restarted module asked for its config again and found the definitions
        requests = [
            json.loads(m.payload)["data"]["origin"]
            for m in recorder.messages
            if m.topic == f"{prefix}config/request"
        ]
        assert requests.count("supply") == 3
        assert requests.count("other") == 1
        manifests = [
            m
            for m in recorder.messages
            if m.topic == f"{prefix}manifests/PyExampleSupply" and m.payload
        ]
        assert len(manifests) == 3  # published at boot and again before each restart
        assert [m for m, _ in manager.starts] == ["other", "supply", "supply", "supply"]
        assert pid_of(manager, "other") == other
        assert alive(other)
        # a third failure within the window is one too many: everything stops
        os.kill(pid_of(manager, "supply"), signal.SIGKILL)
        outcome.wait(WAIT_S)
    assert outcome
    assert outcome[0].status == 1
    assert "was killed by SIGKILL" in outcome[0].reason
    assert "after 2 restarts within 600 s" in outcome[0].reason
    assert not any(alive(pid) for _, pid in manager.starts)


def test_without_the_policy_a_killed_module_stops_every_module(
    tmp_path: Path, broker: BrokerAddress, prefix: str, recorder: RawClient
) -> None:
    with supervised(tmp_path, broker, prefix, None) as (manager, outcome):
        global_readies(recorder, prefix, 1)
        os.kill(pid_of(manager, "supply"), signal.SIGKILL)
        outcome.wait(WAIT_S)
    assert outcome
    assert outcome[0].status == 1
    assert "module 'supply' (PyExampleSupply" in outcome[0].reason
    assert "was killed by SIGKILL" in outcome[0].reason
    assert not any(alive(pid) for _, pid in manager.starts)
