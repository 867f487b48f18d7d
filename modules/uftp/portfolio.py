"""What the adapter controls: congestion points, the stations behind each, and what each
station may give (its rating, a floor it never goes below, a safety margin)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from .isp import QUARTER_HOUR


@dataclass(frozen=True)
class Station:
    name: str
    max_W: float  # rating: the baseline never exceeds it
    min_W: float = 0.0  # never capped below this (keeps sessions alive)
    margin_W: float = 0.0  # subtracted from every cap: meter accuracy and ramp time


@dataclass(frozen=True)
class CongestionPoint:
    entity_address: str  # ean.<digits> or ea1.<yyyy-mm>.<domain>:<id>
    time_zone: str
    stations: tuple[Station, ...]
    price_eur_per_kwh: float = 0.25
    min_activation_factor: float = 1.0
    offer_validity: timedelta = timedelta(hours=1)
    isp_duration: timedelta = QUARTER_HOUR
