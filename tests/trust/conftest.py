"""Fixtures for trust tests: real keys made once per session by ssh-keygen."""

from __future__ import annotations

from pathlib import Path

import pytest
from trust_git import Key, Repo, make_key, namespace_program


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def keys(key_dir: Path) -> dict[str, Key]:
    """root/root2 (root signers), pos/pos2 (the POS team, before and after rotation),
    ops (regional operators, ECDSA), rogue (nobody's), rsa (a root signer with RSA)."""
    return {
        "root": make_key(key_dir, "root"),
        "root2": make_key(key_dir, "root2", "ecdsa", 384),
        "pos": make_key(key_dir, "pos"),
        "pos2": make_key(key_dir, "pos2"),
        "ops": make_key(key_dir, "ops", "ecdsa", 256),
        "rogue": make_key(key_dir, "rogue"),
        "rsa": make_key(key_dir, "rsa", "rsa", 3072),
    }


@pytest.fixture(scope="session")
def file_namespace_program(key_dir: Path) -> Path:
    return namespace_program(key_dir, "file")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")
