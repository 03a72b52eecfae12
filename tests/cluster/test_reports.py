"""Reports come home, end to end: the agent on the real control plane reports to a collector.

The agent ticks against the test control plane with a node key and ``spec.report.url``
pointing at a collector this test runs (the real Starlette app under uvicorn, on loopback,
over HTTPS with a CA of its own). The collector's answer for a change must match what the
cluster runs: the revision in the site's inventory ConfigMap. The clock is the test's, on
both sides, because the signed history is dated 2027.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3
from test_agent import (  # the fixtures too: this module uses the same store node
    IN_WINDOW,
    SITE,
    T0,
    Clock,
    clean_site,  # noqa: F401
    make_agent,
    store_node,  # noqa: F401
    write_config,
)

from reconciler.fleet.collector.app import Collector, create_app, hash_token
from reconciler.fleet.collector.fleetview import FleetSource
from reconciler.fleet.collector.store import open_store
from tools.signedfleet import SignedFleet, create
from tools.testcluster import Cluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-for-the-read-api"


class RunningCollector:
    def __init__(self, tmp: Path, fleet: SignedFleet, clock: Clock) -> None:
        import sys

        import uvicorn

        helpers = str(ROOT / "tests" / "reports")
        if helpers not in sys.path:
            sys.path.insert(0, helpers)
        from report_tls import make_tls  # the throwaway CA of the reporter's tests

        self.tls = make_tls(tmp / "tls", "collector")
        store = open_store(str(tmp / "collector.db"), now=clock())
        store.add_token("test", hash_token(TOKEN), now=clock())
        source = FleetSource(fleet.path, fleet.allowed_signers)
        self.collector = Collector(store=store, source=source, clock=clock, refresh_every=3600)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.collector),
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(self.tls.cert),
            ssl_keyfile=str(self.tls.key),
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.url = f"https://127.0.0.1:{port}"
        self.http = urllib3.PoolManager(ca_certs=str(self.tls.ca), cert_reqs="CERT_REQUIRED")
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the collector did not start"
            time.sleep(0.05)

    def get(self, path: str) -> Any:
        answer = self.http.request(
            "GET", self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert answer.status == 200, answer.data
        return json.loads(answer.data)

    def refresh(self) -> None:
        self.collector.source.refresh(self.collector.clock())

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def fleet(tmp_path: Path) -> SignedFleet:
    return create(tmp_path / "repo", when=T0)


@pytest.fixture
def hq(tmp_path: Path, fleet: SignedFleet) -> Iterator[tuple[RunningCollector, Clock]]:
    clock = Clock(IN_WINDOW)
    running = RunningCollector(tmp_path, fleet, clock)
    yield running, clock
    running.stop()


def inventory_revision(cluster: Cluster) -> str:
    done = cluster.kubectl(
        "get", "configmap", "outpost-inventory", "-n", "outpost-system", "-o", "json"
    )
    return str(json.loads(done.stdout)["data"]["revision"])


def site_in(change: dict[str, Any], site: str) -> dict[str, Any]:
    return next(s for w in change["waves"] for s in w["sites"] if s["site"] == site)


@pytest.mark.usefixtures("clean_site")
def test_the_collectors_answer_matches_what_the_cluster_runs(
    tmp_path: Path,
    fleet: SignedFleet,
    cluster: Cluster,
    hq: tuple[RunningCollector, Clock],
) -> None:
    collector, clock = hq
    key = tmp_path / "node.key"
    shutil.copyfile(ROOT / "tests/keys/node" / f"{SITE}-edge-1.key", key)
    key.chmod(0o600)
    config = write_config(tmp_path, fleet, Path(cluster.kubeconfig))
    config.write_text(
        config.read_text()
        + f"  identityKey: {key}\n"
        + f"  report: {{url: '{collector.url}/api/v1/reports', caBundle: '{collector.tls.ca}'}}\n"
    )
    agent = make_agent(config, clock)

    first = agent.tick()
    assert first.outcome == "applied", first
    applied = fleet.head()
    assert inventory_revision(cluster) == applied
    change = collector.get(f"/api/v1/changes/{applied}")
    here = site_in(change, SITE)
    assert here["state"] == "applied" and here["runs"] == applied == inventory_revision(cluster)
    canary = next(w for w in change["waves"] if (w["fleet"], w["wave"]) == ("retail-eu", "canary"))
    assert canary["counts"]["applied"] == 1
    assert site_in(change, "de-ber-0042")["state"] == "silent"  # its node never reported
    site = collector.get(f"/api/v1/sites/{SITE}")
    assert (site["state"], site["applied"]["revision"], site["node"]) == ("ok", applied, "edge-1")

    # An unsigned commit: the node refuses it, keeps what runs, and says so at headquarters.
    fleet.edit("fleets/retail-eu.yaml", lambda t: t + "# unsigned\n")
    unsigned = fleet.commit("nobody signed this", when=T0 + timedelta(hours=1), sign=False)
    clock.now = IN_WINDOW + timedelta(minutes=5)
    second = agent.tick()
    assert second.outcome == "refused"
    assert inventory_revision(cluster) == applied  # the cluster still runs the last good
    collector.refresh()  # the collector too refuses the unsigned head: it keeps its view
    assert collector.collector.source.status.problem is not None
    change = collector.get(f"/api/v1/changes/{unsigned}")
    refused = site_in(change, SITE)
    assert refused["state"] == "refused"
    assert f"commit {unsigned[:7]}" in refused["why"]
    assert refused["runs"] == inventory_revision(cluster)
    sites = collector.get("/api/v1/sites?state=refused")
    assert [s["site"] for s in sites["sites"]] == [SITE]
    assert len(collector.get(f"/api/v1/sites/{SITE}")["history"]) == 2
