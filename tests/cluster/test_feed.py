"""A store's node follows a bundle feed served by nginx and applies it to the real control plane.

End to end: `outpost bundle publish` writes the feed into a folder that nginx from Debian
serves on loopback; the real agent (`Agent` + `NodePipeline` + `ManagerCluster`) has only
``spec.feed``, no git remote and no inbox.

1. the first tick takes the full bundle; the whole fleet is new, so the plant waits for its
   wave ('all'), counted from when the node first saw the commits (not from the committer
   time a signer typed); a week later, in the next window, it applies A;
2. B and C are published while the node is offline; one tick follows both steps and
   applies C (the OPC UA gateway's publish interval changes in the cluster);
3. a commit signed by an unknown key is published with a consistent index; it is
   downloaded, refused by trust, and nothing in the cluster changes;
4. the next tick costs one request answered 304.

The plant's volumes and VM status come from the air-gap test's fixtures (no provisioner and
no KubeVirt in the test cluster).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "airgap"))

from airgap_world import PLANT, Key, SignedRepo, allowed_signers, make_key
from keykit import private_age_key
from test_airgap import SOAK, WINDOW, kubevirt, publish_interval, volumes

from reconciler.fleet.feed import publish_feed
from reconciler.node.agent import Agent
from reconciler.node.config import AgentConfig, SourceConfig
from reconciler.node.feed import FeedSettings
from reconciler.node.fetch import APPLIED_REF, Mirror
from reconciler.node.pipeline import ManagerCluster, NodePipeline
from tools.testcluster import Cluster as ControlPlane
from tools.webserver import Nginx

pytestmark = pytest.mark.cluster

__all__ = ["kubevirt", "volumes"]  # fixtures used by name below


def test_a_store_follows_a_bundle_feed_on_the_real_control_plane(
    cluster: ControlPlane, volumes: None, kubevirt: None, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    ops, rogue = make_key(keys, "ops"), make_key(keys, "rogue")
    repo = SignedRepo(tmp_path / "clone", ops)
    a = repo.commit("Example fleet")
    clock = WINDOW - timedelta(days=2)

    with Nginx(tmp_path / "nginx", tmp_path / "www") as nginx:
        out = nginx.root / "feed"

        def publish() -> None:
            nonlocal clock
            clock += timedelta(minutes=10)
            publish_feed(repo.path, "main", out, now=clock)

        now = WINDOW
        node = _node(tmp_path / "node", cluster, ops, f"{nginx.url}/feed/", lambda: now)
        publish()
        report = node.tick()
        assert report.outcome == "waiting", (report.error, report.warnings)
        opens = (WINDOW + SOAK).strftime("%Y-%m-%d %H:%M UTC")
        assert f"waiting for wave 'all' (opens {opens})" in str(report.pending_reason)
        now += SOAK
        report = node.tick()
        assert report.outcome == "applied", (report.error, report.warnings)
        assert report.applied == a
        assert publish_interval(cluster) == "500"

        repo.change_plant("Ostrava: publish every 750 ms", 750)
        publish()
        c = repo.change_plant("Ostrava: publish every 1000 ms", 1000)
        publish()
        mark = len(nginx.requests())
        report = node.tick()
        assert report.outcome == "applied", (report.error, report.warnings)
        assert report.applied == c
        assert publish_interval(cluster) == "1000"
        assert [line.status for line in nginx.requests()[mark:]] == [200, 200, 200]

        bad = repo.change_plant("Ostrava: publish every 10 ms", 10, rogue)
        publish()
        report = node.tick()
        assert report.outcome == "refused"
        assert bad[:7] in (report.pending_reason or "")
        assert Mirror(node.config.mirror_dir).resolve(APPLIED_REF) == c
        assert publish_interval(cluster) == "1000"

        mark = len(nginx.requests())
        node.tick()
        assert [(x.uri, x.status) for x in nginx.requests()[mark:]] == [("/feed/index.json", 304)]


def _node(
    root: Path, plane: ControlPlane, ops: Key, url: str, clock: Callable[[], datetime]
) -> Agent:
    root.mkdir(parents=True)
    trust = root / "allowed_signers"
    trust.write_bytes(allowed_signers(ops))
    config = AgentConfig(
        path=root / "agent.yaml",
        site=PLANT,
        source=SourceConfig(url=None, branch="main", credentials=None),
        bundle_inbox=None,
        outbox=None,
        trust_root=trust,
        age_key=private_age_key(PLANT, root),
        first_apply="gated",  # the plant waits for its wave from the start
        kubeconfig=Path(plane.kubeconfig),
        state_dir=root / "state",
        health_deadline=180,
        stale_after=30 * 86400,
        field_manager="outpost",
        max_commits=1000,
        metrics_dir=None,
        feed=FeedSettings(url=url),
    )
    return Agent(
        config,
        pipeline=NodePipeline(config),
        cluster=lambda: ManagerCluster.connect(config),
        clock=clock,
    )
