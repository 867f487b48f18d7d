"""A step of the wall clock (NTP) during a transaction: timers keep their monotonic
intervals, schedules follow the new wall time. Issue 8 (clock jumps); the process-level
test is in tests/e2e/test_faults.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from everkit.ocpp201.clock_step import ClockStep
from tests.unit.ocpp_tx_helpers import Run, powermeter, summary

HOUR = timedelta(hours=1)


def test_a_step_is_told_from_scheduling_delays_and_slewing() -> None:
    watch = ClockStep()
    wall = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert watch.observe(wall, 100.0) is None
    # a late wake-up: both clocks moved 3 s
    assert watch.observe(wall + timedelta(seconds=3), 103.0) is None
    # NTP slewing at its 500 ppm maximum over 10 s
    assert watch.observe(wall + timedelta(seconds=13.005), 113.0) is None
    stepped = watch.observe(wall + timedelta(seconds=13.5) + HOUR, 113.5)
    assert stepped is not None
    assert abs(stepped.total_seconds() - 3600) < 0.01
    back = watch.observe(wall + timedelta(seconds=14), 114.0)
    assert back is not None
    assert abs(back.total_seconds() + 3600) < 0.01


def charging_run() -> tuple[Run, datetime]:
    run = Run.make(updated_interval_s=2)
    run.plug_in()
    run.authorize()
    run.event("PrepareCharging")
    run.tx.on_powermeter(powermeter(1200))
    return run, run.now


def test_a_step_back_does_not_hold_the_meter_values_for_its_length() -> None:
    """SampledDataCtrlr.TxUpdatedInterval is an interval: after the clock is set back an
    hour, the next sample still comes 2 s after the last one."""
    run, start = charging_run()
    assert summary(run.tick(start + timedelta(seconds=2))) == [("Updated", "MeterValuePeriodic", 1)]
    run.tx.clock_stepped(-HOUR)
    new_time = start + timedelta(seconds=3) - HOUR
    assert run.tick(new_time) == []
    sampled = run.tick(new_time + timedelta(seconds=1))
    assert summary(sampled) == [("Updated", "MeterValuePeriodic", 2)]
    assert run.tx.next_deadline() == new_time + timedelta(seconds=3)


def test_a_step_forward_sends_no_early_sample() -> None:
    run, start = charging_run()
    run.tick(start + timedelta(seconds=2))
    run.tx.clock_stepped(HOUR)
    assert run.tick(start + timedelta(seconds=3) + HOUR) == []
    assert len(run.tick(start + timedelta(seconds=4) + HOUR)) == 1
    # a Relative profile keeps its elapsed time: the start moved with the clock
    assert run.tx.started_at == start + HOUR


def test_without_the_step_hook_a_step_back_would_stall_the_samples() -> None:
    """What clock_stepped repairs: the core alone sees only wall time."""
    run, start = charging_run()
    run.tick(start + timedelta(seconds=2))
    assert run.tick(start + timedelta(seconds=4) - HOUR) == []
    assert run.tx.next_deadline() == start + timedelta(seconds=4)  # an hour away
