"""An air-gapped plant brought from one signed revision to the next by bundle files alone.

The example's air-gapped plant (plant-ostrava) on the real test control plane: a real node
agent (`Agent` + `NodePipeline` + `ManagerCluster`) with no git remote, only a bundle inbox
and an outbox. Bundles are made by `git bundle create` from a clone whose commits are signed
with ssh keys made by ssh-keygen.

1. a --full bundle of A installs A;
2. a bundle A..C moves the plant to C (the OPC UA gateway's publish interval changes);
3. a bundle C..D whose commit is signed by an unknown key is imported, refused by trust,
   and nothing in the cluster or the applied state changes;
4. a replayed A..B changes nothing;
5. the status report in the outbox round-trips into the fleet status.

Each delivery is one tick: the agent imports the inbox itself, then verifies and applies.

The test cluster has no storage provisioner and no KubeVirt: the test provides
PersistentVolumes for the plant's claims and sets the VM's status, as KubeVirt would.
Waits poll with a generous deadline; a deadline is a failure bound, never a timing assertion.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from admissionkit import clear_outpost_policies

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "airgap"))

from airgap_world import (
    PLANT,
    History,
    Key,
    SignedRepo,
    allowed_signers,
    drop,
    make_key,
)
from keykit import private_age_key

from reconciler.fleet.status import FleetStatus, ingest_dir, summarize
from reconciler.node.agent import Agent, TickReport
from reconciler.node.config import AgentConfig, SourceConfig
from reconciler.node.fetch import APPLIED_REF, CANDIDATE_REF, Mirror
from reconciler.node.pipeline import ManagerCluster, NodePipeline
from tools.testcluster import Cluster as ControlPlane

pytestmark = pytest.mark.cluster

# Saturday 23:00 in Prague: inside plant-ostrava's weekly window (sat 22:00 for 30 h),
# weeks after the commits (BASE_TS in airgap_world). For a change to fleet plants, the
# plant's wave ('all') opens 7 days after the change time, which is the later of the
# committer time and when the plant first saw the commit: the day the stick arrives. A week
# later, at the start of the next window, the wave is open. Changes to the plant's own
# folder go through no fleet's waves.
WINDOW = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
SOAK = timedelta(days=7)
VOLUMES = (("1Ti", "historian"), ("200Gi", "broker"), ("20Gi", "recipes"))
PLANT_NAMESPACES = ("monitoring", "plant-data", "vms")


def publish_interval(plane: ControlPlane) -> str:
    """The publish interval in the cluster's copy of the OPC UA gateway's config."""
    done = plane.kubectl("get", "configmap", "opcua-gateway", "-n", "plant-data", "-o", "json")
    config = json.loads(done.stdout)["data"]["gateway.yaml"]
    [line] = [x for x in config.splitlines() if "publishIntervalMs:" in x]
    return line.split(":", 1)[1].strip()


def clear_site(cluster: ControlPlane) -> None:
    """No trace of a site: the plant's namespaces and the cluster's inventory are gone.

    A cluster serves one site, so an inventory left by an earlier test (another site)
    would rightly make the agent refuse to touch this one.
    """
    clear_outpost_policies(cluster)
    cluster.kubectl("delete", "namespace", *PLANT_NAMESPACES, "--ignore-not-found", "--wait=false")
    cluster.kubectl(
        "delete", "configmap", "outpost-inventory", "-n", "outpost-system", "--ignore-not-found"
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = cluster.kubectl("get", "namespace", "-o", "json")
        names = {item["metadata"]["name"] for item in json.loads(done.stdout)["items"]}
        if not names & set(PLANT_NAMESPACES):
            return
        time.sleep(0.5)
    raise AssertionError(f"namespaces {PLANT_NAMESPACES} were not deleted")


@pytest.fixture
def volumes(cluster: ControlPlane, tmp_path: Path) -> Iterator[None]:
    """A clean cluster with hostPath PersistentVolumes the plant's claims can bind to (there
    is no provisioner here); afterwards the site, its inventory and the volumes are gone."""
    clear_site(cluster)
    names = []
    for size, what in VOLUMES:
        name = f"airgap-{what}-{uuid.uuid4().hex[:6]}"
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local-path",
                "hostPath": {"path": f"/tmp/{name}"},
            },
        }
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(body))
        cluster.kubectl("create", "-f", str(path))
        names.append(name)
    yield
    clear_site(cluster)
    for name in names:
        cluster.kubectl("delete", "pv", name, "--wait=false", check=False)


@pytest.fixture
def kubevirt(cluster: ControlPlane) -> Iterator[None]:
    """Plays KubeVirt for the plant's VM: once it exists, report it running."""
    stop = threading.Event()

    def act() -> None:
        while not stop.is_set():
            cluster.kubectl(
                "patch", "virtualmachine", "hmi", "-n", "vms", "--subresource=status",
                "--type=merge", "-p", '{"status": {"ready": true, "printableStatus": "Running"}}',
                check=False,
            )  # fmt: skip
            stop.wait(0.5)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)


