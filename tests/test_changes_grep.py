"""Which other sites' site.yaml or hardware.yaml may hold a value: ``git grep`` over the
index's files, the changed and untracked ones read from the working tree, the ignored ones
not in the tree (``ci.changes``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitcli import git

from reconciler.ci.changes import SiteFileGrep, start_changes

VALUE = b"age1" + b"q" * 58
OTHER = b"age1" + b"p" * 58


def write(repo: Path, path: str, data: bytes) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_bytes(data)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write(root, "sites/a/site.yaml", b"recipient: " + VALUE + b"\n")
    write(root, "sites/b/site.yaml", b"recipient: " + OTHER + b"\n")
    write(root, "sites/c/site.yaml", b'recipient: "\\x61ge1..."\n')  # escapes: a backslash
    write(root, "sites/d/hardware.yaml", b"machineId: " + VALUE + b"\n")  # another file name
    write(root, "sites/e/vms/site.yaml", VALUE)  # not a site's own site.yaml
    write(root, "sites/f g/site.yaml", VALUE)  # a folder name with a space
    write(root, "site.yaml", VALUE)
    write(root, "sites/gone/site.yaml", VALUE)
    write(root, "sites/staged/site.yaml", OTHER)
    write(root, "sites/unsaid/site.yaml", OTHER)
    write(root, ".gitignore", b"ignored/\n")
    git(tmp_path, "init", "-q", str(root))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    write(root, "sites/new/site.yaml", VALUE)  # untracked
    write(root, "sites/new2/site.yaml", OTHER)  # untracked, without the value
    write(root, "sites/ignored/site.yaml", VALUE)
    (root / ".gitignore").write_text("sites/ignored/\n")
    write(root, "sites/b/site.yaml", b"recipient: " + VALUE + b"\n")  # changed, not staged
    (root / "sites/gone/site.yaml").unlink()  # in the index, not in the working tree
    write(root, "sites/staged/site.yaml", VALUE)
    git(root, "add", "sites/staged/site.yaml")  # the index holds the value, and the file
    write(root, "sites/unsaid/site.yaml", VALUE)
    git(root, "add", "sites/unsaid/site.yaml")
    write(root, "sites/unsaid/site.yaml", OTHER)  # the index holds it, the file no longer
    return root


def test_the_sites_holding_a_value_or_a_backslash(repo: Path) -> None:
    holders = SiteFileGrep(repo, start_changes(repo, "HEAD"))
    assert holders("site.yaml", [VALUE]) == {"a", "b", "c", "f g", "new", "staged"}
    assert holders("hardware.yaml", [VALUE]) == {"d"}
    assert holders("site.yaml", [b"nothing-like-it"]) == {"c"}


def test_a_prefetched_grep_answers_the_questions_it_covers(repo: Path) -> None:
    holders = SiteFileGrep(repo, start_changes(repo, "HEAD"))
    holders.prefetch({"site.yaml": [VALUE, OTHER], "hardware.yaml": [b"z" * 32]})
    # Fewer values than prefetched: the answer is a superset, which the contract allows.
    assert holders("site.yaml", [OTHER]) >= {"c", "new2", "unsaid"}
    assert holders("site.yaml", [OTHER]) <= {"a", "c", "f g", "new", "new2", "staged", "unsaid"}
    # A value it did not look for is looked for on its own.
    assert holders("site.yaml", [b"recipient"]) == {"a", "b", "c"}
    assert holders("hardware.yaml", [VALUE]) == {"d"}
    holders.close()


@pytest.mark.parametrize(
    ("name", "needles"),
    [("../site.yaml", [VALUE]), ("*.yaml", [VALUE]), ("site.yaml", [b"two\nlines"])],
)
def test_what_git_cannot_be_asked_is_left_to_the_caller(
    repo: Path, name: str, needles: list[bytes]
) -> None:
    assert SiteFileGrep(repo, start_changes(repo, "HEAD"))(name, needles) is None


def test_no_git_to_ask_is_no_answer(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    holders = SiteFileGrep(repo, start_changes(repo, "HEAD"))
    holders.changed  # noqa: B018 -- git listed the changes before it went away
    monkeypatch.setenv("PATH", str(repo / "nowhere"))
    assert holders("site.yaml", [VALUE]) is None


def test_a_folder_inside_the_work_tree_gets_its_own_site_names(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, "config/sites/a/site.yaml", VALUE)
    write(root, "other/sites/b/site.yaml", VALUE)
    git(tmp_path, "init", "-q", str(root))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    git(root, "config", "grep.fullName", "true")  # a user's setting does not move the names
    write(root, "config/sites/c/site.yaml", VALUE)
    config = root / "config"
    assert SiteFileGrep(config, start_changes(config, "HEAD"))("site.yaml", [VALUE]) == {"a", "c"}
