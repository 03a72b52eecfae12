"""The one reader of repository files: regular files only, without blocking, size first."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.core.errors import DocumentError
from reconciler.core.model import Repository
from reconciler.core.render import render_site
from reconciler.core.source import MAX_READ_BYTES, WorkdirTree, read_file

BASE = Path(__file__).parent / "corpus" / "_base"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(BASE, root)
    return root


def test_a_fifo_in_place_of_site_yaml_is_a_finding_not_a_hang(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = repo / "sites/st-0002/site.yaml"
    site.unlink()
    os.mkfifo(site)  # no writer: opening it for reading the ordinary way blocks forever
    assert main(["validate", str(repo), "--no-policies"]) == 1
    out = capsys.readouterr().out
    assert "sites/st-0002/site.yaml: error: is a named pipe (FIFO), not a regular file" in out


def test_size_is_checked_before_reading(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = repo / "sites/st-0001/hardware.yaml"
    with big.open("r+b") as handle:
        handle.truncate(1 << 30)  # a sparse 1 GiB file: nothing to read, everything to refuse
    reads: list[int] = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    with pytest.raises(DocumentError, match="file is 1,073,741,824 bytes; the limit is"):
        WorkdirTree(repo).read("sites/st-0001/hardware.yaml", 1 << 20)
    assert reads == []


def test_a_link_is_refused_without_following_it(repo: Path) -> None:
    os.symlink("/etc/hostname", repo / "notes.txt")
    with pytest.raises(DocumentError, match="symbolic link"):
        read_file(repo / "notes.txt", "notes.txt")


def test_oversized_files_are_findings_of_the_key_scan(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = repo / "docs" / "manual.pdf"
    blob.parent.mkdir()
    with blob.open("wb") as handle:
        handle.truncate(MAX_READ_BYTES + 1)
    assert main(["validate", str(repo), "--no-policies"]) == 1
    assert "docs/manual.pdf: error: file is 8,388,609 bytes" in capsys.readouterr().out


def test_an_unreadable_folder_is_reported_not_skipped(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Tests run as root, which reads every folder whatever its mode; so the refusal the
    # kernel gives an ordinary CI user is played by scandir for this one folder.
    folder = repo / "sites/st-0001/vms"
    folder.mkdir()
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(str(path)) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    assert main(["validate", str(repo), "--no-policies"]) == 1
    out = capsys.readouterr().out
    assert "sites/st-0001/vms: error: folder cannot be read (Permission denied)" in out
    with pytest.raises(DocumentError, match="folder cannot be read"):
        WorkdirTree(repo).files("sites/st-0001")
    # Render fails rather than rendering the site without what the folder holds.
    with pytest.raises(DocumentError, match="folder cannot be read") as refused:
        render_site(Repository(WorkdirTree(repo)), "st-0001")
    assert refused.value.mark is not None and refused.value.mark.path == "sites/st-0001/vms"
