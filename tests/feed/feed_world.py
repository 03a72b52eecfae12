"""A store's node that follows a bundle feed served by nginx, and the desk that publishes it.

The node is the real agent (`Agent` + `NodePipeline`: trust, render, policies, secrets) with
the real feed client talking HTTP to nginx. Only the Kubernetes side is a recording stand-in
(`RecordingCluster`): what is under test here is how commits reach the mirror; applying them
to the real API server is `tests/cluster`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airgap_world import PLANT, REPO_ROOT, Key, SignedRepo, allowed_signers

from reconciler.fleet.feed import PublishResult, publish_feed
from reconciler.node.agent import Agent, Desired, TickReport
from reconciler.node.config import AgentConfig, SourceConfig
from reconciler.node.feed import FeedSettings
from reconciler.node.fetch import APPLIED_REF, CANDIDATE_REF, Mirror
from reconciler.node.pipeline import NodePipeline
from tools.webserver import Nginx

# Saturday 23:00 in Prague: inside plant-ostrava's weekly window, weeks after the commits.
WINDOW = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
# The plant's wave ('all') opens a week after this node first saw a change to the whole
# fleet (the soak counts from first sight, not from the committer time a signer typed);
# a node that runs nothing yet applies at once unless enrolled with firstApply: gated.
SOAK = timedelta(days=7)


@dataclass
class RecordingCluster:
    """Takes what the agent applies and says it is healthy (see the module docstring)."""

    applied: list[str] = field(default_factory=list)
    inventory: list[str] = field(default_factory=list)
    revision: str | None = None  # the inventory's, once an apply completed (ManagerCluster)

    def apply(self, objects: Sequence[Mapping[str, Any]], *, revision: str) -> Any:
        self.applied.append(revision)
        self.revision = None  # the inventory is widened first and names no revision
        return None

    def drift(self, objects: Sequence[Mapping[str, Any]]) -> Sequence[str]:
        return []

    def prune(self, previous: Sequence[str], desired: Sequence[str]) -> Sequence[str]:
        return []

    def wait_healthy(self, objects: Sequence[Mapping[str, Any]], *, deadline_seconds: float) -> Any:
        return True

    def read_inventory(self) -> Sequence[str] | None:
        return self.inventory or None

    def applied_revision(self) -> str | None:
        return self.revision

    def label_nodes(self, desired: Desired) -> Sequence[str]:
        return []

    def write_inventory(self, keys: Sequence[str], revision: str) -> None:
        self.inventory = list(keys)
        self.revision = revision


class Desk:
    """Headquarters: the signed clone and the feed folder nginx serves."""

    def __init__(self, repo: SignedRepo, nginx: Nginx) -> None:
        self.repo = repo
        self.nginx = nginx
        self.out = nginx.root / "feed"
        self.clock = WINDOW - timedelta(days=3)

    def publish(self, **options: Any) -> PublishResult:
        self.clock += timedelta(minutes=10)
        return publish_feed(self.repo.path, "main", self.out, now=self.clock, **options)

    @property
    def url(self) -> str:
        return f"{self.nginx.url}/feed/"


class FeedNode:
    """plant-ostrava's node with spec.feed pointing at the desk's feed."""

    def __init__(
        self, root: Path, ops: Key, url: str, *, first_apply: str = "immediate", **feed: Any
    ) -> None:
        root.mkdir(parents=True)
        trust = root / "allowed_signers"
        trust.write_bytes(allowed_signers(ops))
        self.cluster = RecordingCluster()
        self.config = AgentConfig(
            path=root / "agent.yaml",
            site=PLANT,
            source=SourceConfig(url=None, branch="main", credentials=None),
            bundle_inbox=None,
            outbox=None,
            trust_root=trust,
            age_key=self._private_age_key(root),
            kubeconfig=None,
            state_dir=root / "state",
            health_deadline=60,
            stale_after=30 * 86400,
            field_manager="outpost",
            max_commits=1000,
            metrics_dir=None,
            feed=FeedSettings(url=url, **feed),
            first_apply=first_apply,
        )
        self.now = WINDOW

    @staticmethod
    def _private_age_key(root: Path) -> Path:
        """The plant's example key, copied to mode 0600: a checkout leaves it readable by
        all, and the age key reader refuses such a key."""
        key = root / f"{PLANT}.key"
        key.write_bytes((REPO_ROOT / "tests" / "keys" / "age" / f"{PLANT}.key").read_bytes())
        key.chmod(0o600)
        return key

    def with_feed(self, **changes: Any) -> None:
        assert self.config.feed is not None
        self.config = replace(self.config, feed=replace(self.config.feed, **changes))

    def tick(self) -> TickReport:
        agent = Agent(
            self.config,
            pipeline=NodePipeline(self.config),
            cluster=lambda: self.cluster,
            clock=lambda: self.now,
        )
        return agent.tick()

    @property
    def mirror(self) -> Mirror:
        return Mirror(self.config.mirror_dir)

    @property
    def applied(self) -> str | None:
        return self.mirror.resolve(APPLIED_REF)

    @property
    def candidate(self) -> str | None:
        return self.mirror.resolve(CANDIDATE_REF)


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA of our own and a certificate it signs for 127.0.0.1: (ca, cert, key)."""
    from tools.testcluster._pki import loopback_server

    return loopback_server(directory, "feed")
