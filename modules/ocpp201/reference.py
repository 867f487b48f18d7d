"""Write the device-model reference (docs/ocpp201-device-model.md) from the model itself.

    python -m everkit.ocpp201.reference > docs/ocpp201-device-model.md

tests/unit/test_ocpp_reference.py fails when the committed page and the model disagree.
"""

from __future__ import annotations

import sys

from .device_model import EvseShape, StationShape, VariableDef, standard_definitions

EXAMPLE = StationShape(
    station_id="<station_id>",
    vendor_name="<vendor_name>",
    model="<model>",
    evses=[EvseShape(1, (1,))],
    security_profile=1,
)
MUTABILITY = {"ReadOnly": "R", "ReadWrite": "RW", "WriteOnly": "W"}


def _component(d: VariableDef) -> str:
    name = d.component + (f"({d.component_instance})" if d.component_instance else "")
    if d.evse is not None:
        where = f"{d.evse}" if d.connector is None else f"{d.evse},{d.connector}"
        name += f"[{where}]"
    return name


def _limits(d: VariableDef) -> str:
    parts = []
    if d.min_limit is not None:
        parts.append(f"min {d.min_limit:g}")
    if d.max_limit is not None:
        parts.append(f"max {d.max_limit:g}")
    if d.values_list:
        parts.append(", ".join(d.values_list))
    return "; ".join(parts)


def _row(d: VariableDef) -> str:
    variable = d.variable + (f"({d.variable_instance})" if d.variable_instance else "")
    default = "(not reported)" if d.mutability == "WriteOnly" else f"`{d.default}`"
    notes = []
    if d.persistent:
        notes.append("persists")
    if d.reboot_required:
        notes.append("RebootRequired")
    cells = [
        _component(d),
        variable,
        d.data_type,
        MUTABILITY[d.mutability],
        d.unit or "",
        _limits(d),
        default if d.default or d.mutability == "WriteOnly" else '`""`',
        ", ".join(notes),
    ]
    return "| " + " | ".join(cells) + " |"


def document() -> str:
    header = (
        "# PyOCPP201 device model\n\n"
        "Every component and variable the station reports (GetBaseReport FullInventory) and "
        "answers GetVariables/SetVariables for, for a station with one EVSE and one "
        "connector (each further EVSE adds its own `EVSE[n]` and `Connector[n,1]` rows). "
        "Only the `Actual` attribute exists. R = ReadOnly, RW = ReadWrite, W = WriteOnly. "
        "Values set by the CSMS persist in the SQLite store and win over the "
        "`device_model` config key, which wins over the defaults shown.\n\n"
        "Generated from `modules/ocpp201/device_model.py` by "
        "`python -m everkit.ocpp201.reference`; do not edit by hand.\n\n"
        "| component | variable | type | mutability | unit | limits / values | default "
        "| notes |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    return header + "\n".join(_row(d) for d in standard_definitions(EXAMPLE)) + "\n"


if __name__ == "__main__":
    sys.stdout.write(document())
