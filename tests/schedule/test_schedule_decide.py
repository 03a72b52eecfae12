"""The gate: table-driven DST/midnight/freeze/wave cases and properties over a fake clock.

The central property: for generated sites, fleets and changes near DST
transitions and the year end, stepping a fake clock minute by minute from
``after``, the first ``Apply`` from :func:`decide` happens exactly at the
instant :func:`next_allowed` predicted, and every ``Wait`` before it says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import schedule_reference as reference
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reconciler.core.schedule import (
    Apply,
    Change,
    Decision,
    FleetRollout,
    SiteCalendar,
    Wait,
    decide,
    governing_rollout,
    next_allowed,
    predict,
    wave_slot,
)
from reconciler.core.schedule._zones import DAYS

ZONES = ["Europe/Berlin", "America/Chicago", "Australia/Sydney", "Asia/Kolkata", "Asia/Kathmandu"]
MINUTE = timedelta(minutes=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def site(zone: str = "Europe/Berlin", site_id: str = "de-ber-0042", **spec: Any) -> SiteCalendar:
    return SiteCalendar.from_spec({"timezone": zone, **spec}, site_id=site_id)


def window(days: str, start: str, duration: str) -> dict[str, Any]:
    return {"days": days.split(","), "start": start, "duration": duration}


def applies(decision: Decision) -> bool:
    return isinstance(decision, Apply)


# --------------------------------------------------------------------------- tables

DST_CASES = [
    # zone, window, instant, apply?, why
    ("Europe/Berlin", window("sun", "02:30", "1h"), utc(2026, 3, 29, 0, 59), False, "gap: not yet"),
    (
        "Europe/Berlin",
        window("sun", "02:30", "1h"),
        utc(2026, 3, 29, 1, 0),
        True,
        "gap: 03:00 CEST",
    ),
    ("Europe/Berlin", window("sun", "02:30", "1h"), utc(2026, 3, 29, 1, 59), True, "1h elapsed"),
    ("Europe/Berlin", window("sun", "02:30", "1h"), utc(2026, 3, 29, 2, 0), False, "ended"),
    (
        "Europe/Berlin",
        window("sun", "02:30", "1h"),
        utc(2026, 10, 25, 0, 29),
        False,
        "overlap: before",
    ),
    ("Europe/Berlin", window("sun", "02:30", "1h"), utc(2026, 10, 25, 0, 30), True, "first 02:30"),
    (
        "Europe/Berlin",
        window("sun", "02:30", "1h"),
        utc(2026, 10, 25, 1, 15),
        True,
        "02:15 CET, 2nd",
    ),
    (
        "Europe/Berlin",
        window("sun", "02:30", "1h"),
        utc(2026, 10, 25, 1, 30),
        False,
        "second 02:30",
    ),
    (
        "Europe/Berlin",
        window("sat", "22:00", "6h"),
        utc(2026, 3, 29, 2, 30),
        True,
        "05:00 CEST end",
    ),
    ("Europe/Berlin", window("sat", "22:00", "6h"), utc(2026, 3, 29, 3, 0), False, "6h elapsed"),
    ("Europe/Berlin", window("sat", "22:00", "6h"), utc(2026, 10, 25, 1, 59), True, "02:59 CET"),
    ("Europe/Berlin", window("sat", "22:00", "6h"), utc(2026, 10, 25, 2, 0), False, "03:00 CET"),
    (
        "America/Chicago",
        window("sun", "02:15", "30m"),
        utc(2026, 3, 8, 7, 59),
        False,
        "gap: before",
    ),
    ("America/Chicago", window("sun", "02:15", "30m"), utc(2026, 3, 8, 8, 0), True, "03:00 CDT"),
    (
        "America/Chicago",
        window("sun", "02:15", "30m"),
        utc(2026, 3, 8, 8, 30),
        False,
        "30m elapsed",
    ),
    ("America/Chicago", window("sun", "01:30", "1h"), utc(2026, 11, 1, 6, 30), True, "01:30 CDT"),
    ("America/Chicago", window("sun", "01:30", "1h"), utc(2026, 11, 1, 7, 30), False, "01:30 CST"),
    ("Australia/Sydney", window("sun", "02:30", "1h"), utc(2026, 10, 3, 16, 0), True, "gap: 03:00"),
    (
        "Australia/Sydney",
        window("sun", "02:30", "1h"),
        utc(2026, 10, 3, 15, 59),
        False,
        "01:59 AEST",
    ),
    ("Australia/Sydney", window("sun", "02:30", "1h"), utc(2026, 4, 4, 15, 30), True, "02:30 AEDT"),
    (
        "Australia/Sydney",
        window("sun", "02:30", "1h"),
        utc(2026, 4, 4, 16, 30),
        False,
        "02:30 AEST",
    ),
    ("Asia/Kathmandu", window("thu", "22:30", "2h"), utc(2026, 12, 31, 16, 45), True, "+05:45"),
    ("Asia/Kathmandu", window("thu", "22:30", "2h"), utc(2026, 12, 31, 18, 44), True, "00:29 Fri"),
    ("Asia/Kathmandu", window("thu", "22:30", "2h"), utc(2026, 12, 31, 18, 45), False, "00:30 Fri"),
    ("Asia/Kolkata", window("fri", "23:00", "3h"), utc(2027, 1, 1, 17, 29), False, "22:59"),
    ("Asia/Kolkata", window("fri", "23:00", "3h"), utc(2027, 1, 1, 20, 29), True, "01:59 Sat"),
]


@pytest.mark.parametrize(("zone", "win", "now", "expected", "why"), DST_CASES)
def test_windows_across_dst_and_midnight(
    zone: str, win: dict[str, Any], now: datetime, expected: bool, why: str
) -> None:
    calendar = site(zone, updateWindows=[win])
    change = Change(utc(2026, 1, 1))
    decision = decide(calendar, None, change, now)
    assert applies(decision) is expected, (why, decision)
    assert (next_allowed(calendar, None, change, now) == now) is expected


def test_window_belongs_to_the_day_it_starts() -> None:
    # Saturday 22:00 + 6h runs into Sunday; Sunday 22:00 itself is not a window.
    calendar = site(updateWindows=[window("sat", "22:00", "6h")])
    change = Change(utc(2026, 6, 1))
    assert applies(decide(calendar, None, change, utc(2026, 6, 7, 1, 0)))  # Sun 03:00 CEST
    assert not applies(decide(calendar, None, change, utc(2026, 6, 7, 20, 30)))  # Sun 22:30
    assert next_allowed(calendar, None, change, utc(2026, 6, 7, 2, 0)) == utc(2026, 6, 13, 20, 0)


@pytest.mark.parametrize("zone", ZONES)
def test_weekly_window_that_just_ended_comes_back_in_seven_days(zone: str) -> None:
    calendar = site(zone, updateWindows=[window("tue", "22:30", "30m")])
    change = Change(utc(2026, 1, 1))
    first = next_allowed(calendar, None, change, utc(2026, 6, 1))
    assert first is not None
    again = next_allowed(calendar, None, change, first + timedelta(minutes=30))
    assert again is not None
    assert again - first == timedelta(days=7)
    assert again.astimezone(ZoneInfo(zone)).strftime("%a %H:%M") == "Tue 22:30"


def test_outside_window_reason_names_local_and_utc() -> None:
    calendar = site(updateWindows=[window("mon,tue,wed,thu,fri,sat", "22:30", "6h")])
    decision = decide(calendar, None, Change(utc(2026, 11, 24, 9)), utc(2026, 11, 24, 9))
    assert decision == Wait(
        utc(2026, 11, 24, 21, 30),
        "outside update window; next window Tue 2026-11-24 22:30 Europe/Berlin (21:30 UTC)",
    )


def test_freeze_across_the_year_end() -> None:
    calendar = site(
        updateWindows=[window("mon,tue,wed,thu,fri,sat,sun", "22:30", "2h")],
        freezes=[
            {"name": "year-end", "from": "2026-12-20", "to": "2027-01-03", "reason": "closing"}
        ],
    )
    change = Change(utc(2026, 12, 1))
    decision = decide(calendar, None, change, utc(2026, 12, 31, 21, 45))
    assert isinstance(decision, Wait)
    assert decision.reason.startswith("frozen by 'year-end' until 2027-01-03 (closing)")
    # The window that starts 22:30 on the last frozen day is still open at local midnight,
    # when the freeze lifts: the site may apply at 00:00 on 4 January.
    assert decision.until == utc(2027, 1, 3, 23, 0)
    assert not applies(decide(calendar, None, change, utc(2027, 1, 3, 22, 59)))
    assert applies(decide(calendar, None, change, utc(2027, 1, 3, 23, 0)))


def test_overlapping_freezes_cite_the_longest() -> None:
    calendar = site(
        freezes=[
            {"name": "stocktake", "from": "2026-12-30", "to": "2026-12-31"},
            {
                "name": "closing",
                "from": "2026-12-28",
                "to": "2027-01-04",
                "reason": "year-end closing",
            },
        ]
    )
    decision = decide(calendar, None, Change(utc(2026, 12, 1)), utc(2026, 12, 30, 12))
    assert decision == Wait(
        utc(2027, 1, 4, 23, 0), "frozen by 'closing' until 2027-01-04 (year-end closing)"
    )


def test_fleet_freeze_lifts_at_the_sites_own_midnight() -> None:
    fleet = FleetRollout.from_spec(
        {"freezes": [{"name": "peak-season", "from": "2026-11-20", "to": "2026-12-31"}]},
        fleet="retail",
    )
    change = Change(utc(2026, 11, 1))
    sydney = site("Australia/Sydney", "au-syd-0001")
    chicago = site("America/Chicago", "us-chi-0001")
    assert next_allowed(sydney, fleet, change, utc(2026, 12, 1)) == utc(2026, 12, 31, 13, 0)
    assert next_allowed(chicago, fleet, change, utc(2026, 12, 1)) == utc(2027, 1, 1, 6, 0)


def test_emergency_passes_windows_and_freezes_but_not_waves() -> None:
    calendar = site(
        updateWindows=[window("sun", "03:00", "1h")],
        freezes=[{"name": "peak", "from": "2026-11-20", "to": "2027-01-05"}],
    )
    fleet = FleetRollout.from_spec(
        {"waves": [{"name": "canary", "sites": ["x-1"]}, {"name": "all", "soak": "24h"}]},
        fleet="retail",
    )
    change = Change(utc(2026, 12, 2, 11), emergency=True, emergency_reason="CVE-2026-1234")
    too_early = decide(calendar, fleet, change, utc(2026, 12, 3, 10, 59))
    assert too_early == Wait(
        utc(2026, 12, 3, 11), "waiting for wave 'all' (opens 2026-12-03 11:00 UTC)"
    )
    decision = decide(calendar, fleet, change, utc(2026, 12, 3, 11))
    assert isinstance(decision, Apply)
    assert "emergency change (CVE-2026-1234) passes windows and freezes" in decision.reason
    calm = Change(utc(2026, 12, 2, 11))
    assert next_allowed(calendar, fleet, calm, utc(2026, 12, 3)) == utc(2027, 1, 10, 2, 0)


def test_waves_open_after_cumulative_soak() -> None:
    fleet = FleetRollout.from_spec(
        {
            "waves": [
                {"name": "canary", "sites": ["de-ber-0042"]},
                {
                    "name": "hyper",
                    "selector": {"matchLabels": {"format": "hypermarket"}},
                    "soak": "24h",
                },
                {"name": "all", "soak": "48h"},
            ]
        },
        fleet="retail-eu",
    )
    change = Change(utc(2026, 11, 2, 9))
    canary = site()
    hyper = SiteCalendar.from_spec(
        {"timezone": "Europe/Berlin"}, site_id="de-ham-0001", labels={"format": "hypermarket"}
    )
    other = site(site_id="de-muc-0007")
    assert wave_slot(canary, fleet, change).opens == utc(2026, 11, 2, 9)
    assert wave_slot(hyper, fleet, change).opens == utc(2026, 11, 3, 9)
    assert wave_slot(other, fleet, change).opens == utc(2026, 11, 5, 9)
    assert wave_slot(hyper, fleet, change).name == "hyper"
    # A site listed for the canary that also matches "hyper" stays in the first wave.
    both = SiteCalendar.from_spec(
        {"timezone": "Europe/Berlin"}, site_id="de-ber-0042", labels={"format": "hypermarket"}
    )
    assert wave_slot(both, fleet, change).name == "canary"


def test_site_selected_by_no_wave_waits_forever() -> None:
    fleet = FleetRollout.from_spec({"waves": [{"name": "canary", "sites": ["a"]}]}, fleet="f")
    decision = decide(site(site_id="b"), fleet, Change(utc(2026, 1, 1)), utc(2026, 2, 1))
    assert isinstance(decision, Wait)
    assert decision.until is None
    assert "no wave of fleet 'f' selects site 'b'" in decision.reason


def test_paused_fleet_keeps_open_waves_and_opens_no_new_one() -> None:
    spec = {
        "waves": [{"name": "canary", "sites": ["a"]}, {"name": "all", "soak": "24h"}],
        "paused": True,
    }
    change = Change(utc(2026, 5, 1, 12))
    fleet = FleetRollout.from_spec(spec, fleet="f", paused_at=utc(2026, 5, 1, 18))
    assert applies(decide(site(site_id="a"), fleet, change, utc(2026, 5, 2)))
    late = decide(site(site_id="b"), fleet, change, utc(2026, 6, 1))
    assert isinstance(late, Wait)
    assert late.until is None
    assert late.reason.startswith("fleet 'f' is paused since 2026-05-01 18:00 UTC; wave 'all'")
    # Paused with no known pause time: fail closed, nothing opens.
    unknown = FleetRollout.from_spec(spec, fleet="f")
    assert decide(site(site_id="a"), unknown, change, utc(2026, 5, 2)).until is None  # type: ignore[union-attr]
    # A commit that changes and pauses at once rolls nothing out.
    same = FleetRollout.from_spec(spec, fleet="f", paused_at=change.changed_at)
    assert next_allowed(site(site_id="a"), same, change, change.changed_at) is None


def test_maintenance_only_site_changes_only_in_shutdown() -> None:
    plant = site(
        "Europe/Berlin",
        "plant-lyon",
        maintenance=[
            {
                "name": "xmas",
                "start": "2026-12-24T06:00:00+01:00",
                "end": "2027-01-02T18:00:00+01:00",
            }
        ],
    )
    change = Change(utc(2026, 11, 1))
    assert next_allowed(plant, None, change, utc(2026, 11, 1)) == utc(2026, 12, 24, 5)
    assert applies(decide(plant, None, change, utc(2026, 12, 30)))
    after = decide(plant, None, change, utc(2027, 1, 2, 17))
    assert isinstance(after, Wait)
    assert after.until is None
    assert "all of them have passed" in after.reason


def test_no_windows_declared_means_any_time() -> None:
    decision = decide(site("Asia/Kolkata"), None, Change(utc(2026, 1, 1)), utc(2026, 1, 1, 11, 7))
    assert decision == Apply("no update windows declared (any time)")


def test_governing_rollout_is_the_latest_opening() -> None:
    fast = FleetRollout.from_spec({"waves": [{"name": "all"}]}, fleet="fast")
    slow = FleetRollout.from_spec(
        {"waves": [{"name": "canary", "sites": ["z"]}, {"name": "all", "soak": "72h"}]},
        fleet="slow",
    )
    paused = FleetRollout.from_spec({"paused": True}, fleet="stopped")
    change = Change(utc(2026, 1, 1))
    s = site(site_id="a")
    assert governing_rollout(s, [fast, slow], change) is slow
    assert governing_rollout(s, [fast, paused, slow], change) is paused
    assert governing_rollout(s, [], change) is None


def test_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(site(), None, Change(utc(2026, 1, 1)), datetime(2026, 1, 1))


# --------------------------------------------------------------------------- generators

ANCHORS = [
    datetime(2026, 3, 29, tzinfo=UTC),  # Berlin spring forward
    datetime(2026, 10, 25, tzinfo=UTC),  # Berlin fall back
    datetime(2026, 3, 8, tzinfo=UTC),  # Chicago spring forward
    datetime(2026, 11, 1, tzinfo=UTC),  # Chicago fall back
    datetime(2026, 4, 5, tzinfo=UTC),  # Sydney fall back
    datetime(2026, 10, 4, tzinfo=UTC),  # Sydney spring forward
    datetime(2026, 12, 31, 12, tzinfo=UTC),  # year end
    datetime(2027, 3, 28, tzinfo=UTC),
    datetime(2027, 10, 31, tzinfo=UTC),
]

starts = st.builds(
    lambda h, m: f"{h:02d}:{m:02d}",
    st.sampled_from([0, 1, 2, 3, 22, 23]) | st.integers(0, 23),
    st.sampled_from([0, 15, 30, 45]) | st.integers(0, 59),
)
durations = st.builds(
    lambda h, m: f"{h}h{m}m" if h else f"{m or 1}m",
    st.integers(0, 30),
    st.sampled_from([0, 1, 30, 59]),
)
windows = st.builds(
    lambda days, start, duration: {
        "days": sorted(days, key=DAYS.index),
        "start": start,
        "duration": duration,
    },
    st.sets(st.sampled_from(DAYS), min_size=1, max_size=7),
    starts,
    durations,
)


SITE_IDS = ["s-1", "de-ber-0042", "us-chi-0201", "au-syd-0501", "np-ktm-0001", "in-blr-0601"]


@dataclass(frozen=True)
class Scenario:
    """One generated case: the raw specs (for the reference model) and what the product
    parses from them (for ``decide`` and ``next_allowed``)."""

    site_spec: dict[str, Any]
    site_id: str
    labels: dict[str, str]
    fleet_spec: dict[str, Any] | None
    paused_at: datetime | None
    change: Change
    after: datetime
    calendar: SiteCalendar
    rollout: FleetRollout | None

    def reference(self, t: datetime, *, emergency: bool | None = None) -> bool:
        """What the independent model says about applying at ``t``."""
        return reference.allowed(
            self.site_spec,
            self.site_id,
            self.labels,
            self.fleet_spec,
            self.change.changed_at,
            self.change.emergency if emergency is None else emergency,
            self.paused_at,
            t,
        )

    def opens(self, *, paused: bool = True) -> datetime | None:
        """When the independent model opens the site's wave (``paused=False``: as if not)."""
        fleet = self.fleet_spec
        if fleet is not None and not paused:
            fleet = {**fleet, "paused": False}
        return reference.wave_opens(
            fleet, self.site_id, self.labels, self.change.changed_at, self.paused_at
        )


