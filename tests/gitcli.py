"""git's own command line in a test repository, as a committer named ``t``."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    """``git -C repo ARGS``'s output, stripped; a failure raises with git's message."""
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def committed_copy(source: Path, target: Path) -> Path:
    """``source`` copied to ``target`` as a new repository on ``main`` with one commit."""
    import shutil

    shutil.copytree(source, target)
    git(target, "init", "-q", "-b", "main")
    git(target, "add", "-A")
    git(target, "commit", "-qm", "base")
    return target
