"""The opt-in restart policy of `everkit run --restart` (modules/framework/restart.py)."""

from __future__ import annotations

import pytest

from everkit.framework.restart import GiveUp, Restart, RestartPolicy


def test_only_the_named_modules_are_covered() -> None:
    policy = RestartPolicy(frozenset({"ocpp"}))
    assert policy.on_failure("psu", now=0.0) is None
    assert policy.on_failure("ocpp", now=0.0) == Restart(delay_s=1.0, count=1)
    assert RestartPolicy().covers("anything")


def test_the_back_off_doubles_and_the_limit_in_the_window_gives_up() -> None:
    policy = RestartPolicy(limit=3, window_s=60.0, delay_s=0.5)
    answers = [policy.on_failure("psu", now=t) for t in (0.0, 5.0, 10.0, 15.0)]
    assert answers[:3] == [Restart(0.5, 1), Restart(1.0, 2), Restart(2.0, 3)]
    assert isinstance(answers[3], GiveUp)
    assert "3 restarts within 60 s" in answers[3].reason


def test_failures_older_than_the_window_are_forgotten() -> None:
    policy = RestartPolicy(limit=2, window_s=10.0, delay_s=1.0)
    assert policy.on_failure("psu", now=0.0) == Restart(1.0, 1)
    assert policy.on_failure("psu", now=5.0) == Restart(2.0, 2)
    assert policy.on_failure("psu", now=30.0) == Restart(1.0, 1)
    # each module has its own budget
    assert policy.on_failure("evse_manager", now=30.0) == Restart(1.0, 1)


def test_the_back_off_is_capped() -> None:
    policy = RestartPolicy(limit=10, delay_s=10.0, max_delay_s=25.0)
    delays = [policy.on_failure("m", now=float(t)) for t in range(4)]
    assert [d.delay_s for d in delays if isinstance(d, Restart)] == [10.0, 20.0, 25.0, 25.0]


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"window_s": 0.0}, {"delay_s": -1.0}], ids=str)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="restart"):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]
