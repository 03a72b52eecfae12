"""The repository's own example sites and fleets, scheduled end to end (working tree + CLI)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.core.model import Repository
from reconciler.core.schedule import Apply, Change, decide, gate_inputs, predict
from reconciler.core.source import WorkdirTree

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 24, 12, tzinfo=UTC)  # inside the example fleets' peak season


def repository() -> Repository:
    return Repository(WorkdirTree(ROOT))


def test_every_example_site_gets_a_schedule_the_gate_agrees_with() -> None:
    repo = repository()
    assert repo.site_ids, "the example tree has no sites"
    change = Change(START)
    seen_freeze = False
    for site_id in repo.site_ids:
        folder = repo.site(site_id)
        fleets = [f.doc for f in (repo.fleet(n) for n in folder.site.fleets) if f is not None]
        calendar, rollout = gate_inputs(folder.site.doc, fleets, change)
        row = predict(calendar, rollout, change, START, site_type=folder.site.type)
        seen_freeze |= row.held_by is not None
        if row.first_allowed is None:
            assert row.blocker
            continue
        assert isinstance(decide(calendar, rollout, change, row.first_allowed), Apply)
        before = decide(calendar, rollout, change, row.first_allowed - timedelta(minutes=1))
        if row.first_allowed > START:
            assert not isinstance(before, Apply)
    assert seen_freeze, "expected the example fleets' peak-season freeze to hold some store"


def test_cli_schedule_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["schedule", str(ROOT), "--from", "2026-11-24T12:00:00Z", "-o", "json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["start"] == "2026-11-24T12:00:00Z"
    assert data["total"] == len(repository().site_ids)
    assert any(h["freeze"] == "peak-season" for h in data["held"])


def test_cli_schedule_emergency_passes_the_freeze(capsys: pytest.CaptureFixture[str]) -> None:
    site = next(s for s in repository().site_ids if s.startswith("de-"))
    args = ["schedule", str(ROOT), "--site", site, "--from", "2026-12-01T12:00:00+01:00"]
    assert main([*args, "-o", "json"]) == 0
    calm = json.loads(capsys.readouterr().out)["sites"][0]
    assert main([*args, "--emergency", "CVE-2026-0001", "-o", "json"]) == 0
    urgent = json.loads(capsys.readouterr().out)["sites"][0]
    assert calm["heldBy"] == "peak-season"
    assert urgent["heldBy"] is None
    assert urgent["firstAllowed"] < calm["firstAllowed"]


def test_cli_schedule_refuses_a_time_without_offset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", str(ROOT), "--from", "2026-11-24T12:00"]) == 2
    assert "RFC 3339 time with an offset" in capsys.readouterr().err
