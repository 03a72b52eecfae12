"""Wave assignment: first match wins, percent by a stable hash, cumulative over the fleet.

Expected buckets never come from the code's own formula: the reference model's SHA-256
(``schedule_reference.sha256``, written from FIPS 180-4) is first checked against the
standard's published test values, and the buckets follow from it by the contract's words.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
import schedule_reference as reference
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


# FIPS 180-2 Appendix B (and RFC 6234 §8.5, TEST1, TEST2_1): SHA-256's published values.
FIPS_VECTORS = [
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    # RFC 6234 TEST4: "0123456701234567012345670123456701234567012345670123456701234567" x 10
    (
        b"01234567" * 80,
        "594847328451bdfa85056225462cc1d867d877fb388df0ce35f25ab5562bfbb5",
    ),
]


@pytest.mark.parametrize(("message", "digest"), FIPS_VECTORS)
def test_the_reference_sha256_gives_the_published_values(message: bytes, digest: str) -> None:
    assert reference.sha256(message).hex() == digest


def test_the_bucket_of_a_published_digest() -> None:
    """The contract's reduction of FIPS's "abc" digest: first 8 bytes big-endian,
    0xba7816bf8f01cfea = 13,436,514,500,253,700,074, modulo 10,000 = 74."""
    digest = bytes.fromhex(FIPS_VECTORS[0][1])
    assert reference.bucket_of_digest(digest) == 74


@pytest.mark.parametrize(("fleet", "site", "bucket"), PINNED)
def test_hash_bucket_is_pinned(fleet: str, site: str, bucket: int) -> None:
    assert hash_bucket(fleet, site) == bucket
    assert reference.bucket(fleet, site) == bucket


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
)
def test_same_site_same_bucket_and_wave(fleet: str, site_id: str) -> None:
    bucket = reference.bucket(fleet, site_id)
    assert hash_bucket(fleet, site_id) == bucket
    assert hash_bucket(fleet, site_id) == bucket  # stable within a run
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
        bucket = reference.bucket("retail-eu", s.site_id)
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
