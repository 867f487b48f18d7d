"""The car script language of EVerest's EvManager, for PyEvSimulator. Pure.

Same syntax as EvManager (shared/reference/evse-manager.md 4.2), so the scripts of
EVerest's SIL configs and tests run unchanged: the text is lower-cased; ``;`` or a newline
separates commands; spaces or commas separate arguments; a command is looked up by name
and argument count. Each command is a function evaluated once per tick (250 ms) that says
whether it is done; the script moves to the next command only then, one command per tick,
as EvManager does.

Mistakes are found when the script is parsed (``ScriptError``, naming the command and its
position), not minutes into a session. A command that can no longer complete, because the
session failed or never started, ends the script with ``ScriptFailed``.

Commands (see ``COMMANDS``): sleep, plugin, unplug, iso_wait_pwm_is_running,
iso_wait_slac_matched, iso_start_v2g_session, iso_wait_pwr_ready, iso_dc_power_on,
iso_wait_for_stop, iso_stop_charging, iso_wait_v2g_session_stopped, set_soc, pause,
error_e, diode_fail, set_target_current.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .ev_model import EvModel, Phase, SessionError, SessionOptions

SLAC_STAND_IN_S = 0.5  # no SLAC in our SIL: "matched" this long after the PWM came on


class ScriptError(ValueError):
    """The script cannot be parsed; the message names the command and its position."""


class ScriptFailed(RuntimeError):
    """A command cannot complete, e.g. the session it waits for has failed."""


@dataclass(frozen=True)
class Step:
    position: int  # 1-based, counting commands
    name: str
    args: tuple[float, ...] = ()
    options: SessionOptions | None = None

    def __str__(self) -> str:
        return f"command {self.position} '{self.name}'"


Run = Callable[[Step, EvModel, float, float], bool]  # (step, car, now, started) -> done


@dataclass(frozen=True)
class Command:
    run: Run
    min_args: int = 0
    max_args: int = 0
    numbers: tuple[tuple[float, float], ...] = ()  # (minimum, maximum) of each argument

    def arity(self) -> str:
        if self.min_args == self.max_args:
            count = self.min_args
            return f"{count} argument{'s' if count != 1 else ''}"
        return f"{self.min_args} to {self.max_args} arguments"


# parsing


def _number(text: str, index: int, bounds: tuple[float, float]) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"argument {index} must be a number, got {text!r}") from None
    low, high = bounds
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"argument {index} must be within {low:g}..{high:g}, got {text!r}")
    return value


def _session_options(args: tuple[str, ...]) -> SessionOptions:
    """<DC> [payment] [departure_s] [eamount_Wh]; EVerest's scripts also leave out the
    payment and give the numbers right after the mode."""
    mode, rest = args[0], list(args[1:])
    if mode not in ("dc", "dc_extended"):
        raise ValueError(f"energy mode {mode!r} is not simulated: only DC")
    payment = "ExternalPayment"
    if rest and not _is_number(rest[0]):
        choice = rest.pop(0)
        if choice == "contract":
            raise ValueError("payment 'contract' (Plug & Charge) is not simulated: use eim")
        if choice not in ("externalpayment", "eim", "auto"):
            raise ValueError(f"unknown payment option {choice!r}")
    if len(rest) > 2:
        raise ValueError("takes at most departure_s and eamount_Wh after the payment option")
    numbers = [_number(text, i + 2, (0.0, 1e9)) for i, text in enumerate(rest)]
    departure = numbers[0] if numbers else None
    eamount = numbers[1] if len(numbers) > 1 else None
    if eamount is not None and eamount > 200000:
        raise ValueError("eamount_Wh must be at most 200000")
    return SessionOptions(payment, departure, eamount)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse(text: str) -> list[Step]:
    """The whole script, checked: unknown commands, argument counts and values."""
    steps: list[Step] = []
    for raw in re.split(r"[;\n]", text.lower()):
        words = [word for word in re.split(r"[\s,]+", raw.strip()) if word]
        if not words:
            continue
        position, name, args = len(steps) + 1, words[0], tuple(words[1:])
        command = COMMANDS.get(name)
        if command is None:
            raise ScriptError(f"command {position} '{name}': unknown command")
        if not command.min_args <= len(args) <= command.max_args:
            raise ScriptError(
                f"command {position} '{name}': takes {command.arity()}, got {len(args)}"
            )
        try:
            steps.append(_step(position, name, command, args))
        except ValueError as exc:
            raise ScriptError(f"command {position} '{name}': {exc}") from None
    return steps


def _step(position: int, name: str, command: Command, args: tuple[str, ...]) -> Step:
    if name == "iso_start_v2g_session":
        return Step(position, name, options=_session_options(args))
    pairs = zip(args, command.numbers, strict=True)  # parse() checked the count
    numbers = tuple(_number(text, i + 1, bounds) for i, (text, bounds) in enumerate(pairs))
    return Step(position, name, numbers)


# running


class ScriptRunner:
    """Runs parsed steps against the car, one evaluation per tick."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)
        self.index = 0
        self.error: str | None = None
        self._started_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.error is not None or self.index >= len(self.steps)

    @property
    def current(self) -> Step | None:
        return None if self.finished else self.steps[self.index]

    def tick(self, car: EvModel, now: float) -> Step | None:
        """Evaluate the current command once; return it if it completed."""
        step = self.current
        if step is None:
            return None
        if self._started_at is None:
            self._started_at = now
        try:
            done = COMMANDS[step.name].run(step, car, now, self._started_at)
        except (ScriptFailed, SessionError) as exc:
            self.error = f"{step}: {exc}"
            return None
        if not done:
            return None
        self.index += 1
        self._started_at = None
        return step


