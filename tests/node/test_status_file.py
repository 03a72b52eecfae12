"""``outpost agent status`` on a status.json that is not one: exit 2 naming the file, never a
traceback; the next tick rewrites it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from trust_git import Key

from reconciler.core.errors import ClusterUnavailable
from reconciler.node.agent import Agent
from reconciler.node.config import load_config
from reconciler.node.pipeline import NodePipeline
from reconciler.node.state import StateStore

ROOT = Path(__file__).resolve().parents[2]


def status_cli(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "agent", "status", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def offline_agent(tmp_path: Path, root: Key) -> Agent:
    """A real agent whose remote does not exist: its tick needs no cluster and writes status."""
    trust = tmp_path / "allowed_signers"
    trust.write_text(f"root@example.com {root.public_line}\n")
    config = tmp_path / "agent.yaml"
    config.write_text(
        "apiVersion: outpost/v1\nkind: AgentConfig\nspec:\n  site: de-muc-0007\n"
        '  source: {url: "file:///nonexistent/repo", branch: main}\n'
        f"  trustRoot: {trust}\n  stateDir: {tmp_path / 'state'}\n"
    )
    loaded = load_config(config)

    def no_cluster() -> object:
        raise ClusterUnavailable("no cluster in this test: the node's API server is down")

    return Agent(
        loaded,
        pipeline=NodePipeline(loaded),
        cluster=no_cluster,  # type: ignore[arg-type]
        clock=lambda: datetime(2027, 2, 2, 21, 45, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"apiVersion": "outpost/v1", "kind": "SiteSt', ": not JSON ("),
        (b"", ": not JSON ("),
        (b"\xff\xfe garbage", ": not JSON ("),
        (b"[1, 2, 3]", ": expected a JSON object, found list"),
        (b'{"kind": "Other"}', ": found an object of kind 'Other'"),
        (b'{"kind": "SiteStatus", "applied": 5, "pending": "x"}', "has a field of the wrong shape"),
        (
            b'{"kind": "SiteStatus", "leftover": {"removed": 1, "kept": 5}}',
            "has a field of the wrong shape",
        ),
    ],
    ids=[
        "truncated",
        "empty",
        "not utf-8",
        "a list",
        "another kind",
        "wrong field types",
        "kept not a list",
    ],
)
def test_status_on_a_corrupt_file_exits_2_naming_it(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "status.json").write_bytes(content)
    done = status_cli(state)
    assert done.returncode == 2, done
    assert str(state / "status.json") in done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_status_on_a_fifo_does_not_hang(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / "status.json")
    done = status_cli(state)
    assert done.returncode == 2
    assert f"{state / 'status.json'}: is a named pipe (FIFO)" in done.stderr


def test_the_next_tick_rewrites_a_truncated_status(tmp_path: Path, keys: dict[str, Key]) -> None:
    agent = offline_agent(tmp_path, keys["root"])
    agent.tick()
    path = tmp_path / "state" / "status.json"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert status_cli(tmp_path / "state").returncode == 2

    agent.tick()

    status = StateStore(tmp_path / "state").read_status()
    assert status is not None and status["kind"] == "SiteStatus"
    assert json.loads(path.read_bytes())["site"] == "de-muc-0007"
    done = status_cli(tmp_path / "state")
    assert done.returncode == 0, done.stderr
    assert "site:       de-muc-0007" in done.stdout
