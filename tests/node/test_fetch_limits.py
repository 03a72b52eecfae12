"""A hostile or broken git server cannot fill the node's disk: fetches are bounded.

Real git: a repository of incompressible blobs served over file:// (libgit2 runs the same
pack transfer and progress callbacks as for a network remote). Past the byte or object cap
the fetch stops with a temporary error naming the figures, no ref moves and no pack is
left behind; within the caps the same fetch succeeds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from trust_git import Key, Repo

from reconciler.core.errors import SourceUnavailable
from reconciler.node.fetch import CANDIDATE_REF, REMOTE_REF, Mirror


@pytest.fixture
def heavy(tmp_path: Path, keys: dict[str, Key]) -> Repo:
    """About 3 MB of random blobs in 31 objects' worth of commit, tree and files."""
    repo = Repo(tmp_path / "heavy")
    files = {f"blobs/{n:02}.bin": os.urandom(100_000).hex() for n in range(15)}
    repo.commit(files, keys["root"], "heavy")
    return repo


def pack_files(mirror: Mirror) -> list[str]:
    return sorted(os.listdir(mirror.path / "objects" / "pack"))


def test_past_the_byte_cap_the_fetch_stops_and_leaves_nothing(tmp_path: Path, heavy: Repo) -> None:
    mirror = Mirror(tmp_path / "mirror.git")
    before = pack_files(mirror)
    with pytest.raises(SourceUnavailable) as caught:
        mirror.fetch(f"file://{heavy.path}", "main", max_bytes=500_000, max_objects=1000)
    message = caught.value.message
    assert message.startswith(f"fetching 'main' from file://{heavy.path} stopped: ")
    assert "bytes received" in message or "objects received" in message
    assert "over the limit of 500,000 bytes (spec.fetchLimits.maxBytes)" in message
    assert "removed what it had written" in message
    assert pack_files(mirror) == before
    assert mirror.resolve(REMOTE_REF) is None and mirror.resolve(CANDIDATE_REF) is None

    assert mirror.fetch(f"file://{heavy.path}", "main", max_bytes=50_000_000) == heavy.head()


def test_past_the_object_cap_the_fetch_stops(tmp_path: Path, heavy: Repo) -> None:
    mirror = Mirror(tmp_path / "mirror.git")
    with pytest.raises(SourceUnavailable, match=r"over the limit of 5 objects \(spec\.fetchLimits"):
        mirror.fetch(f"file://{heavy.path}", "main", max_objects=5)
    assert mirror.resolve(CANDIDATE_REF) is None
    assert mirror.fetch(f"file://{heavy.path}", "main", max_objects=100) == heavy.head()


def test_the_agent_reports_a_capped_fetch_as_temporary(
    tmp_path: Path, heavy: Repo, keys: dict[str, Key]
) -> None:
    from datetime import UTC, datetime

    from reconciler.core.errors import ClusterUnavailable
    from reconciler.node.agent import Agent
    from reconciler.node.config import load_config
    from reconciler.node.pipeline import NodePipeline

    trust = tmp_path / "allowed_signers"
    trust.write_text(f"root@example.com {keys['root'].public_line}\n")
    config = tmp_path / "agent.yaml"
    config.write_text(
        "apiVersion: outpost/v1\nkind: AgentConfig\nspec:\n  site: de-muc-0007\n"
        f'  source: {{url: "file://{heavy.path}", branch: main}}\n'
        f"  trustRoot: {trust}\n  stateDir: {tmp_path / 'state'}\n"
        "  fetchLimits: {maxBytes: 200000}\n"
    )
    loaded = load_config(config)

    def down() -> object:
        raise ClusterUnavailable("no cluster in this test")

    agent = Agent(
        loaded,
        pipeline=NodePipeline(loaded),
        cluster=down,  # type: ignore[arg-type]
        clock=lambda: datetime(2027, 2, 2, 21, 45, tzinfo=UTC),
    )
    report = agent.tick()
    assert report.temporary
    assert any("over the limit of 200,000 bytes (spec.fetchLimits.maxBytes)" in w
               for w in report.warnings)  # fmt: skip
    assert pack_files(Mirror(loaded.mirror_dir)) == []
