"""``validate_tree`` reads and parses each file of the tree once, whatever the checks on top."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.core.errors import OutpostError
from reconciler.core.policy import policy_check
from reconciler.core.source import CommitTree, Tree, WorkdirTree
from reconciler.core.validate import _ListedTree, validate_tree

ROOT = Path(__file__).resolve().parent.parent


class CountingTree(WorkdirTree):
    """A working directory that counts how often each file is read and each folder listed."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: Counter[str] = Counter()
        self.listed: Counter[str] = Counter()

    def read(self, path: str, limit: int = 1 << 23) -> bytes:
        self.reads[path] += 1
        return super().read(path, limit)

    def files(self, prefix: str = "", *, lenient: bool = False) -> list[str]:
        self.listed[prefix] += 1
        return super().files(prefix, lenient=lenient)


def test_every_file_is_read_once_with_policies_on_top() -> None:
    tree = CountingTree(ROOT)
    findings = validate_tree(tree, extra=[policy_check(today=date(2026, 6, 1))])
    assert [f for f in findings if f.severity == "error"] == []
    assert any(p.startswith("sites/") for p in tree.reads)
    assert any("/manifests/" in p for p in tree.reads)
    assert {p: n for p, n in tree.reads.items() if n > 1} == {}


def test_a_partial_run_lists_only_the_folders_of_its_sites(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "tests" / "corpus" / "_base", tmp_path / "repo")
    tree = CountingTree(tmp_path / "repo")
    assert validate_tree(tree, sites=["st-0002"]) == []
    assert "sites" not in tree.listed
    assert {p for p in tree.reads if p.startswith("sites/")} == {
        "sites/st-0002/site.yaml",
        "sites/st-0002/hardware.yaml",
    }


def test_a_partial_run_reports_a_linked_site_folder_and_does_not_read_through_it(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "tests" / "corpus" / "_base", repo)
    shutil.move(repo / "sites" / "st-0002", tmp_path / "elsewhere")
    (repo / "sites" / "st-0002").symlink_to(tmp_path / "elsewhere")
    tree = CountingTree(repo)
    findings = validate_tree(tree, sites=["st-0002"])
    assert [(f.path, f.rule) for f in findings if "symbolic link" in f.message] == [
        ("sites/st-0002", "file")
    ]
    assert not any(p.startswith("sites/") for p in tree.reads)


def _prefixes(paths: list[str]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        parts = path.split("/")
        found |= {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return found


@pytest.mark.parametrize("source", ["workdir", "commit"])
def test_listings_below_a_listed_folder_match_the_tree(tmp_path: Path, source: str) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "tests" / "corpus" / "_base", repo)
    (repo / "sites" / "st-0002" / "vms").mkdir()
    (repo / "sites" / "st-0002" / "vms" / "link.yaml").symlink_to(repo / "fleets" / "retail.yaml")
    (repo / "sites" / "st-0001-x").mkdir()
    (repo / "sites" / "st-0001-x" / "site.yaml").write_text("x: 1\n")
    (repo / "apps" / "linked").symlink_to(repo / "apps" / "pos")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)

    def tree() -> Tree:
        if source == "workdir":
            return WorkdirTree(repo)
        return CommitTree(pygit2.Repository(str(repo)), "HEAD")

    def listing(t: Tree, prefix: str, lenient: bool) -> Any:
        try:
            return t.files(prefix, lenient=lenient), sorted(t.links)
        except OutpostError as exc:
            return str(exc)

    listed = _ListedTree(tree())
    everything: list[str] = []
    for top in ("sites", "apps", "fleets"):
        everything += listed.files(top, lenient=True)
    prefixes = sorted(_prefixes(everything) | {"sites/st-0002/vms/link.yaml", "apps/linked"})
    for prefix in [*prefixes, "sites/none", "sites/st-0001/", "sites/./st-0001", "sites/.."]:
        for lenient in (True, False):
            plain = tree()
            for top in ("sites", "apps", "fleets"):
                plain.files(top, lenient=True)
            assert listing(listed, prefix, lenient) == listing(plain, prefix, lenient), prefix
