"""Parsing Site/Fleet schedule specs: the contract's examples load, every mistake is named."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.errors import ValidationError
from reconciler.core.loader import load_document
from reconciler.core.schedule import (
    Change,
    FleetRollout,
    Freeze,
    MaintenanceWindow,
    SiteCalendar,
    Wave,
    WeeklyWindow,
)
from reconciler.core.schedule._zones import format_duration, parse_duration

SITE_SPEC: dict[str, Any] = {
    "type": "store",
    "timezone": "Europe/Berlin",
    "fleets": ["retail-eu"],
    "connectivity": "online",
    "updateWindows": [
        {"days": ["mon", "tue", "wed", "thu", "fri", "sat"], "start": "22:30", "duration": "6h"}
    ],
    "maintenance": [
        {
            "name": "xmas-shutdown",
            "start": "2026-12-24T06:00:00+01:00",
            "end": "2027-01-02T18:00:00+01:00",
            "reason": "planned shutdown",
        }
    ],
    "freezes": [
        {
            "name": "stocktake",
            "from": "2027-01-15",
            "to": "2027-01-16",
            "reason": "annual stocktake",
        }
    ],
    "apps": {"historian": {"version": "2.3.0"}},
}

FLEET_SPEC: dict[str, Any] = {
    "description": "EU stores",
    "selector": {"matchLabels": {"region": "eu-central"}},
    "apps": {"pos": {"version": "4.2.1"}},
    "waves": [
        {"name": "canary", "sites": ["de-ber-0042", "de-muc-0007"]},
        {
            "name": "hypermarkets",
            "selector": {"matchLabels": {"format": "hypermarket"}},
            "soak": "24h",
        },
        {"name": "early", "percent": 10, "soak": "24h"},
        {"name": "all", "soak": "48h"},
    ],
    "paused": False,
    "freezes": [
        {
            "name": "peak-season",
            "from": "2026-11-20",
            "to": "2027-01-05",
            "reason": "holiday trading",
        }
    ],
}


def test_contract_site_example_parses() -> None:
    site = SiteCalendar.from_spec(SITE_SPEC, site_id="de-ber-0042", labels={"country": "de"})
    assert site.timezone.key == "Europe/Berlin"
    assert site.windows == (WeeklyWindow(frozenset(range(6)), time(22, 30), timedelta(hours=6)),)
    (m,) = site.maintenance
    assert m.start == datetime(2026, 12, 24, 5, 0, tzinfo=UTC)
    assert m.end == datetime(2027, 1, 2, 17, 0, tzinfo=UTC)
    assert site.freezes == (
        Freeze(
            "stocktake",
            date(2027, 1, 15),
            date(2027, 1, 16),
            "annual stocktake",
            "site de-ber-0042",
        ),
    )
    assert site.label_map == {"country": "de"}


def test_contract_fleet_example_parses() -> None:
    fleet = FleetRollout.from_spec(FLEET_SPEC, fleet="retail-eu")
    assert [w.name for w in fleet.waves] == ["canary", "hypermarkets", "early", "all"]
    assert fleet.offsets == (
        timedelta(0),
        timedelta(hours=24),
        timedelta(hours=48),
        timedelta(hours=96),
    )
    assert fleet.waves[2].percent == 10
    assert fleet.freezes[0].origin == "fleet retail-eu"
    assert not fleet.paused


def test_yaml_dates_and_datetimes_are_accepted_too() -> None:
    freeze = Freeze.from_spec({"name": "x", "from": date(2026, 12, 30), "to": date(2027, 1, 2)})
    assert freeze.end == date(2027, 1, 2)
    window = MaintenanceWindow.from_spec(
        {
            "name": "m",
            "start": datetime(2026, 1, 1, 6, tzinfo=UTC),
            "end": "2026-01-01T08:00:00Z",
        }
    )
    assert window.end - window.start == timedelta(hours=2)


def test_pause_time_is_kept_only_when_paused() -> None:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    assert FleetRollout.from_spec({"paused": True}, fleet="f", paused_at=at).paused_at == at
    assert FleetRollout.from_spec({"paused": False}, fleet="f", paused_at=at).paused_at is None


def _window(**over: Any) -> dict[str, Any]:
    return {"days": ["mon"], "start": "22:30", "duration": "6h", **over}


BAD_SITES: list[tuple[dict[str, Any], str, str]] = [
    ({"timezone": "Mars/Olympus"}, "spec.timezone", "unknown time zone 'Mars/Olympus'"),
    ({"timezone": "../../etc/passwd"}, "spec.timezone", "unknown time zone"),
    ({}, "spec.timezone", "expected a string, found nothing"),
    ({"updateWindows": [_window(days=["monday"])]}, "spec.updateWindows[0].days[0]", "'monday'"),
    ({"updateWindows": [_window(days=[])]}, "spec.updateWindows[0].days", "at least one day"),
    ({"updateWindows": [_window(days=["mon", "mon"])]}, "days[1]", "listed twice"),
    ({"updateWindows": [_window(start="24:00")]}, "spec.updateWindows[0].start", "HH:MM"),
    ({"updateWindows": [_window(start="9:30")]}, "spec.updateWindows[0].start", "HH:MM"),
    ({"updateWindows": [_window(duration="6hours")]}, "duration", "like 30m, 6h"),
    ({"updateWindows": [_window(duration="0m")]}, "duration", "above 0m and at most 7d"),
    ({"updateWindows": [_window(duration="8d")]}, "duration", "above 0m and at most 7d"),
    (
        {"updateWindows": [_window(durations="6h")]},
        "spec.updateWindows[0]",
        "unknown key 'durations'",
    ),
    (
        {"updateWindows": [{"days": ["mon"], "start": "22:30"}]},
        "updateWindows[0]",
        "missing 'duration'",
    ),
    ({"updateWindows": {"days": ["mon"]}}, "spec.updateWindows", "expected a list"),
    (
        {
            "maintenance": [
                {"name": "m", "start": "2026-12-24T06:00:00", "end": "2026-12-25T06:00:00Z"}
            ]
        },
        "spec.maintenance[0].start",
        "explicit offset",
    ),
    (
        {
            "maintenance": [
                {"name": "m", "start": "2026-12-24T06:00:00Z", "end": "2026-12-24T06:00:00Z"}
            ]
        },
        "spec.maintenance[0].end",
        "not after start",
    ),
    (
        {
            "maintenance": [
                {"name": "M", "start": "2026-12-24T06:00:00Z", "end": "2026-12-25T06:00:00Z"}
            ]
        },
        "spec.maintenance[0].name",
        "DNS label",
    ),
    ({"freezes": [{"name": "f", "from": "2027-01-05", "to": "2026-11-20"}]}, "to", "before 'from'"),
    ({"freezes": [{"name": "f", "from": "2027-02-30", "to": "2027-03-01"}]}, "from", "YYYY-MM-DD"),
    ({"freezes": [{"name": "f", "from": "2027-01-05"}]}, "spec.freezes[0]", "missing 'to'"),
]


@pytest.mark.parametrize(("spec", "where", "what"), BAD_SITES)
def test_bad_site_specs_are_named(spec: dict[str, Any], where: str, what: str) -> None:
    body = {"timezone": "Europe/Berlin", **spec}
    if spec == {}:
        body = {}
    with pytest.raises(ValidationError) as info:
        SiteCalendar.from_spec(body, site_id="de-ber-0042")
    assert where in str(info.value)
    assert what in str(info.value)


def _wave(**over: Any) -> dict[str, Any]:
    return {"name": "w", **over}


BAD_FLEETS: list[tuple[dict[str, Any], str, str]] = [
    ({"waves": [_wave(percent=0)]}, "spec.waves[0].percent", "above 0 and at most 100"),
    ({"waves": [_wave(percent=101)]}, "spec.waves[0].percent", "above 0 and at most 100"),
    ({"waves": [_wave(percent=10.005)]}, "percent", "two decimals"),
    ({"waves": [_wave(percent=True)]}, "percent", "found bool True"),
    ({"waves": [_wave(percent="10%")]}, "percent", "found '10%'"),
    ({"waves": [_wave(sites=["a"], percent=10)]}, "spec.waves[0].percent", "both 'sites' and"),
    ({"waves": [_wave(precent=10)]}, "spec.waves[0]", "unknown key 'precent'"),
    ({"waves": [_wave(sites=[])]}, "spec.waves[0].sites", "at least one site"),
    ({"waves": [_wave(sites=["a", "a"])]}, "spec.waves[0].sites", "listed twice"),
    ({"waves": [_wave(sites=["De-Ber"])]}, "spec.waves[0].sites[0]", "DNS label"),
    ({"waves": [_wave(selector={})]}, "spec.waves[0].selector", "empty selector"),
    (
        {"waves": [_wave(selector={"matchExpressions": [{"key": "k", "operator": "In"}]})]},
        "matchExpressions[0]",
        "non-empty 'values'",
    ),
    (
        {"waves": [_wave(selector={"matchExpressions": [{"key": "k", "operator": "Like"}]})]},
        "matchExpressions[0].operator",
        "expected one of In, NotIn",
    ),
    ({"waves": [_wave(soak="1 day")]}, "spec.waves[0].soak", "like 30m"),
    ({"waves": [_wave(), _wave()]}, "spec.waves[1].name", "used twice"),
    ({"waves": [{"name": "all"}, {"name": "late"}]}, "spec.waves[0]", "make it the last wave"),
    ({"waves": [{"sites": ["a"]}]}, "spec.waves[0]", "missing 'name'"),
    ({"paused": "yes"}, "spec.paused", "true or false"),
    (
        {"freezes": [{"name": "f", "from": "2026-11-20", "to": "2027-01-05", "why": "x"}]},
        "freezes[0]",
        "'why'",
    ),
]


@pytest.mark.parametrize(("spec", "where", "what"), BAD_FLEETS)
def test_bad_fleet_specs_are_named(spec: dict[str, Any], where: str, what: str) -> None:
    with pytest.raises(ValidationError) as info:
        FleetRollout.from_spec(spec, fleet="retail-eu")
    assert where in str(info.value)
    assert what in str(info.value)


def test_errors_carry_file_and_line_from_the_loader() -> None:
    text = b"""apiVersion: outpost/v1
