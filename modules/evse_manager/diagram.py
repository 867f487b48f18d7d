"""Draw the charger's transition table (table.py) as a Mermaid state diagram.

    python -m everkit.evse_manager.diagram > docs/evse-manager-states.md

tests/unit/test_evse_table.py fails when the committed diagram and the table disagree.
"""

from __future__ import annotations

import sys

from .table import TRANSITIONS, State


def mermaid() -> str:
    lines = ["stateDiagram-v2", f"    [*] --> {State.DISABLED.value}"]
    for (source, trigger), target in TRANSITIONS.items():
        lines.append(f"    {source.value} --> {target.value}: {trigger.value}")
    return "\n".join(lines)


def document() -> str:
    return (
        "# PyEvseManager charger states\n\n"
        "Generated from `modules/evse_manager/table.py` by "
        "`python -m everkit.evse_manager.diagram`; do not edit by hand.\n\n"
        "```mermaid\n" + mermaid() + "\n```\n"
    )


def main() -> None:
    sys.stdout.write(document())


if __name__ == "__main__":
    main()
