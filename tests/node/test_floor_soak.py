"""The soak clock and the enrolled floor: history dated before the floor counts by its date.

A fresh node sees every commit of its first range "now". For a commit dated at or before
the floor it enrolled from (a branch started before enrollment and merged after it), that
sighting says nothing about how long the fleet has had the change; its committer time
counts. Commits dated after the floor keep the later of the two (trust rule 16).
Real git, real ssh-keygen signatures (tests/trust/trust_git.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from trust_git import NOW, Key, Repo, root_line

from reconciler.node.config import AgentConfig, SourceConfig
from reconciler.node.fetch import Mirror
from reconciler.node.pipeline import NodePipeline, NodeVerified


def node_config(tmp_path: Path, trust: Path, floor: str | None = None) -> AgentConfig:
    """A node's config for pipeline tests: no remote, no cluster, state under ``tmp_path``."""
    return AgentConfig(
        path=tmp_path / "agent.yaml",
        site="st-0001",
        source=SourceConfig(url=None, branch="main", credentials=None),
        bundle_inbox=tmp_path / "inbox",
        outbox=None,
        trust_root=trust,
        age_key=None,
        kubeconfig=None,
        state_dir=tmp_path / "state",
        health_deadline=60,
        stale_after=3600,
        field_manager="outpost",
        max_commits=1000,
        metrics_dir=None,
        floor=floor,
    )


def _history(tmp_path: Path, key: Key) -> tuple[Repo, str, str, str]:
    """main: base ─ floor ─ merge; side (from base): early, dated before the floor."""
    repo = Repo(tmp_path / "repo")
    repo.commit({"sites/st-0001/site.yaml": "a\n"}, key, "base")
    repo.git("checkout", "-q", "-b", "side")
    early = repo.commit({"apps/pos/app.yaml": "early\n"}, key, "started before enrollment")
    repo.checkout("main")
    floor = repo.commit({"sites/st-0002/site.yaml": "b\n"}, key, "the node enrolls here")
    merge = repo.merge("side", key, "merge the early branch")
    return repo, early, floor, merge


def _verify(tmp_path: Path, key: Key, *, with_floor: bool) -> tuple[NodeVerified, str, str]:
    repo, early, enrolled, merge = _history(tmp_path, key)
    trust = tmp_path / "allowed_signers"
    trust.write_text(root_line("root@example.com", key) + "\n")
    pipeline = NodePipeline(node_config(tmp_path, trust, enrolled if with_floor else None))
    verified = pipeline.verify(Mirror(repo.path / ".git"), enrolled, merge, NOW)
    assert isinstance(verified, NodeVerified)
    return verified, early, merge


def test_a_commit_dated_before_the_floor_counts_by_its_committer_time(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    verified, early, merge = _verify(tmp_path, keys["root"], with_floor=True)
    by_sha = {change.sha: change for change in verified.changes}
    assert set(by_sha) == {early, merge}
    assert by_sha[early].first_seen is None  # older than the node: its date counts
    assert by_sha[merge].first_seen == NOW  # new to the node: first seen now
    assert verified.changed_at == NOW


def test_without_a_floor_every_commit_is_first_seen_now(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    verified, early, _ = _verify(tmp_path, keys["root"], with_floor=False)
    by_sha = {change.sha: change for change in verified.changes}
    assert by_sha[early].first_seen == NOW
    assert by_sha[early].committed_at < datetime(2026, 4, 1, tzinfo=UTC)
