"""The node agent end to end, on the real control plane: a signed repository, a real tick.

Each test gets a signed copy of the example fleet, an agent config for the store
de-muc-0007 (canary of retail-eu) and a clean cluster (its namespaces and inventory
removed). The clock is passed in: 2027-02-02 22:45 in Munich is inside the store's
window and after the peak-season freeze, so the gate says yes unless a test says no.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from admissionkit import clear_outpost_policies
from keykit import private_age_key

from reconciler.node.agent import Agent, TickReport
from reconciler.node.config import load_config
from reconciler.node.pipeline import ManagerCluster, NodePipeline
from reconciler.node.state import StateStore
from tools.demo.__main__ import store_node as demo_store_node
from tools.signedfleet import SignedFleet, create
from tools.testcluster import Cluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SITE = "de-muc-0007"
T0 = datetime(2027, 2, 1, 9, 0, tzinfo=UTC)
IN_WINDOW = datetime(2027, 2, 2, 21, 45, tzinfo=UTC)  # 22:45 in Munich, a Tuesday
SITE_NAMESPACES = ("pos", "monitoring")


# -- the cluster side -------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_node(cluster: Cluster) -> Iterator[str]:
    """The store's edge node, named as in its hardware.yaml; the agent labels it."""
    from kubernetes import client

    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        try:
            core.create_node(demo_store_node("edge-1"))
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            node = core.read_node("edge-1")
            ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
            if ready and ready[0].status == "True":
                break
            time.sleep(0.5)
        else:
            raise AssertionError("node edge-1 did not become Ready")
    yield "edge-1"
    # Leave the cluster as the other test modules expect it: only the fixture's nodes.
    cluster.kubectl("delete", "node", "edge-1", "--ignore-not-found")


@pytest.fixture
def clean_site(cluster: Cluster, store_node: str) -> Iterator[None]:
    """No trace of an earlier test's site: namespaces, the inventory and its policies are gone."""
    from kubernetes import client

    clear_outpost_policies(cluster)
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        for namespace in SITE_NAMESPACES:
            try:
                core.delete_namespace(namespace)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
        try:
            core.delete_namespaced_config_map("outpost-inventory", "outpost-system")
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            names = {ns.metadata.name for ns in core.list_namespace().items}
            if not names & set(SITE_NAMESPACES):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("site namespaces were not deleted")
    yield
    # Leave no inventory behind: the cluster serves the next test's site.
    clear_outpost_policies(cluster)
    cluster.kubectl(
        "delete", "configmap", "outpost-inventory", "-n", "outpost-system", "--ignore-not-found"
    )


