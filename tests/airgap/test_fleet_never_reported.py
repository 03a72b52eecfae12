"""outpost fleet status at fleet scale: sites that never reported are listed, and the fleet
status file lives outside the current directory unless a command is told otherwise."""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from airgap_world import NOW, PLANT

from reconciler.cli import main
from reconciler.fleet.status import FleetStatus, default_fleet_file, format_text, never_reported
from reconciler.node.agent import TickReport, status_document
from reconciler.node.state import AgentState, StateStore

ROOT = Path(__file__).resolve().parents[2]


def example_site_ids() -> list[str]:
    return sorted(p.name for p in (ROOT / "sites").iterdir() if (p / "site.yaml").is_file())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    target = tmp_path / "repo"
    shutil.copytree(ROOT / "sites", target / "sites")
    return target


def test_default_file_is_never_the_current_directory(tmp_path: Path) -> None:
    assert default_fleet_file({"OUTPOST_FLEET_STATUS": "/srv/fleet.json"}) == Path(
        "/srv/fleet.json"
    )
    assert default_fleet_file({"XDG_STATE_HOME": "/x", "HOME": "/h"}) == Path(
        "/x/outpost/fleet-status.json"
    )
    assert default_fleet_file({"HOME": "/h"}) == Path("/h/.local/state/outpost/fleet-status.json")


def test_ingest_and_status_leave_the_current_directory_alone(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state_home = tmp_path / "state-home"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("OUTPOST_FLEET_STATUS", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    stick = tmp_path / "stick"
    state = AgentState(
        site=PLANT, applied="a" * 40, applied_at=(NOW - timedelta(days=1)).timestamp()
    )
    StateStore(tmp_path / "s").write_status(
        status_document(PLANT, state, TickReport(health="healthy"), NOW), stick
    )

    assert main(["fleet", "ingest", str(stick)]) == 0
    capsys.readouterr()
    assert (state_home / "outpost/fleet-status.json").is_file()
    assert os.listdir(workdir) == []

    assert main(["fleet", "status", "--repo", str(repo), "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [s["site"] for s in document["sites"]] == [PLANT]
    assert document["neverReported"] == [s for s in example_site_ids() if s != PLANT]
    assert os.listdir(workdir) == []

    assert main(["fleet", "status", "--repo", str(repo)]) == 0
    lines = capsys.readouterr().out.splitlines()
    never = [line for line in lines if " never " in line]
    assert len(never) == len(example_site_ids()) - 1
    assert all("no status report on record" in line for line in never)
    reported = next(i for i, line in enumerate(lines) if line.startswith(PLANT))
    assert reported < lines.index(never[0])  # sites that report first, the silent ones after


def test_a_fleet_with_no_reports_yet_lists_every_site(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OUTPOST_FLEET_STATUS", str(tmp_path / "nothing-yet.json"))
    assert main(["fleet", "status", "--repo", str(repo), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"sites": [], "neverReported": example_site_ids()}
    # without a repository there is nothing to say: the file is missing, and nothing names sites
    assert main(["fleet", "status", "--repo", str(tmp_path)]) == 2
    assert "run `outpost fleet ingest DIR` first" in capsys.readouterr().err


def test_never_reported_is_the_repository_minus_the_reports() -> None:
    assert never_reported(FleetStatus(), ["b", "a"]) == ["a", "b"]
    assert format_text([], ["a"]).splitlines()[1].split()[:4] == ["a", "-", "unknown", "never"]
    assert format_text([], []) == "no status reports on record\n"
