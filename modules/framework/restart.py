"""The opt-in restart policy of ``everkit run`` (``--restart``): which failed module is
started again, after how long, and when the manager gives up and stops everything.

Pure: the manager passes ``now`` (monotonic seconds) and acts on the answer. EVerest's
manager has no such policy (one module exiting stops all of them); this one is bounded so
that a module that keeps crashing still ends the run, and a service manager above restarts
the whole stack as it would without the option.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Restart:
    """Start the module again after ``delay_s``; ``count`` restarts within the window."""

    delay_s: float
    count: int


@dataclass(frozen=True)
class GiveUp:
    reason: str


@dataclass
class RestartPolicy:
    """``modules``: the ids restarted when they fail (None: every module).

    At most ``limit`` restarts of one module within ``window_s``; the back-off starts at
    ``delay_s`` and doubles with each restart still inside the window, so a module that
    dies at once after each start does not hammer the broker or the hardware.
    """

    modules: frozenset[str] | None = None
    limit: int = 3
    window_s: float = 60.0
    delay_s: float = 1.0
    max_delay_s: float = 30.0
    _history: dict[str, deque[float]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("the restart limit must be at least 1")
        if self.window_s <= 0 or self.delay_s < 0:
            raise ValueError("the restart window must be positive and the delay not negative")

    def covers(self, module_id: str) -> bool:
        return self.modules is None or module_id in self.modules

    def on_failure(self, module_id: str, now: float) -> Restart | GiveUp | None:
        """What to do about ``module_id`` failing at ``now``; None: not covered."""
        if not self.covers(module_id):
            return None
        history = self._history.setdefault(module_id, deque())
        while history and now - history[0] > self.window_s:
            history.popleft()
        if len(history) >= self.limit:
            return GiveUp(
                f"module '{module_id}' failed again after {len(history)} restarts "
                f"within {self.window_s:g} s"
            )
        history.append(now)
        delay = min(self.max_delay_s, self.delay_s * 2 ** (len(history) - 1))
        return Restart(delay, len(history))
