"""``--changed-since``: a machine id or node key the change makes two sites share is found,
whichever of the two changed, as a run over every site finds it (real git, the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gitcli import committed_copy, git

from reconciler.cli import main

CORPUS = Path(__file__).parent / "corpus"
ID = {site: f'"{"0" * 28}{n}"' for site, n in (("st-0001", "0001"), ("st-0002", "0002"))}
ID["pl-0001"] = f'"{"0" * 28}9999"'
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + "k" * 43


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return committed_copy(CORPUS / "_base", tmp_path / "repo")


def set_machine(repo: Path, site: str, value: str) -> None:
    path = repo / f"sites/{site}/hardware.yaml"
    path.write_text(path.read_text().replace(f"machineId: {ID[site]}", f"machineId: {value}"))


def add_key(repo: Path, site: str, key: str) -> None:
    path = repo / f"sites/{site}/hardware.yaml"
    text = path.read_text().replace(
        "      arch: amd64", f'      publicKey: "{key}"\n      arch: amd64'
    )
    path.write_text(text)


def findings(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> set[tuple[str, ...]]:
    code = main(["validate", str(repo), "--no-policies", "-o", "json", *args])
    found = json.loads(capsys.readouterr().out)
    assert code == (1 if found else 0)
    return {(f["path"], str(f["line"]), f["rule"], f["site"], f["message"]) for f in found}


def identity(found: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    return {f for f in found if "machine id" in f[4] or "node key" in f[4]}


def test_the_changed_site_takes_an_earlier_sites_machine_id(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_machine(repo, "st-0002", ID["st-0001"])
    changed = findings(repo, capsys, "--changed-since", "HEAD")
    assert identity(changed) == identity(findings(repo, capsys))
    ((path, _, rule, site, message),) = changed
    assert (path, rule, site) == ("sites/st-0002/hardware.yaml", "reference", "st-0002")
    assert "already declared by site 'st-0001'" in message


def test_the_changed_site_takes_a_later_sites_machine_id(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A whole run reports it at the later site, which did not change: the change is
    # still the one that made the conflict, so the run over it reports it too.
    set_machine(repo, "st-0001", ID["st-0002"])
    changed = findings(repo, capsys, "--changed-since", "HEAD")
    assert changed == identity(findings(repo, capsys))
    ((path, _, _, site, message),) = changed
    assert (path, site) == ("sites/st-0002/hardware.yaml", "st-0002")
    assert "already declared by site 'st-0001'" in message


def test_a_machine_id_written_with_escapes_is_found(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_machine(repo, "pl-0001", '"\\x30' + ID["st-0002"][2:])
    git(repo, "commit", "-qam", "pl-0001 spells st-0002's machine id with an escape")
    set_machine(repo, "st-0002", ID["st-0002"].replace('"', "'"))  # same value, re-quoted
    assert (
        identity(findings(repo, capsys, "--changed-since", "HEAD"))
        == identity(findings(repo, capsys))
        != set()
    )


def test_a_shared_node_key_is_found(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_key(repo, "pl-0001", KEY + " node@pl-0001")
    git(repo, "commit", "-qam", "pl-0001's node key")
    add_key(repo, "st-0001", KEY)  # the same key, another comment
    changed = findings(repo, capsys, "--changed-since", "HEAD")
    assert changed == identity(findings(repo, capsys)) != set()
    ((path, _, _, site, message),) = changed
    assert (path, site) == ("sites/st-0001/hardware.yaml", "st-0001")
    assert "already the key of pl-0001/ipc-1" in message


def test_a_conflict_between_sites_the_change_does_not_touch_is_not_its_business(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_machine(repo, "pl-0001", ID["st-0001"])
    add_key(repo, "pl-0001", KEY)
    git(repo, "commit", "-qam", "pl-0001 and st-0001 share a machine id")
    # st-0002's change holds both sites' values in a comment: both are read as candidates
    # and conflict with each other, but st-0002 declares neither value.
    path = repo / "sites/st-0002/hardware.yaml"
    path.write_text(f"# replaced: {ID['st-0001']} {KEY}\n" + path.read_text())
    assert identity(findings(repo, capsys))
    assert findings(repo, capsys, "--changed-since", "HEAD") == set()
