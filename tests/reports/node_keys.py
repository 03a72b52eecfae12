"""The example fleet's node keys (tests/keys/node), for the reporting tests."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_KEYS = REPO_ROOT / "tests" / "keys" / "node"


def node_key(tmp_path: Path, site: str, node: str = "edge-1") -> Path:
    """A copy of an example node's private key, mode 0600 (git checks files out 0644)."""
    target = tmp_path / f"{site}-{node}.key"
    shutil.copyfile(NODE_KEYS / f"{site}-{node}.key", target)
    target.chmod(0o600)
    return target
