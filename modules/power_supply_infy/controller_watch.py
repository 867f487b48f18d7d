"""When the MQTT link to the controller (EvseManager) stays down, the output goes off.

everkit modules reconnect after a broker restart, where EVerest's C++ modules exit. That
keeps a short outage from ending the session, but a broker that stays away would leave the
modules exporting at the last setpoint forever: the driver's resends keep the modules' own
watchdog fed, and no one watches the session. So after ``CONTROLLER_LOSS_OFF_S`` without
the broker while exporting, the driver switches the modules off. 10 s is what EVerest
gives: its driver would have exited, and the modules' 10 s watchdog switched them off.

EvseManager must then learn that the output is off: a CommunicationFault (sub_type
``Controller``) once the link is back. Not at once: every module reconnects on its own
back-off (up to 5 s), and an error published before EvseManager has resubscribed is lost.
So it goes out with the controller's first command after the outage (its subscriptions
are back by then), or ``SETTLE_S`` after the reconnect, whichever comes first. If that
first command is already Off, the two agree and no error is needed. The error stays until
the controller commands Off or Fault, i.e. until it has brought its own state to a stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

CONTROLLER_LOSS_OFF_S = 10.0
SETTLE_S = 6.0  # longer than the transport's longest reconnect back-off (5 s)
CONTROLLER_LOST = "power_supply_DC/CommunicationFault"
CONTROLLER_SUB_TYPE = "Controller"


class Action(Enum):
    SWITCH_OFF = "switch off"
    RAISE = "raise"
    CLEAR = "clear"


@dataclass
class ControllerWatch:
    """Pure: the link state, the controller's commands and monotonic time in; what to do
    out."""

    off_after_s: float = CONTROLLER_LOSS_OFF_S
    settle_s: float = SETTLE_S
    lost_since: float | None = None
    back_since: float | None = None
    tripped: bool = False  # we switched the output off ourselves
    raised: bool = False  # and told the controller

    def update(self, connected: bool, exporting: bool, now: float) -> Action | None:
        if not connected:
            self.back_since = None
            if self.lost_since is None:
                self.lost_since = now
            if exporting and not self.tripped and now - self.lost_since >= self.off_after_s:
                self.tripped = True
                return Action.SWITCH_OFF
            return None
        self.lost_since = None
        if self.back_since is None:
            self.back_since = now
        if self.tripped and not self.raised and now - self.back_since >= self.settle_s:
            self.raised = True
            return Action.RAISE
        return None

    def command(self, mode: str | None) -> Action | None:
        """A command from the controller: ``mode`` for setMode, None for a setpoint."""
        stops = mode is not None and mode != "Export"
        if self.raised and stops:
            self.tripped = self.raised = False
            return Action.CLEAR
        if self.tripped and not self.raised:
            if stops:  # the controller wants Off too: nothing to tell
                self.tripped = False
                return None
            self.raised = True
            return Action.RAISE
        return None
