"""``--changed-since HEAD``: staged, unstaged and untracked changes all count (real git)."""

from __future__ import annotations

from pathlib import Path

from gitcli import git

from reconciler.ci.validate import sites_changed_since


def test_every_kind_of_change_since_head_is_seen(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for site in ("a", "b", "d", "e"):
        (repo / "sites" / site).mkdir(parents=True)
        (repo / "sites" / site / "site.yaml").write_text(f"name: {site}\n")
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "sites" / "e" / "site.yaml").write_text("name: e, later\n")
    git(repo, "commit", "-q", "-am", "two")
    (repo / "sites" / "a" / "site.yaml").write_text("name: a, staged\n")
    git(repo, "add", "sites/a/site.yaml")  # staged
    git(repo, "rm", "-q", "sites/b/site.yaml")  # staged removal
    (repo / "sites" / "d" / "site.yaml").write_text("name: d, unstaged\n")
    (repo / "sites" / "c").mkdir()
    (repo / "sites" / "c" / "site.yaml").write_text("name: c\n")  # untracked
    assert sites_changed_since(repo, "HEAD") == ["a", "b", "c", "d"]
    assert sites_changed_since(repo, git(repo, "rev-parse", "HEAD")) == ["a", "b", "c", "d"]
    assert sites_changed_since(repo, first) == ["a", "b", "c", "d", "e"]
