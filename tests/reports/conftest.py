"""Fixtures for node identity and signed reports: real keys, real ssh-keygen."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_KEYS = REPO_ROOT / "tests" / "keys" / "node"


def node_key(tmp_path: Path, site: str, node: str = "edge-1") -> Path:
    """A copy of an example node's private key, mode 0600 (git checks files out 0644)."""
    target = tmp_path / f"{site}-{node}.key"
    shutil.copyfile(NODE_KEYS / f"{site}-{node}.key", target)
    target.chmod(0o600)
    return target


@pytest.fixture
def muc_key(tmp_path: Path) -> Path:
    return node_key(tmp_path, "de-muc-0007")