def read(cluster: Cluster, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    done = cluster.kubectl("get", kind, "-n", namespace, name, "-o", "json", check=False)
    if done.returncode != 0:
        return None
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- the node side ----------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def write_config(
    tmp_path: Path,
    fleet: SignedFleet,
    kubeconfig: Path,
    *,
    url: str | None = None,
    health: str = "60s",
    name: str = "agent.yaml",
    extra: str = "",
    site: str = SITE,
) -> Path:
    """The agent config of ``site``'s node, with a private copy of that site's age key."""
    config = tmp_path / name
    config.write_text(
        "apiVersion: outpost/v1\n"
        "kind: AgentConfig\n"
        "spec:\n"
        f"  site: {site}\n"
        f'  source: {{url: "{url or fleet.url}", branch: main}}\n'
        f"  trustRoot: {fleet.allowed_signers}\n"
        f"  ageKey: {private_age_key(site, tmp_path)}\n"
        f"  kubeconfig: {kubeconfig}\n"
        f"  stateDir: {tmp_path / 'state'}\n"
        f"  healthDeadline: {health}\n"
        "  staleAfter: 1d\n" + extra
    )
    return config


def make_agent(config: Path, clock: Callable[[], datetime]) -> Agent:
    loaded = load_config(config)
    return Agent(
        loaded,
        pipeline=NodePipeline(loaded),
        cluster=lambda: ManagerCluster.connect(loaded),
        clock=clock,
    )


@pytest.fixture
def fleet(tmp_path: Path) -> SignedFleet:
    return create(tmp_path / "repo", when=T0)


@pytest.fixture
def node(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, clean_site: None
) -> Callable[..., Agent]:
    def build(clock: Clock, **options: Any) -> Agent:
        return make_agent(write_config(tmp_path, fleet, Path(cluster.kubeconfig), **options), clock)

    return build


def status_of(tmp_path: Path) -> dict[str, Any]:
    status = StateStore(tmp_path / "state").read_status()
    assert status is not None
    return status


# -- the tests ------------------------------------------------------------------------


def test_apply_update_and_prune_across_three_commits(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    clock = Clock(IN_WINDOW)
    agent = node(clock)

    first = agent.tick()
    assert first.outcome == "applied", first
    assert first.applied == fleet.head()
    deployment = read(cluster, "deployment", "pos", "pos-server")
    assert deployment is not None
    assert deployment["status"].get("availableReplicas", 0) >= 1
    assert read(cluster, "daemonset", "monitoring", "node-exporter") is not None
    secret = read(cluster, "secret", "pos", "wifi-psk")
    assert secret is not None  # decrypted on the node, applied as a real Secret
    labels = json.loads(cluster.kubectl("get", "node", "edge-1", "-o", "json").stdout)
    assert labels["metadata"]["labels"]["outpost/device.usb"] == "true"

    # Second commit: a site override changes the POS configuration.
    fleet.write(
        f"sites/{SITE}/overrides.yaml",
        "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata:\n"
        f"  name: {SITE}\nspec:\n  apps:\n    pos:\n      patches:\n"
        "        - target: {kind: ConfigMap, name: pos-config}\n"
        '          merge: {data: {STORE_NOTE: "refit 2027"}}\n',
    )
    second = fleet.commit("Munich: note the refit", when=T0 + timedelta(hours=1))
    report = agent.tick()
    assert (report.outcome, report.applied) == ("applied", second)
    config_map = read(cluster, "configmap", "pos", "pos-config")
    assert config_map is not None
    assert config_map["data"]["STORE_NOTE"] == "refit 2027"

    # Third commit: node-metrics leaves the fleet; its DaemonSet and namespace are pruned.
    fleet.edit("fleets/retail-eu.yaml", _without_app("node-metrics"))
    third = fleet.commit("retail-eu: drop node-metrics", when=T0 + timedelta(hours=2))
    report = agent.tick()
    assert (report.outcome, report.applied) == ("applied", third)
    assert read(cluster, "daemonset", "monitoring", "node-exporter") is None
    assert read(cluster, "deployment", "pos", "pos-server") is not None
    state = json.loads((tmp_path / "state/state.json").read_text())
    assert state["applied"] == third
    assert not any("DaemonSet" in key for key in state["inventory"])
    inventory = read(cluster, "configmap", "outpost-system", "outpost-inventory")
    assert inventory is not None
    assert "node-exporter" not in json.dumps(inventory["data"])


def _without_app(app: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        lines = text.splitlines(keepends=True)
        out, skipping = [], False
        for line in lines:
            if line.startswith(f"    {app}:"):
                skipping = True
                continue
            if skipping and line.startswith("      "):
                continue
            skipping = False
            out.append(line)
        return "".join(out)

    return change


def test_drift_is_corrected_without_a_new_commit(
    tmp_path: Path, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    agent = node(Clock(IN_WINDOW))
    assert agent.tick().outcome == "applied"
    cluster.kubectl(
        "patch",
        "configmap",
        "pos-config",
        "-n",
        "pos",
        "--type=merge",
        "-p",
        '{"data": {"CURRENCY": "USD"}}',
    )
    cluster.kubectl("delete", "service", "pos-server", "-n", "pos")
    # Outside the window: correcting drift is not a change and is never gated.
    report = make_agent_at(agent, datetime(2027, 2, 3, 10, 0, tzinfo=UTC)).tick()
    assert report.outcome == "unchanged"
    assert report.drift == 2
    assert report.corrected == 2
    config_map = read(cluster, "configmap", "pos", "pos-config")
    assert config_map is not None
    assert config_map["data"]["CURRENCY"] == "EUR"
    assert read(cluster, "service", "pos", "pos-server") is not None
    assert status_of(tmp_path)["drift"] == {"objects": 2, "corrected": 2}


def make_agent_at(agent: Agent, now: datetime) -> Agent:
    return Agent(
        agent.config, pipeline=agent.pipeline, cluster=agent.cluster_factory, clock=Clock(now)
    )


def test_unhealthy_commit_rolls_back_and_is_not_retried(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    agent = node(Clock(IN_WINDOW), health="20s")
    good = agent.tick()
    assert good.outcome == "applied"
    fleet.write(
        f"sites/{SITE}/overrides.yaml",
        "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata:\n"
        f"  name: {SITE}\nspec:\n  apps:\n    pos:\n      patches:\n"
        "        - target: {kind: Deployment, name: pos-server}\n"
        "          merge: {spec: {template: {spec: {nodeSelector: {outpost/node: nowhere}}}}}\n",
    )
    bad = fleet.commit("pin pos-server to a node that does not exist", when=T0 + timedelta(hours=1))
    report = agent.tick()
    assert report.outcome == "rolled-back", report
    assert report.applied == good.applied
    assert report.error is not None and "did not become healthy" in report.error
    deployment = read(cluster, "deployment", "pos", "pos-server")
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"outpost/device.usb": "true"}
    state = json.loads((tmp_path / "state/state.json").read_text())
    assert state["applied"] == good.applied
    assert bad in state["failed"]

    again = agent.tick()
    assert again.outcome == "failed-before"
    assert again.pending == bad

    (fleet.path / f"sites/{SITE}/overrides.yaml").unlink()
    fixed = fleet.commit("revert the pin", when=T0 + timedelta(hours=2))
    assert agent.tick().applied == fixed


def test_unsigned_commit_is_refused_and_nothing_changes(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    agent = node(Clock(IN_WINDOW))
    first = agent.tick()
    fleet.edit("fleets/retail-eu.yaml", lambda t: t + "# unsigned\n")
    unsigned = fleet.commit("nobody signed this", when=T0 + timedelta(hours=1), sign=False)
    report = agent.tick()
    assert report.outcome == "refused"
    assert report.applied == first.applied
    status = status_of(tmp_path)
    assert status["pending"]["revision"] == unsigned
    assert f"commit {unsigned[:7]}" in status["pending"]["reason"]
    assert "not signed" in status["pending"]["reason"]
    assert status["applied"]["revision"] == first.applied
    # Refused once, refused for good: the next tick does not verify it again.
    assert agent.tick().outcome == "refused"


def test_commit_that_breaks_the_schema_is_refused(
    tmp_path: Path, fleet: SignedFleet, node: Callable[..., Agent]
) -> None:
    agent = node(Clock(IN_WINDOW))
    first = agent.tick()
    fleet.edit(f"sites/{SITE}/hardware.yaml", lambda t: t.replace("memory: 32Gi", "memory: 32GB"))
    fleet.commit("typo in the memory size", when=T0 + timedelta(hours=1))
    report = agent.tick()
    assert report.outcome == "refused"
    assert report.applied == first.applied
    assert f"sites/{SITE}/hardware.yaml:" in str(report.pending_reason)
    assert "32GB" in str(report.pending_reason)


def test_gate_waits_for_the_window_then_applies(
    tmp_path: Path, fleet: SignedFleet, node: Callable[..., Agent]
) -> None:
    clock = Clock(IN_WINDOW)
    agent = node(clock)
    assert agent.tick().outcome == "applied"
    fleet.edit(
        f"sites/{SITE}/site.yaml", lambda t: t.replace("Leopoldstraße 82", "Leopoldstraße 84")
    )
    change = fleet.commit("Munich moved next door", when=datetime(2027, 2, 3, 8, 0, tzinfo=UTC))
    clock.now = datetime(2027, 2, 3, 9, 0, tzinfo=UTC)  # Wednesday 10:00 in Munich
    waiting = agent.tick()
    assert waiting.outcome == "waiting", waiting
    assert waiting.pending == change
    assert waiting.pending_until == datetime(2027, 2, 3, 21, 30, tzinfo=UTC).isoformat()
    clock.now = datetime(2027, 2, 3, 21, 31, tzinfo=UTC)
    assert agent.tick().applied == change


def test_unreachable_remote_keeps_the_last_good_revision(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    clock = Clock(IN_WINDOW)
    first = node(clock).tick()
    agent = make_agent(
        write_config(
            tmp_path,
            fleet,
            Path(cluster.kubeconfig),
            url="file:///nonexistent/repo",
            name="offline.yaml",
        ),
        clock,
    )
    clock.now = IN_WINDOW + timedelta(days=2)
    report = agent.tick()
    assert report.outcome == "unchanged"
    assert report.applied == first.applied
    status = status_of(tmp_path)
    assert status["applied"]["revision"] == first.applied
    assert any(
        "fetching 'main' from file:///nonexistent/repo failed" in w for w in status["warnings"]
    )
    assert any("has not answered for 48 h" in w for w in status["warnings"])
    assert read(cluster, "deployment", "pos", "pos-server") is not None


class CuttingProxy:
    """A TCP proxy to the API server that goes dark after ``budget`` bytes from the client."""

    def __init__(self, target: tuple[str, int], budget: int) -> None:
        self.target = target
        self.budget = budget
        self.sent = 0
        self.cut = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, dest: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                if counted:
                    self.sent += len(data)
                    if self.sent > self.budget:
                        self.close()
                        return
                dest.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.cut.set()
        for sock in [self.server, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_api_server_gone_mid_apply_fails_cleanly_and_the_next_tick_converges(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    host, port = cluster.server.removeprefix("https://").split(":")
    proxy = CuttingProxy((host, int(port)), budget=12_000)
    kubeconfig = tmp_path / "via-proxy.kubeconfig"
    kubeconfig.write_text(
        Path(cluster.kubeconfig)
        .read_text()
        .replace(cluster.server, f"https://127.0.0.1:{proxy.port}")
    )
    clock = Clock(IN_WINDOW)
    cut = make_agent(write_config(tmp_path, fleet, kubeconfig, name="cut.yaml"), clock)
    try:
        report = cut.tick()
    finally:
        proxy.close()
    assert report.outcome == "interrupted", report
    assert report.temporary
    assert report.applied is None
    state = json.loads((tmp_path / "state/state.json").read_text())
    assert state["applied"] is None
    healed = node(clock).tick()
    assert healed.outcome == "applied"
    assert read(cluster, "deployment", "pos", "pos-server") is not None


def _kill_change(n: int) -> str:
    """A ConfigMap added to the POS app: each change gives the next run a new object to apply."""
    return (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        f"  name: kill-{n}\n  namespace: ${{app.namespace}}\n  labels:\n"
        "    app.kubernetes.io/name: pos\n    app.kubernetes.io/part-of: pos\n"
        "    app.kubernetes.io/version: ${app.version}\n"
        f'data:\n  RUN: "{n}"\n'
    )


def _state(path: Path) -> dict[str, Any] | None:
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    found: dict[str, Any] = json.loads(raw)  # never torn: a kill leaves old bytes or new
    return found


def _identity(path: Path) -> tuple[int, int] | None:
    """Which write of ``path`` is there: each atomic write replaces the file (a new inode)."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_mtime_ns


def _unfinished(state: dict[str, Any] | None, revision: str, key: str) -> bool:
    """The state shows an apply of ``revision`` begun and not finished: its new object is on
    record (the union goes on record before anything is sent) but it is not applied."""
    return state is not None and key in state["inventory"] and state["applied"] != revision


def test_sigkill_at_random_points_never_corrupts_state(
    tmp_path: Path, cluster: Cluster, clean_site: None
) -> None:
    """20 runs of the real CLI, each killed with SIGKILL; then one run converges.

    Each run has something new to apply (a commit adding a ConfigMap, made whenever the
    previous run got through). Even runs are killed at a random instant after start; odd
    runs once the apply has begun (the union of old and new is on record), after a random
    0–150 ms — so kills provably land mid-apply, and the test counts that they did.

    The CLI reads the real clock, so the commits are emergencies (root-signed trailer),
    which pass windows and freezes whatever the date the suite runs on.
    """
    from reconciler.node.apply import MANAGED_BY, MANAGED_BY_LABEL, SITE_LABEL

    now = datetime.now(UTC)
    fleet = create(tmp_path / "repo", when=now - timedelta(hours=2))
    config = write_config(tmp_path, fleet, Path(cluster.kubeconfig), health="30s")
    state_path = tmp_path / "state" / "state.json"
    argv = [sys.executable, "-m", "reconciler.cli", "agent", "run", "--once"]
    argv += ["--config", str(config)]
    rng = random.Random(7)
    env = {**os.environ, **cluster.env()}
    changes = 0
    mid_apply = 0
    for run in range(20):
        state = _state(state_path)
        if state is None or state["applied"] == fleet.head():
            changes += 1
            fleet.write(f"apps/pos/manifests/kill-{changes}.yaml", _kill_change(changes))
            fleet.commit(
                f"kill run {changes}",
                when=now - timedelta(hours=1) + timedelta(seconds=changes),
                emergency="card terminal fix",
            )
        head, key = fleet.head(), f"/ConfigMap/pos/kill-{changes}"
        before = _identity(state_path)
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        if run % 2 == 0:
            time.sleep(rng.uniform(0.05, 4.0))
        else:
            # The run's first write of the state is the union, just before it applies.
            deadline = time.monotonic() + 120
            while _identity(state_path) == before and proc.poll() is None:
                assert time.monotonic() < deadline, "the apply never began"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for path in (tmp_path / "state").glob("*.json"):
            json.loads(path.read_text())  # never torn
        if proc.returncode == -signal.SIGKILL:  # else the run was through before its kill
            began = _identity(state_path) != before
            mid_apply += began and _unfinished(_state(state_path), head, key)
    # Most odd runs are killed inside their apply; a few may finish within the 150 ms.
    assert mid_apply >= 5, f"only {mid_apply} of 20 kills landed mid-apply"
    print(f"{mid_apply} of 20 kills landed mid-apply; {changes} changes")

    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    state = _state(state_path)
    assert state is not None
    assert state["applied"] == fleet.head()
    assert state["failed"] == [] and state["refused"] == {}
    assert read(cluster, "deployment", "pos", "pos-server") is not None
    for n in range(1, changes + 1):
        assert read(cluster, "configmap", "pos", f"kill-{n}") is not None, n
    inventory = read(cluster, "configmap", "outpost-system", "outpost-inventory")
    assert inventory is not None
    assert sorted(json.loads(inventory["data"]["keys"])) == sorted(state["inventory"])
    # Nothing orphaned: every object labelled as this site's is on the inventory.
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{SITE_LABEL}={SITE}"
    listed = json.loads(
        cluster.kubectl(
            "get",
            "configmaps,secrets,services,deployments.apps,daemonsets.apps",
            "-A",
            "-l",
            selector,
            "-o",
            "json",
        ).stdout
    )
    for item in listed["items"]:
        group = item["apiVersion"].rpartition("/")[0]
        meta = item["metadata"]
        key = f"{group}/{item['kind']}/{meta['namespace']}/{meta['name']}"
        if key == "/ConfigMap/outpost-system/outpost-inventory":
            continue  # the inventory itself, never on it and never pruned
        assert key in state["inventory"], f"{key} is in the cluster but on no inventory"
    # A kill between writing a temp file and renaming it leaves one; the run that holds the
    # lock next removes it, so none is left.
    assert sorted(p.name for p in (tmp_path / "state").iterdir() if p.name.endswith(".tmp")) == []


def test_second_agent_exits_at_once(tmp_path: Path, fleet: SignedFleet, cluster: Cluster) -> None:
    config = write_config(tmp_path, fleet, Path(cluster.kubeconfig))
    store = StateStore(tmp_path / "state")
    with store.lock():
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "reconciler.cli",
                "agent",
                "run",
                "--once",
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 75
    assert "another outpost agent" in done.stderr


def test_status_command(tmp_path: Path, node: Callable[..., Agent]) -> None:
    report: TickReport = node(Clock(IN_WINDOW)).tick()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler.cli",
            "agent",
            "status",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert f"applied:    {report.applied[:12]}" in done.stdout if report.applied else False
    assert "site:       de-muc-0007" in done.stdout
