"""``outpost validate --changed-since REV`` checks exactly the sites a change can affect."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gitcli import committed_copy, git

from reconciler.ci.validate import sites_changed_since
from reconciler.cli import main

CORPUS = Path(__file__).parent / "corpus"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return committed_copy(CORPUS / "_base", tmp_path / "repo")


def test_nothing_changed_means_no_site(repo: Path) -> None:
    assert sites_changed_since(repo, "HEAD") == []


def test_site_edit_selects_that_site_only(repo: Path) -> None:
    hardware = repo / "sites/st-0002/hardware.yaml"
    hardware.write_text(hardware.read_text().replace("cpu: 8", "cpu: 4"))
    assert sites_changed_since(repo, "HEAD") == ["st-0002"]


def test_fleet_edit_selects_its_members(repo: Path) -> None:
    fleet = repo / "fleets/retail.yaml"
    fleet.write_text(fleet.read_text().replace("currency: EUR", "currency: USD"))
    assert sites_changed_since(repo, "HEAD") == ["st-0001", "st-0002"]


def test_new_untracked_site_is_selected(repo: Path) -> None:
    shutil.copytree(repo / "sites/st-0002", repo / "sites/st-0003")
    for name in ("site.yaml", "hardware.yaml"):
        path = repo / "sites/st-0003" / name
        path.write_text(path.read_text().replace("st-0002", "st-0003").replace('0002"', '0003"'))
    assert sites_changed_since(repo, "HEAD") == ["st-0003"]


def test_untouched_broken_site_is_not_checked(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A problem committed earlier in st-0001 is not this change's business...
    site1 = repo / "sites/st-0001/site.yaml"
    site1.write_text(site1.read_text().replace("Europe/Berlin", "Europe/Berln"))
    git(repo, "commit", "-qam", "broken before")
    # ...while the change breaks st-0002, which is reported.
    hardware = repo / "sites/st-0002/hardware.yaml"
    hardware.write_text(hardware.read_text().replace("cpu: 8", "cpu: eight"))
    code = main(["validate", str(repo), "--no-policies", "--changed-since", "HEAD", "-o", "json"])
    findings = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [(f["path"], f["line"]) for f in findings] == [("sites/st-0002/hardware.yaml", 12)]
    # Without --changed-since both are found.
    assert main(["validate", str(repo), "--no-policies", "-o", "json"]) == 1
    paths = {f["path"] for f in json.loads(capsys.readouterr().out)}
    assert paths == {"sites/st-0001/site.yaml", "sites/st-0002/hardware.yaml"}


def test_unknown_revision_is_an_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(repo), "--no-policies", "--changed-since", "nope"]) == 2
    err = capsys.readouterr().err
    assert f"no revision 'nope' in {repo.resolve()}" in err
    assert "Traceback" not in err
