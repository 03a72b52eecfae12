"""A signed copy of the example fleet, a plant's mirror and its inbox, for air-gap tests.

Everything is real: keys from ssh-keygen, commits signed by git (``gpg.format=ssh``),
bundles written by ``git bundle create`` through `reconciler.fleet.bundle.create_bundle`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler.fleet.bundle import BundleManifest, create_bundle
from reconciler.node.fetch import Mirror

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIRS = ("sites", "fleets", "apps", "policies")
PLANT = "plant-ostrava"
OTHER_PLANT = "plant-lyon"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BASE_TS = int(datetime(2026, 11, 1, 8, 0, tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class Key:
    name: str
    private: Path

    @property
    def public_line(self) -> str:
        return Path(f"{self.private}.pub").read_text().strip()


def make_key(directory: Path, name: str) -> Key:
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return Key(name, path)


def allowed_signers(*keys: Key) -> bytes:
    return "".join(f"{k.name}@example.com {k.public_line}\n" for k in keys).encode()


class SignedRepo:
    """The operator's clone: the example fleet, every commit signed with ssh."""

    def __init__(self, path: Path, key: Key) -> None:
        self.path = path
        self.key = key
        self.clock = BASE_TS
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.name", "Plant Ops")
        self.git("config", "user.email", "ops@example.com")
        self.git("config", "gpg.format", "ssh")
        for name in EXAMPLE_DIRS:
            shutil.copytree(REPO_ROOT / name, path / name)
        shutil.copyfile(REPO_ROOT / ".sops.yaml", path / ".sops.yaml")

    def git(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        done = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env={**os.environ, **(env or {})},
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {done.stderr.decode()}")
        return done.stdout.decode().strip()

    def commit(
        self, message: str, files: Mapping[str, str] | None = None, key: Key | None = None
    ) -> str:
        for name, content in (files or {}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        self.git("add", "-A")
        self.clock += 3600
        stamp = f"@{self.clock} +0000"
        signer = key or self.key
        self.git(
            "-c", f"user.signingkey={signer.private}", "commit", "-q", "--allow-empty", "-S",
            "-m", message,
            env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp},
        )  # fmt: skip
        return self.git("rev-parse", "HEAD")

    def change_plant(self, message: str, interval_ms: int, key: Key | None = None) -> str:
        """A real change to the plant's slice: the OPC UA gateway's publish interval."""
        path = f"sites/{PLANT}/overrides.yaml"
        text = (self.path / path).read_text()
        lines = [
            f"        publishIntervalMs: {interval_ms}" if "publishIntervalMs:" in line else line
            for line in text.splitlines()
        ]
        return self.commit(message, {path: "\n".join(lines) + "\n"}, key)

    def bundle(
        self, out: Path, since: str | None, rev: str = "HEAD", site: str = PLANT
    ) -> BundleManifest:
        return create_bundle(self.path, site, since, rev, out, now=NOW)


@dataclass(frozen=True)
class History:
    """A signed clone and its commits A → B → C (B and C change the plant's slice)."""

    repo: SignedRepo
    a: str
    b: str
    c: str


def snapshot(mirror: Mirror) -> dict[str, str]:
    """Every file of the mirror with the sha256 of its bytes: "nothing changed" made testable."""
    files: dict[str, str] = {}
    for root, _dirs, names in os.walk(mirror.path):
        for name in names:
            path = Path(root) / name
            files[str(path.relative_to(mirror.path))] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return files


def drop(bundle: Path, inbox: Path, *, manifest: bool = True, name: str | None = None) -> Path:
    """Copy a bundle (and its manifest) onto the "stick"."""
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / (name or bundle.name)
    shutil.copyfile(bundle, target)
    source_manifest = bundle.with_name(bundle.name + ".manifest.json")
    if manifest and source_manifest.exists():
        shutil.copyfile(source_manifest, target.with_name(target.name + ".manifest.json"))
    return target
