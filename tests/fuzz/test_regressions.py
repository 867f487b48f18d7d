"""The bugs the fuzzers found, pinned down without a broker (issue 8)."""

from __future__ import annotations

import pytest

from everkit.evse_manager.effects import Call
from everkit.framework.definitions import Definitions
from everkit.framework.errors import MessageParsingError
from everkit.framework.validation import ValidatorCache
from everkit.framework.wire import decode
from tests.fuzz.inputs import deep
from tests.unit.evse_world import World

ISO = ValidatorCache(Definitions.from_dirs())["ISO15118_charger"]
ABSURD_CAPS = {
    "bidirectional": False,
    "current_regulation_tolerance_A": 1.0,
    "peak_current_ripple_A": 1.0,
    "max_export_voltage_V": 4.2e16,
    "min_export_voltage_V": 0.0,
    "max_export_current_A": 50370.0,
    "min_export_current_A": 0.0,
    "max_export_power_W": 7.3e58,
}


def test_a_payload_nested_deeper_than_the_parser_goes_is_a_parsing_error() -> None:
    """Was: RecursionError escaped decode(), every such message logged a traceback at
    ERROR and a command got no reason in the log."""
    with pytest.raises(MessageParsingError, match="nested too deeply"):
        decode(deep().encode())
    with pytest.raises(MessageParsingError, match="nested too deeply"):
        decode(f'{{"msg_type":"Cmd","data":{{"args":{deep()}}}}}'.encode())


def test_supply_figures_beyond_iso15118_ranges_still_give_the_car_valid_limits() -> None:
    """Was: a power supply announcing more than ISO 15118 can express (10 kA, 1 MW,
    1500 V), or a reading out of range (a slightly negative current), made EvseManager's
    update_dc_maximum_limits / update_dc_present_values fail validation: the car got
    nothing and every update logged a traceback."""
    world = World.make()
    world.enforce(50000.0)
    world.feed(world.core.on_supply_capabilities(ABSURD_CAPS, world.now))
    world.plug_in_and_authorize()
    world.feed(world.core.on_supply(2.0e6, -0.4, world.now))
    world.feed(world.core.on_supply(400.0, 2.0e5, world.now))
    calls = [
        c
        for _, c in world.log
        if isinstance(c, Call) and c.cmd in ("update_dc_maximum_limits", "update_dc_present_values")
    ]
    assert {c.cmd for c in calls} == {"update_dc_maximum_limits", "update_dc_present_values"}
    for call in calls:
        ISO.check_args(call.cmd, call.args)
