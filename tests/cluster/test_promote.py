"""A gated wave on the real control plane: the canary applies and reports, the collector
sees it, `fleet promote` commits a signed Promotion, and the second store applies.

One control plane serves both stores in turn (the canary de-muc-0007, then de-fra-0088,
both with a node named edge-1): the stores' namespaces are cleared between them, as two
stores' own clusters would not share objects. The clock is the test's on every side,
because the signed history is dated 2027.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from admissionkit import clear_outpost_policies
from test_agent import (  # the fixtures too: this module uses the same store node
    IN_WINDOW,
    SITE,
    SITE_NAMESPACES,
    T0,
    Clock,
    clean_site,  # noqa: F401
    make_agent,
    store_node,  # noqa: F401
    write_config,
)
from test_reports import RunningCollector, inventory_revision, site_in

from reconciler.fleet.promote import promote
from tools.signedfleet import SignedFleet, create, make_key
from tools.testcluster import Cluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SECOND = "de-fra-0088"
GATED = """  waves:
    - {name: canary, sites: [de-muc-0007]}
    - {name: stores, gate: {healthy: 100, maxFailed: 0, minSoak: 1h}}
"""


@pytest.fixture
def fleet(tmp_path: Path) -> SignedFleet:
    return create(tmp_path / "repo", when=T0)


@pytest.fixture
def hq(tmp_path: Path, fleet: SignedFleet) -> Iterator[tuple[RunningCollector, Clock]]:
    clock = Clock(IN_WINDOW)
    running = RunningCollector(tmp_path, fleet, clock)
    yield running, clock
    running.stop()


def _gate_the_fleet(fleet: SignedFleet, promoter: Path) -> str:
    def waves(text: str) -> str:
        head, rest = text.split("  waves:\n", 1)
        return head + GATED + rest[rest.index("  freezes:") :]

    fleet.edit("fleets/retail-eu.yaml", waves)
    public = promoter.with_suffix(".pub").read_text().strip()
    fleet.edit(
        "policies/signers.yaml",
        lambda t: (
            t + f'    - name: promoter\n      keys: ["{public}"]\n      paths: [rollouts/**]\n'
        ),
    )
    return fleet.commit(
        "retail-eu: gate the stores wave on the canary", when=IN_WINDOW - timedelta(minutes=10)
    )


def _store(tmp: Path, fleet: SignedFleet, cluster: Cluster, collector: RunningCollector,
           site: str) -> Path:  # fmt: skip
    folder = tmp / site
    folder.mkdir()
    key = folder / "node.key"
    shutil.copyfile(ROOT / "tests/keys/node" / f"{site}-edge-1.key", key)
    key.chmod(0o600)
    return write_config(
        folder,
        fleet,
        Path(cluster.kubeconfig),
        site=site,
        # Each store waits for its wave from its first tick: under the default (immediate)
        # a store with nothing running would take its first revision outside its gate.
        extra="  firstApply: gated\n"
        f"  identityKey: {key}\n"
        f"  report: {{url: '{collector.url}/api/v1/reports', caBundle: '{collector.tls.ca}'}}\n",
    )


def _clear_the_store(cluster: Cluster) -> None:
    clear_outpost_policies(cluster)
    for namespace in SITE_NAMESPACES:
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")
    cluster.kubectl(
        "delete", "configmap", "outpost-inventory", "-n", "outpost-system", "--ignore-not-found"
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        names = cluster.kubectl("get", "namespaces", "-o", "name").stdout
        if not any(f"namespace/{n}\n" in names + "\n" for n in SITE_NAMESPACES):
            return
        time.sleep(0.5)
    raise AssertionError("the canary's namespaces were not deleted")


@pytest.mark.usefixtures("clean_site")
def test_the_canary_reports_promote_commits_and_the_second_store_applies(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, hq: tuple[RunningCollector, Clock]
) -> None:
    collector, clock = hq
    promoter = make_key(tmp_path / "keys", "promoter")
    change = _gate_the_fleet(fleet, promoter)
    collector.refresh()

    canary = make_agent(_store(tmp_path, fleet, cluster, collector, SITE), clock)
    first = canary.tick()
    assert first.outcome == "applied", first
    assert inventory_revision(cluster) == change
    seen = site_in(collector.get(f"/api/v1/changes/{change}"), SITE)
    assert seen["state"] == "applied"

    # the canary is healthy; the gate's soak (1h) has not passed: promote waits
    clock.now = IN_WINDOW + timedelta(minutes=30)
    source = collector.collector.source
    store = collector.collector.store
    reports = {r.site: r for r in store.sites()}
    [(early, none)] = promote(fleet.path, source, reports, now=clock(), key=promoter)
    assert (early.action, none) == ("wait", None), early
    assert "soak until" in early.rule

    _clear_the_store(cluster)
    second = make_agent(_store(tmp_path, fleet, cluster, collector, SECOND), clock)
    clock.now = IN_WINDOW + timedelta(hours=4, minutes=30)  # 03:15 in Frankfurt: its window
    waiting = second.tick()
    assert waiting.outcome == "waiting", waiting
    assert "awaits promotion of wave 'stores'" in (waiting.pending_reason or "")

    reports = {r.site: r for r in store.sites()}
    [(decision, commit)] = promote(fleet.path, source, reports, now=clock(), key=promoter)
    assert decision.action == "promote" and commit is not None, decision
    assert SITE in fleet.git("log", "-1", "--format=%B")
    collector.refresh()
    assert source.status.problem is None and source.status.view.revision == commit

    # promoted; the soak counts on this node from when it first saw the change (rule 16)
    clock.now += timedelta(minutes=5)
    soaking = second.tick()
    assert soaking.outcome == "waiting" and "wave 'stores'" in (soaking.pending_reason or "")
    clock.now += timedelta(hours=1)  # 04:20 in Frankfurt: soaked, still in its window
    applied = second.tick()
    assert applied.outcome == "applied", applied
    assert inventory_revision(cluster) == commit
    at_second = site_in(collector.get(f"/api/v1/changes/{change}"), SECOND)
    assert at_second["state"] == "applied"
