"""The agent explains a failed first install, on the real control plane.

A store's first tick, before its node has joined under the name hardware.yaml gives
it (the demo creates ``edge-1`` by hand; a real store would not know to): the agent
warns that the node is missing, the POS server's Pods stay Pending because no node
carries the placement label, and the health check fails with the scheduler's own
words. The failed install is pruned again, so nothing is left half-applied, and the
status says so. Once the node joins and a newer commit arrives, the store converges.

The cluster is this test's own (``fresh_cluster``): it adds a Node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from keykit import private_age_key
from test_agent import make_agent

from reconciler.cli.agent import format_status
from reconciler.node.state import StateStore
from tools.demo.__main__ import store_node
from tools.signedfleet import create
from tools.testcluster import Cluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SITE = "de-muc-0007"
T0 = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)
IN_WINDOW = datetime(2027, 2, 2, 21, 45, tzinfo=UTC)  # 22:45 in Munich, a Tuesday


class TickingClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def _namespaces(cluster: Cluster) -> set[str]:
    listed = json.loads(cluster.kubectl("get", "namespaces", "-o", "json").stdout)
    return {item["metadata"]["name"] for item in listed["items"]}


def _wait(condition: Callable[[], bool], what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.5)


def test_a_failed_first_install_explains_itself_and_leaves_only_the_facts_anchor(
    tmp_path: Path, fresh_cluster: Cluster
) -> None:
    fleet = create(tmp_path / "repo", when=T0)
    config = tmp_path / "agent.yaml"
    config.write_text(
        "apiVersion: outpost/v1\nkind: AgentConfig\nspec:\n"
        f"  site: {SITE}\n"
        f'  source: {{url: "{fleet.url}", branch: main}}\n'
        f"  trustRoot: {fleet.allowed_signers}\n"
        f"  ageKey: {private_age_key(SITE, tmp_path)}\n"
        f"  kubeconfig: {fresh_cluster.kubeconfig}\n"
        f"  stateDir: {tmp_path / 'state'}\n"
        f"  metricsDir: {tmp_path / 'metrics'}\n"
        "  healthDeadline: 20s\n"
        "  staleAfter: 1d\n"
    )
    clock = TickingClock(IN_WINDOW)
    agent = make_agent(config, clock)

    report = agent.tick()
    assert report.outcome == "failed", report
    assert any("'edge-1'" in w and "no node in the cluster" in w for w in report.warnings)
    assert report.error is not None
    # the scheduler's own reason and message, not only "0 of 1 replicas available"
    assert "Deployment.apps/pos/pos-server" in report.error
    assert "Unschedulable: 0/" in report.error
    assert "didn't match Pod's node affinity/selector" in report.error

    status = StateStore(tmp_path / "state").read_status()
    assert status is not None
    assert status["applied"]["revision"] is None
    assert status["leftover"]["removed"] > 0 and status["leftover"]["objects"] == []
    # Only the site's facts anchor stays (Kubernetes' ConfigMap parameter informer keeps a
    # user): it is all the inventory lists, and the site still counts as running nothing.
    assert [key.rpartition("/")[2] for key in status["leftover"]["kept"]] == [
        "outpost-policy-facts",
        "outpost-policy-facts",
    ]
    assert status["inventory"] == 2
    assert "nothing yet (the failed install was removed again" in format_status(status)
    _wait(lambda: not _namespaces(fresh_cluster) & {"pos", "monitoring"}, "its namespaces are gone")
    metrics = (tmp_path / "metrics/outpost.prom").read_text()
    assert "outpost_last_success_timestamp_seconds" not in metrics

    again = agent.tick()
    assert again.outcome == "failed-before"
    assert again.pending_reason is not None and "commit a fix" in again.pending_reason

    # The node joins under its hardware.yaml name; a newer commit is applied.
    manifest = tmp_path / "node.json"
    manifest.write_text(json.dumps(store_node("edge-1")))
    fresh_cluster.kubectl("create", "-f", str(manifest))
    fresh_cluster.kubectl("wait", "--for=condition=Ready", "node/edge-1", "--timeout=60s")
    fleet.write(f"sites/{SITE}/notes.txt", "edge-1 joined\n")
    fixed = fleet.commit("Munich: the store's node joined", when=T0 + timedelta(hours=1))
    # Now the rollout must come up: a deadline a loaded machine meets (the 20 s above only
    # bounds how long the unschedulable Pods are waited for).
    config.write_text(config.read_text().replace("healthDeadline: 20s", "healthDeadline: 120s"))
    done = make_agent(config, clock).tick()
    assert (done.outcome, done.applied) == ("applied", fixed), (done.error, done.warnings)
    assert not any("edge-1" in w for w in done.warnings)
    assert (
        "outpost_last_success_timestamp_seconds" in (tmp_path / "metrics/outpost.prom").read_text()
    )
