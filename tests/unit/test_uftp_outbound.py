"""Sends to DSOs: retried when the failure is temporary (Shapeshifter message transport:
5xx, timeouts, 419, 429), given up when the peer refused the message (400, 401), in order
per recipient, and one recipient's outage does not hold up another's messages."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from everkit.uftp import outbound
from everkit.uftp.outbound import Outbound, worth_retrying


class HttpFailure(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.response = type("R", (), {"status_code": status})()


@pytest.mark.parametrize(
    ("status", "retried"),
    [(500, True), (503, True), (419, True), (429, True), (400, False), (401, False)],
)
def test_which_failures_are_retried(status: int, retried: bool) -> None:
    assert worth_retrying(HttpFailure(status)) is retried
    assert worth_retrying(ConnectionError("refused")) is True


def test_a_temporary_failure_is_retried_in_order_and_others_flow_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbound, "FIRST_DELAY_S", 0.01)
    down = threading.Event()  # dso-a fails until this is set
    sent: list[tuple[str, Any]] = []
    b_delivered = threading.Event()

    def send(recipient: str, message: Any) -> None:
        if recipient == "dso-a" and not down.is_set():
            raise HttpFailure(503)
        sent.append((recipient, message))
        if recipient == "dso-b":
            b_delivered.set()

    out = Outbound(send)
    out.put("dso-a", "a1")
    out.put("dso-a", "a2")
    out.put("dso-b", "b1")
    assert b_delivered.wait(5)  # dso-b is not held up by dso-a's outage
    down.set()
    out.join()
    out.stop()
    assert [m for r, m in sent if r == "dso-a"] == ["a1", "a2"]
    assert (out.sent, out.dropped) == (3, 0)


def test_a_refused_message_is_not_sent_again() -> None:
    attempts: list[Any] = []

    def send(recipient: str, message: Any) -> None:
        attempts.append(message)
        raise HttpFailure(400)

    out = Outbound(send)
    out.put("dso-a", "bad")
    out.join()
    out.stop()
    assert attempts == ["bad"]
    assert out.dropped == 1
