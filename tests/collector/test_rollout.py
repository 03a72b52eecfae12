"""A change's rollout by wave, and each site's state, from stored reports (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.fleet.collector.fleetview import FleetView, SiteInfo
from reconciler.fleet.collector.rollout import change_rollout, site_state
from reconciler.fleet.collector.store import SiteRecord

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
# History: A ← B ← C ← D (each descends from the previous).
ORDER = [A, B, C, D]


def descends(revision: str, ancestor: str) -> bool | None:
    if revision not in ORDER or ancestor not in ORDER:
        return None
    return ORDER.index(revision) >= ORDER.index(ancestor)


def info(site: str, wave: str, connectivity: str = "online") -> SiteInfo:
    return SiteInfo(
        site,
        connectivity,
        ("retail",),
        {"retail": wave},
        {"retail": ["canary", "early", "all"].index(wave)},
        {},
    )


def record(
    site: str,
    *,
    age: timedelta = timedelta(minutes=5),
    outcome: str = "unchanged",
    applied: str | None = A,
    pending: str | None = None,
    reason: str | None = None,
    until: str | None = None,
    failed: tuple[str, ...] = (),
    health: str = "healthy",
    answered: timedelta = timedelta(minutes=5),
) -> SiteRecord:
    return SiteRecord(
        site=site,
        node="edge-1",
        time=NOW - age,
        received=NOW - age,
        digest="x",
        outcome=outcome,
        health=health,
        applied=applied,
        applied_at=None,
        pending=pending,
        pending_reason=reason,
        pending_until=until,
        last_error=None,
        failed=failed,
        source_answered=(NOW - answered).isoformat(),
        warnings=(),
    )


VIEW = FleetView(
    revision=D,
    sites={
        "s-applied": info("s-applied", "canary"),
        "s-later": info("s-later", "canary"),
        "s-waiting": info("s-waiting", "early"),
        "s-refused": info("s-refused", "early"),
        "s-rolled": info("s-rolled", "early"),
        "s-stale": info("s-stale", "all"),
        "s-silent": info("s-silent", "all"),
        "s-never": info("s-never", "all"),
        "s-behind": info("s-behind", "all"),
        "plant": info("plant", "all", "air-gapped"),
    },
    waves={"retail": ("canary", "early", "all")},
)
RECORDS = {
    "s-applied": record("s-applied", applied=C),
    "s-later": record("s-later", applied=D, outcome="applied"),
    "s-waiting": record(
        "s-waiting",
        outcome="waiting",
        pending=C,
        reason="wave early opens later",
        until="2026-12-02T12:00:00+00:00",
    ),
    "s-refused": record("s-refused", outcome="refused", pending=D, reason="unsigned commit"),
    "s-rolled": record("s-rolled", outcome="rolled-back", failed=(C,)),
    "s-stale": record("s-stale", answered=timedelta(days=4)),
    "s-silent": record("s-silent", age=timedelta(hours=3), applied=B),
    "s-behind": record("s-behind", applied=B),
    "plant": record("plant", age=timedelta(days=10), applied=C),
}


def test_a_change_at_every_kind_of_site_grouped_by_wave() -> None:
    rollout = change_rollout(C, VIEW, RECORDS, now=NOW, descends=descends)
    states = {s["site"]: (s["state"], s["why"]) for w in rollout["waves"] for s in w["sites"]}
    assert states["s-applied"] == ("applied", None)
    assert states["s-later"] == ("applied", None)  # runs a descendant of C
    assert states["s-waiting"] == ("waiting", "wave early opens later")
    assert states["s-refused"] == ("refused", "unsigned commit")  # refused D, built on C
    assert states["s-rolled"][0] == "rolled-back"
    assert states["s-stale"][0] == "stale"
    assert states["s-silent"] == ("silent", "last report 3h0m ago")
    assert states["s-never"] == ("silent", "no report from this site yet")
    assert states["s-behind"] == ("waiting", f"has not fetched it yet (runs {B[:12]})")
    assert states["plant"] == ("applied", None)  # facts outlive silence
    assert [(w["fleet"], w["wave"]) for w in rollout["waves"]] == [
        ("retail", "canary"),
        ("retail", "early"),
        ("retail", "all"),
    ]
    assert rollout["waves"][0]["counts"]["applied"] == 2
    assert sum(rollout["totals"].values()) == len(VIEW.sites)
    waiting = next(s for w in rollout["waves"] for s in w["sites"] if s["site"] == "s-waiting")
    assert waiting["until"] == "2026-12-02T12:00:00+00:00"


def test_a_commit_unknown_to_the_repository_is_applied_nowhere() -> None:
    rollout = change_rollout("e" * 40, VIEW, RECORDS, now=NOW, descends=descends)
    assert rollout["totals"]["applied"] == 0


@pytest.mark.parametrize(
    ("site", "expected"),
    [
        ("s-applied", "ok"),
        ("s-waiting", "waiting"),
        ("s-refused", "refused"),
        ("s-rolled", "rolled-back"),
        ("s-silent", "silent"),
        ("plant", "ok"),
    ],
)
def test_site_states(site: str, expected: str) -> None:
    assert site_state(RECORDS[site], VIEW.sites[site], NOW) == expected


def test_failing_health_and_silence_thresholds_by_connectivity() -> None:
    assert site_state(record("x", health="degraded"), None, NOW) == "failing"
    assert site_state(record("x", outcome="interrupted"), None, NOW) == "failing"
    assert site_state(None, None, NOW) == "silent"
    old = record("plant", age=timedelta(days=36))
    assert site_state(old, VIEW.sites["plant"], NOW) == "silent"
    assert (
        site_state(record("s", age=timedelta(hours=1, minutes=59)), VIEW.sites["s-stale"], NOW)
        == "ok"
    )
