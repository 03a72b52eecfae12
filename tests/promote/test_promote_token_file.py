"""``outpost fleet promote --api --token-file``: the token file an operator names, fed a FIFO
or a sparse gigabyte. The answer must be exit 2 naming the file before any request is made;
the --api address is a closed port, so a request that does go out fails differently.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tools import signedfleet

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60  # the repository's verification takes seconds; a blocked read never returns


def promote(tmp_path: Path, token: Path) -> subprocess.CompletedProcess[str]:
    fleet = signedfleet.create(tmp_path / "repo", when=datetime.now(UTC) - timedelta(days=1))
    argv = [
        sys.executable, "-m", "reconciler.cli", "fleet", "promote",
        "--api", "https://127.0.0.1:9", "--token-file", str(token), "--repo", str(fleet.path),
        "--trust", str(fleet.allowed_signers), "--dry-run",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=TIMEOUT)


def assert_refused_naming(done: subprocess.CompletedProcess[str], token: Path) -> None:
    assert done.returncode == 2, done
    assert str(token) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert "127.0.0.1" not in done.stderr, done.stderr  # refused before any request


def test_a_token_file_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    token = tmp_path / "token"
    os.mkfifo(token)  # nobody writes: a plain open() for reading blocks for ever
    assert_refused_naming(promote(tmp_path, token), token)


def test_a_gigabyte_token_file_is_refused_unread(tmp_path: Path) -> None:
    token = tmp_path / "token"
    with token.open("wb") as handle:
        handle.truncate(1 << 30)  # sparse: nothing on disk, everything to refuse
    assert_refused_naming(promote(tmp_path, token), token)


def test_a_missing_token_file_is_refused_naming_it(tmp_path: Path) -> None:
    token = tmp_path / "absent"
    assert_refused_naming(promote(tmp_path, token), token)