@st.composite
def wave_specs(draw: st.DrawFn, site_id: str) -> list[dict[str, Any]]:
    """1–3 waves selecting by list, label, percent or (last) everyone left."""
    waves: list[dict[str, Any]] = []
    n_waves = draw(st.integers(1, 3))
    for i in range(n_waves):
        wave: dict[str, Any] = {"name": f"w{i}", "soak": f"{draw(st.integers(0, 36))}h"}
        if i < n_waves - 1 or draw(st.booleans()):
            how = draw(st.sampled_from(["sites", "sites", "selector", "percent"]))
            if how == "sites":
                wave["sites"] = [site_id] if draw(st.booleans()) else ["other"]
            elif how == "selector":
                wave["selector"] = {"matchLabels": {"tier": draw(st.sampled_from(["a", "b"]))}}
            else:
                wave["percent"] = draw(st.integers(1, 10_000)) / 100
        waves.append(wave)
    return waves


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    zone = draw(st.sampled_from(ZONES))
    site_id = draw(st.sampled_from(SITE_IDS))
    labels = {"tier": draw(st.sampled_from(["a", "b"]))}
    anchor = draw(st.sampled_from(ANCHORS))
    changed_at = anchor + MINUTE * draw(st.integers(-3 * 24 * 60, 24 * 60))
    spec: dict[str, Any] = {
        "timezone": zone,
        "updateWindows": draw(st.lists(windows, min_size=0, max_size=3)),
    }
    base = changed_at.astimezone(ZoneInfo(zone)).date()
    if draw(st.booleans()):
        m_start = changed_at + MINUTE * draw(st.integers(-600, 4000))
        m_end = m_start + MINUTE * draw(st.integers(1, 3000))
        spec["maintenance"] = [
            {"name": "m", "start": m_start.isoformat(), "end": m_end.isoformat()}
        ]
    freezes = []
    for i in range(draw(st.integers(0, 2))):
        first = base + timedelta(days=draw(st.integers(-2, 4)))
        last = first + timedelta(days=draw(st.integers(0, 3)))
        freezes.append({"name": f"f{i}", "from": first.isoformat(), "to": last.isoformat()})
    spec["freezes"] = freezes
    calendar = SiteCalendar.from_spec(spec, site_id=site_id, labels=labels)
    fleet_spec: dict[str, Any] | None = None
    rollout: FleetRollout | None = None
    paused_at: datetime | None = None
    if draw(st.booleans()):
        fleet_freezes = []
        if draw(st.booleans()):
            first = base + timedelta(days=draw(st.integers(-1, 3)))
            fleet_freezes.append(
                {"name": "fleet-freeze", "from": first.isoformat(), "to": first.isoformat()}
            )
        paused = draw(st.booleans()) and draw(st.booleans())
        paused_at = changed_at + MINUTE * draw(st.integers(-60, 48 * 60)) if paused else None
        fleet_spec = {
            "waves": draw(wave_specs(site_id)),
            "paused": paused,
            "freezes": fleet_freezes,
        }
        fleet = draw(st.sampled_from(["retail-eu", "retail-us", "plants"]))
        rollout = FleetRollout.from_spec(fleet_spec, fleet=fleet, paused_at=paused_at)
        fleet_spec["name"] = fleet
    change = Change(changed_at, emergency=draw(st.sampled_from([False] * 7 + [True])))
    after = changed_at - MINUTE * draw(st.integers(0, 12 * 60))
    return Scenario(spec, site_id, labels, fleet_spec, paused_at, change, after, calendar, rollout)