def _session_alive(car: EvModel) -> None:
    """Waiting commands end the script when there is nothing left to wait for."""
    if car.phase is Phase.FAILED:
        raise ScriptFailed(f"the V2G session failed: {car.failure}")
    if car.phase in (Phase.UNPLUGGED, Phase.CONNECTED):
        raise ScriptFailed("no V2G session is running: iso_start_v2g_session first")


def _sleep(step: Step, _car: EvModel, now: float, started: float) -> bool:
    return now - started >= step.args[0] - 1e-9


def _plugin(_step: Step, car: EvModel, now: float, _started: float) -> bool:
    car.plug_in(now)
    return True


def _unplug(_step: Step, car: EvModel, now: float, _started: float) -> bool:
    car.unplug(now)
    return True


def _wait_pwm(_step: Step, car: EvModel, now: float, _started: float) -> bool:
    car.plug_in(now)
    return car.pwm_running_for(now) is not None


def _wait_slac(_step: Step, car: EvModel, now: float, _started: float) -> bool:
    """No SLAC here: the charger's 5 % PWM says it is ready for HLC; wait a moment more."""
    car.plug_in(now)
    running = car.pwm_running_for(now)
    return running is not None and running >= SLAC_STAND_IN_S - 1e-9


def _start_session(step: Step, car: EvModel, now: float, _started: float) -> bool:
    assert step.options is not None
    car.start_session(now, step.options)
    return True


def _power_ready(step: Step, car: EvModel, now: float, _started: float) -> bool:
    _session_alive(car)
    if car.phase is Phase.WAIT_AUTH:
        return False
    if car.phase is Phase.AUTHORIZED:
        car.power_ready(now)
    return True


def _dc_power_on(step: Step, car: EvModel, now: float, started: float) -> bool:
    """Done once pre-charge passed; gets the car ready for power first if need be."""
    if not _power_ready(step, car, now, started):
        return False
    return car.phase not in (Phase.CABLE_CHECK, Phase.PRE_CHARGE)


def _wait_for_stop(step: Step, car: EvModel, now: float, started: float) -> bool:
    _session_alive(car)
    if car.phase in (Phase.STOPPING, Phase.WELDING, Phase.FINISHED):
        return True  # the charger stopped, or the battery is full
    if now - started >= step.args[0] - 1e-9:
        car.ev_stop(now, f"{step.name} {step.args[0]:g} s elapsed")
        return True
    return False


def _stop_charging(_step: Step, car: EvModel, now: float, _started: float) -> bool:
    car.ev_stop(now, "iso_stop_charging")
    return True


def _wait_session_stopped(_step: Step, car: EvModel, _now: float, _started: float) -> bool:
    if car.phase is Phase.FAILED:
        raise ScriptFailed(f"the V2G session failed: {car.failure}")
    return not car.in_session


def _set_soc(step: Step, car: EvModel, _now: float, _started: float) -> bool:
    car.set_soc(step.args[0])
    return True


def _pause(_step: Step, car: EvModel, now: float, _started: float) -> bool:
    car.pause(now)
    return True


def _error_e(_step: Step, car: EvModel, _now: float, _started: float) -> bool:
    car.error_e()
    return True


def _diode_fail(_step: Step, car: EvModel, _now: float, _started: float) -> bool:
    car.fail_diode()
    return True


def _set_target_current(step: Step, car: EvModel, _now: float, _started: float) -> bool:
    car.cap_current(step.args[0])
    return True


SECONDS = (0.0, 1e7)
COMMANDS: dict[str, Command] = {
    "sleep": Command(_sleep, 1, 1, (SECONDS,)),
    "plugin": Command(_plugin),
    "unplug": Command(_unplug),
    "iso_wait_pwm_is_running": Command(_wait_pwm),
    "iso_wait_slac_matched": Command(_wait_slac),
    "iso_start_v2g_session": Command(_start_session, 1, 4),
    "iso_wait_pwr_ready": Command(_power_ready),
    "iso_dc_power_on": Command(_dc_power_on),
    "iso_wait_for_stop": Command(_wait_for_stop, 1, 1, (SECONDS,)),
    "iso_stop_charging": Command(_stop_charging),
    "iso_wait_v2g_session_stopped": Command(_wait_session_stopped),
    "set_soc": Command(_set_soc, 1, 1, ((0.0, 100.0),)),
    "pause": Command(_pause),
    "error_e": Command(_error_e),
    "diode_fail": Command(_diode_fail),
    "set_target_current": Command(_set_target_current, 1, 1, ((0.0, 10000.0),)),
}
