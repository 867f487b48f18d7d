"""`everkit check` watching the whole SIL stack (nine modules, OCPP to a CSMS, the energy
tree, CAN): not one message breaks the wire rules or the interfaces, and every command got
its result."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from everkit.check import CheckRun, Options
from everkit.framework.transport import BrokerAddress
from tests.e2e.conftest import CsmsProcess
from tests.e2e.test_sil_dc import run_session

pytestmark = pytest.mark.integration


def test_the_sil_stack_has_no_violations(
    tmp_path: Path, broker: BrokerAddress, prefix: str, csms: CsmsProcess
) -> None:
    check = CheckRun(Options(broker=broker, prefix=prefix, quiet=True, grace=5.0))
    check.connect()  # before the stack: the manager clears its retained topics once ready
    watcher = threading.Thread(target=check.run, daemon=True)
    watcher.start()
    try:
        output = run_session(tmp_path, broker, prefix, csms)
        assert "exited with status 0" in output, output[-3000:]
    finally:
        check.stop()
        watcher.join(10)
        check.close()
    checker = check.checker
    assert checker.findings == [], [f.to_json() for f in checker.findings[:5]]
    seen = {module for module, _interface, _kind in checker.counts}
    assert {"evse_manager", "psu", "ocpp", "energy_manager", "evse_sink"} <= seen
    assert sum(checker.counts.values()) > 500  # a short session: ~900 messages
