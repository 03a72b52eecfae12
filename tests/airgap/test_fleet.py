"""Status carried back: the agent's outbox report round-trips into the fleet status file."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from airgap_world import NOW, OTHER_PLANT, PLANT
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.cli import main
from reconciler.fleet.status import (
    FleetStatus,
    ReportError,
    format_text,
    ingest_dir,
    load_fleet,
    merge,
    parse_report,
    save_fleet,
    summarize,
)
from reconciler.node.agent import TickReport, status_document
from reconciler.node.state import AgentState, StateStore

A = "a" * 40
B = "b" * 40


def report_to(
    outbox: Path,
    state_dir: Path,
    *,
    site: str = PLANT,
    applied: str = A,
    at: datetime = NOW,
    pending: str | None = None,
    reason: str | None = None,
) -> Path:
    """Write a status report exactly as the agent does: StateStore.write_status into the outbox."""
    state = AgentState(site=site, applied=applied, applied_at=(at - timedelta(days=1)).timestamp())
    tick = TickReport(
        outcome="waiting" if pending else "unchanged",
        pending=pending,
        pending_reason=reason,
        pending_until=None,
        health="healthy",
    )
    StateStore(state_dir).write_status(status_document(site, state, tick, at), outbox)
    return outbox / f"outpost-status-{site}.json"


def test_a_report_written_to_the_outbox_round_trips_into_the_fleet_file(tmp_path: Path) -> None:
    stick = tmp_path / "stick"
    written = report_to(
        stick, tmp_path / "state", pending=B, reason="outside the update window (sat 22:00)"
    )
    assert written.exists()

    fleet, outcomes = ingest_dir(stick, FleetStatus(), now=NOW + timedelta(hours=2))
    assert [(o.outcome, o.site) for o in outcomes] == [("recorded", PLANT)]
    save_fleet(tmp_path / "fleet.json", fleet)
    again = load_fleet(tmp_path / "fleet.json")

    assert again.to_json() == fleet.to_json()
    entry = again.sites[PLANT]
    assert entry.time == NOW
    assert entry.report == json.loads(written.read_text())
    [row] = summarize(again, now=NOW + timedelta(hours=2))
    assert (row.site, row.applied, row.pending, row.health) == (PLANT, A, B, "healthy")
    assert row.pending_reason == "outside the update window (sat 22:00)"
    assert row.age_seconds == 7200
    text = format_text([row])
    assert text.splitlines()[0].split() == [
        "SITE",
        "APPLIED",
        "HEALTH",
        "REPORTED",
        "WHY",
        "NOT",
        "YET",
    ]
    assert f"{PLANT}  {A[:12]}  healthy  2h ago" in text
    assert f"{B[:12]} waiting: outside the update window (sat 22:00)" in text


def test_the_newest_report_wins_and_an_older_one_changes_nothing(tmp_path: Path) -> None:
    newer = report_to(tmp_path / "stick-2", tmp_path / "s", applied=B, at=NOW)
    older = report_to(tmp_path / "stick-1", tmp_path / "s", applied=A, at=NOW - timedelta(days=7))

    fleet, _ = ingest_dir(newer.parent, FleetStatus(), now=NOW)
    after, outcomes = ingest_dir(older.parent, fleet, now=NOW)

    assert [o.outcome for o in outcomes] == ["stale"]
    assert "older than the one on record" in outcomes[0].message
    assert after.to_json() == fleet.to_json()
    assert after.sites[PLANT].report["applied"]["revision"] == B

    again, outcomes = ingest_dir(newer.parent, after, now=NOW)
    assert [o.outcome for o in outcomes] == ["unchanged"]
    assert again.to_json() == after.to_json()


def test_reports_from_several_plants_below_one_folder(tmp_path: Path) -> None:
    report_to(tmp_path / "sticks" / "ostrava", tmp_path / "s1")
    report_to(tmp_path / "sticks" / "lyon" / "outbox", tmp_path / "s2", site=OTHER_PLANT)

    fleet, outcomes = ingest_dir(tmp_path / "sticks", FleetStatus(), now=NOW)

    assert sorted(fleet.sites) == [OTHER_PLANT, PLANT]
    assert {o.source for o in outcomes} == {
        f"lyon/outbox/outpost-status-{OTHER_PLANT}.json",
        f"ostrava/outpost-status-{PLANT}.json",
    }


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{", "not JSON"),
        ("[]", "expected a JSON object, found list"),
        (
            '{"apiVersion": "outpost/v1", "kind": "Site"}',
            "kind SiteStatus, found 'outpost/v1' / 'Site'",
        ),
        ("SITE:Plant_X", "site 'Plant_X' is not a site id"),
        ("TIME:2026-11-24T12:00:00", "is not an RFC 3339 time with an offset"),
        ("TIME:yesterday", "time 'yesterday'"),
        ("APPLIED:[]", "applied [] is not {revision, at}"),
        ("HEALTH:3", "health 3 is not a string"),
    ],
)
def test_malformed_reports_are_refused_with_file_name_and_reason(
    tmp_path: Path, content: str, reason: str
) -> None:
    stick = tmp_path / "stick"
    good = json.loads(report_to(stick, tmp_path / "s").read_text())
    report_to(stick, tmp_path / "s", site=OTHER_PLANT)
    if ":" in content and content.split(":", 1)[0].isupper():
        field, value = content.split(":", 1)
        try:
            parsed: object = json.loads(value)
        except ValueError:
            parsed = value
        good[{"SITE": "site", "TIME": "time", "APPLIED": "applied", "HEALTH": "health"}[field]] = (
            parsed
        )
        content = json.dumps(good)
    (stick / f"outpost-status-{PLANT}.json").write_text(content)

    fleet, outcomes = ingest_dir(stick, FleetStatus(), now=NOW)

    by_file = {o.source: o for o in outcomes}
    bad = by_file[f"outpost-status-{PLANT}.json"]
    assert bad.outcome == "refused"
    assert bad.message.startswith(f"outpost-status-{PLANT}.json: ")
    assert reason in bad.message
    assert by_file[f"outpost-status-{OTHER_PLANT}.json"].outcome == "recorded"
    assert list(fleet.sites) == [OTHER_PLANT]


def test_a_report_filed_under_another_plants_name_is_refused(tmp_path: Path) -> None:
    written = report_to(tmp_path / "stick", tmp_path / "s")
    written.rename(written.with_name(f"outpost-status-{OTHER_PLANT}.json"))

    fleet, [outcome] = ingest_dir(tmp_path / "stick", FleetStatus(), now=NOW)

    assert outcome.outcome == "refused"
    assert f"named for site {OTHER_PLANT!r} but reports on {PLANT!r}" in outcome.message
    assert fleet.sites == {}


def test_a_report_from_the_future_is_recorded_with_a_warning(tmp_path: Path) -> None:
    report_to(tmp_path / "stick", tmp_path / "s", at=NOW + timedelta(days=2))
    fleet, [outcome] = ingest_dir(tmp_path / "stick", FleetStatus(), now=NOW)
    assert outcome.outcome == "recorded"
    assert "2d ahead of this machine's clock" in outcome.message
    assert "in 2d (clock ahead)" in format_text(summarize(fleet, now=NOW))


def test_a_broken_fleet_file_is_an_error_not_an_empty_fleet(tmp_path: Path) -> None:
    (tmp_path / "fleet.json").write_text('{"kind": "Other"}')
    with pytest.raises(ReportError, match="not a fleet status file"):
        load_fleet(tmp_path / "fleet.json")
    assert load_fleet(tmp_path / "missing.json").sites == {}


def test_outpost_fleet_ingest_and_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stick = tmp_path / "stick"
    report_to(stick, tmp_path / "s", pending=B, reason="wave 'all' opens 2026-12-01T00:00:00+00:00")
    (stick / "outpost-status-broken.json").write_text("not json")
    # A stick is not trusted: a FIFO there is refused, not opened and waited on for ever.
    os.mkfifo(stick / "outpost-status-pipe.json")
    fleet_file = tmp_path / "fleet.json"

    assert main(["fleet", "ingest", str(stick), "--into", str(fleet_file)]) == 1
    printed = capsys.readouterr()
    assert f"recorded {PLANT}: recorded the report of" in printed.out
    assert "refused outpost-status-broken.json: not JSON" in printed.err
    assert "refused outpost-status-pipe.json: is a named pipe (FIFO)" in printed.err
    assert "1 recorded, 0 older than on record, 2 refused; 1 sites on record" in printed.out

    assert main(["fleet", "status", "--from", str(fleet_file)]) == 0
    out = capsys.readouterr().out
    assert PLANT in out
    assert "wave 'all' opens 2026-12-01" in out

    assert main(["fleet", "status", "--from", str(fleet_file), "-o", "json"]) == 0
    [site] = json.loads(capsys.readouterr().out)["sites"]
    assert site["pending"]["revision"] == B
    assert site["applied"] == A

    assert main(["fleet", "status", "--from", str(tmp_path / "none.json")]) == 2
    assert "run `outpost fleet ingest DIR` first" in capsys.readouterr().err


_TIMES = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(NOW.tzinfo)
)


@settings(max_examples=60, deadline=None)
@given(times=st.lists(_TIMES, min_size=1, max_size=8))
def test_whatever_order_reports_arrive_in_the_newest_is_kept(times: list[datetime]) -> None:
    fleet = FleetStatus()
    for i, when in enumerate(times):
        body = {
            "apiVersion": "outpost/v1", "kind": "SiteStatus", "site": PLANT,
            "time": when.isoformat(), "outcome": "unchanged", "health": "healthy",
            "applied": {"revision": f"{i:040d}", "at": None}, "pending": None,
        }  # fmt: skip
        fleet, _ = merge(fleet, parse_report(json.dumps(body).encode(), f"r{i}.json"), now=NOW)
    newest = max(times)
    first_newest = times.index(newest)
    assert fleet.sites[PLANT].time == newest
    assert fleet.sites[PLANT].report["applied"]["revision"] == f"{first_newest:040d}"