kind: Site
metadata:
  name: de-ber-0042
  labels: {format: hypermarket}
spec:
  timezone: Europe/Berlin
  updateWindows:
    - days: [mon]
      start: "25:00"
      duration: 6h
"""
    doc = load_document(text, "sites/de-ber-0042/site.yaml")
    with pytest.raises(ValidationError) as info:
        SiteCalendar.from_document(doc)
    assert str(info.value).startswith("sites/de-ber-0042/site.yaml:10: spec.updateWindows[0].start")
    fleet = load_document(
        b"apiVersion: outpost/v1\nkind: Fleet\nmetadata: {name: retail-eu}\n"
        b"spec:\n  waves:\n    - {name: early, percent: 0}\n",
        "fleets/retail-eu.yaml",
    )
    with pytest.raises(ValidationError) as finfo:
        FleetRollout.from_document(fleet)
    assert str(finfo.value).startswith("fleets/retail-eu.yaml:6:")


def test_from_document_takes_name_and_labels() -> None:
    doc = load_document(
        b"apiVersion: outpost/v1\nkind: Site\nmetadata:\n  name: de-ber-0042\n"
        b"  labels: {format: hypermarket}\nspec:\n  timezone: Asia/Kathmandu\n",
        "sites/de-ber-0042/site.yaml",
    )
    site = SiteCalendar.from_document(doc)
    assert site.site_id == "de-ber-0042"
    assert site.label_map == {"format": "hypermarket"}
    assert not site.restricted


def test_wave_selector_semantics() -> None:
    wave = Wave.from_spec(
        {
            "name": "w",
            "selector": {
                "matchLabels": {"country": "de"},
                "matchExpressions": [
                    {"key": "format", "operator": "In", "values": ["hyper", "super"]},
                    {"key": "closed", "operator": "DoesNotExist"},
                    {"key": "tier", "operator": "NotIn", "values": ["lab"]},
                ],
            },
        }
    )
    assert wave.selects("f", "s", {"country": "de", "format": "hyper"})
    assert not wave.selects("f", "s", {"country": "at", "format": "hyper"})
    assert not wave.selects("f", "s", {"country": "de", "format": "mini"})
    assert not wave.selects("f", "s", {"country": "de", "format": "hyper", "closed": "1"})
    assert not wave.selects("f", "s", {"country": "de", "format": "hyper", "tier": "lab"})


def test_change_requires_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Change(datetime(2026, 1, 1))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 30), st.integers(0, 23), st.integers(0, 59))
def test_durations_round_trip(days: int, hours: int, minutes: int) -> None:
    value = timedelta(days=days, hours=hours, minutes=minutes)
    assert parse_duration(format_duration(value)) == value


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12))
def test_duration_parser_never_crashes(text: str) -> None:
    parsed = parse_duration(text)
    assert parsed is None or parsed >= timedelta(0)
    if text == "":
        assert parsed is None
