"""A signed copy of the example fleet in a fresh git repository, for the demo and the tests.

The repository is made the way operators make theirs: the git CLI, commits signed with an
SSH key (``gpg.format=ssh``) made by ``ssh-keygen``, committer dates given explicitly so a
test's clock and the signed history agree. The root signer's key goes into an
``allowed_signers`` file: the trust root a node receives at enrollment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FLEET_PARTS = ("sites", "fleets", "apps", "policies", "schemas", ".sops.yaml")
ROOT_PRINCIPAL = "ops-root@example.com"


def make_key(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


@dataclass
class SignedFleet:
    """A working clone whose every commit is signed; ``url`` is what a node fetches."""

    path: Path
    root_key: Path
    allowed_signers: Path

    @property
    def url(self) -> str:
        return self.path.resolve().as_uri()

    def git(self, *args: str, when: datetime | None = None) -> str:
        env = {
            **os.environ,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        if when is not None:
            stamp = when.isoformat()
            env["GIT_AUTHOR_DATE"] = stamp
            env["GIT_COMMITTER_DATE"] = stamp
        done = subprocess.run(
            ["git", *args], cwd=self.path, env=env, check=True, capture_output=True, text=True
        )
        return done.stdout.strip()

    def write(self, relpath: str, text: str) -> None:
        target = self.path / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def edit(self, relpath: str, change: Callable[[str], str]) -> None:
        target = self.path / relpath
        before = target.read_text(encoding="utf-8")
        after = change(before)
        if after == before:
            raise ValueError(f"edit of {relpath} changed nothing")
        target.write_text(after, encoding="utf-8")

    def commit(
        self,
        message: str,
        *,
        when: datetime,
        key: Path | None = None,
        sign: bool = True,
        emergency: str | None = None,
    ) -> str:
        if emergency:
            message = f"{message}\n\nOutpost-Emergency: {emergency}"
        self.git("add", "-A")
        args = ["commit", "-q", "--allow-empty", "-m", message]
        if sign:
            args = ["-c", f"user.signingkey={key or self.root_key}", *args, "-S"]
        self.git(*args, when=when)
        return self.git("rev-parse", "HEAD")

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")


def copy_fleet(target: Path, source: Path = REPO_ROOT) -> None:
    """The configuration of the fleet in ``source`` (:data:`FLEET_PARTS`, those it has),
    copied into the existing folder ``target``."""
    for part in FLEET_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part)
        elif (source / part).exists():
            shutil.copyfile(source / part, target / part)


def create(workdir: Path, *, when: datetime, source: Path = REPO_ROOT) -> SignedFleet:
    """Copy the example fleet into ``workdir/fleet`` and make its first signed commit."""
    keys = workdir / "keys"
    root_key = make_key(keys, "ops-root")
    public = root_key.with_suffix(".pub").read_text().split()
    allowed = keys / "allowed_signers"
    allowed.write_text(f'{ROOT_PRINCIPAL} namespaces="git" {public[0]} {public[1]}\n')
    path = workdir / "fleet"
    path.mkdir(parents=True)
    copy_fleet(path, source)
    fleet = SignedFleet(path, root_key, allowed)
    fleet.git("init", "-q", "-b", "main")
    for key, value in (
        ("user.name", "Outpost Ops"),
        ("user.email", ROOT_PRINCIPAL),
        ("gpg.format", "ssh"),
        ("commit.gpgsign", "false"),
    ):
        fleet.git("config", key, value)
    fleet.commit("Example fleet", when=when)
    return fleet
