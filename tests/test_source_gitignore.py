"""A working tree shows what git would commit: ignored, untracked paths are not read.

The repository root of a developer or a CI job often holds a virtualenv, a build folder or
editor files; ``.gitignore`` says they are not part of the repository, so ``outpost
validate`` and the secrets scan must not report on them. Real git and a real virtualenv.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from reconciler.ci.changes import PendingIgnored
from reconciler.core.errors import DocumentError
from reconciler.core.source import WorkdirTree

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ("sites", "fleets", "apps", "policies", "schemas")


def a_test_key() -> bytes:
    """What packages in a virtualenv really carry: a test key (made here, so this file
    holds no key material for the repository's own secrets scan to find)."""
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def example_repo(tmp_path: Path, *, gitignore: str | None) -> Path:
    """A git repository holding the example fleet, with a virtualenv in its root."""
    repo = tmp_path / "repo"
    for folder in CONFIG:
        shutil.copytree(ROOT / folder, repo / folder)
    shutil.copy(ROOT / ".sops.yaml", repo / ".sops.yaml")
    git(repo.parent, "init", "-q", str(repo))
    if gitignore is not None:
        (repo / ".gitignore").write_text(gitignore)
    venv.create(repo / ".venv", with_pip=False, symlinks=True)
    site_packages = next((repo / ".venv").glob("lib/python*")) / "site-packages"
    (site_packages / "somepkg" / "tests").mkdir(parents=True)
    (site_packages / "somepkg" / "tests" / "test.key").write_bytes(a_test_key())
    (site_packages / "somepkg" / "tests" / "sites").mkdir()
    # A folder named like Outpost's, inside the virtualenv: still not the repository's.
    (repo / ".venv" / "sites").mkdir()
    (repo / ".venv" / "sites" / "broken.yaml").write_text("a: [unclosed\n")
    return repo


def validate(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "validate", str(repo), "-o", "text"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo,
    )


def test_a_virtualenv_that_git_ignores_gives_no_findings(tmp_path: Path) -> None:
    repo = example_repo(tmp_path, gitignore=".venv/\n")
    done = validate(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ".venv" not in done.stdout


def test_the_same_virtualenv_not_ignored_is_reported(tmp_path: Path) -> None:
    """The other half: without the ignore rule the scan does see the venv's key (the
    first test can fail), so what makes the difference is git's rule."""
    repo = example_repo(tmp_path, gitignore=None)
    done = validate(repo)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "somepkg/tests/test.key:1: error: a PEM private key" in done.stdout


# Two ways to the same answers: libgit2 asked about each path, or one `git status` listing
# of the ignored paths (what ``outpost validate`` asks for a run over every file).
ASKED = ("libgit2", "listed")


def tree_of(root: Path, asked: str) -> WorkdirTree:
    if asked == "libgit2":
        return WorkdirTree(root)
    listed = PendingIgnored(root).result()
    assert listed is not None, "git answers in a repository"
    return WorkdirTree(root, ignored=listed)


@pytest.mark.parametrize("asked", ASKED)
def test_rules_of_every_kind_are_git_own(tmp_path: Path, asked: str) -> None:
    repo = tmp_path / "repo"
    (repo / "apps" / "pos" / "build").mkdir(parents=True)
    git(tmp_path, "init", "-q", str(repo))
    (repo / ".gitignore").write_text("*.pyc\n")
    (repo / "apps" / ".gitignore").write_text("build/\n")
    (repo / ".git" / "info" / "exclude").write_text("/scratch.yaml\n")
    for path in (
        "apps/pos/app.yaml",
        "apps/pos/cache.pyc",
        "apps/pos/build/out.yaml",
        "scratch.yaml",
        "apps/scratch.yaml",  # /scratch.yaml is anchored at the root
        "kept.pyc",
    ):
        (repo / path).write_text("x: 1\n")
    # Tracked despite the rule (git add -f): git commits it, so it is read.
    git(repo, "add", "-f", "kept.pyc")

    tree = tree_of(repo, asked)
    assert tree.files() == [
        ".gitignore",
        "apps/.gitignore",
        "apps/pos/app.yaml",
        "apps/scratch.yaml",
        "kept.pyc",
    ]
    assert tree.files("apps/pos/build") == []
    assert not tree.exists("apps/pos/cache.pyc")
    assert tree.exists("kept.pyc")
    with pytest.raises(DocumentError, match=r"ignored by git") as caught:
        tree.read("apps/pos/build/out.yaml")
    assert caught.value.mark is not None and caught.value.mark.path == "apps/pos/build/out.yaml"


@pytest.mark.parametrize("asked", ASKED)
def test_a_tree_below_the_repository_root_applies_the_rules_of_the_root(
    tmp_path: Path, asked: str
) -> None:
    repo = tmp_path / "repo"
    (repo / "config" / "sites" / "s1").mkdir(parents=True)
    (repo / "elsewhere").mkdir()
    git(tmp_path, "init", "-q", str(repo))
    (repo / ".gitignore").write_text("config/sites/s1/notes.yaml\nelsewhere/\n")
    (repo / "config" / "sites" / "s1" / "site.yaml").write_text("x: 1\n")
    (repo / "config" / "sites" / "s1" / "notes.yaml").write_text("x: 1\n")
    (repo / "elsewhere" / "a.yaml").write_text("x: 1\n")
    assert tree_of(repo / "config", asked).files("sites") == ["sites/s1/site.yaml"]


def test_a_root_inside_an_ignored_folder_is_left_to_libgit2(tmp_path: Path) -> None:
    """git's listing names the ignored folder above the root, not the paths below it:
    no listing, rather than one that would read what git ignores."""
    repo = tmp_path / "repo"
    (repo / "build" / "fleet" / "sites").mkdir(parents=True)
    git(tmp_path, "init", "-q", str(repo))
    (repo / ".gitignore").write_text("build/\n")
    (repo / "build" / "fleet" / "sites" / "a.yaml").write_text("x: 1\n")
    assert PendingIgnored(repo / "build" / "fleet").result() is None
    assert WorkdirTree(repo / "build" / "fleet").files() == []


def test_outside_git_nothing_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / ".gitignore").write_text("*.yaml\n")
    (tmp_path / "plain" / "a.yaml").write_text("x: 1\n")
    # Not a repository (and not inside one): there is no git to ask, so every file counts.
    assert git_root(tmp_path) is None, "the test needs a temporary folder outside any repository"
    assert WorkdirTree(tmp_path / "plain").files() == [".gitignore", "a.yaml"]
    assert PendingIgnored(tmp_path / "plain").result() is None  # git has no answer either


def git_root(path: Path) -> str | None:
    done = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else None


def test_without_git_on_the_path_libgit2_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / "sites").mkdir(parents=True)
    git(tmp_path, "init", "-q", str(repo))
    (repo / ".gitignore").write_text("*.bak\n")
    (repo / "sites" / "a.yaml").write_text("x: 1\n")
    (repo / "sites" / "a.bak").write_text("x: 1\n")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert PendingIgnored(repo).result() is None
    assert WorkdirTree(repo).files("sites") == ["sites/a.yaml"]
