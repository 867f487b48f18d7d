"""Module status bits (answer to 0x04) and what they mean for power_supply_DC.

The mapping follows the research notes (can-psu.md 3.5), and fixes the upstream drivers'
mistakes: AC input faults map to the *AC* errors, DC output faults to the *DC* errors, and
derating (power limiting) is a capability change, not a fault. Each error is raised with the
module address as sub_type, so one module clearing its fault leaves another's standing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..framework.error_model import Severity
from .codec import Status


@dataclass(frozen=True)
class StatusBit:
    table: int  # 0, 1 or 2: status table; bytes B7, B6, B5 of the 0x04 answer
    bit: int
    meaning: str
    error: str | None  # power_supply_DC error name, None: status only
    severity: Severity = Severity.HIGH


STATUS_BITS: tuple[StatusBit, ...] = (
    StatusBit(0, 0, "output short circuit", "OverCurrentDC"),
    StatusBit(0, 2, "internal communication fault", "HardwareFault"),
    StatusBit(0, 3, "input or DC bus abnormal", "VendorError"),
    StatusBit(0, 4, "module sleeping", None),
    StatusBit(0, 5, "discharge abnormal", "VendorError"),
    StatusBit(1, 0, "DC output off", None),
    StatusBit(1, 1, "module fault", "HardwareFault"),
    StatusBit(1, 2, "module protection", "VendorError"),
    StatusBit(1, 3, "fan fault", "VendorWarning", Severity.MEDIUM),
    StatusBit(1, 4, "over-temperature", "OverTemperature"),
    StatusBit(1, 5, "output over-voltage", "OverVoltageDC"),
    StatusBit(1, 6, "walk-in enabled", None),
    # the driver's own timeout decides CommunicationFault; the module's view is a warning
    StatusBit(1, 7, "module lost CAN communication", "VendorWarning", Severity.MEDIUM),
    StatusBit(2, 0, "power limiting", None),
    StatusBit(2, 1, "address duplicated", "VendorError"),
    StatusBit(2, 2, "load sharing imbalance", "VendorWarning", Severity.MEDIUM),
    StatusBit(2, 3, "input phase lost", "VendorError"),
    StatusBit(2, 4, "input unbalanced", "VendorWarning", Severity.MEDIUM),
    StatusBit(2, 5, "input under-voltage", "UnderVoltageAC"),
    StatusBit(2, 6, "input over-voltage", "OverVoltageAC"),
    StatusBit(2, 7, "PFC side off", None),
)

DC_OFF = STATUS_BITS[5]
MODULE_FAULT = STATUS_BITS[6]
POWER_LIMITING = STATUS_BITS[13]


def is_set(status: Status, bit: StatusBit) -> bool:
    table = (status.table0, status.table1, status.table2)[bit.table]
    return bool(table >> bit.bit & 1)


def active_errors(status: Status) -> dict[str, tuple[Severity, list[str]]]:
    """power_supply_DC error name -> (highest severity, the bits behind it)."""
    found: dict[str, tuple[Severity, list[str]]] = {}
    order = [Severity.LOW, Severity.MEDIUM, Severity.HIGH]
    for bit in STATUS_BITS:
        if bit.error is None or not is_set(status, bit):
            continue
        severity, reasons = found.get(bit.error, (Severity.LOW, []))
        worst = max(severity, bit.severity, key=order.index)
        found[bit.error] = (worst, [*reasons, bit.meaning])
    return found


def with_bits(*bits: StatusBit, group: int = 0, temperature_C: int = 30) -> Status:
    """A status answer with the given bits set (simulator and tests)."""
    tables = [0, 0, 0]
    for bit in bits:
        tables[bit.table] |= 1 << bit.bit
    return Status(group, temperature_C, tables[2], tables[1], tables[0])


def bit_named(meaning: str) -> StatusBit:
    for bit in STATUS_BITS:
        if bit.meaning == meaning:
            return bit
    raise KeyError(meaning)
