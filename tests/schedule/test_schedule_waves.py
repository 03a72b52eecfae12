"""Wave assignment: first match wins, percent by a stable hash, cumulative over the fleet."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.schedule import Change, FleetRollout, SiteCalendar, hash_bucket, wave_slot

CHANGE = Change(datetime(2026, 11, 2, 9, tzinfo=UTC))

# Pinned: if these move, every fleet's percent waves silently reshuffle between releases.
PINNED = [
    ("retail-eu", "de-ber-0042", 7044),
    ("retail-eu", "de-muc-0007", 133),
    ("retail-eu", "us-chi-0001", 1532),
    ("retail-eu", "in-del-0100", 3679),
    ("retail-eu", "np-ktm-0001", 3612),
]


@pytest.mark.parametrize(("fleet", "site", "bucket"), PINNED)
def test_hash_bucket_is_pinned(fleet: str, site: str, bucket: int) -> None:
    assert hash_bucket(fleet, site) == bucket
    digest = hashlib.sha256(f"{fleet}/{site}".encode()).digest()
    assert int.from_bytes(digest[:8], "big") % 10_000 == bucket


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
)
def test_same_site_same_bucket_and_wave(fleet: str, site_id: str) -> None:
    bucket = hash_bucket(fleet, site_id)
    assert 0 <= bucket < 10_000
    assert hash_bucket(fleet, site_id) == bucket
    rollout = FleetRollout.from_spec(
        {"waves": [{"name": "early", "percent": 10}, {"name": "all", "soak": "24h"}]}, fleet=fleet
    )
    calendar = SiteCalendar.from_spec({"timezone": "UTC"}, site_id=site_id)
    expected = "early" if bucket < 1000 else "all"
    assert wave_slot(calendar, rollout, CHANGE).name == expected
    # Parsing the same fleet again (another process, another run) changes nothing.
    again = FleetRollout.from_spec(
        {"waves": [{"name": "early", "percent": 10}, {"name": "all", "soak": "24h"}]}, fleet=fleet
    )
    assert wave_slot(calendar, again, CHANGE).name == expected


def population(n: int) -> list[SiteCalendar]:
    return [SiteCalendar.from_spec({"timezone": "UTC"}, site_id=f"st-{i:05d}") for i in range(n)]


SITES = population(10_000)


def sizes(rollout: FleetRollout) -> Counter[str | None]:
    return Counter(wave_slot(s, rollout, CHANGE).name for s in SITES)


@pytest.mark.parametrize("fleet", ["retail-eu", "retail-us", "plants"])
def test_percent_selects_about_that_share(fleet: str) -> None:
    rollout = FleetRollout.from_spec(
        {"waves": [{"name": "early", "percent": 10}, {"name": "all"}]}, fleet=fleet
    )
    counts = sizes(rollout)
    # Binomial(10000, 0.1): sd = 30; allow 5 sd.
    assert 850 <= counts["early"] <= 1150
    assert counts["early"] + counts["all"] == 10_000


def test_percent_waves_are_cumulative_and_skip_earlier_waves() -> None:
    canary = [f"st-{i:05d}" for i in range(50)]
    rollout = FleetRollout.from_spec(
        {
            "waves": [
                {"name": "canary", "sites": canary},
                {"name": "p10", "percent": 10, "soak": "24h"},
                {"name": "p30", "percent": 30, "soak": "24h"},
                {"name": "half-percent", "percent": 30.5, "soak": "1h"},
                {"name": "all", "soak": "48h"},
            ]
        },
        fleet="retail-eu",
    )
    counts = sizes(rollout)
    assert counts["canary"] == 50
    # p10 is ~10 % of the fleet minus canary sites that hash below 10 %.
    assert 850 - 50 <= counts["p10"] <= 1150
    # p30 adds the next ~20 %, not 30 % of what is left.
    assert 1750 <= counts["p30"] <= 2250
    # percent has basis-point resolution: 30.5 adds ~0.5 %.
    assert 20 <= counts["half-percent"] <= 90
    assert sum(counts.values()) == 10_000
    for s in SITES[:500]:
        slot = wave_slot(s, rollout, CHANGE)
        bucket = hash_bucket("retail-eu", s.site_id)
        if s.site_id in canary:
            assert slot.name == "canary"
        elif bucket < 1000:
            assert slot.name == "p10"
        elif bucket < 3000:
            assert slot.name == "p30"


def test_buckets_differ_between_fleets() -> None:
    # Keying on the fleet spreads the risk: the same stores are not every fleet's guinea pigs.
    eu = {s.site_id for s in SITES if hash_bucket("retail-eu", s.site_id) < 1000}
    us = {s.site_id for s in SITES if hash_bucket("retail-us", s.site_id) < 1000}
    assert len(eu & us) < 200  # independent draws overlap ~1 %
