"""``Tree.children`` (one folder's first level) and ``Tree.peek`` (a pre-filter's read):
what a run over a few sites reads of the others. Real git for ignores and commits."""

from __future__ import annotations

import os
from pathlib import Path

import pygit2
import pytest
from gitcli import git

from reconciler.core.source import CommitTree, WorkdirTree


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for site in ("a-0001", "b-0002", "c-0003"):
        (root / "sites" / site).mkdir(parents=True)
        (root / "sites" / site / "site.yaml").write_text(f"name: {site}\n")
    (root / "sites" / "scratch").mkdir()
    (root / "sites" / "scratch" / "site.yaml").write_text("ignored\n")
    (root / "fleets").mkdir()
    (root / "fleets" / "retail.yaml").write_text("kind: Fleet\n")
    (root / "README.md").write_text("readme\n")
    (root / ".gitignore").write_text("sites/scratch/\nbuild/\n")
    (root / "build").mkdir()
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "site.yaml").write_text("linked\n")
    os.symlink(root / "elsewhere", root / "sites" / "linked")
    os.symlink(root / "README.md", root / "NOTES.md")
    git(root.parent, "init", "-q", str(root))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fleet")
    return root


def test_children_leave_out_what_a_walk_leaves_out(repo: Path) -> None:
    tree = WorkdirTree(repo)
    files, folders = tree.children("")
    assert files == [".gitignore", "README.md"]  # the link NOTES.md is not a file here
    assert folders == ["elsewhere", "fleets", "sites"]  # no .git, no ignored build/
    assert tree.children("sites") == ([], ["a-0001", "b-0002", "c-0003"])


def test_children_after_a_walk_agree_with_it(repo: Path) -> None:
    tree = WorkdirTree(repo)
    walked = {p.split("/")[1] for p in tree.files("sites", lenient=True) if p.count("/") >= 2}
    assert tree.children("sites") == ([], sorted(walked))
    assert sorted(walked) == ["a-0001", "b-0002", "c-0003"]


def test_a_commits_children_leave_out_links(repo: Path) -> None:
    tree = CommitTree(pygit2.Repository(str(repo)), "HEAD")
    assert tree.children("sites") == ([], ["a-0001", "b-0002", "c-0003"])
    files, folders = tree.children("")
    assert "NOTES.md" not in files and "README.md" in files and "sites" in folders


def test_peek_reads_regular_files_only(repo: Path, tmp_path: Path) -> None:
    tree = WorkdirTree(repo)
    assert tree.peek("sites/a-0001/site.yaml") == b"name: a-0001\n"
    # git ignores it, yet peek reads it: a pre-filter's hit is read again with `read`
    assert tree.peek("sites/scratch/site.yaml") == b"ignored\n"
    assert tree.peek("NOTES.md") is None  # a link is never followed
    assert tree.peek("sites/nope/site.yaml") is None
    assert tree.peek("README.md", limit=3) is None  # over the limit: not read
    os.mkfifo(repo / "sites" / "b-0002" / "pipe.yaml")
    assert tree.peek("sites/b-0002/pipe.yaml") is None  # a FIFO: answered at once, not read
