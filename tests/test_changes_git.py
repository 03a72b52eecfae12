"""``--changed-since`` asks git's command line what changed (``ci.changes``): real git,
every kind of change, and the ignored paths the tree then leaves out as libgit2 does."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitcli import git
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.ci.changes import changes_since
from reconciler.ci.validate import sites_changed_since
from reconciler.core.errors import DocumentError, SourceUnavailable
from reconciler.core.source import WorkdirTree


def write(repo: Path, path: str, text: str = "x: 1\n") -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for path in (
        "sites/a/site.yaml",
        "sites/b/site.yaml",
        "sites/c/site.yaml",
        "sites/d/site.yaml",
        "sites/e/site.yaml",
        "sites/f/vms/old name.yaml",
        "fleets/retail.yaml",
        ".gitignore",
    ):
        write(root, path)
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    return root


def test_every_kind_of_change_is_listed(repo: Path) -> None:
    write(repo, "sites/a/site.yaml", "x: 2\n")  # modified, not staged
    write(repo, "sites/b/site.yaml", "x: 2\n")
    git(repo, "add", "sites/b/site.yaml")  # staged
    git(repo, "rm", "-q", "sites/c/site.yaml")  # removed, staged
    (repo / "sites/d/site.yaml").unlink()  # removed from the working tree only
    (repo / "sites/e2").mkdir()
    git(repo, "mv", "sites/e/site.yaml", "sites/e2/site.yaml")  # renamed: both paths count
    git(repo, "mv", "sites/f/vms/old name.yaml", "sites/f/vms/nouveau né.yaml")
    write(repo, "sites/new/site.yaml")  # a new site, untracked
    write(repo, "sites/new/secrets/db.sops.yaml")
    write(repo, "sites/README.md", "notes\n")  # directly under sites/
    write(repo, "sites/a/debug.log")  # ignored
    write(repo, "build/out.yaml")  # in an ignored folder

    changes = changes_since(repo, "HEAD")

    assert changes.paths == {
        "sites/a/site.yaml",
        "sites/b/site.yaml",
        "sites/c/site.yaml",
        "sites/d/site.yaml",
        "sites/e/site.yaml",
        "sites/e2/site.yaml",
        "sites/f/vms/old name.yaml",
        "sites/f/vms/nouveau né.yaml",
        "sites/new/site.yaml",
        "sites/new/secrets/db.sops.yaml",
        "sites/README.md",
    }
    assert changes.untracked == {
        "sites/new/site.yaml",
        "sites/new/secrets/db.sops.yaml",
        "sites/README.md",
    }
    assert changes.ignored == {"sites/a/debug.log", "build"}
    assert changes.revision == git(repo, "rev-parse", "HEAD")
    assert sites_changed_since(repo, "HEAD") == ["a", "b", "c", "d", "e", "e2", "f", "new"]


def test_nothing_changed_is_nothing(repo: Path) -> None:
    changes = changes_since(repo, "HEAD")
    assert changes.paths == set() and changes.untracked == set() and changes.ignored == set()


def test_commits_since_an_older_revision_count_with_the_working_tree(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    write(repo, "sites/a/site.yaml", "x: 2\n")
    git(repo, "commit", "-qam", "two")
    git(repo, "rm", "-q", "sites/b/site.yaml")
    git(repo, "commit", "-qm", "three")
    write(repo, "sites/c/site.yaml", "x: 3\n")
    assert changes_since(repo, first).paths == {
        "sites/a/site.yaml",
        "sites/b/site.yaml",
        "sites/c/site.yaml",
    }
    assert changes_since(repo, "HEAD~1").paths == {"sites/b/site.yaml", "sites/c/site.yaml"}
    assert changes_since(repo, "main").paths == {"sites/c/site.yaml"}


def site(name: str, *fleets: str) -> str:
    listed = ", ".join(fleets)
    return f"apiVersion: outpost/v1\nkind: Site\nmetadata: {{name: {name}}}\nspec: {{fleets: [{listed}]}}\n"


def test_a_fleet_change_selects_its_members_on_both_sides(repo: Path) -> None:
    for name in "abcde":
        write(repo, f"sites/{name}/site.yaml", site(name, "retail") if name in "ab" else site(name))
    git(repo, "commit", "-qam", "a and b join retail")
    write(repo, "sites/a/site.yaml", site("a"))
    write(repo, "sites/c/site.yaml", site("c", "retail"))
    write(repo, "fleets/retail.yaml", "x: 2\n")
    # a left the fleet in the working tree but was a member at the base; c joined: each
    # is affected by the fleet's change, and so is b, a member on both sides. f has no
    # site.yaml to say it is not a member.
    assert sites_changed_since(repo, "HEAD") == ["a", "b", "c", "f"]


def test_a_folder_inside_the_work_tree_sees_its_own_paths(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, "config/sites/a/site.yaml")
    write(root, "other/sites/b/site.yaml")
    git(tmp_path, "init", "-q", str(root))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    write(root, "config/sites/a/site.yaml", "x: 2\n")
    write(root, "other/sites/b/site.yaml", "x: 2\n")
    write(root, "config/sites/a/x.log")
    (root / ".gitignore").write_text("*.log\n")
    changes = changes_since(root / "config", "HEAD")
    assert changes.paths == {"sites/a/site.yaml"}
    assert changes.ignored == {"sites/a/x.log"}
    assert sites_changed_since(root / "config", "HEAD") == ["a"]


@pytest.mark.parametrize(
    ("revision", "expected"),
    [
        ("nope", "no revision 'nope' in "),
        ("--output=/tmp/x", "expected a revision (a commit id, branch or tag), not an option"),
        ("", "not an option or an empty name"),
        ("HEAD~5", "no revision 'HEAD~5'"),
    ],
)
def test_a_revision_that_is_not_there_is_said(repo: Path, revision: str, expected: str) -> None:
    with pytest.raises(SourceUnavailable) as caught:
        changes_since(repo, revision)
    assert expected in str(caught.value)


def test_a_folder_outside_git_is_said(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(SourceUnavailable) as caught:
        changes_since(tmp_path / "plain", "HEAD")
    message = str(caught.value)
    assert f"needs a git repository, and {tmp_path / 'plain'} is not one" in message
    assert "not a git repository" in message  # git's own words


def test_no_git_on_path_is_said(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo / "nowhere"))
    with pytest.raises(SourceUnavailable, match=r"`git` could not be run"):
        changes_since(repo, "HEAD")


def _ignore_world(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "apps" / "pos" / "build").mkdir(parents=True)
    git(tmp_path, "init", "-q", str(root))
    (root / ".gitignore").write_text("*.pyc\n!keep.pyc\nscratch/\n/top-only.yaml\n")
    (root / "apps" / ".gitignore").write_text("build/\n")
    (root / ".git" / "info" / "exclude").write_text("/local.yaml\n")
    for path in (
        "apps/pos/app.yaml",
        "apps/pos/cache.pyc",
        "apps/pos/keep.pyc",
        "apps/pos/build/out.yaml",
        "apps/pos/build/tracked.yaml",
        "sites/s1/site.yaml",
        "sites/s1/scratch/notes.yaml",
        "sites/scratch/site.yaml",
        "sites/s2/site.yaml",
        "top-only.yaml",
        "apps/top-only.yaml",
        "local.yaml",
        "kept.pyc",
    ):
        write(root, path)
    git(root, "add", "-A")
    git(root, "add", "-f", "kept.pyc", "apps/pos/build/tracked.yaml")  # tracked despite rules
    git(root, "commit", "-qm", "one")
    write(root, "sites/s2/new.pyc")
    write(root, "sites/s3/site.yaml")  # untracked, not ignored
    return root


def test_the_ignored_paths_git_lists_leave_out_what_libgit2_leaves_out(tmp_path: Path) -> None:
    root = _ignore_world(tmp_path)
    changes = changes_since(root, "HEAD")
    asked = WorkdirTree(root)  # libgit2, path by path
    listed = WorkdirTree(root, ignored=changes.ignored)
    assert listed.files() == asked.files()
    assert "apps/pos/build/tracked.yaml" in listed.files()
    assert "apps/pos/build/out.yaml" not in listed.files()
    for folder in ("", "sites", "apps/pos", "apps/pos/build", "sites/s1"):
        assert listed.children(folder) == asked.children(folder)
        assert listed.entries(folder) == asked.entries(folder)
    every = [
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".git/" not in str(p)
    ]
    for path in every:
        assert listed.exists(path) == asked.exists(path), path
        for tree in (listed, asked):
            try:
                tree.read(path)
            except DocumentError as exc:
                assert "ignored by git" in exc.message, path
                assert not listed.exists(path)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(
        st.text(
            alphabet=st.characters(
                blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\*?[]!:\"'"
            ),
            min_size=1,
            max_size=12,
        ).filter(
            # git's status passes over a folder named .git (another repository's)
            lambda n: n not in (".", "..", ".git") and n.strip() == n and not n.startswith("-")
        ),
        min_size=1,
        max_size=4,
        unique=True,
    )
)
def test_any_file_name_comes_back_as_written(
    tmp_path_factory: pytest.TempPathFactory, names: list[str]
) -> None:
    root = tmp_path_factory.mktemp("names") / "repo"
    write(root, "sites/base/site.yaml")
    git(root.parent, "init", "-q", str(root))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    expected = set()
    for index, name in enumerate(names):
        path = f"sites/{name}/{name}.yaml" if index % 2 else f"sites/base/{name}.yaml"
        try:
            write(root, path)
        except OSError:
            continue  # a name this file system refuses
        expected.add(path)
    assert changes_since(root, "HEAD").paths == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"?? a", b"!! b/", b"R  c", b" M d", b"!!", b"", b"\xff\xfe e"])))
def test_any_status_output_is_read_without_an_exception(fields: list[bytes]) -> None:
    """git's own output, but read as any bytes: a rename cut short at the end, a field too
    short to be an entry, bytes that are not UTF-8 (kept as the walk names them)."""
    from reconciler.ci.changes import _status_entries

    entries = list(_status_entries(b"\0".join(fields)))
    assert all(len(state) == 2 and isinstance(path, str) for state, path, _ in entries)
    assert len(entries) <= len(fields)
