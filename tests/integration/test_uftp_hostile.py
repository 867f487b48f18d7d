"""Odd but signed FlexRequests from a known DSO: whatever the ISPs, Period, TimeZone,
ISP-Duration and expiry, the adapter answers each one (Accepted, or Rejected with a reason),
or the library refuses it at the door (HTTP 400); it never goes silent and never crashes.
Derandomized like tests/fuzz: the same inputs every run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapeshifter_uftp import FlexRequestResponse
from shapeshifter_uftp.exceptions import ClientTransportException

from tests.integration.test_uftp_adapter import WAIT, Rig, rig, tomorrow  # noqa: F401
from tests.uftp_rig import EAN

pytestmark = pytest.mark.integration

isp = st.tuples(
    st.integers(-2, 110),
    st.integers(-1, 40),
    st.integers(-200_000, 200_000),
    st.integers(-200_000, 200_000),
    st.sampled_from(["Requested", "Available"]),
)
# mostly valid markets, so the odd ISPs get past the market checks into the offer logic
requests = st.fixed_dictionaries(
    {
        "isps": st.lists(isp, min_size=1, max_size=4),  # the library builds none empty
        "days": st.sampled_from([0, 1, 1, 2, -2]),
        "time_zone": st.sampled_from(
            ["Europe/Amsterdam"] * 4 + ["Europe/London", "Europe/Atlantis_X"]
        ),
        "isp_duration": st.sampled_from(["PT15M"] * 4 + ["PT5M", "PT60M"]),
        "expires_min": st.sampled_from([60, 120, 30, -5]),
    }
)


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=requests)
def test_every_signed_flex_request_is_answered_or_refused_at_the_door(
    rig: Rig,  # noqa: F811
    case: dict[str, Any],
) -> None:
    try:
        request = rig.dso.send_flex_request(
            congestion_point=EAN,
            period=tomorrow() + timedelta(days=case["days"]),
            time_zone=case["time_zone"],
            isps=case["isps"],
            expires=datetime.now(UTC) + timedelta(minutes=case["expires_min"]),
            isp_duration=case["isp_duration"],
        )
    except ClientTransportException as exc:
        refused = exc.response.status_code
    else:
        refused = None
    if refused is not None:
        assert refused == 400  # not schema-valid: refused at the door
        return
    answer = rig.dso.received(
        FlexRequestResponse, lambda m: m.flex_request_message_id == request.message_id, WAIT
    )
    assert answer.result in ("Accepted", "Rejected")
    if answer.result == "Rejected":
        assert answer.rejection_reason
