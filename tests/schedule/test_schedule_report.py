"""`outpost schedule` output: the summary sentence, the tables, the three formats."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from reconciler.core.schedule import (
    Change,
    FleetRollout,
    Prediction,
    SiteCalendar,
    predict,
    render,
    render_json,
    render_markdown,
    render_text,
    summarize,
)
from reconciler.core.schedule._report import MARKDOWN_BUDGET

# Tuesday 24 November 2026, noon UTC: the change lands.
START = datetime(2026, 11, 24, 12, tzinfo=UTC)
NIGHTLY = [
    {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "22:30", "duration": "6h"}
]


def fleet_predictions() -> list[Prediction]:
    canary = [f"de-ber-{i:04d}" for i in range(5)]
    eu = FleetRollout.from_spec(
        {
            "waves": [
                {"name": "canary", "sites": canary},
                {"name": "early", "percent": 25, "soak": "24h"},
                {"name": "all", "soak": "48h"},
            ]
        },
        fleet="retail",
    )
    us = FleetRollout.from_spec(
        {
            "waves": [{"name": "all"}],
            "freezes": [
                {
                    "name": "peak-season",
                    "from": "2026-11-20",
                    "to": "2027-01-05",
                    "reason": "holidays",
                }
            ],
        },
        fleet="retail-us",
    )
    change = Change(START)
    rows = []
    for i in range(100):
        site = SiteCalendar.from_spec(
            {"timezone": "Europe/Berlin", "updateWindows": NIGHTLY}, site_id=f"de-ber-{i:04d}"
        )
        rows.append(predict(site, eu, change, START, site_type="store"))
    for i in range(7):
        site = SiteCalendar.from_spec(
            {"timezone": "America/Chicago", "updateWindows": NIGHTLY}, site_id=f"us-chi-{i:04d}"
        )
        rows.append(predict(site, us, change, START, site_type="store"))
    return rows


def test_summary_sentence_by_wave_and_day() -> None:
    rows = fleet_predictions()
    summary = summarize(rows, start=START)
    early = sum(1 for r in rows if r.wave == "early")
    late = 95 - early
    assert summary.sentence == (
        f"5 canary stores tonight; {early} early stores tomorrow; {late} all stores Fri; "
        "100 by Friday; 7 stores held by 'peak-season' until 5 Jan"
    )
    assert [(w.fleet, w.label, w.sites, w.held) for w in summary.waves] == [
        ("retail", "canary", 5, 0),
        ("retail", "early", early, 0),
        ("retail", "all", late, 0),
        ("retail-us", "all", 7, 7),
    ]
    assert summary.days[-1].cumulative == 107
    # The peak freeze ends Tue 5 Jan; 22:30 that night the window opens but the freeze
    # lifts only at midnight, mid-window: Wed 2027-01-06 00:00 Chicago time.
    chicago = [r for r in rows if r.site.startswith("us-")]
    assert {r.first_allowed for r in chicago} == {datetime(2027, 1, 6, 6, tzinfo=UTC)}


def test_days_in_utc_when_asked() -> None:
    rows = fleet_predictions()
    summary = summarize(rows, start=START, zone=ZoneInfo("UTC"))
    assert summary.zone is not None
    # Berlin's 22:30 is 21:30 UTC the same day; the sentence still says tonight.
    assert summary.sentence.startswith("5 canary stores tonight; ")
    assert summary.days[0].day == date(2026, 11, 24)


def test_blocked_sites_are_counted_by_cause() -> None:
    paused = FleetRollout.from_spec(
        {
            "waves": [{"name": "canary", "sites": ["a"]}, {"name": "all", "soak": "1h"}],
            "paused": True,
        },
        fleet="plants",
        paused_at=START + timedelta(minutes=30),
    )
    rows = [
        predict(
            SiteCalendar.from_spec({"timezone": "UTC"}, site_id=s),
            paused,
            Change(START),
            START,
            site_type="plant",
        )
        for s in ("a", "b", "c")
    ]
    summary = summarize(rows, start=START)
    assert summary.sentence == "1 canary plant today; 2 plants blocked: fleet 'plants' paused"
    assert rows[1].blocked_kind == "paused"
    assert rows[1].blocker is not None and "paused" in rows[1].blocker


def test_empty_schedule() -> None:
    assert summarize([], start=START).sentence == "no site is affected"
    assert "no site is affected" in render_text([], start=START)


def test_text_has_every_site_and_both_times() -> None:
    text = render_text(fleet_predictions(), start=START)
    assert text.startswith(
        "Rollout schedule from Tue 2026-11-24 12:00 UTC; 107 site(s); days in site-local time\n"
    )
    assert "By wave" in text and "By day (site-local time)" in text
    line = next(x for x in text.splitlines() if x.startswith("de-ber-0000"))
    assert "Tue 2026-11-24 22:30" in line and "2026-11-24 21:30" in line
    us = next(x for x in text.splitlines() if x.startswith("us-chi-0000"))
    assert "frozen by 'peak-season' until 2027-01-05 (holidays)" in us
    assert sum(1 for x in text.splitlines() if x.startswith(("de-ber-", "us-chi-"))) == 107


def test_markdown_is_a_comment_that_fits() -> None:
    rows = fleet_predictions()
    md = render_markdown(rows, start=START, max_rows=10)
    assert md.startswith("### Rollout schedule\n\n**5 canary stores tonight; ")
    assert "| fleet | wave | sites |" in md
    assert "<details>" in md and md.rstrip().endswith("</details>")
    assert "_… and 97 more sites;" in md
    many = rows * 60  # 6,420 rows: far above any comment limit
    big = render_markdown(many, start=START, max_rows=100_000)
    assert len(big) <= MARKDOWN_BUDGET
    assert "more sites; run `outpost schedule -o text`" in big


def test_markdown_escapes_table_breakers() -> None:
    row = Prediction(
        site="x",
        timezone="UTC",
        fleet="f",
        wave="w",
        wave_index=0,
        wave_opens=START,
        first_allowed=None,
        blocker="a | b <script>",
        blocked_kind="no-window",
    )
    md = render_markdown([row], start=START)
    assert "a \\| b &lt;script>" in md


def test_json_round_trips() -> None:
    data = json.loads(render_json(fleet_predictions(), start=START))
    assert data["start"] == "2026-11-24T12:00:00Z"
    assert data["zone"] is None
    assert data["total"] == 107
    assert data["held"] == [{"freeze": "peak-season", "until": "2027-01-05", "sites": 7}]
    first = data["sites"][0]
    assert first["firstAllowed"] == "2026-11-24T21:30:00Z"
    assert first["firstAllowedLocal"] == "2026-11-24T22:30:00+01:00"
    assert data["summary"].startswith("5 canary stores tonight")


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_render_dispatch(fmt: str) -> None:
    assert render(fleet_predictions(), fmt, start=START)


def test_render_refuses_unknown_format() -> None:
    with pytest.raises(ValueError, match="expected one of text, markdown, json"):
        render([], "yaml", start=START)
