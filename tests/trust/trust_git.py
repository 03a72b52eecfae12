"""Helpers for trust tests: real ssh-keygen keys and real git repositories signing with them."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pygit2

from reconciler.core.trust.allowed_signers import TrustRoot, parse_allowed_signers
from reconciler.core.trust.gitsource import verify_repository
from reconciler.core.trust.sshsig import fingerprint
from reconciler.core.trust.verify import RangeResult

BASE = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
BASE_TS = int(BASE.timestamp())
NOW = BASE + timedelta(days=30)
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Key:
    """A key pair made by ssh-keygen in a temporary directory."""

    name: str
    private: Path

    @property
    def public_line(self) -> str:
        return Path(f"{self.private}.pub").read_text().strip()

    @property
    def blob(self) -> bytes:
        return base64.b64decode(self.public_line.split()[1])

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)


def make_key(directory: Path, name: str, key_type: str = "ed25519", bits: int | None = None) -> Key:
    path = directory / name
    argv = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", name, "-f", str(path)]
    if bits is not None:
        argv += ["-b", str(bits)]
    subprocess.run(argv, check=True, capture_output=True)
    return Key(name, path)


def trust_root(*lines: str) -> TrustRoot:
    return parse_allowed_signers("\n".join(lines).encode(), "allowed_signers", local_tz=UTC)


def root_line(principal: str, key: Key, options: str = "") -> str:
    return f"{principal} {options + ' ' if options else ''}{key.public_line}"


def signers_yaml(signers: Mapping[str, tuple[Iterable[Key], Iterable[str]]]) -> str:
    lines = [
        "apiVersion: outpost/v1",
        "kind: Signers",
        "metadata: {name: signers}",
        "spec:",
        "  signers:" + ("" if signers else " []"),
    ]
    for name, (keys, paths) in signers.items():
        lines.append(f"    - name: {name}")
        lines.append("      keys:")
        lines.extend(f'        - "{key.public_line}"' for key in keys)
        lines.append("      paths:")
        lines.extend(f'        - "{path}"' for path in paths)
    return "\n".join(lines) + "\n"


class Repo:
    """A git repository driven by the git CLI, signing with ``gpg.format=ssh``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = BASE_TS
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.name", "Test Signer")
        self.git("config", "user.email", "signer@example.com")
        self.git("config", "gpg.format", "ssh")
        self.git("config", "commit.gpgsign", "false")

    def git(
        self, *args: str, env: Mapping[str, str] | None = None, stdin: bytes | None = None
    ) -> str:
        full_env = {**os.environ, **(env or {})}
        done = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env=full_env,
            input=stdin,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {done.stderr.decode()}")
        return done.stdout.decode().strip()

    def _dates(self, when: int | None) -> dict[str, str]:
        if when is None:
            self.clock += 60
            when = self.clock
        stamp = f"@{when} +0000"
        return {"GIT_COMMITTER_DATE": stamp, "GIT_AUTHOR_DATE": stamp}

    def _sign_args(self, key: Key, program: Path | None) -> list[str]:
        args = ["-c", f"user.signingkey={key.private}"]
        if program is not None:
            args += ["-c", f"gpg.ssh.program={program}"]
        return args

    def commit(
        self,
        files: Mapping[str, str | None],
        key: Key | None,
        message: str = "change",
        *,
        when: int | None = None,
        program: Path | None = None,
    ) -> str:
        """Write (or, for None, delete) files, commit them signed by ``key``; return the id."""
        for name, content in files.items():
            target = self.path / name
            if content is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
        self.git("add", "-A")
        if key is None:
            command = ["commit", "-q", "--allow-empty", "--no-gpg-sign", "-m", message]
        else:
            sign = self._sign_args(key, program)
            command = [*sign, "commit", "-q", "--allow-empty", "-S", "-m", message]
        self.git(*command, env=self._dates(when))
        return self.head()

    def merge(
        self, branch: str, key: Key | None, message: str = "merge", *, when: int | None = None
    ) -> str:
        sign = ["--no-gpg-sign"] if key is None else ["-S"]
        prefix = [] if key is None else ["-c", f"user.signingkey={key.private}"]
        self.git(
            *prefix, "merge", "-q", "--no-ff", *sign, "-m", message, branch, env=self._dates(when)
        )
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def checkout(self, *args: str) -> None:
        self.git("checkout", "-q", *args)

    def raw(self, sha: str) -> bytes:
        done = subprocess.run(
            ["git", "cat-file", "commit", sha], cwd=self.path, capture_output=True, check=True
        )
        return done.stdout

    def rewrite(self, sha: str, change: Callable[[bytes], bytes]) -> str:
        """Write a commit object whose bytes are ``change(raw(sha))``; point HEAD's branch at it."""
        new = self.git(
            "hash-object",
            "-t",
            "commit",
            "-w",
            "--literally",
            "--stdin",
            stdin=change(self.raw(sha)),
        )
        self.git("update-ref", "HEAD", new)
        return new

    def verify(
        self,
        trust: TrustRoot,
        *,
        since: str | None = None,
        rev: str = "HEAD",
        now: datetime = NOW,
        max_commits: int = 5_000,
    ) -> RangeResult:
        repo = pygit2.Repository(str(self.path))
        return verify_repository(
            repo, trust, now=now, candidate=rev, since=since, max_commits=max_commits
        )


def short(sha: str) -> str:
    return sha[:7]


def namespace_program(directory: Path, namespace: str) -> Path:
    """A gpg.ssh.program that runs the real ssh-keygen but signs for another namespace."""
    script = directory / f"ssh-keygen-{namespace}"
    script.write_text(
        "#!/bin/bash\n"
        "args=()\nprev=''\n"
        'for a in "$@"; do\n'
        f'  if [ "$prev" = "-n" ] && [ "$a" = "git" ]; then a={namespace}; fi\n'
        '  args+=("$a"); prev="$a"\n'
        "done\n"
        'exec ssh-keygen "${args[@]}"\n'
    )
    script.chmod(0o755)
    return script


def replace_signature(raw: bytes, armored: bytes) -> bytes:
    """The same commit with its gpgsig header replaced by ``armored`` (folded as git does)."""
    lines = raw.split(b"\n")
    out: list[bytes] = []
    skipping = False
    for line in lines:
        if line.startswith(b"gpgsig "):
            skipping = True
            folded = armored.rstrip(b"\n").split(b"\n")
            out.append(b"gpgsig " + folded[0])
            out.extend(b" " + part for part in folded[1:])
            continue
        if skipping and line.startswith(b" "):
            continue
        skipping = False
        out.append(line)
    return b"\n".join(out)


def signature_of(raw: bytes) -> bytes:
    """The armored signature in a commit's gpgsig header."""
    lines = raw.split(b"\n")
    collected: list[bytes] = []
    for line in lines:
        if line.startswith(b"gpgsig "):
            collected.append(line[len(b"gpgsig ") :])
        elif collected and line.startswith(b" "):
            collected.append(line[1:])
        elif collected:
            break
    return b"\n".join(collected) + b"\n"
