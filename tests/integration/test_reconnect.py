"""Broker restart: modules reconnect, resubscribe, and no call hangs."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from everkit.framework.broker import free_port, start_mosquitto
from everkit.framework.errors import CommandTimeout
from tests.integration.harness import in_process_stack, start_module

pytestmark = pytest.mark.integration


def test_modules_reconnect_and_resubscribe_after_a_broker_restart(
    prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    broker = start_mosquitto(port)
    try:
        with in_process_stack(broker.address, prefix, tmp_path) as (_manager, started):
            provider = start_module(broker.address, prefix, "provider")
            requirer = start_module(broker.address, prefix, "requirer")
            started.update(provider=provider, requirer=requirer)
            calls: list[str] = []
            for impl, cmd in (
                ("main", "setExportVoltageCurrent"),
                ("main", "setImportVoltageCurrent"),
                ("imd", "start"),
                ("imd", "stop"),
                ("imd", "start_self_test"),
            ):
                provider.implement_command(impl, cmd, lambda c=cmd, **_: calls.append(c))
            provider.implement_command("main", "setMode", lambda mode, phase: calls.append(mode))
            ready = threading.Event()
            provider.init_done()
            requirer.init_done(ready.set)
            assert ready.wait(10)
            requirer.call_command("psu", "setMode", {"mode": "Export", "phase": "Charging"})
            vars_seen = threading.Event()
            requirer.subscribe_variable("psu", "mode", lambda v: vars_seen.set())

            broker.stop()
            # a call while the broker is down: a result or a timeout, never a hang
            with contextlib.suppress(CommandTimeout):
                requirer.call_command("imd", "start", timeout=1.0)
            broker = start_mosquitto(port)
            assert provider._transport.wait_connected(15), "provider did not reconnect"
            assert requirer._transport.wait_connected(15), "requirer did not reconnect"
            # the provider resubscribed its command topics: calls work again
            requirer.call_command(
                "psu", "setMode", {"mode": "Off", "phase": "Charging"}, timeout=10
            )
            provider.publish_variable("main", "mode", "Off")
            assert vars_seen.wait(10), "the var subscription was not restored"
            assert calls[0] == "Export"
            assert calls[-1] == "Off"
            assert provider._transport.reconnects >= 1
            assert requirer._transport.reconnects >= 1
    finally:
        broker.stop()