def never_is_justified(scenario: Scenario) -> bool:
    """next_allowed may say "never" only for a blocked wave or a site whose windows ran out."""
    if scenario.opens() is None:
        return True
    # Weekly windows recur forever and freezes end, so "never" needs a maintenance-only site
    # (whose windows may have passed or be frozen over; the stepped check covers those).
    calendar = scenario.calendar
    return not scenario.change.emergency and not calendar.windows and bool(calendar.maintenance)


# --------------------------------------------------------------------------- properties

STEP_SPAN = timedelta(days=10)


@settings(max_examples=30, deadline=None)
@given(scenarios())
def test_stepped_clock_first_applies_exactly_when_predicted(scenario: Scenario) -> None:
    calendar, rollout, change, after = (
        scenario.calendar,
        scenario.rollout,
        scenario.change,
        scenario.after,
    )
    predicted = next_allowed(calendar, rollout, change, after)
    limit = after + STEP_SPAN
    if predicted is not None:
        assert predicted >= after
        limit = min(limit, predicted)
    else:
        assert never_is_justified(scenario)
    t = after
    while t <= limit:
        decision = decide(calendar, rollout, change, t)
        assert applies(decision) is scenario.reference(t), (t, decision)
        if isinstance(decision, Apply):
            assert t == predicted, (t, predicted, decision)
            return
        assert decision.until == predicted, (t, decision)
        t += MINUTE
    assert predicted is None or predicted > after + STEP_SPAN


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.integers(0, 20 * 24 * 3600), st.integers(0, 999_999))
def test_decide_agrees_with_the_reference_and_next_allowed_at_any_instant(
    scenario: Scenario, seconds: int, micros: int
) -> None:
    calendar, rollout, change = scenario.calendar, scenario.rollout, scenario.change
    now = scenario.after + timedelta(seconds=seconds, microseconds=micros)
    decision = decide(calendar, rollout, change, now)
    predicted = next_allowed(calendar, rollout, change, now)
    assert applies(decision) is scenario.reference(now), decision
    if predicted is None:
        assert never_is_justified(scenario)
    if isinstance(decision, Apply):
        assert predicted == now
    else:
        assert decision.until == predicted
        assert predicted is None or predicted > now
    if predicted is not None:
        # The prediction is an instant the reference allows, and the minute before it
        # (if after now) is one it does not.
        assert scenario.reference(predicted), predicted
        if predicted - MINUTE >= now:
            assert not scenario.reference(predicted - MINUTE), predicted


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.integers(0, 20 * 24 * 3600))
def test_no_site_applies_inside_a_freeze_without_emergency(
    scenario: Scenario, seconds: int
) -> None:
    calendar, rollout, change = scenario.calendar, scenario.rollout, scenario.change
    now = scenario.after + timedelta(seconds=seconds)
    calm = Change(change.changed_at)
    frozen_days = [
        (date.fromisoformat(f["from"]), date.fromisoformat(f["to"]))
        for f in [*scenario.site_spec["freezes"], *(scenario.fleet_spec or {}).get("freezes", [])]
    ]
    zone = ZoneInfo(scenario.site_spec["timezone"])
    local_day = now.astimezone(zone).date()
    if any(first <= local_day <= last for first, last in frozen_days):
        assert not applies(decide(calendar, rollout, calm, now))
        first_allowed = next_allowed(calendar, rollout, calm, now)
        if first_allowed is not None:
            day = first_allowed.astimezone(zone).date()
            assert not any(first <= day <= last for first, last in frozen_days)
    # The emergency flag passes the freeze whenever the wave is open.
    urgent = Change(change.changed_at, emergency=True)
    opens = scenario.opens()
    if opens is not None and now >= opens:
        assert applies(decide(calendar, rollout, urgent, now))
        assert scenario.reference(now, emergency=True)


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.integers(0, 10 * 24 * 3600), st.integers(-48 * 60, 96 * 60))
def test_paused_fleet_opens_no_new_wave(
    scenario: Scenario, seconds: int, pause_offset: int
) -> None:
    rollout = scenario.rollout
    assume(rollout is not None and rollout.waves)
    assert rollout is not None
    assume(scenario.opens(paused=False) is not None)
    calendar, change = scenario.calendar, scenario.change
    running = FleetRollout(rollout.fleet, rollout.waves, False, None, rollout.freezes)
    paused_at = change.changed_at + MINUTE * pause_offset
    paused = FleetRollout(rollout.fleet, rollout.waves, True, paused_at, rollout.freezes)
    now = scenario.after + timedelta(seconds=seconds)
    opens = scenario.opens(paused=False)
    assert opens is not None
    if opens < paused_at:
        assert decide(calendar, paused, change, now) == decide(calendar, running, change, now)
    else:
        decision = decide(calendar, paused, change, now)
        assert isinstance(decision, Wait)
        assert decision.until is None
        assert next_allowed(calendar, paused, change, now) is None


