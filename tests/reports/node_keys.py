"""The example fleet's node keys (tests/keys/node), for the reporting tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_KEYS = REPO_ROOT / "tests" / "keys" / "node"


def node_key(tmp_path: Path, site: str, node: str = "edge-1") -> Path:
    """A copy of an example node's private key, mode 0600 (git checks files out 0644)."""
    target = tmp_path / f"{site}-{node}.key"
    shutil.copyfile(NODE_KEYS / f"{site}-{node}.key", target)
    target.chmod(0o600)
    return target


def ssh_keygen_sign(key: Path, message: bytes, path: Path, namespace: str) -> str:
    """``message`` written to ``path`` and signed by the real ``ssh-keygen -Y sign``; the
    armored signature it writes beside it (``path`` + ``.sig``)."""
    path.write_bytes(message)
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(key), str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_name(path.name + ".sig").read_text()
