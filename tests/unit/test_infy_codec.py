"""The Infy V1.13 codec: round trips, the research notes' worked examples, and robustness."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from everkit.power_supply_infy.codec import (
    BROADCAST,
    READ_COMMANDS,
    Available,
    Command,
    Decoded,
    Device,
    ErrorCode,
    FrameId,
    Ignored,
    Limits,
    ModuleCount,
    OnOff,
    Output,
    OutputSetpoint,
    Payload,
    Read,
    Refused,
    Status,
    decode_answer,
    decode_request,
    encode,
    refusal,
)

CONTROLLER = 0xF0
U8 = st.integers(0, 0xFF)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFF_FFFF)
FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
DEVICES = st.sampled_from([Device.SINGLE, Device.GROUP])

REQUESTS: st.SearchStrategy[Payload] = st.one_of(
    st.builds(Read, st.sampled_from(sorted(READ_COMMANDS))),
    st.builds(OnOff, st.booleans()),
    st.builds(OutputSetpoint, U32, U32, st.booleans()),
)
ANSWERS: st.SearchStrategy[Payload] = st.one_of(
    st.builds(Output, FLOAT32, FLOAT32, st.booleans()),
    st.builds(Status, U8, st.integers(-128, 127), U8, U8, U8),
    st.builds(Limits, U16, U16, U16, U16),
    st.builds(Available, U16, U16),
    st.builds(ModuleCount, U8),
    st.builds(OnOff, st.booleans()),  # set commands come back as echoes
    st.builds(OutputSetpoint, U32, U32, st.booleans()),
)
FRAME_IDS = st.builds(
    FrameId,
    command=st.integers(0, 0x3F),
    destination=U8,
    source=U8,
    device=st.integers(0, 0xF),
    error=st.integers(0, 0x7),
)


# round trips


@given(REQUESTS, U8, U8, DEVICES)
def test_requests_round_trip_through_decode_request(
    payload: Payload, destination: int, source: int, device: Device
) -> None:
    frame = encode(payload, destination, source, device)
    assert len(frame.data) == 8
    assert decode_request(frame.arbitration_id, frame.data) == Decoded(frame.id, payload)


@given(ANSWERS, U8, U8, DEVICES)
def test_answers_round_trip_through_decode_answer(
    payload: Payload, destination: int, source: int, device: Device
) -> None:
    frame = encode(payload, destination, source, device)
    assert len(frame.data) == 8
    assert decode_answer(frame.arbitration_id, frame.data) == Decoded(frame.id, payload)


@given(REQUESTS, st.sampled_from([c for c in ErrorCode if c != ErrorCode.NORMAL]))
def test_a_refusal_decodes_as_refused_with_its_code(payload: Payload, code: ErrorCode) -> None:
    request = encode(payload, 0x01, CONTROLLER)
    answer = refusal(request.id, request.data, code)
    assert answer.id.destination == CONTROLLER
    assert answer.id.source == 0x01
    assert answer.data == request.data
    decoded = decode_answer(answer.arbitration_id, answer.data)
    assert decoded == Decoded(answer.id, Refused(request.id.command, code))


@given(FRAME_IDS)
def test_frame_id_packs_and_unpacks_over_all_field_ranges(frame_id: FrameId) -> None:
    packed = frame_id.pack()
    assert 0 <= packed < 1 << 29
    assert FrameId.unpack(packed) == frame_id


@given(st.integers(0, (1 << 29) - 1))
def test_every_29_bit_identifier_unpacks_and_packs_back(arbitration_id: int) -> None:
    assert FrameId.unpack(arbitration_id).pack() == arbitration_id


# the worked examples of can-psu.md 3.7, locked in as exact bytes


def _hex(data: bytes) -> str:
    return data.hex(" ").upper()


@pytest.mark.parametrize(
    ("payload", "destination", "source", "device", "arbitration_id", "data"),
    [
        pytest.param(
            Read(Command.READ_MODULE_OUTPUT), 0x01, CONTROLLER, Device.SINGLE,
            0x028301F0, "00 00 00 00 00 00 00 00", id="read V/I",
        ),
        pytest.param(
            Output(750.5, 12.25), CONTROLLER, 0x01, Device.SINGLE,
            0x0283F001, "44 3B A0 00 41 44 00 00", id="reply 750.5 V / 12.25 A",
        ),
        pytest.param(
            OutputSetpoint.of(400, 25.5), 0x01, CONTROLLER, Device.SINGLE,
            0x029C01F0, "00 06 1A 80 00 00 63 9C", id="set 400 V / 25.5 A",
        ),
        pytest.param(
            OnOff(on=True), 0x01, CONTROLLER, Device.SINGLE,
            0x029A01F0, "00 00 00 00 00 00 00 00", id="on",
        ),
        pytest.param(
            OnOff(on=False), 0x01, CONTROLLER, Device.SINGLE,
            0x029A01F0, "01 00 00 00 00 00 00 00", id="off",
        ),
        pytest.param(
            OnOff(on=False), BROADCAST, CONTROLLER, Device.SINGLE,
            0x029A3FF0, "01 00 00 00 00 00 00 00", id="broadcast off",
        ),
        pytest.param(
            Read(Command.READ_MODULE_COUNT), 0x02, CONTROLLER, Device.GROUP,
            0x02C202F0, "00 00 00 00 00 00 00 00", id="group 2 count",
        ),
        pytest.param(
            Status(group=2, temperature_C=35, table2=0x01, table1=0x41, table0=0x10),
            CONTROLLER, 0x01, Device.SINGLE,
            0x0284F001, "00 00 02 00 23 01 41 10", id="status reply",
        ),
        pytest.param(
            Limits(1000, 150, 1000, 3000), CONTROLLER, 0x01, Device.SINGLE,
            0x028AF001, "03 E8 00 96 03 E8 0B B8", id="caps 1000 V / 150 V / 100 A / 30 kW",
        ),
        pytest.param(
            Available(4005, 1000), CONTROLLER, 0x01, Device.SINGLE,
            0x028CF001, "0F A5 03 E8 00 00 00 00", id="0x0C 400.5 V / 100 A available",
        ),
        pytest.param(
            OutputSetpoint.of(400, 50, system=True), BROADCAST, CONTROLLER, Device.SINGLE,
            0x029B3FF0, "00 06 1A 80 00 00 C3 50", id="broadcast 0x1B (Kosmonova)",
        ),
    ],
)  # fmt: skip
def test_worked_examples_encode_to_the_exact_bytes(
    payload: Payload,
    destination: int,
    source: int,
    device: Device,
    arbitration_id: int,
    data: str,
) -> None:
    frame = encode(payload, destination, source, device)
    assert frame.arbitration_id == arbitration_id
    assert _hex(frame.data) == data
    decode = decode_request if source == CONTROLLER else decode_answer
    assert decode(arbitration_id, bytes.fromhex(data)) == Decoded(frame.id, payload)


def test_worked_example_command_invalid_reply() -> None:
    request = FrameId(0x3E, 0x01, CONTROLLER)
    answer = refusal(request, bytes(8), ErrorCode.COMMAND_INVALID)
    assert answer.arbitration_id == 0x0ABEF001
    assert decode_answer(answer.arbitration_id, answer.data) == Decoded(
        answer.id, Refused(0x3E, ErrorCode.COMMAND_INVALID)
    )


def test_setpoint_values_in_volts_and_amps() -> None:
    setpoint = OutputSetpoint.of(400, 25.5)
    assert (setpoint.voltage_mV, setpoint.current_mA) == (400_000, 25_500)
    assert (setpoint.voltage_V, setpoint.current_A) == (400.0, 25.5)
    limits = Limits(1000, 150, 1000, 3000)
    assert (limits.max_current_A, limits.rated_power_W) == (100.0, 30000.0)
    assert Available(4005, 1000).external_voltage_V == pytest.approx(400.5)


@pytest.mark.parametrize(
    "payload",
    [OutputSetpoint(-1, 0), OutputSetpoint(0, 1 << 32), Limits(0x10000, 0, 0, 0), Available(0, -1)],
)
def test_encoding_refuses_values_that_do_not_fit_their_field(payload: Payload) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode(payload, 0x01, CONTROLLER)


# robustness


@given(st.integers(0, 1 << 32), st.binary(max_size=16), st.booleans())
def test_any_frame_decodes_or_is_ignored_and_never_raises(
    arbitration_id: int, data: bytes, is_extended: bool
) -> None:
    for decode in (decode_request, decode_answer):
        assert isinstance(decode(arbitration_id, data, is_extended), Decoded | Ignored)


def _id(command: int, device: int = Device.SINGLE, source: int = 0x01) -> int:
    return FrameId(command, CONTROLLER, source, device).pack()


@pytest.mark.parametrize(
    ("arbitration_id", "data", "is_extended", "reason"),
    [
        pytest.param(0x123, bytes(8), False, "standard-id", id="standard id"),
        pytest.param(_id(Command.READ_MODULE_OUTPUT), bytes(7), True, "bad-length", id="dlc 7"),
        pytest.param(_id(Command.READ_MODULE_OUTPUT), b"", True, "bad-length", id="dlc 0"),
        pytest.param(1 << 29, bytes(8), True, "bad-id", id="above 29 bits"),
        pytest.param(_id(0x3E), bytes(8), True, "unknown-command", id="unknown command"),
        pytest.param(_id(0x06), bytes(8), True, "unknown-command", id="AC input not decoded"),
        pytest.param(
            _id(Command.ON_OFF), b"\x02" + bytes(7), True, "bad-on-off", id="on/off byte 2"
        ),
        pytest.param(
            _id(Command.READ_MODULE_OUTPUT, device=0x05), bytes(8), True, "unknown-device",
            id="device 5",
        ),
    ],
)  # fmt: skip
def test_crafted_frames_are_ignored_with_their_reason(
    arbitration_id: int, data: bytes, is_extended: bool, reason: str
) -> None:
    assert decode_request(arbitration_id, data, is_extended) == Ignored(reason)
    assert decode_answer(arbitration_id, data, is_extended) == Ignored(reason)


@pytest.mark.parametrize(
    ("voltage", "current"),
    [(float("nan"), 1.0), (400.0, float("nan")), (float("inf"), 0.0), (0.0, float("-inf"))],
)
def test_non_finite_output_readings_are_ignored(voltage: float, current: float) -> None:
    for command in (Command.READ_MODULE_OUTPUT, Command.READ_SYSTEM_OUTPUT):
        data = struct.pack(">ff", voltage, current)
        assert decode_answer(_id(command), data) == Ignored("non-finite")


def test_a_read_request_decodes_whatever_its_payload() -> None:
    """The codec leaves the "reads are all zeros" rule to the module (the simulator refuses
    non-zero reads with DATA_INVALID)."""
    frame_id = FrameId(Command.READ_MODULE_STATUS, 0x01, CONTROLLER)
    decoded = decode_request(frame_id.pack(), b"\x01" * 8)
    assert decoded == Decoded(frame_id, Read(Command.READ_MODULE_STATUS))
