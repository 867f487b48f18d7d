"""The Infypower REG/CEG/LRG CAN protocol ("V1.13"): frames to values and back. Pure.

125 kbit/s, 29-bit extended identifiers, always 8 data bytes, big-endian fields
(research notes: shared/reference/can-psu.md section 3). The identifier is

    bits 28..26 error code | 25..22 device | 21..16 command | 15..8 destination | 7..0 source

A request and its answer share the command number, so decoding needs to know which side
is listening: ``decode_request`` (the module's view) and ``decode_answer`` (the driver's).
Anything that is not a well-formed frame of ours decodes to ``Ignored`` with a reason; no
input raises.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from enum import IntEnum

FRAME_LENGTH = 8
BROADCAST = 0x3F
DEFAULT_CONTROLLER = 0xF0
MAX_MODULE_ADDRESS = 0x3E


class Device(IntEnum):
    SINGLE = 0x0A  # one module, or the whole system with destination BROADCAST
    GROUP = 0x0B  # a module group; destination is the group number


class ErrorCode(IntEnum):
    NORMAL = 0x0
    COMMAND_INVALID = 0x2
    DATA_INVALID = 0x3
    STARTING = 0x7


class Command(IntEnum):
    READ_SYSTEM_OUTPUT = 0x01
    READ_MODULE_COUNT = 0x02
    READ_MODULE_OUTPUT = 0x03
    READ_MODULE_STATUS = 0x04
    READ_LIMITS = 0x0A
    READ_AVAILABLE = 0x0C
    ON_OFF = 0x1A
    SET_SYSTEM_OUTPUT = 0x1B
    SET_MODULE_OUTPUT = 0x1C


READ_COMMANDS = frozenset(
    {
        Command.READ_SYSTEM_OUTPUT,
        Command.READ_MODULE_COUNT,
        Command.READ_MODULE_OUTPUT,
        Command.READ_MODULE_STATUS,
        Command.READ_LIMITS,
        Command.READ_AVAILABLE,
    }
)


@dataclass(frozen=True, slots=True)
class FrameId:
    command: int
    destination: int
    source: int
    device: int = Device.SINGLE
    error: int = ErrorCode.NORMAL

    def pack(self) -> int:
        for name, value, bits in (
            ("error", self.error, 3),
            ("device", self.device, 4),
            ("command", self.command, 6),
            ("destination", self.destination, 8),
            ("source", self.source, 8),
        ):
            if not 0 <= value < 1 << bits:
                raise ValueError(f"{name} {value} does not fit {bits} bits")
        return (
            (self.error & 0x7) << 26
            | (self.device & 0xF) << 22
            | (self.command & 0x3F) << 16
            | (self.destination & 0xFF) << 8
            | (self.source & 0xFF)
        )

    @classmethod
    def unpack(cls, arbitration_id: int) -> FrameId:
        return cls(
            command=(arbitration_id >> 16) & 0x3F,
            destination=(arbitration_id >> 8) & 0xFF,
            source=arbitration_id & 0xFF,
            device=(arbitration_id >> 22) & 0xF,
            error=(arbitration_id >> 26) & 0x7,
        )


@dataclass(frozen=True, slots=True)
class Frame:
    """One CAN frame of this protocol: a 29-bit identifier and 8 bytes."""

    id: FrameId
    data: bytes

    @property
    def arbitration_id(self) -> int:
        return self.id.pack()


# payloads


@dataclass(frozen=True, slots=True)
class Read:
    """Any read request: 8 zero bytes (modules answer others with an error)."""

    command: Command


@dataclass(frozen=True, slots=True)
class OnOff:
    on: bool


@dataclass(frozen=True, slots=True)
class OutputSetpoint:
    """0x1C (per module) or 0x1B (system/group total); millivolts and milliamps."""

    voltage_mV: int
    current_mA: int
    system: bool = False

    @classmethod
    def of(cls, voltage_V: float, current_A: float, system: bool = False) -> OutputSetpoint:
        return cls(round(voltage_V * 1000), round(current_A * 1000), system)

    @property
    def voltage_V(self) -> float:
        return self.voltage_mV / 1000

    @property
    def current_A(self) -> float:
        return self.current_mA / 1000


@dataclass(frozen=True, slots=True)
class Output:
    """Answer to 0x03 (one module) or 0x01 (system/group total): float32 V and A."""

    voltage_V: float
    current_A: float
    system: bool = False


@dataclass(frozen=True, slots=True)
class Status:
    """Answer to 0x04: group, temperature and the three status tables (see status.py)."""

    group: int
    temperature_C: int
    table2: int
    table1: int
    table0: int


@dataclass(frozen=True, slots=True)
class Limits:
    """Answer to 0x0A, in the wire's units: V, V, 0.1 A, 10 W."""

    max_voltage_V: int
    min_voltage_V: int
    max_current_dA: int
    rated_power_daW: int

    @property
    def max_current_A(self) -> float:
        return self.max_current_dA / 10

    @property
    def rated_power_W(self) -> float:
        return self.rated_power_daW * 10.0