class PlantNode:
    """plant-ostrava's node: config, mirror, the stick, the agent with a clock we set."""

    def __init__(self, root: Path, plane: ControlPlane, ops: Key) -> None:
        root.mkdir(parents=True)
        trust = root / "allowed_signers"
        trust.write_bytes(allowed_signers(ops))
        self.now = WINDOW
        self.config = AgentConfig(
            path=root / "agent.yaml",
            site=PLANT,
            source=SourceConfig(url=None, branch="main", credentials=None),
            bundle_inbox=root / "stick",
            outbox=root / "stick" / "outbox",
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
        )
        self.inbox = root / "stick"
        self.inbox.mkdir()
        self.agent = Agent(
            self.config,
            pipeline=NodePipeline(self.config),
            cluster=lambda: ManagerCluster.connect(self.config),
            clock=lambda: self.now,
        )

    @property
    def mirror(self) -> Mirror:
        return Mirror(self.config.mirror_dir)

    def deliver(self, bundle: Path) -> Any:
        """The stick arrives; one tick imports the inbox and acts on it.

        Returns the import results (read back from the result files the tick left next to
        the processed or rejected bundle) and the tick's report.
        """
        drop(bundle, self.inbox)
        report = self.agent.tick()
        results = []
        for folder in ("processed", "rejected"):
            path = self.inbox / folder / f"{bundle.name}.result.json"
            if path.exists():
                results.append(_Outcome(json.loads(path.read_text())["outcome"]))
        return results, report

    def after_the_soak(self, report: TickReport) -> TickReport:
        """The plant waits for its wave, counted from the stick's arrival; a week later it
        applies (a commit's date, typed by its signer, cannot shorten that)."""
        assert report.outcome == "waiting", (report.error, report.pending_reason)
        opens = (self.now + SOAK).strftime("%Y-%m-%d %H:%M UTC")
        assert f"waiting for wave 'all' (opens {opens})" in str(report.pending_reason)
        self.now += SOAK
        return self.agent.tick()


@dataclass(frozen=True)
class _Outcome:
    outcome: str


@pytest.fixture
def signed(tmp_path: Path) -> tuple[History, Key]:
    keys = tmp_path / "keys"
    keys.mkdir()
    ops, rogue = make_key(keys, "ops"), make_key(keys, "rogue")
    repo = SignedRepo(tmp_path / "clone", ops)
    a = repo.commit("Example fleet")
    b = repo.change_plant("Ostrava: publish every 750 ms", 750)
    c = repo.change_plant("Ostrava: publish every 1000 ms", 1000)
    return History(repo, a, b, c), rogue


def test_an_air_gapped_plant_moves_by_bundles_alone(
    cluster: ControlPlane,
    volumes: None,
    kubevirt: None,
    signed: tuple[History, Key],
    tmp_path: Path,
) -> None:
    history, rogue = signed
    node = PlantNode(tmp_path / "node", cluster, history.repo.key)
    desk = tmp_path / "desk"

    history.repo.bundle(desk / "install.bundle", None, history.a)
    results, report = node.deliver(desk / "install.bundle")
    assert [r.outcome for r in results] == ["imported"]
    report = node.after_the_soak(report)  # the whole fleet is new: fleet plants' waves gate it
    assert report.outcome == "applied", (report.error, report.pending_reason)
    assert report.applied == history.a
    assert publish_interval(cluster) == "500"

    history.repo.bundle(desk / "a-c.bundle", history.a, history.c)
    results, report = node.deliver(desk / "a-c.bundle")
    assert [r.outcome for r in results] == ["imported"]  # its own folder only: no wave gates it
    assert report.outcome == "applied", (report.error, report.pending_reason)
    assert report.applied == history.c
    assert node.mirror.resolve(APPLIED_REF) == history.c
    assert publish_interval(cluster) == "1000"
    assert (node.inbox / "processed" / "a-c.bundle.result.json").exists()

    rogue_commit = history.repo.change_plant("Ostrava: publish every 10 ms", 10, rogue)
    history.repo.bundle(desk / "c-d.bundle", history.c)
    results, report = node.deliver(desk / "c-d.bundle")
    assert [r.outcome for r in results] == ["imported"]
    assert report.outcome == "refused"
    assert rogue_commit[:7] in (report.pending_reason or "")
    assert report.applied == history.c
    assert node.mirror.resolve(APPLIED_REF) == history.c
    assert publish_interval(cluster) == "1000"

    history.repo.bundle(desk / "a-b.bundle", history.a, history.b)
    results, report = node.deliver(desk / "a-b.bundle")
    assert [r.outcome for r in results] == ["replay"]
    # The refused commit no longer stands in the way: the candidate is back on what runs.
    assert node.mirror.resolve(CANDIDATE_REF) == history.c
    assert report.applied == history.c
    assert report.outcome == "unchanged"

    fleet, outcomes = ingest_dir(node.inbox / "outbox", FleetStatus(), now=node.now)
    assert [o.outcome for o in outcomes] == ["recorded"]
    [row] = summarize(fleet, now=node.now)
    assert (row.site, row.applied, row.pending) == (PLANT, history.c, None)
