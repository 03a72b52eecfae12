"""Properties of gated waves and rollout records (hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.loader import load_document
from reconciler.core.schedule import (
    Apply,
    Change,
    FleetRollout,
    RolloutRecord,
    SiteCalendar,
    decide,
    parse_record,
    record_path,
    wave_slot,
)

T = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
names = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)
shas = st.from_regex(r"[0-9a-f]{40}", fullmatch=True)
instants = st.integers(0, 10**8).map(lambda s: T + timedelta(seconds=s))


@settings(max_examples=100, deadline=None)
@given(
    kind=st.sampled_from(("Promotion", "Halt")),
    fleet=names,
    change=shas,
    opened=st.lists(st.tuples(names, instants), min_size=1, max_size=5),
    halted_at=instants,
    reason=st.text(st.characters(exclude_categories=("Cs",)), max_size=80),
)
def test_a_record_reads_back_as_written(
    kind: str,
    fleet: str,
    change: str,
    opened: list[tuple[str, datetime]],
    halted_at: datetime,
    reason: str,
) -> None:
    record = RolloutRecord(
        kind, fleet, change, tuple(opened),
        "all" if kind == "Halt" else None, halted_at if kind == "Halt" else None,
        reason,
    )  # fmt: skip
    path = record_path(fleet, change)
    doc = load_document(record.to_yaml().encode(), path)
    assert parse_record(doc.kind, doc.spec, path=path, mark=doc.mark) == record


SPEC = {
    "waves": [
        {"name": "canary", "sites": ["s-1"]},
        {"name": "early", "sites": ["s-2"], "soak": "1h", "gate": {"minSoak": "2h"}},
        {"name": "mid", "sites": ["s-3"], "soak": "30m"},
        {"name": "all", "gate": {"minSoak": "1h"}},
    ]
}


@settings(max_examples=200, deadline=None)
@given(
    site=st.sampled_from(("s-1", "s-2", "s-3", "s-9")),
    early=st.none() | st.integers(0, 86400 * 3).map(lambda s: T + timedelta(seconds=s)),
    last=st.none() | st.integers(0, 86400 * 3).map(lambda s: T + timedelta(seconds=s)),
    halted=st.booleans(),
    now=st.integers(0, 86400 * 4).map(lambda s: T + timedelta(seconds=s)),
)
def test_a_site_applies_only_when_every_gate_before_it_is_promoted_and_soaked(
    site: str, early: datetime | None, last: datetime | None, halted: bool, now: datetime
) -> None:
    promoted = tuple((w, at) for w, at in (("early", early), ("all", last)) if at is not None)
    rollout = replace(
        FleetRollout.from_spec(SPEC, fleet="f"),
        promoted=promoted,
        halted="halted" if halted else None,
    )
    calendar = SiteCalendar(site, ZoneInfo("Europe/Berlin"))
    applies = isinstance(decide(calendar, rollout, Change(T), now), Apply)
    index = {"s-1": 0, "s-2": 1, "s-3": 2}.get(site, 3)
    # the reference: each wave's own rule, walked by hand
    opens: datetime | None = T
    soaks = (timedelta(0), timedelta(hours=2), timedelta(minutes=30), timedelta(hours=1))
    gated = {1: early, 3: last}
    for i in range(index + 1):
        assert opens is not None
        opens = opens + soaks[i]
        if i in gated:
            at = gated[i]
            opens = None if at is None else max(opens, at)
            if opens is None:
                break
    assert applies == (opens is not None and now >= opens)
    slot = wave_slot(calendar, rollout, Change(T))
    if opens is None:
        assert slot.blocked_kind == ("halted" if halted else "awaits-promotion")
    # an emergency needs no promotion: only the soaks hold it
    emergency = decide(calendar, rollout, Change(T, emergency=True), now)
    assert isinstance(emergency, Apply) == (now >= T + sum(soaks[: index + 1], timedelta(0)))