@dataclass(frozen=True, slots=True)
class Available:
    """Answer to 0x0C: voltage after the output diode (0.1 V), current available now (0.1 A,
    lower while the module derates)."""

    external_voltage_dV: int
    available_current_dA: int

    @property
    def external_voltage_V(self) -> float:
        return self.external_voltage_dV / 10

    @property
    def available_current_A(self) -> float:
        return self.available_current_dA / 10


@dataclass(frozen=True, slots=True)
class ModuleCount:
    count: int


@dataclass(frozen=True, slots=True)
class Refused:
    """An answer with a non-zero error code in the identifier."""

    command: int
    code: int


Payload = Read | OnOff | OutputSetpoint | Output | Status | Limits | Available | ModuleCount


@dataclass(frozen=True, slots=True)
class Decoded:
    id: FrameId
    payload: Payload | Refused


@dataclass(frozen=True, slots=True)
class Ignored:
    """A frame that is not for us or not well formed; ``reason`` is a short counter key."""

    reason: str


# encoding


def _u32(value: int, name: str) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} {value} does not fit an unsigned 32-bit field")
    return value.to_bytes(4, "big")


def _u16(value: int, name: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} {value} does not fit an unsigned 16-bit field")
    return value.to_bytes(2, "big")


def _u8(value: int, name: str, signed: bool = False) -> int:
    low, high = (-128, 127) if signed else (0, 255)
    if not low <= value <= high:
        raise ValueError(f"{name} {value} does not fit a {'signed ' * signed}byte")
    return value & 0xFF


def payload_bytes(payload: Payload) -> tuple[int, bytes]:
    """(command number, 8 data bytes) of a payload; ValueError for values out of range."""
    match payload:
        case Read(command):
            if command not in READ_COMMANDS:
                raise ValueError(f"{command!r} is not a read command")
            return command, bytes(FRAME_LENGTH)
        case OnOff(on):
            return Command.ON_OFF, bytes([0x00 if on else 0x01]) + bytes(7)
        case OutputSetpoint(mv, ma, system):
            command = Command.SET_SYSTEM_OUTPUT if system else Command.SET_MODULE_OUTPUT
            return command, _u32(mv, "voltage_mV") + _u32(ma, "current_mA")
        case Output(v, a, system):
            command = Command.READ_SYSTEM_OUTPUT if system else Command.READ_MODULE_OUTPUT
            try:
                return command, struct.pack(">ff", v, a)
            except OverflowError:
                raise ValueError(f"{v} V / {a} A do not fit float32") from None
        case Status(group, temp, t2, t1, t0):
            fields = [
                _u8(group, "group"),
                _u8(temp, "temperature_C", signed=True),
                _u8(t2, "table2"),
                _u8(t1, "table1"),
                _u8(t0, "table0"),
            ]
            return Command.READ_MODULE_STATUS, bytes([0, 0, fields[0], 0, *fields[1:]])
        case Limits(vmax, vmin, imax, power):
            data = _u16(vmax, "max_voltage_V") + _u16(vmin, "min_voltage_V")
            return Command.READ_LIMITS, data + _u16(imax, "max_current_dA") + _u16(
                power, "rated_power_daW"
            )
        case Available(v_ext, i_avail):
            data = _u16(v_ext, "external_voltage_dV") + _u16(i_avail, "available_current_dA")
            return Command.READ_AVAILABLE, data + bytes(4)
        case ModuleCount(count):
            return Command.READ_MODULE_COUNT, bytes([0, 0, _u8(count, "count")]) + bytes(5)
    raise TypeError(f"not a payload: {payload!r}")


