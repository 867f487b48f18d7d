"""The one timestamp format PyOCPP201 puts on the wire: RFC 3339, UTC, milliseconds, ``Z``.

Cores never read the clock; they are handed ``now`` and refuse naive datetimes, because a
naive time silently shifts by the host's UTC offset once it reaches a CSMS.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..framework.errors import EverkitError


class TimestampError(EverkitError):
    """A naive datetime reached a core; every time must carry its UTC offset."""


def require_aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise TimestampError(f"naive datetime {moment.isoformat()}: pass a timezone-aware time")
    return moment


def wire_timestamp(moment: datetime) -> str:
    """``2024-05-01T12:00:00.000Z``: what every OCPP dateTime field we send looks like."""
    utc = require_aware(moment).astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def parse_wire_timestamp(text: str) -> datetime:
    """Inverse of wire_timestamp (also accepts any RFC 3339 time with an offset)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise TimestampError(f"not an RFC 3339 time: {text!r}") from exc
    return require_aware(moment).astimezone(UTC)
