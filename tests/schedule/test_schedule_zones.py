"""Wall-clock readings → instants: the DST gap and overlap rule, in five real zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.schedule import format_local, resolve
from reconciler.core.schedule._zones import wall

ZONES = ["Europe/Berlin", "America/Chicago", "Australia/Sydney", "Asia/Kolkata", "Asia/Kathmandu"]
SECOND = timedelta(seconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


CASES = [
    # zone, local day, local time, expected instant, what happens
    ("Europe/Berlin", date(2026, 3, 29), time(2, 30), utc(2026, 3, 29, 1, 0), "gap → 03:00 CEST"),
    ("Europe/Berlin", date(2026, 3, 29), time(2, 0), utc(2026, 3, 29, 1, 0), "gap start"),
    ("Europe/Berlin", date(2026, 3, 29), time(3, 0), utc(2026, 3, 29, 1, 0), "first after gap"),
    ("Europe/Berlin", date(2026, 10, 25), time(2, 30), utc(2026, 10, 25, 0, 30), "overlap → CEST"),
    ("Europe/Berlin", date(2026, 10, 25), time(3, 0), utc(2026, 10, 25, 2, 0), "after overlap"),
    ("America/Chicago", date(2026, 3, 8), time(2, 15), utc(2026, 3, 8, 8, 0), "gap → 03:00 CDT"),
    ("America/Chicago", date(2026, 11, 1), time(1, 30), utc(2026, 11, 1, 6, 30), "overlap → CDT"),
    ("Australia/Sydney", date(2026, 10, 4), time(2, 30), utc(2026, 10, 3, 16, 0), "gap → 03:00"),
    ("Australia/Sydney", date(2026, 4, 5), time(2, 30), utc(2026, 4, 4, 15, 30), "overlap → AEDT"),
    ("Asia/Kolkata", date(2026, 3, 29), time(2, 30), utc(2026, 3, 28, 21, 0), "no DST, +05:30"),
    ("Asia/Kathmandu", date(2026, 12, 31), time(0, 0), utc(2026, 12, 30, 18, 15), "+05:45"),
]


@pytest.mark.parametrize(("zone", "day", "at", "expected", "why"), CASES)
def test_resolve_table(zone: str, day: date, at: time, expected: datetime, why: str) -> None:
    assert resolve(ZoneInfo(zone), day, at) == expected, why


def _transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    """UTC instants where the zone's offset changes in ``year`` (found by bisection)."""
    found: list[datetime] = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    while t < end:
        nxt = t + timedelta(days=1)
        if t.astimezone(zone).utcoffset() != nxt.astimezone(zone).utcoffset():
            lo, hi = t, nxt
            while hi - lo > SECOND:
                mid = lo + (hi - lo) / 2
                if mid.astimezone(zone).utcoffset() == lo.astimezone(zone).utcoffset():
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
        t = nxt
    return found


@pytest.mark.parametrize("zone", ZONES)
def test_zones_have_the_expected_number_of_transitions(zone: str) -> None:
    # Guards the test data itself: Kolkata and Kathmandu have no DST, the rest two changes.
    expected = 0 if zone.startswith("Asia/") else 2
    assert len(_transitions(ZoneInfo(zone), 2026)) == expected


local_times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 1, 15, 29, 30, 45, 59]))
near_transition_days = st.sampled_from(
    [
        date(2026, 3, 29),
        date(2026, 10, 25),
        date(2026, 3, 8),
        date(2026, 11, 1),
        date(2026, 4, 5),
        date(2026, 10, 4),
        date(2027, 3, 28),
        date(2027, 10, 31),
    ]
) | st.dates(date(2000, 1, 1), date(2040, 12, 31))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ZONES), near_transition_days, local_times)
def test_resolve_is_the_first_instant_showing_that_reading(
    zone_name: str, day: date, at: time
) -> None:
    zone = ZoneInfo(zone_name)
    naive = datetime.combine(day, at)
    instant = resolve(zone, day, at)
    # The clock shows the reading (or, in a gap, the first reading after it)...
    assert wall(instant, zone) >= naive
    # ...and one second earlier it showed something earlier: nothing before qualifies nearby.
    assert wall(instant - SECOND, zone) < naive
    # When the reading exists, it is exactly that reading, and the first occurrence of it.
    exists = any(
        wall(naive.replace(tzinfo=zone, fold=f).astimezone(UTC), zone) == naive for f in (0, 1)
    )
    if exists:
        assert wall(instant, zone) == naive
        other = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
        assert instant <= other


def test_format_local_names_zone_and_utc() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert format_local(utc(2026, 11, 24, 21, 30), berlin) == (
        "Tue 2026-11-24 22:30 Europe/Berlin (21:30 UTC)"
    )
    assert format_local(utc(2026, 11, 24, 23, 30), berlin) == (
        "Wed 2026-11-25 00:30 Europe/Berlin (2026-11-24 23:30 UTC)"
    )