def encode(
    payload: Payload,
    destination: int,
    source: int,
    device: Device = Device.SINGLE,
    error: ErrorCode = ErrorCode.NORMAL,
) -> Frame:
    command, data = payload_bytes(payload)
    return Frame(FrameId(command, destination, source, device, error), data)


def refusal(request: FrameId, data: bytes, code: ErrorCode) -> Frame:
    """A module's answer to a request it cannot serve: the request echoed, error set."""
    return Frame(
        FrameId(request.command, request.source, request.destination, Device.SINGLE, code),
        bytes(data[:FRAME_LENGTH]).ljust(FRAME_LENGTH, b"\0"),
    )


# decoding


def _frame(arbitration_id: int, data: bytes, is_extended: bool) -> FrameId | Ignored:
    if not is_extended:
        return Ignored("standard-id")
    if len(data) != FRAME_LENGTH:
        return Ignored("bad-length")
    if not 0 <= arbitration_id < 1 << 29:
        return Ignored("bad-id")
    frame_id = FrameId.unpack(arbitration_id)
    if frame_id.device not in (Device.SINGLE, Device.GROUP):
        return Ignored("unknown-device")
    return frame_id


def decode_request(arbitration_id: int, data: bytes, is_extended: bool = True) -> Decoded | Ignored:
    """What a module makes of a frame from the controller."""
    frame_id = _frame(arbitration_id, data, is_extended)
    if isinstance(frame_id, Ignored):
        return frame_id
    command = frame_id.command
    if command in READ_COMMANDS:
        return Decoded(frame_id, Read(Command(command)))
    if command == Command.ON_OFF:
        if data[0] not in (0x00, 0x01):
            return Ignored("bad-on-off")
        return Decoded(frame_id, OnOff(on=data[0] == 0x00))
    if command in (Command.SET_MODULE_OUTPUT, Command.SET_SYSTEM_OUTPUT):
        mv, ma = struct.unpack(">II", data)
        return Decoded(frame_id, OutputSetpoint(mv, ma, command == Command.SET_SYSTEM_OUTPUT))
    return Ignored("unknown-command")


def decode_answer(arbitration_id: int, data: bytes, is_extended: bool = True) -> Decoded | Ignored:
    """What the controller makes of a frame from a module."""
    frame_id = _frame(arbitration_id, data, is_extended)
    if isinstance(frame_id, Ignored):
        return frame_id
    if frame_id.error != ErrorCode.NORMAL:
        return Decoded(frame_id, Refused(frame_id.command, frame_id.error))
    command = frame_id.command
    if command in (Command.READ_MODULE_OUTPUT, Command.READ_SYSTEM_OUTPUT):
        voltage, current = struct.unpack(">ff", data)
        if not (math.isfinite(voltage) and math.isfinite(current)):
            return Ignored("non-finite")
        system = command == Command.READ_SYSTEM_OUTPUT
        return Decoded(frame_id, Output(voltage, current, system))
    if command == Command.READ_MODULE_STATUS:
        temperature = int.from_bytes(data[4:5], "big", signed=True)
        return Decoded(frame_id, Status(data[2], temperature, data[5], data[6], data[7]))
    if command == Command.READ_LIMITS:
        return Decoded(frame_id, Limits(*struct.unpack(">HHHH", data)))
    if command == Command.READ_AVAILABLE:
        v_ext, available = struct.unpack(">HH", data[:4])
        return Decoded(frame_id, Available(v_ext, available))
    if command == Command.READ_MODULE_COUNT:
        return Decoded(frame_id, ModuleCount(data[2]))
    if command in (Command.ON_OFF, Command.SET_MODULE_OUTPUT, Command.SET_SYSTEM_OUTPUT):
        return decode_request(arbitration_id, data, is_extended)  # an echo
    return Ignored("unknown-command")
