"""Where the peers' own test suites are, and what a test does when one is missing.

``shared/testdata/`` beside the repository (CI copies ``shared/`` next to its clone) holds
test data other projects publish for the formats Outpost speaks: OpenSSH's SSHSIG vectors
(``openssh-sshsig/``), the JSON Patch test suite (``json-patch-tests/``) and the SARIF
2.1.0 schema (``sarif/``). ``OUTPOST_PEER_TESTDATA`` points elsewhere. On a developer's
machine a missing folder skips the tests that need it; in CI (``CI`` set) it fails them:
a green CI run must mean the peer suites ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV = "OUTPOST_PEER_TESTDATA"


def testdata_root() -> Path:
    """``$OUTPOST_PEER_TESTDATA``, else ``shared/testdata`` beside the repository (or beside
    a folder above it: a git worktree may sit one level deeper than the clone)."""
    override = os.environ.get(ENV, "").strip()
    if override:
        return Path(override)
    for folder in REPO_ROOT.parents:
        candidate = folder / "shared" / "testdata"
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared" / "testdata"


def peer_path(name: str) -> Path:
    """The folder (or file) ``name`` of the peer test data; its absence skips, or in CI fails."""
    path = testdata_root() / name
    if not path.exists():
        message = (
            f"peer test data {path} not found; it is shared/testdata/{name} beside the "
            f"repository, or set {ENV}"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: a peer suite must run, not skip)", pytrace=False)
        pytest.skip(message)
    return path


def peer_available(name: str) -> bool:
    """For collection-time parametrization only; the test itself calls ``peer_path``."""
    return (testdata_root() / name).exists()