def test_prediction_names_the_freeze_that_holds_a_site() -> None:
    fleet = FleetRollout.from_spec(
        {
            "waves": [{"name": "early", "percent": 100}],
            "freezes": [
                {
                    "name": "peak-season",
                    "from": "2026-11-20",
                    "to": "2027-01-05",
                    "reason": "holiday trading",
                }
            ],
        },
        fleet="retail-us",
    )
    chicago = site("America/Chicago", "us-chi-0001", updateWindows=[window("tue", "22:30", "6h")])
    row = predict(
        chicago, fleet, Change(utc(2026, 11, 24, 12)), utc(2026, 11, 24, 12), site_type="store"
    )
    assert row.wave == "early"
    assert row.held_by == "peak-season"
    assert row.held_until == date(2027, 1, 5)
    assert row.blocker == "frozen by 'peak-season' until 2027-01-05 (holiday trading)"
    # The Tuesday window of 2027-01-05 (the last frozen day) runs to 04:30 on the 6th,
    # so the site may apply the moment the freeze lifts: local midnight.
    assert row.first_allowed == utc(2027, 1, 6, 6, 0)
    assert row.local_first_allowed is not None
    assert row.local_first_allowed.strftime("%Y-%m-%d %H:%M") == "2027-01-06 00:00"
